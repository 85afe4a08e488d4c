/**
 * `startRelay`: one HTTP(S) server on one port for the WebSocket data plane (`/tunnel`),
 * the management API (`POST /`), `GET /health` and, on a node of a cluster, the bridges from
 * other nodes (`/cluster/bridge`, src/relay/cluster/).
 *
 * Exposed to anyone who can reach the port, it bounds every resource a client can hold
 * without credentials (limits.ts, guard.ts, http.ts): connections that never finish TLS or
 * never send a request, clients that ignore a refusal, request sizes and times.
 *
 * The server routes; its parts do the work: http.ts (the HTTP(S) server and its bounds),
 * upgrade.ts (a WebSocket upgrade, to a peer), links.ts (the tunnels' links and their peers),
 * api.ts (the management API), store/ (the tunnels), cluster/ (the other nodes).
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { ClientMode, DestinationConfig, OpenedTunnel, RotatedTokens } from '../api/model';
import { Logger } from '../log';
import { handleApiRequest, type Credentials } from './api';
import type { Clock } from './clock';
import { BRIDGE_PATH } from './cluster/auth';
import type { ClusterNode, ClusterOptions } from './cluster/node';
import type { SharedStore } from './cluster/shared';
import { NO_FAULTS, type RelayFaults } from './faults';
import type { ConnectionGuard } from './guard';
import { connectionGuard, httpServer, refuse, tlsMaterial } from './http';
import { resolveLimits, type RelayLimits } from './limits';
import type { PeerEvent } from './link';
import { LinkTable } from './links';
import type { TunnelNotifier } from './notify';
import type { TunnelDirectory } from './store/directory';
import { LocalDirectory } from './store/local';
import type { OpenTunnelRequest } from './store/rules';
import { Upgrades } from './upgrade';

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
   * Default true; false (`--no-pacing`) keeps a slow link full for bulk-only tunnels, at the cost
   * of seconds of delay for anything interactive behind the bulk.
   */
  pace?: boolean;
  /** Faults to inject, for tests of how proxies live through a failing service (faults.ts); none by default. */
  faults?: RelayFaults;
}

export type { PeerEvent } from './link';

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
  stats(): RelayStats;
  /** Resolves once every change so far is in the state file (at once without one); rejects if that write failed. */
  flush(): Promise<void>;
  close(): Promise<void>;
}

const DEFAULT_HOST = '127.0.0.1';
const DEFAULT_PORT = 8443;

function hostForUrl(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

class RelayServer implements Relay {
  url = '';
  host: string;
  port = 0;
  caPem?: string;
  readonly limits: RelayLimits;
  readonly tunnels: TunnelDirectory;
  readonly nodeId?: string;
  private readonly server: Server;
  private readonly secure: boolean;
  private readonly cluster?: ClusterNode;
  private readonly guard: ConnectionGuard;
  private readonly links: LinkTable;
  private readonly upgrades: Upgrades;
  private readonly log: Logger;
  private readonly credentials?: Credentials;
  private readonly notifier?: TunnelNotifier;

  constructor(options: RelayOptions, shared?: SharedStore) {
    this.log = options.log ?? new Logger();
    this.host = options.host ?? DEFAULT_HOST;
    this.credentials = options.credentials;
    this.notifier = options.notifier;
    if (options.bandwidth !== undefined && !(Number.isSafeInteger(options.bandwidth) && options.bandwidth >= 0)) {
      throw new RangeError(`bandwidth must be a whole number of bytes per second, got ${options.bandwidth}`);
    }
    this.limits = resolveLimits(options.limits);
    const faults = options.faults ?? NO_FAULTS;
    // Certificates before the state file: a bad certificate must not leave a rewritten state behind.
    const tls = tlsMaterial(options, this.log);
    this.secure = tls.secure;
    this.caPem = tls.caPem;
    this.tunnels = shared?.directory ?? this.localDirectory(options);
    this.links = new LinkTable({
      log: this.log,
      tunnels: this.tunnels,
      cluster: () => this.cluster,
      onEvent: options.onEvent,
      bandwidth: options.bandwidth || undefined,
      pace: options.pace !== false,
      faults,
    });
    this.guard = connectionGuard(this.limits, this.log);
    if (shared) {
      this.nodeId = shared.nodeId;
      this.cluster = shared.startNode({
        link: (tunnelId) => this.links.get(tunnelId),
        log: this.log,
        refuse: (socket, status, reason) => refuse(socket, status, reason, this.limits.lingerMs),
        promote: (socket) => this.guard.promote(socket),
      }, this.links.events, tls.cert);
    }
    this.upgrades = new Upgrades({ log: this.log, tunnels: this.tunnels, links: this.links, guard: this.guard, lingerMs: this.limits.lingerMs, faults });
    this.server = httpServer(tls, this.limits, this.guard, this.log, {
      request: (req, res) => this.onRequest(req, res),
      upgrade: (req, socket, head) => this.onUpgrade(req, socket, head),
    });
  }

  /** The single-node store, with its journal at `statePath`; the store's events go to the link table. */
  private localDirectory(options: RelayOptions): LocalDirectory {
    return new LocalDirectory({
      statePath: options.statePath,
      clock: options.clock,
      limits: this.limits,
      region: options.region,
      accountId: options.accountId,
      events: { onClosed: (id, reason) => this.links.events.onClosed(id, reason), onTokenRevoked: (id, mode, hash) => this.links.events.onTokenRevoked(id, mode, hash) },
      onSaveProblem: (message, ok) => (ok ? this.log.info(message) : this.log.error(message)),
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

  /** Also the management API's RotateTunnelAccessToken: the thing (as the destination config left it) learns the new destination token. */
  async rotateAccessToken(tunnelId: string, mode: ClientMode, destination?: DestinationConfig): Promise<RotatedTokens> {
    const tokens = await this.tunnels.rotate(tunnelId, mode, destination);
    if (tokens.destinationAccessToken) {
      const tunnel = await this.tunnels.get(tunnelId);
      if (tunnel.thingName) this.notifier?.notify(tunnel.thingName, tokens.destinationAccessToken, tunnel.services, tunnel.tunnelId);
    }
    return tokens;
  }

  flush(): Promise<void> {
    return this.tunnels.flush();
  }

  stats(): RelayStats {
    const bridges = this.cluster?.bridgeCount ?? 0;
    const peers = this.links.peerCount;
    return { connections: this.guard.pendingCount + peers + bridges, pending: this.guard.pendingCount, peers, openTunnels: this.tunnels.openTunnels(), bridges };
  }

  /** Stops serving; peers are dropped without a close frame, so that proxies reconnect (links.ts). */
  async close(): Promise<void> {
    const dropped = this.links.dropPeers();
    if (dropped > 0) this.log.info(`relay closing: dropping ${dropped} peer connection(s)`);
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
      else this.upgrades.upgrade(req, socket, head).catch(failed);
    } catch (err) {
      failed(err);
    }
  }
}

/** Starts a relay; resolves once it listens. See docs/DESIGN.md for the contract. */
export async function startRelay(options: RelayOptions = {}): Promise<Relay> {
  let shared: SharedStore | undefined;
  if (options.store) {
    const { sharedStore } = await import('./cluster/shared');
    shared = sharedStore({ ...options, store: options.store, log: options.log ?? new Logger(), limits: resolveLimits(options.limits) });
  }
  const relay = new RelayServer(options, shared);
  try {
    await relay.listen(options.port ?? DEFAULT_PORT);
  } catch (err) {
    await relay.close().catch(() => {});
    throw err;
  }
  return relay;
}
