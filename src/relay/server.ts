/**
 * `startRelay`: one HTTP(S) server on one port for the WebSocket data plane (`/tunnel`),
 * the management API (`POST /`) and `GET /health`.
 */
import { randomUUID } from 'node:crypto';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { Logger } from '../log';
import { CLOSE_NORMAL, MAX_WS_MESSAGE_BYTES } from '../protocol/constants';
import { EXTENSIONS_HEADER } from '../protocol/extension';
import { handleApiRequest, type Credentials } from './api';
import { generateSelfSigned, loadOrCreateSelfSigned } from './certs';
import { TunnelLink, type Peer } from './forward';
import { checkHandshake, isRefusal, type Accepted } from './handshake';
import type { TunnelNotifier } from './notify';
import { TunnelRegistry, type ClientMode, type OpenedTunnel, type OpenTunnelRequest, type TunnelRecord } from './tunnels';

export interface RelayOptions {
  host?: string;
  port?: number;
  tls?: { cert: string; key: string } | 'self-signed' | 'plain';
  /** `--tls-self-signed DIR`: load or create the certificate there (implies TLS). */
  selfSignedDir?: string;
  statePath?: string;
  credentials?: Credentials;
  log?: Logger;
  /** Sends the destination token to the tunnel's thing on open and on rotation (src/relay/notify.ts). */
  notifier?: TunnelNotifier;
}

export interface RelayFaults {
  /** Answer the next `count` upgrades with `status` instead of accepting them. */
  rejectHandshakes?: { status: number; count: number };
  /** false: stop answering WebSocket pings (simulates a dead service). */
  answerPings?: boolean;
}

export interface Relay {
  url: string;
  host: string;
  port: number;
  caPem?: string;
  openTunnel(req?: OpenTunnelRequest): OpenedTunnel;
  closeTunnel(tunnelId: string, options?: { delete?: boolean }): void;
  /** `destination`: RotateTunnelAccessToken's destinationConfig, which names the thing to notify. */
  rotateAccessToken(tunnelId: string, mode: ClientMode, destination?: { thingName?: string; services?: string[] }): { sourceAccessToken?: string; destinationAccessToken?: string };
  setFaults(faults: RelayFaults): void;
  close(): Promise<void>;
}

