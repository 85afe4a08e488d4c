/**
 * `startRelay`: one HTTP(S) server on one port for the WebSocket data plane (`/tunnel`),
 * the management API (`POST /`), `GET /health` and, on a node of a cluster, the bridges from
 * other nodes (`/cluster/bridge`, src/relay/cluster/).
 *
 * Exposed to anyone who can reach the port, it bounds every resource a client can hold
 * without credentials (limits.ts, guard.ts): connections that never finish TLS or never send
 * a request, clients that ignore a refusal, request sizes and times.
 */
import { randomUUID } from 'node:crypto';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { rootCertificates, type TLSSocket } from 'node:tls';
import { WebSocketServer, type WebSocket } from 'ws';
import { Logger, LogLevel } from '../log';
import { CLOSE_NORMAL, MAX_WS_MESSAGE_BYTES } from '../protocol/constants';
import { EXTENSIONS_HEADER } from '../protocol/extension';
import { handleApiRequest, type Credentials } from './api';
import { checkKeyPair, generateSelfSigned, loadOrCreateSelfSigned } from './certs';
import type { Clock } from './clock';
import { BRIDGE_PATH } from './cluster/auth';
import type { ClusterNode, ClusterOptions } from './cluster/node';
import { RelayConfigError } from './errors';
import { CLOSE_POLICY, fitCloseReason, TunnelLink, type LinkEnd, type PeerEvent } from './link';
import { Peer } from './peer';
import { ConnectionGuard, endGracefully } from './guard';
import { checkHandshake, isRefusal, type Accepted } from './handshake';
import type { TunnelNotifier } from './notify';
import { resolveLimits, type RelayLimits } from './limits';
import { StoreUnavailableError, type DirectoryEvents, type TunnelDirectory } from './store/directory';
import type { LeaseStore } from './store/leases';
import { GONE_MEANWHILE, LocalDirectory } from './store/local';
import type { PeerMode } from './store/record';
import type { OpenTunnelRequest } from './store/rules';
import type { ClientMode, DestinationConfig, OpenedTunnel, RotatedTokens } from '../api/model';

export interface RelayOptions {
  host?: string;
  port?: number;
  /** `certFile`/`keyFile` only name the files in error messages. */
  tls?: { cert: string; key: string; certFile?: string; keyFile?: string } | 'self-signed' | 'plain';
  /** `--tls-self-signed DIR`: load or create the certificate there (implies TLS). */
  selfSignedDir?: string;
  /** `--tls-name`: DNS names and IP addresses the self-signed certificate names besides localhost. */
  tlsNames?: string[];
  statePath?: string;
  /**
   * Instead of `statePath`: the tunnels in Redis, shared by the nodes of a cluster (`--store`);
   * needs `cluster`. The Redis client is loaded only then.
   */
  store?: { url: string; password?: string; ca?: string };
  /** This relay as a node of a cluster (with `store`): how other nodes reach it, the shared secret. */
  cluster?: ClusterOptions & { nodeId?: string };
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
  /**
   * `--bandwidth`: bytes per second each direction of every tunnel may carry, as the cloud
   * limits a tunnel (src/relay/bandwidth.ts). Undefined or 0: unlimited.
   */
  bandwidth?: number;
  /**
   * Pace what is sent to each peer that declared a localproxy extension, and let its
   * connections' frames pass one another by the scheduler's rule (src/relay/paced.ts).
   * Default true; `--no-pacing` turns it off.
   */
  pace?: boolean;
}

export type { PeerEvent } from './link';

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
  /** Bridges to and from other nodes of a cluster. */
  bridges: number;
}

