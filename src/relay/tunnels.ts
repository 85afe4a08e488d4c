/**
 * The tunnel registry: tunnels, their token hashes and client-token bindings, lifetimes,
 * and persistence to `--state FILE`. No sockets here; the server asks the registry who a
 * token belongs to and tells it when a handshake succeeded.
 *
 * Tokens are never stored: only their SHA-256 hashes, in memory and in the state file.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';

export type PeerMode = 'source' | 'destination';
export type ClientMode = 'SOURCE' | 'DESTINATION' | 'ALL';

/** The service's limits (AWS API reference, TimeoutConfig). */
export const MIN_LIFETIME_MINUTES = 1;
export const MAX_LIFETIME_MINUTES = 720;
/** The cloud allows 3 services per tunnel by default (raisable); a self-hosted relay allows a few more. */
export const MAX_SERVICES = 10;
const SERVICE_ID_PATTERN = /^[a-zA-Z0-9:_-]{1,128}$/;
/** Open tunnels at once; OpenTunnel beyond this fails with LimitExceededException. */
export const MAX_OPEN_TUNNELS = 10_000;
/** Closed tunnels stay describable (as the cloud's do) up to this many; the oldest are forgotten first. */
const MAX_CLOSED_TUNNELS = 1000;
const STATE_FORMAT = 1;

export interface EndpointState {
  tokenHash: string;
  /** Set by the first handshake that presented a client token. */
  clientTokenHash?: string;
  /** A handshake without a client token succeeded: the token is spent. */
  consumed: boolean;
  connected: boolean;
  lastUpdatedAt: number; // epoch ms
}

export interface TunnelRecord {
  tunnelId: string;
  tunnelArn: string;
  status: 'OPEN' | 'CLOSED';
  description?: string;
  thingName?: string;
  services: string[];
  lifetimeMinutes: number;
  createdAt: number; // epoch ms
  lastUpdatedAt: number;
  source: EndpointState;
  destination: EndpointState;
}

export class RegistryError extends Error {
  /** An AWS error type name, as the management API reports it (`__type`). */
  readonly type: 'ResourceNotFoundException' | 'ValidationException' | 'LimitExceededException';
  constructor(type: RegistryError['type'], message: string) {
    super(message);
    this.name = 'RegistryError';
    this.type = type;
  }
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

function newToken(): string {
  // Same alphabet family as the cloud's tokens (base64url), long enough to be unguessable.
  return 'AQG' + randomBytes(96).toString('base64url');
}

function newEndpoint(token: string, now: number): EndpointState {
  return { tokenHash: hashToken(token), consumed: false, connected: false, lastUpdatedAt: now };
}

export interface OpenTunnelRequest {
  services?: string[];
  lifetimeMinutes?: number;
  description?: string;
  thingName?: string;
}

export interface OpenedTunnel {
  tunnelId: string;
  tunnelArn: string;
  sourceAccessToken: string;
  destinationAccessToken: string;
}

export interface TokenOwner {
  tunnel: TunnelRecord;
  mode: PeerMode;
}

export interface RegistryOptions {
  statePath?: string;
  /** Called when a tunnel closes (CloseTunnel or lifetime expiry) so its peers can be closed. */
  onClosed?: (tunnel: TunnelRecord, reason: string) => void;
  /** Called when a token stops working (rotation) so a peer connected with it can be closed. */
  onTokenRevoked?: (tunnel: TunnelRecord, mode: PeerMode) => void;
  /**
   * The state file could not be written (disk full, directory gone), or can again (`ok`).
   * Called on each change, not on every failed write.
   */
  onSaveProblem?: (message: string, ok: boolean) => void;
  region?: string;
}

export class TunnelRegistry {
  private readonly tunnels = new Map<string, TunnelRecord>();
  private readonly byToken = new Map<string, TokenOwner>();
  private readonly expiryTimers = new Map<string, NodeJS.Timeout>();
  private readonly options: RegistryOptions;
  private disposed = false;
  private saveFailing = false;

  /** Throws (one line) when `statePath` cannot be read or written: the relay must not start then. */
  constructor(options: RegistryOptions = {}) {
    this.options = options;
    if (options.statePath) {
      if (existsSync(options.statePath)) this.load(options.statePath);
      // Found out now, not at the first OpenTunnel or connect.
      const problem = this.writeState(options.statePath);
      if (problem) throw new Error(problem);
    }
  }

