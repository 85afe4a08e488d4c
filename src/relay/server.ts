/**
 * `startRelay`: one HTTP(S) server on one port for the WebSocket data plane (`/tunnel`),
 * the management API (`POST /`) and `GET /health`.
 *
 * Exposed to anyone who can reach the port, it bounds every resource a client can hold
 * without credentials (limits.ts, guard.ts): connections that never finish TLS or never send
 * a request, clients that ignore a refusal, request sizes and times.
 */
import { randomUUID } from 'node:crypto';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { WebSocketServer, type WebSocket } from 'ws';
import { Logger, LogLevel } from '../log';
import { CLOSE_NORMAL, MAX_WS_MESSAGE_BYTES } from '../protocol/constants';
import { EXTENSIONS_HEADER } from '../protocol/extension';
import { handleApiRequest, type Credentials } from './api';
import { checkKeyPair, generateSelfSigned, loadOrCreateSelfSigned } from './certs';
import type { Clock } from './clock';
import { TunnelLink, type Peer, type PeerEvent } from './forward';
import { ConnectionGuard, endGracefully } from './guard';
import { checkHandshake, isRefusal, type Accepted } from './handshake';
import type { TunnelNotifier } from './notify';
import { resolveLimits, type RelayLimits } from './limits';
import { TunnelRegistry, type ClientMode, type OpenedTunnel, type OpenTunnelRequest, type RotatedTokens, type TunnelRecord } from './tunnels';

export interface RelayOptions {
  host?: string;
  port?: number;
  /** `certFile`/`keyFile` only name the files in error messages. */
  tls?: { cert: string; key: string; certFile?: string; keyFile?: string } | 'self-signed' | 'plain';
  /** `--tls-self-signed DIR`: load or create the certificate there (implies TLS). */
  selfSignedDir?: string;
  statePath?: string;
  credentials?: Credentials;
  log?: Logger;
  /** Over the defaults of limits.ts (which follow `ulimit -n`). */
  limits?: Partial<RelayLimits>;
  /** Tunnel time: timestamps and lifetimes (default: real time). */
  clock?: Clock;
  /** For tunnel ARNs; default: the region of each OpenTunnel request's signature. */
  region?: string;
  /** For tunnel ARNs (default 000000000000). */
  accountId?: string;
  /** Peers connecting, leaving, paused and resumed by flow control. */
  onEvent?: (event: PeerEvent) => void;
  /** Sends the destination token to the tunnel's thing on open and on rotation (src/relay/notify.ts). */
  notifier?: TunnelNotifier;
}

export type { PeerEvent } from './forward';

export interface RelayFaults {
  /** Answer the next `count` upgrades with `status` instead of accepting them. */
  rejectHandshakes?: { status: number; count: number };
  /** false: stop answering WebSocket pings (simulates a dead service). */
  answerPings?: boolean;
}

/** What the relay holds now (for monitoring and tests). */
export interface RelayStats {
  /** TCP connections of every kind. */
  connections: number;
  /** Connections that are not tunnel peers (TLS handshake, HTTP request, API calls). */
  pending: number;
  /** Connected tunnel peers. */
  peers: number;
  openTunnels: number;
}

export interface Relay {
  url: string;
  host: string;
  port: number;
  caPem?: string;
  readonly limits: RelayLimits;
  openTunnel(req?: OpenTunnelRequest): OpenedTunnel;
  closeTunnel(tunnelId: string, options?: { delete?: boolean }): void;
  /**
   * `destination` (not with SOURCE): RotateTunnelAccessToken's destinationConfig, which replaces
   * the tunnel's services and thing name; the thing is notified of the new destination token.
   */
  rotateAccessToken(tunnelId: string, mode: ClientMode, destination?: { services: string[]; thingName?: string }): RotatedTokens;
  setFaults(faults: RelayFaults): void;
  stats(): RelayStats;
  /** Resolves once every change so far is in the state file (at once without one); rejects if that write failed. */
  flush(): Promise<void>;
  close(): Promise<void>;
}