export interface Relay {
  url: string;
  host: string;
  port: number;
  caPem?: string;
  readonly limits: RelayLimits;
  /** The tunnels, whichever the store: every operation asynchronous and atomic. */
  readonly tunnels: TunnelDirectory;
  /** This node's id in a cluster (with `store`). */
  readonly nodeId?: string;
  /**
   * OpenTunnel, CloseTunnel and RotateTunnelAccessToken in process (tests, embedding), as the
   * management API runs them, whichever the store: each resolves once the store has the change.
   * Opening logs the tunnel and notifies its thing.
   */
  openTunnel(req?: OpenTunnelRequest): Promise<OpenedTunnel>;
  closeTunnel(tunnelId: string, options?: { delete?: boolean }): Promise<void>;
  /**
   * `destination` (not with SOURCE): RotateTunnelAccessToken's destinationConfig, which replaces
   * the tunnel's services and thing name; the thing is notified of the new destination token.
   */
  rotateAccessToken(tunnelId: string, mode: ClientMode, destination?: DestinationConfig): Promise<RotatedTokens>;
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
  readonly tunnels: TunnelDirectory;
  private readonly cluster?: ClusterNode;
  readonly nodeId?: string;
  /** The certificate served (PEM), trusted by default when dialing other nodes. */
  certPem?: string;
  /** The access token hash each local peer connected with (a rotation closes only those with the old one). */
  private readonly peerTokens = new WeakMap<Peer, string>();
  private readonly guard: ConnectionGuard;
  private readonly links = new Map<string, TunnelLink>();
  private readonly peerSockets = new Set<Socket>();
  /** TLS sockets whose handshake finished: only those can carry an HTTP answer. */
  private readonly secured = new WeakSet<Socket>();
  private readonly log: Logger;
  private readonly credentials?: Credentials;
  private readonly onEvent?: (event: PeerEvent) => void;
  private readonly notifier?: TunnelNotifier;
  private readonly bandwidth?: number;
  private readonly pace: boolean;
  private faults: { reject?: { status: number; count: number }; answerPings: boolean } = { answerPings: true };
  private readonly peerFaults = { rejectUpgrade: () => undefined, answerPings: () => this.faults.answerPings };