const DEFAULT_HOST = '127.0.0.1';
const DEFAULT_PORT = 8443;
/** Bounds for clients that connect and then stall before their request is complete. */
const TLS_HANDSHAKE_TIMEOUT_MS = 10_000;
const HEADERS_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 30_000;
/** TCP keepalive on peer sockets, so a peer that vanished without a FIN is noticed. */
const KEEPALIVE_DELAY_MS = 30_000;
const STATUS_TEXT: Record<number, string> = { 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 429: 'Too Many Requests', 500: 'Internal Server Error', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout' };

/** Writes a plain HTTP refusal on a socket that asked for an upgrade, then ends it. */
function refuseUpgrade(socket: Socket, status: number, reason: string): void {
  const body = `${reason}\n`;
  socket.end(`HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
}

function hostForUrl(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

class RelayServer implements Relay {
  url = '';
  host: string;
  port = 0;
  caPem?: string;
  readonly server: Server;
  private readonly secure: boolean;
  private readonly wss: WebSocketServer;
  private readonly registry: TunnelRegistry;
  private readonly links = new Map<string, TunnelLink>();
  private readonly sockets = new Set<Socket>();
  private readonly log: Logger;
  private readonly credentials?: Credentials;
  private readonly notifier?: TunnelNotifier;
  private faults: { reject?: { status: number; count: number }; answerPings: boolean } = { answerPings: true };

  constructor(options: RelayOptions) {
    this.log = options.log ?? new Logger();
    this.host = options.host ?? DEFAULT_HOST;
    this.credentials = options.credentials;
    this.notifier = options.notifier;
    this.registry = new TunnelRegistry({
      statePath: options.statePath,
      onSaveProblem: (message, ok) => (ok ? this.log.info(message) : this.log.error(message)),
      onClosed: (tunnel, reason) => this.onTunnelClosed(tunnel, reason),
      onTokenRevoked: (tunnel, mode) => {
        const peer = this.links.get(tunnel.tunnelId)?.peers[mode];
        if (peer) {
          peer.log.info('access token rotated: disconnecting');
          peer.close(CLOSE_NORMAL, 'access token rotated');
        }
      },
    });
    let tls = options.tls ?? 'self-signed';
    if (options.selfSignedDir) tls = 'self-signed';
    this.secure = tls !== 'plain';
    const onRequest = (req: IncomingMessage, res: ServerResponse) => this.onRequest(req, res);
    if (tls === 'plain') {
      this.server = createHttpServer(onRequest);
    } else {
      let cert: string;
      let key: string;
      if (tls === 'self-signed') {
        const generated = options.selfSignedDir ? loadOrCreateSelfSigned(options.selfSignedDir) : generateSelfSigned();
        cert = generated.certPem;
        key = generated.keyPem;
        this.caPem = cert;
      } else {
        cert = tls.cert;
        key = tls.key;
      }
      this.server = createHttpsServer({ cert, key, minVersion: 'TLSv1.2', handshakeTimeout: TLS_HANDSHAKE_TIMEOUT_MS }, onRequest);
    }
    this.server.headersTimeout = HEADERS_TIMEOUT_MS;
    this.server.requestTimeout = REQUEST_TIMEOUT_MS;
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: MAX_WS_MESSAGE_BYTES,
      perMessageDeflate: false,
      // Pings are answered by Peer so that a fault can switch answering off.
      autoPong: false,
      clientTracking: false,
      handleProtocols: (_protocols, req) => (req as IncomingMessage & { accepted?: Accepted }).accepted?.subprotocol ?? false,
    });
    this.wss.on('headers', (headers, req) => {
      const { channelId, accepted } = req as IncomingMessage & { channelId?: string; accepted?: Accepted };
      if (channelId) headers.push(`channel-id: ${channelId}`);
      if (accepted?.extensions.length) headers.push(`${EXTENSIONS_HEADER}: ${accepted.extensions.join(', ')}`);
    });
    this.server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => this.onUpgrade(req, socket, head));
    this.server.on('clientError', (err: Error & { code?: string }, socket: Socket) => {
      if (socket.writable) refuseUpgrade(socket, 400, err.code === 'HPE_HEADER_OVERFLOW' ? 'Request headers too large' : 'Bad request');
      else socket.destroy();
    });
  }

  async listen(port: number): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, this.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.port = (this.server.address() as AddressInfo).port;
    this.url = `${this.secure ? 'wss' : 'ws'}://${hostForUrl(this.host)}:${this.port}`;
  }

  openTunnel(req?: OpenTunnelRequest): OpenedTunnel {
    const opened = this.registry.open(req);
    this.log.info(`tunnel ${opened.tunnelId} opened (services: ${(req?.services ?? []).join(',') || 'none'})`);
    if (req?.thingName) this.notifier?.notify(req.thingName, opened.destinationAccessToken, req.services ?? []);
    return opened;
  }

  closeTunnel(tunnelId: string, options?: { delete?: boolean }): void {
    this.registry.close(tunnelId, options);
  }

  rotateAccessToken(tunnelId: string, mode: ClientMode, destination?: { thingName?: string; services?: string[] }) {
    const tokens = this.registry.rotate(tunnelId, mode);
    const tunnel = this.registry.get(tunnelId);
    const thingName = destination?.thingName ?? tunnel.thingName;
    if (tokens.destinationAccessToken && thingName) this.notifier?.notify(thingName, tokens.destinationAccessToken, destination?.services ?? tunnel.services);
    return tokens;
  }

  setFaults(faults: RelayFaults): void {
    if (faults.rejectHandshakes) this.faults.reject = { ...faults.rejectHandshakes };
    if (faults.answerPings !== undefined) {
      this.faults.answerPings = faults.answerPings;
      for (const link of this.links.values()) {
        for (const peer of [link.peers.source, link.peers.destination]) if (peer) peer.answerPings = faults.answerPings;
      }
    }
  }

  /**
   * Stops serving. Peer sockets are dropped without a close frame: a proxy takes a close
   * frame as "tunnel closed" and exits, while a dropped connection makes it reconnect —
   * which is what a relay restart with --state should look like.
   */
  async close(): Promise<void> {
    if (this.sockets.size > 0) this.log.info(`relay closing: dropping ${this.sockets.size} peer connection(s)`);
    this.registry.dispose();
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    this.links.clear();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && path === '/health') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    if (req.method === 'POST' && path === '/') {
      handleApiRequest(req, res, { registry: this.registry, credentials: this.credentials, log: this.log, relay: this });
      return;
    }
    const reason = path === '/tunnel' ? 'WebSocket upgrade required' : 'Not found';
    res.writeHead(path === '/tunnel' ? 400 : 404, { 'content-type': 'text/plain; charset=utf-8' }).end(`${reason}\n`);
  }

  /** One bad request must not take the relay down: anything unexpected ends just that socket. */
  private onUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    try {
      this.upgrade(req, socket, head);
    } catch (err) {
      this.log.error(`internal error on an upgrade from ${socket.remoteAddress}: ${(err as Error)?.message ?? String(err)}`);
      socket.destroy();
    }
  }

  private upgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const reject = this.faults.reject;
    if (reject && reject.count > 0) {
      reject.count--;
      this.log.info(`refusing upgrade with HTTP ${reject.status} (injected fault)`);
      return refuseUpgrade(socket, reject.status, 'Injected fault: handshake rejected');
    }
    const result = checkHandshake(req, this.registry);
    if (isRefusal(result)) {
      this.log.info(`refused upgrade from ${socket.remoteAddress}: HTTP ${result.status} ${result.reason}`);
      return refuseUpgrade(socket, result.status, result.reason);
    }
    const channelId = randomUUID();
    const tokenHash = result.owner.tunnel[result.mode].tokenHash;
    Object.assign(req, { accepted: result, channelId });
    this.wss.handleUpgrade(req, socket, head, (ws) => this.onConnected(ws, socket, result, channelId, tokenHash));
  }

  private onConnected(ws: WebSocket, socket: Socket, accepted: Accepted, channelId: string, tokenHash: string): void {
    const { owner, mode } = accepted;
    // The tunnel may have closed or the token rotated while the upgrade completed.
    if (owner.tunnel.status !== 'OPEN' || owner.tunnel[mode].tokenHash !== tokenHash) {
      this.log.info(`tunnel ${owner.tunnel.tunnelId} ${mode}: closing a connection just accepted: the tunnel closed or its token was rotated meanwhile`);
      ws.close(CLOSE_NORMAL, 'tunnel closed');
      socket.end();
      return;
    }
    this.registry.accept(owner, accepted.clientToken);
    this.sockets.add(socket);
    socket.setKeepAlive(true, KEEPALIVE_DELAY_MS);
    socket.setNoDelay(true);
    socket.once('close', () => this.sockets.delete(socket));
    const tunnelId = owner.tunnel.tunnelId;
    let link = this.links.get(tunnelId);
    if (!link) {
      link = new TunnelLink(owner.tunnel, (peer) => this.onPeerGone(peer));
      this.links.set(tunnelId, link);
    }
    const log = this.log.fork(`tunnel ${tunnelId} ${mode}`);
    const replacing = link.peers[mode] !== undefined;
    log.info(`${replacing ? 'reconnected, replacing the previous connection' : 'connected'} (channel ${channelId}, ${accepted.subprotocol}, from ${socket.remoteAddress})`);
    const peer = link.attach({ ws, socket, mode, version: accepted.version, channelId, log, extensions: accepted.extensions });
    peer.answerPings = this.faults.answerPings;
  }

  private onPeerGone(peer: Peer): void {
    const link = peer.link;
    if (link.tunnel.status === 'OPEN') this.registry.setConnected({ tunnel: link.tunnel, mode: peer.mode }, false);
    if (!link.peers.source && !link.peers.destination && this.links.get(link.tunnel.tunnelId) === link) this.links.delete(link.tunnel.tunnelId);
  }

  private onTunnelClosed(tunnel: TunnelRecord, reason: string): void {
    this.log.info(`tunnel ${tunnel.tunnelId} closed: ${reason}`);
    tunnel.source.connected = false;
    tunnel.destination.connected = false;
    this.links.get(tunnel.tunnelId)?.closeAll(CLOSE_NORMAL, reason);
  }
}

/** Starts a relay; resolves once it listens. See docs/DESIGN.md for the contract. */
export async function startRelay(options: RelayOptions = {}): Promise<Relay> {
  const relay = new RelayServer(options);
  await relay.listen(options.port ?? DEFAULT_PORT);
  return relay;
}