  open(req: OpenTunnelRequest = {}): OpenedTunnel {
    if (this.byToken.size / 2 >= MAX_OPEN_TUNNELS) throw new RegistryError('LimitExceededException', `At most ${MAX_OPEN_TUNNELS} tunnels may be open at once`);
    const services = req.services ?? [];
    if (services.length > MAX_SERVICES) throw new RegistryError('LimitExceededException', `A tunnel may have at most ${MAX_SERVICES} services`);
    for (const id of services) {
      if (typeof id !== 'string' || !SERVICE_ID_PATTERN.test(id)) throw new RegistryError('ValidationException', `Invalid service id: ${JSON.stringify(id)} (1-128 characters of a-z A-Z 0-9 : _ -)`);
    }
    if (new Set(services).size !== services.length) throw new RegistryError('ValidationException', 'Duplicate service ids');
    const lifetime = req.lifetimeMinutes ?? MAX_LIFETIME_MINUTES;
    if (!Number.isInteger(lifetime) || lifetime < MIN_LIFETIME_MINUTES || lifetime > MAX_LIFETIME_MINUTES) {
      throw new RegistryError('ValidationException', `maxLifetimeTimeoutMinutes must be an integer from ${MIN_LIFETIME_MINUTES} to ${MAX_LIFETIME_MINUTES}`);
    }
    const now = Date.now();
    const tunnelId = randomUUID();
    const sourceAccessToken = newToken();
    const destinationAccessToken = newToken();
    const tunnel: TunnelRecord = {
      tunnelId,
      tunnelArn: `arn:aws:iot:${this.options.region ?? 'local'}:000000000000:tunnel/${tunnelId}`,
      status: 'OPEN',
      description: req.description,
      thingName: req.thingName,
      services: [...services],
      lifetimeMinutes: lifetime,
      createdAt: now,
      lastUpdatedAt: now,
      source: newEndpoint(sourceAccessToken, now),
      destination: newEndpoint(destinationAccessToken, now),
    };
    this.tunnels.set(tunnelId, tunnel);
    this.index(tunnel);
    this.armExpiry(tunnel);
    this.save();
    return { tunnelId, tunnelArn: tunnel.tunnelArn, sourceAccessToken, destinationAccessToken };
  }

  get(tunnelId: string): TunnelRecord {
    const tunnel = this.tunnels.get(tunnelId);
    if (!tunnel) throw new RegistryError('ResourceNotFoundException', `Tunnel ${tunnelId} not found`);
    return tunnel;
  }

  /** Newest first. */
  list(): TunnelRecord[] {
    return [...this.tunnels.values()].sort((a, b) => b.createdAt - a.createdAt);
  }

  close(tunnelId: string, options: { delete?: boolean } = {}, reason = 'tunnel closed'): void {
    const tunnel = this.get(tunnelId);
    if (tunnel.status === 'OPEN') {
      tunnel.status = 'CLOSED';
      tunnel.lastUpdatedAt = Date.now();
      this.unindex(tunnel);
      clearTimeout(this.expiryTimers.get(tunnelId));
      this.expiryTimers.delete(tunnelId);
      this.options.onClosed?.(tunnel, reason);
    }
    if (options.delete) this.tunnels.delete(tunnelId);
    this.forgetOldClosed();
    this.save();
  }

  rotate(tunnelId: string, mode: ClientMode): { sourceAccessToken?: string; destinationAccessToken?: string } {
    const tunnel = this.get(tunnelId);
    if (tunnel.status !== 'OPEN') throw new RegistryError('ValidationException', `Tunnel ${tunnelId} is closed`);
    if (mode !== 'SOURCE' && mode !== 'DESTINATION' && mode !== 'ALL') throw new RegistryError('ValidationException', `clientMode must be SOURCE, DESTINATION or ALL`);
    const out: { sourceAccessToken?: string; destinationAccessToken?: string } = {};
    const now = Date.now();
    const modes: PeerMode[] = mode === 'ALL' ? ['source', 'destination'] : [mode === 'SOURCE' ? 'source' : 'destination'];
    for (const peerMode of modes) {
      const token = newToken();
      this.byToken.delete(tunnel[peerMode].tokenHash);
      tunnel[peerMode] = newEndpoint(token, now);
      this.byToken.set(tunnel[peerMode].tokenHash, { tunnel, mode: peerMode });
      if (peerMode === 'source') out.sourceAccessToken = token;
      else out.destinationAccessToken = token;
    }
    tunnel.lastUpdatedAt = now;
    this.save();
    for (const peerMode of modes) this.options.onTokenRevoked?.(tunnel, peerMode);
    return out;
  }

  /** Who an access token belongs to (open tunnels only). */
  lookup(accessToken: string): TokenOwner | undefined {
    return this.byToken.get(hashToken(accessToken));
  }

  /**
   * The client-token rule of the protocol guide. Returns a refusal text, or undefined when
   * the handshake may proceed. Does not change state: call `accept` once the upgrade succeeded.
   */
  checkClientToken(owner: TokenOwner, clientToken: string | undefined): string | undefined {
    const endpoint = owner.tunnel[owner.mode];
    if (endpoint.consumed) return 'Invalid access token: The access token was previously used and cannot be used again';
    if (endpoint.clientTokenHash !== undefined && (clientToken === undefined || hashToken(clientToken) !== endpoint.clientTokenHash)) {
      return 'Invalid client token: The provided client token does not match the client token that was previously set.';
    }
    return undefined;
  }