  constructor(options: RelayOptions, shared?: SharedStore) {
    this.log = options.log ?? new Logger();
    this.host = options.host ?? DEFAULT_HOST;
    this.credentials = options.credentials;
    this.onEvent = options.onEvent;
    this.notifier = options.notifier;
    if (options.bandwidth !== undefined && !(Number.isSafeInteger(options.bandwidth) && options.bandwidth >= 0)) {
      throw new RangeError(`bandwidth must be a whole number of bytes per second, got ${options.bandwidth}`);
    }
    this.bandwidth = options.bandwidth || undefined;
    this.pace = options.pace !== false;
    this.limits = resolveLimits(options.limits);
    const limits = this.limits;
    let tls = options.tls ?? 'self-signed';
    if (options.selfSignedDir) tls = 'self-signed';
    this.secure = tls !== 'plain';
    // Certificates before the state file: a bad certificate must not leave a rewritten state behind.
    let cert: string | undefined;
    let key: string | undefined;
    if (tls === 'self-signed') {
      const generated = options.selfSignedDir
        ? loadOrCreateSelfSigned(options.selfSignedDir, { names: options.tlsNames, log: this.log })
        : generateSelfSigned(new Date(), options.tlsNames);
      cert = generated.certPem;
      key = generated.keyPem;
      this.caPem = cert;
    } else if (tls !== 'plain') {
      checkKeyPair(tls.cert, tls.key, tls.certFile ?? 'the TLS certificate', tls.keyFile ?? 'the TLS private key');
      cert = tls.cert;
      key = tls.key;
    }
    this.certPem = cert;
    const events: DirectoryEvents = {
      onClosed: (tunnelId, reason) => this.onTunnelClosed(tunnelId, reason),
      onTokenRevoked: (tunnelId, mode, oldTokenHash) => this.onTokenRevoked(tunnelId, mode, oldTokenHash),
    };
    if (shared) {
      this.tunnels = shared.directory;
      this.nodeId = shared.peers.nodeId;
      this.cluster = shared.cluster(this, events);
    } else {
      this.tunnels = new LocalDirectory({
        statePath: options.statePath,
        clock: options.clock,
        limits,
        region: options.region,
        accountId: options.accountId,
        events,
        onSaveProblem: (message, ok) => (ok ? this.log.info(message) : this.log.error(message)),
      });
    }
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

  /** Also the management API's OpenTunnel (`region`: the request's): answered once the store has it. */
  async openTunnel(req: OpenTunnelRequest = {}, region?: string): Promise<OpenedTunnel> {
    const opened = await this.tunnels.open(req, region);
    this.log.info(`tunnel ${opened.tunnelId} opened (services: ${(req.services ?? []).join(',') || 'none'})`);
    if (req.thingName) this.notifier?.notify(req.thingName, opened.destinationAccessToken, req.services ?? [], opened.tunnelId);
    return opened;
  }

  closeTunnel(tunnelId: string, options?: { delete?: boolean }): Promise<void> {
    return this.tunnels.close(tunnelId, options);
  }

  /** Also the management API's RotateTunnelAccessToken: answered once the store has it; the thing (as the destination config left it) learns the new destination token. */
  async rotateAccessToken(tunnelId: string, mode: ClientMode, destination?: DestinationConfig): Promise<RotatedTokens> {
    const tokens = await this.tunnels.rotate(tunnelId, mode, destination);
    if (tokens.destinationAccessToken) {
      const tunnel = await this.tunnels.get(tunnelId);
      if (tunnel.thingName) this.notifier?.notify(tunnel.thingName, tokens.destinationAccessToken, tunnel.services, tunnel.tunnelId);
    }
    return tokens;
  }

  setFaults(faults: RelayFaults): void {
    if (faults.rejectHandshakes) this.faults.reject = { ...faults.rejectHandshakes };
    if (faults.answerPings !== undefined) this.faults.answerPings = faults.answerPings;
  }

  flush(): Promise<void> {
    return this.tunnels.flush();
  }

  stats(): RelayStats {
    const bridges = this.cluster?.bridgeCount ?? 0;
    return { connections: this.guard.pendingCount + this.peerSockets.size + bridges, pending: this.guard.pendingCount, peers: this.peerSockets.size, openTunnels: this.tunnels.openTunnels(), bridges };
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
    await this.cluster?.close();
    this.links.clear();
    this.guard.destroyAll();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
    await this.tunnels.dispose();
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && path === '/health') {
      // Not ready while the shared store is unreachable: a load balancer sends newcomers elsewhere.
      const health = this.tunnels.health();
      if (health.ready) res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      else res.writeHead(503, { 'content-type': 'text/plain; charset=utf-8' }).end(`not ready: ${health.reason ?? 'starting'}\n`);
      return;
    }
    if (req.method === 'POST' && path === '/') {
      void handleApiRequest(req, res, { directory: this.tunnels, credentials: this.credentials, log: this.log, relay: this, maxBodyBytes: this.limits.maxRequestBodyBytes });
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
    const failed = (err: unknown): void => {
      this.log.error(`internal error on an upgrade from ${socket.remoteAddress}: ${(err as Error)?.message ?? String(err)}`);
      socket.destroy();
    };
    try {
      const path = (req.url ?? '/').split('?')[0];
      if (this.cluster && path === BRIDGE_PATH) this.cluster.acceptBridge(req, socket, head).catch(failed);
      else this.upgrade(req, socket, head).catch(failed);
    } catch (err) {
      failed(err);
    }
  }

  linkOf(tunnelId: string): TunnelLink | undefined {
    return this.links.get(tunnelId);
  }

  promote(socket: Socket): void {
    this.guard.promote(socket);
  }

  refuse(socket: Socket, status: number, reason: string): void {
    endGracefully(socket, this.limits.lingerMs, refusal(status, reason));
  }

  private refuseUpgrade(socket: Socket, status: number, reason: string): void {
    this.log.limited(LogLevel.INFO, 'refused-upgrade', `refused upgrade from ${socket.remoteAddress}: HTTP ${status} ${reason}`);
    this.refuse(socket, status, reason);
  }

  private async upgrade(req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
    const reject = this.faults.reject;
    if (reject && reject.count > 0) {
      reject.count--;
      this.log.info(`refusing upgrade with HTTP ${reject.status} (injected fault)`);
      return this.refuse(socket, reject.status, 'Injected fault: handshake rejected');
    }
    const request = checkHandshake(req);
    if (isRefusal(request)) return this.refuseUpgrade(socket, request.status, request.reason);
    const health = this.tunnels.health();
    if (!health.ready) return this.refuseUpgrade(socket, 503, `Service unavailable: ${health.reason ?? 'starting'}`);
    let auth;
    try {
      auth = await this.tunnels.authorize(request.accessToken, request.mode, request.clientToken);
    } catch (err) {
      if (err instanceof StoreUnavailableError) return this.refuseUpgrade(socket, 503, 'Service unavailable: tunnel store unreachable');
      throw err;
    }
    if (isRefusal(auth)) return this.refuseUpgrade(socket, auth.status, auth.reason);
    if (socket.destroyed) return;
    const accepted: Accepted = { ...request, auth };
    const channelId = randomUUID();
    Object.assign(req, { accepted, channelId });
    let upgraded = false;
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      upgraded = true;
      // Nothing is read until the store has accepted the handshake (frames would find no listener).
      ws.pause();
      // An error before the peer exists (or after a refusal) must not go unhandled; Peer logs its own.
      ws.on('error', () => {});
      this.onConnected(ws, socket, accepted, channelId).catch((err: unknown) => {
        this.log.error(`internal error accepting a peer from ${socket.remoteAddress}: ${(err as Error)?.message ?? String(err)}`);
        socket.destroy();
      });
    });
    // ws answered with a refusal of its own and ended the socket: bound how long it may stay.
    if (!upgraded) endGracefully(socket, this.limits.lingerMs);
  }

  private async onConnected(ws: WebSocket, socket: Socket, accepted: Accepted, channelId: string): Promise<void> {
    const { mode, auth } = accepted;
    const tunnelId = auth.tunnel.tunnelId;
    let tunnel;
    try {
      tunnel = await this.tunnels.accept(auth, accepted.clientToken);
    } catch (err) {
      if (!(err instanceof StoreUnavailableError)) throw err;
      this.log.limited(LogLevel.WARNING, 'accept-store-down', `tunnel ${tunnelId} ${mode}: closing a connection just accepted: ${err.message}`);
      ws.close(1011, 'tunnel store unreachable');
      endGracefully(socket, this.limits.lingerMs);
      return;
    }
    if (isRefusal(tunnel)) {
      // The tunnel may have closed, the token been rotated or taken by another client meanwhile.
      this.log.info(`tunnel ${tunnelId} ${mode}: closing a connection just accepted: ${tunnel.reason}`);
      if (tunnel.reason === GONE_MEANWHILE || tunnel.status === 410) ws.close(CLOSE_NORMAL, 'tunnel closed');
      else ws.close(CLOSE_POLICY, fitCloseReason(tunnel.reason));
      endGracefully(socket, this.limits.lingerMs);
      return;
    }
    if (socket.destroyed || ws.readyState !== ws.OPEN) {
      // Gone while the store answered: it counts as connected and left at once.
      this.tunnels.setConnected(tunnelId, mode, false);
      return;
    }
    this.guard.promote(socket);
    this.peerSockets.add(socket);
    socket.setKeepAlive(true, KEEPALIVE_DELAY_MS);
    socket.setNoDelay(true);
    socket.once('close', () => this.peerSockets.delete(socket));
    let link = this.links.get(tunnelId);
    if (!link) {
      link = new TunnelLink(tunnel, (end) => this.onPeerGone(end));
      this.links.set(tunnelId, link);
    } else if (link.tunnel !== tunnel) {
      // From a shared store: the record as it is now (a rotation may have changed the services).
      Object.assign(link.tunnel, tunnel);
    }
    const log = this.log.fork(`tunnel ${tunnelId} ${mode}`);
    const previous = link.peers[mode];
    const replacing = previous !== undefined;
    log.info(`${replacing ? 'reconnected, replacing the previous connection' : 'connected'} (channel ${channelId}, ${accepted.subprotocol}, from ${socket.remoteAddress})`);
    if (previous instanceof Peer) this.cluster?.peerReplaced(previous);
    const peer = new Peer(link, { ws, socket, mode, version: accepted.version, channelId, log, extensions: accepted.extensions, onEvent: this.onEvent, bandwidth: this.bandwidth, pace: this.pace, faults: this.peerFaults });
    link.install(peer, `channel ${channelId}`);
    peer.start();
    this.peerTokens.set(peer, auth.tokenHash);
    ws.resume();
    this.cluster?.peerConnected(link, peer, auth.tokenHash);
    this.onEvent?.({ type: 'connected', tunnelId, mode, channelId, replacing });
  }

  private onPeerGone(end: LinkEnd): void {
    const link = (end as { link?: TunnelLink }).link;
    if (!link) return;
    if (end instanceof Peer) {
      if (this.cluster) this.cluster.peerGone(link, end);
      else if (link.tunnel.status === 'OPEN') this.tunnels.setConnected(link.tunnel.tunnelId, end.mode, false);
    }
    const local = [link.peers.source, link.peers.destination].some((p) => p instanceof Peer);
    if (!local && this.links.get(link.tunnel.tunnelId) === link) this.links.delete(link.tunnel.tunnelId);
  }

  private onTunnelClosed(tunnelId: string, reason: string): void {
    this.log.info(`tunnel ${tunnelId} closed: ${reason}`);
    const link = this.links.get(tunnelId);
    if (!link) return;
    link.tunnel.status = 'CLOSED';
    link.tunnel.source.connected = false;
    link.tunnel.destination.connected = false;
    link.closeAll(CLOSE_NORMAL, reason);
  }

  /** A rotation: the peer of `mode` connected with the old token (any, if not known) is closed. */
  private onTokenRevoked(tunnelId: string, mode: PeerMode, oldTokenHash?: string): void {
    const link = this.links.get(tunnelId);
    // A rotation may replace the services: the peer staying here checks its messages against the new ones,
    // as with the local store, where the link holds the registry's own record.
    if (link && this.cluster) {
      this.tunnels.get(tunnelId).then((fresh) => {
        link.tunnel.services = fresh.services;
      }, () => {});
    }
    const peer = link?.peers[mode];
    if (!(peer instanceof Peer) || peer.life !== 'open') return;
    if (oldTokenHash !== undefined && this.peerTokens.get(peer) !== oldTokenHash) return;
    peer.log.info('access token rotated: disconnecting');
    peer.close(CLOSE_NORMAL, 'access token rotated');
  }
}