const DEFAULT_HOST = '127.0.0.1';
const DEFAULT_PORT = 8443;
/** TCP keepalive on peer sockets, so a peer that vanished without a FIN is noticed. */
const KEEPALIVE_DELAY_MS = 30_000;
/** How often Node checks the header and request timeouts (its default is 30 s). */
const TIMEOUT_CHECK_MS = 1000;
const STATUS_TEXT: Record<number, string> = { 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 408: 'Request Timeout', 429: 'Too Many Requests', 431: 'Request Header Fields Too Large', 500: 'Internal Server Error', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout' };

function refusal(status: number, reason: string): string {
  const body = `${reason}\n`;
  return `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
}

function hostForUrl(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

class RelayServer implements Relay {
  url = '';
  host: string;
  port = 0;
  caPem?: string;
  readonly limits: RelayLimits;
  readonly server: Server;
  private readonly secure: boolean;
  private readonly wss: WebSocketServer;
  private readonly registry: TunnelRegistry;
  private readonly guard: ConnectionGuard;
  private readonly links = new Map<string, TunnelLink>();
  private readonly peerSockets = new Set<Socket>();
  /** TLS sockets whose handshake finished: only those can carry an HTTP answer. */
  private readonly secured = new WeakSet<Socket>();
  private readonly log: Logger;
  private readonly credentials?: Credentials;
  private readonly onEvent?: (event: PeerEvent) => void;
  private readonly notifier?: TunnelNotifier;
  private faults: { reject?: { status: number; count: number }; answerPings: boolean } = { answerPings: true };

  constructor(options: RelayOptions) {
    this.log = options.log ?? new Logger();
    this.host = options.host ?? DEFAULT_HOST;
    this.credentials = options.credentials;
    this.onEvent = options.onEvent;
    this.notifier = options.notifier;
    this.limits = resolveLimits(options.limits);
    const limits = this.limits;
    let tls = options.tls ?? 'self-signed';
    if (options.selfSignedDir) tls = 'self-signed';
    this.secure = tls !== 'plain';
    // Certificates before the state file: a bad certificate must not leave a rewritten state behind.
    let cert: string | undefined;
    let key: string | undefined;
    if (tls === 'self-signed') {
      const generated = options.selfSignedDir ? loadOrCreateSelfSigned(options.selfSignedDir) : generateSelfSigned();
      cert = generated.certPem;
      key = generated.keyPem;
      this.caPem = cert;
    } else if (tls !== 'plain') {
      checkKeyPair(tls.cert, tls.key, tls.certFile ?? 'the TLS certificate', tls.keyFile ?? 'the TLS private key');
      cert = tls.cert;
      key = tls.key;
    }
    this.registry = new TunnelRegistry({
      statePath: options.statePath,
      clock: options.clock,
      limits,
      region: options.region,
      accountId: options.accountId,
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
    this.guard = new ConnectionGuard({
      maxPendingPerAddress: limits.maxPendingPerAddress,
      maxPendingConnections: limits.maxPendingConnections,
      lingerMs: limits.lingerMs,
      onRefused: (why, address) => this.log.limited(LogLevel.WARNING, `connection-${why}`, why === 'per-address'
        ? `refused a connection from ${address}: it already has ${limits.maxPendingPerAddress} connections that are not tunnel peers`
        : `dropped the oldest of ${limits.maxPendingConnections} connections that are not tunnel peers (from ${address}) to admit a new one`),
    });
    const onRequest = (req: IncomingMessage, res: ServerResponse) => this.onRequest(req, res);
    const httpOptions = {
      maxHeaderSize: limits.maxHeaderBytes,
      // Node requires headersTimeout <= requestTimeout.
      headersTimeout: Math.min(limits.headersTimeoutMs, limits.requestTimeoutMs),
      requestTimeout: limits.requestTimeoutMs,
      connectionsCheckingInterval: Math.min(TIMEOUT_CHECK_MS, limits.headersTimeoutMs, limits.requestTimeoutMs),
    };
    this.server = tls === 'plain'
      ? createHttpServer(httpOptions, onRequest)
      : createHttpsServer({ ...httpOptions, cert, key, minVersion: 'TLSv1.2', handshakeTimeout: limits.tlsHandshakeTimeoutMs }, onRequest);
    this.server.maxConnections = limits.maxConnections;
    // Node's own inactivity timeout: a connection that is not a peer and moves no byte is destroyed.
    this.server.timeout = limits.idleTimeoutMs;
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
    this.server.on('connection', (socket: Socket) => this.guard.admit(socket));
    this.server.on('drop', (data?: { remoteAddress?: string }) => {
      this.log.limited(LogLevel.WARNING, 'connection-limit', `refused a connection from ${data?.remoteAddress ?? 'an unknown address'}: ${limits.maxConnections} connections are open (maxConnections)`);
    });
    this.server.on('secureConnection', (socket: TLSSocket) => this.secured.add(socket));
    this.server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => this.onUpgrade(req, socket, head));
    this.server.on('clientError', (err: Error & { code?: string }, socket: Socket) => this.onClientError(err, socket));
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

  openTunnel(req?: OpenTunnelRequest, region?: string): OpenedTunnel {
    const opened = this.registry.open(req, region);
    this.log.info(`tunnel ${opened.tunnelId} opened (services: ${(req?.services ?? []).join(',') || 'none'})`);
    if (req?.thingName) this.notifier?.notify(req.thingName, opened.destinationAccessToken, req.services ?? []);
    return opened;
  }

  closeTunnel(tunnelId: string, options?: { delete?: boolean }): void {
    this.registry.close(tunnelId, options);
  }

  rotateAccessToken(tunnelId: string, mode: ClientMode, destination?: { services: string[]; thingName?: string }): RotatedTokens {
    const tokens = this.registry.rotate(tunnelId, mode, destination);
    // The thing (as the destination config left it) learns the new destination token.
    const tunnel = this.registry.get(tunnelId);
    if (tokens.destinationAccessToken && tunnel.thingName) this.notifier?.notify(tunnel.thingName, tokens.destinationAccessToken, tunnel.services);
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

  flush(): Promise<void> {
    return this.registry.durable();
  }

  stats(): RelayStats {
    return { connections: this.guard.pendingCount + this.peerSockets.size, pending: this.guard.pendingCount, peers: this.peerSockets.size, openTunnels: this.registry.openTunnels };
  }

  /**
   * Stops serving. Peer sockets are dropped without a close frame: a proxy takes a close
   * frame as "tunnel closed" and exits, while a dropped connection makes it reconnect —
   * which is what a relay restart with --state should look like.
   */
  async close(): Promise<void> {
    if (this.peerSockets.size > 0) this.log.info(`relay closing: dropping ${this.peerSockets.size} peer connection(s)`);
    for (const socket of this.peerSockets) socket.destroy();
    this.peerSockets.clear();
    this.links.clear();
    this.guard.destroyAll();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
    await this.registry.dispose();
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && path === '/health') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    if (req.method === 'POST' && path === '/') {
      void handleApiRequest(req, res, { registry: this.registry, credentials: this.credentials, log: this.log, relay: this, maxBodyBytes: this.limits.maxRequestBodyBytes });
      return;
    }
    const reason = path === '/tunnel' ? 'WebSocket upgrade required' : 'Not found';
    res.writeHead(path === '/tunnel' ? 400 : 404, { 'content-type': 'text/plain; charset=utf-8' }).end(`${reason}\n`);
  }

  /**
   * Node could not parse a request, or a timeout fired. A TLS socket whose handshake never
   * finished cannot carry an answer (the bytes would wait for that handshake forever): it is
   * destroyed. Otherwise the client gets a status line, and `lingerMs` to read it.
   */
  private onClientError(err: Error & { code?: string }, socket: Socket): void {
    const code = err.code ?? '';
    if (!socket.writable || (this.secure && !this.secured.has(socket)) || code === 'ECONNRESET' || code === 'EPIPE') {
      if (code === 'ERR_TLS_HANDSHAKE_TIMEOUT') this.log.limited(LogLevel.DEBUG, 'tls-timeout', `TLS handshake from ${socket.remoteAddress} not finished within ${this.limits.tlsHandshakeTimeoutMs} ms`);
      socket.destroy();
      return;
    }
    const [status, reason] = code === 'ERR_HTTP_REQUEST_TIMEOUT' ? [408, 'Request timeout']
      : code === 'HPE_HEADER_OVERFLOW' ? [431, 'Request headers too large']
      : [400, 'Bad request'];
    this.log.limited(LogLevel.DEBUG, 'client-error', `HTTP ${status} to ${socket.remoteAddress}: ${code || err.message}`);
    endGracefully(socket, this.limits.lingerMs, refusal(status, reason));
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

  private refuseUpgrade(socket: Socket, status: number, reason: string): void {
    endGracefully(socket, this.limits.lingerMs, refusal(status, reason));
  }

  private upgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const reject = this.faults.reject;
    if (reject && reject.count > 0) {
      reject.count--;
      this.log.info(`refusing upgrade with HTTP ${reject.status} (injected fault)`);
      return this.refuseUpgrade(socket, reject.status, 'Injected fault: handshake rejected');
    }
    const result = checkHandshake(req, this.registry);
    if (isRefusal(result)) {
      this.log.limited(LogLevel.INFO, 'refused-upgrade', `refused upgrade from ${socket.remoteAddress}: HTTP ${result.status} ${result.reason}`);
      return this.refuseUpgrade(socket, result.status, result.reason);
    }
    const channelId = randomUUID();
    const tokenHash = result.owner.tunnel[result.mode].tokenHash;
    Object.assign(req, { accepted: result, channelId });
    let upgraded = false;
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      upgraded = true;
      this.onConnected(ws, socket, result, channelId, tokenHash);
    });
    // ws answered with a refusal of its own and ended the socket: bound how long it may stay.
    if (!upgraded) endGracefully(socket, this.limits.lingerMs);
  }

  private onConnected(ws: WebSocket, socket: Socket, accepted: Accepted, channelId: string, tokenHash: string): void {
    const { owner, mode } = accepted;
    // The tunnel may have closed or the token rotated while the upgrade completed.
    if (owner.tunnel.status !== 'OPEN' || owner.tunnel[mode].tokenHash !== tokenHash) {
      this.log.info(`tunnel ${owner.tunnel.tunnelId} ${mode}: closing a connection just accepted: the tunnel closed or its token was rotated meanwhile`);
      ws.close(CLOSE_NORMAL, 'tunnel closed');
      endGracefully(socket, this.limits.lingerMs);
      return;
    }
    this.registry.accept(owner, accepted.clientToken);
    this.guard.promote(socket);
    this.peerSockets.add(socket);
    socket.setKeepAlive(true, KEEPALIVE_DELAY_MS);
    socket.setNoDelay(true);
    socket.once('close', () => this.peerSockets.delete(socket));
    const tunnelId = owner.tunnel.tunnelId;
    let link = this.links.get(tunnelId);
    if (!link) {
      link = new TunnelLink(owner.tunnel, (peer) => this.onPeerGone(peer));
      this.links.set(tunnelId, link);
    }
    const log = this.log.fork(`tunnel ${tunnelId} ${mode}`);
    const replacing = link.peers[mode] !== undefined;
    log.info(`${replacing ? 'reconnected, replacing the previous connection' : 'connected'} (channel ${channelId}, ${accepted.subprotocol}, from ${socket.remoteAddress})`);
    const peer = link.attach({ ws, socket, mode, version: accepted.version, channelId, log, extensions: accepted.extensions, onEvent: this.onEvent });
    peer.answerPings = this.faults.answerPings;
    this.onEvent?.({ type: 'connected', tunnelId, mode, channelId, replacing });
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
  try {
    await relay.listen(options.port ?? DEFAULT_PORT);
  } catch (err) {
    await relay.close().catch(() => {});
    throw err;
  }
  return relay;
}