  accept(owner: TokenOwner, clientToken: string | undefined): void {
    const endpoint = owner.tunnel[owner.mode];
    if (clientToken === undefined) endpoint.consumed = true;
    else endpoint.clientTokenHash ??= hashToken(clientToken);
    this.setConnected(owner, true);
    // The token's spent/bound state must survive a restart; connection states need not
    // (a restarted relay has no peers), so a disconnect alone does not write the file.
    this.save();
  }

  setConnected(owner: TokenOwner, connected: boolean): void {
    const endpoint = owner.tunnel[owner.mode];
    endpoint.connected = connected;
    endpoint.lastUpdatedAt = Date.now();
  }

  /** Stops expiry timers; the state file is already up to date. */
  dispose(): void {
    this.disposed = true;
    for (const timer of this.expiryTimers.values()) clearTimeout(timer);
    this.expiryTimers.clear();
  }

  private index(tunnel: TunnelRecord): void {
    this.byToken.set(tunnel.source.tokenHash, { tunnel, mode: 'source' });
    this.byToken.set(tunnel.destination.tokenHash, { tunnel, mode: 'destination' });
  }

  private unindex(tunnel: TunnelRecord): void {
    this.byToken.delete(tunnel.source.tokenHash);
    this.byToken.delete(tunnel.destination.tokenHash);
  }

  private armExpiry(tunnel: TunnelRecord): void {
    const remaining = tunnel.createdAt + tunnel.lifetimeMinutes * 60_000 - Date.now();
    const timer = setTimeout(() => {
      this.expiryTimers.delete(tunnel.tunnelId);
      if (this.tunnels.get(tunnel.tunnelId)?.status === 'OPEN') this.close(tunnel.tunnelId, {}, 'tunnel lifetime expired');
    }, Math.max(0, remaining));
    timer.unref();
    this.expiryTimers.set(tunnel.tunnelId, timer);
  }

  private forgetOldClosed(): void {
    const closed = [...this.tunnels.values()].filter((t) => t.status === 'CLOSED');
    if (closed.length <= MAX_CLOSED_TUNNELS) return;
    closed.sort((a, b) => a.lastUpdatedAt - b.lastUpdatedAt);
    for (const t of closed.slice(0, closed.length - MAX_CLOSED_TUNNELS)) this.tunnels.delete(t.tunnelId);
  }

  private load(path: string): void {
    let data: { format?: number; tunnels?: TunnelRecord[] };
    try {
      data = JSON.parse(readFileSync(path, 'utf8'));
    } catch (err) {
      throw new Error(`cannot read state file ${path}: ${(err as Error).message}`);
    }
    if (data.format !== STATE_FORMAT || !Array.isArray(data.tunnels)) throw new Error(`cannot read state file ${path}: not a localproxy relay state file (format ${STATE_FORMAT})`);
    for (const tunnel of data.tunnels) {
      // Nobody is connected to a freshly started relay.
      tunnel.source.connected = false;
      tunnel.destination.connected = false;
      this.tunnels.set(tunnel.tunnelId, tunnel);
      if (tunnel.status === 'OPEN') {
        this.index(tunnel);
        this.armExpiry(tunnel);
      }
    }
  }

  /**
   * Called from socket events and timers as well as the API: a failed write is reported,
   * never thrown, so a full disk cannot take the data plane down.
   */
  private save(): void {
    const path = this.options.statePath;
    if (!path || this.disposed) return;
    const problem = this.writeState(path);
    if (problem && !this.saveFailing) this.options.onSaveProblem?.(`${problem}; open tunnels will not survive a restart until it can be written`, false);
    else if (!problem && this.saveFailing) this.options.onSaveProblem?.(`state file ${path} written again`, true);
    this.saveFailing = problem !== undefined;
  }

  /** Writes the whole state atomically and durably; returns why it could not, or undefined. */
  private writeState(path: string): string | undefined {
    const text = JSON.stringify({ format: STATE_FORMAT, tunnels: [...this.tunnels.values()] }, null, 1);
    // Temp file + fsync + rename: a crash or power loss mid-write leaves the previous state intact.
    const tmp = `${path}.${process.pid}.tmp`;
    try {
      const fd = openSync(tmp, 'w', 0o600);
      try {
        writeSync(fd, text);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, path);
      return undefined;
    } catch (err) {
      try {
        unlinkSync(tmp);
      } catch {
        // Never created, or not ours to remove.
      }
      return `cannot write state file ${path}: ${(err as Error).message}`;
    }
  }
}