/** Starts a relay; resolves once it listens. See docs/DESIGN.md for the contract. */
export async function startRelay(options: RelayOptions = {}): Promise<Relay> {
  const relay = new RelayServer(options, options.store ? await sharedStore(options) : undefined);
  try {
    await relay.listen(options.port ?? DEFAULT_PORT);
  } catch (err) {
    await relay.close().catch(() => {});
    throw err;
  }
  return relay;
}

/** A shared store and the cluster node built on it, for RelayServer. */
interface SharedStore {
  directory: TunnelDirectory;
  peers: LeaseStore;
  cluster(relay: RelayServer, events: DirectoryEvents): ClusterNode;
}

/**
 * The Redis store and this relay's cluster node. Loaded on demand: the Redis client is only
 * needed by `--store`, so the proxy and a single relay do not load it at start.
 */
async function sharedStore(options: RelayOptions): Promise<SharedStore> {
  const store = options.store!;
  const cluster = options.cluster;
  if (!cluster) throw new RelayConfigError('a relay with a shared store is a node of a cluster: it needs --node-url and the cluster secret');
  const [{ RedisDirectory }, { ClusterNode, DEFAULT_LEASE_MS }] = await Promise.all([import('./store/redis'), import('./cluster/node')]);
  const { systemClock } = await import('./clock');
  const nodeId = cluster.nodeId ?? `node-${randomUUID().slice(0, 8)}`;
  const log = options.log ?? new Logger();
  let events: DirectoryEvents | undefined;
  const directory = new RedisDirectory({
    url: store.url,
    password: store.password,
    ca: store.ca,
    log,
    clock: options.clock ?? systemClock,
    limits: resolveLimits(options.limits),
    region: options.region,
    accountId: options.accountId,
    // The server's handlers, once it exists (no event arrives before start()).
    events: {
      onClosed: (tunnelId, reason) => events?.onClosed(tunnelId, reason),
      onTokenRevoked: (tunnelId, mode, hash) => events?.onTokenRevoked(tunnelId, mode, hash),
    },
    nodeId,
    nodeUrl: cluster.nodeUrl,
    leaseMs: cluster.leaseMs ?? DEFAULT_LEASE_MS,
  });
  return {
    directory,
    peers: directory,
    cluster(relay, serverEvents) {
      events = serverEvents;
      const node = new ClusterNode(directory, {
        link: (tunnelId) => relay.linkOf(tunnelId),
        log,
        refuse: (socket, status, reason) => relay.refuse(socket, status, reason),
        promote: (socket) => relay.promote(socket),
      }, { ...cluster, ca: cluster.ca ?? (relay.certPem ? [...rootCertificates, relay.certPem] : undefined) });
      log.info(`cluster node ${nodeId}, reached by other nodes at ${cluster.nodeUrl}`);
      directory.start();
      return node;
    },
  };
}
