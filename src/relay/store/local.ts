/**
 * The single-node store: the tunnels in memory, kept in the `--state` journal (journal.ts) when
 * there is one. Tunnels, their token hashes and client-token bindings, lifetimes, tags and
 * quotas live here; no sockets. Every operation changes the memory at once, in one step, and
 * hands the journal the record it changed; its promise resolves once that is on disk.
 *
 * Tunnels are opened in `open()` and their tokens replaced in `rotate()`: the two places where
 * a destination learns (or relearns) a token. Tokens are never stored: only their SHA-256
 * hashes, in memory and in the state file.
 */
import type { ClientMode, DestinationConfig, OpenedTunnel, RotatedTokens, Tag } from '../../api/model';
import { systemClock, type Clock, type ClockTimer } from '../clock';
import { defaultLimits, type RelayLimits } from '../limits';
import type { Authorized, DirectoryEvents, ListPosition, Refusal, TunnelDirectory, TunnelPage } from './directory';
import { Journal } from './journal';
import type { PeerMode, TunnelRecord } from './record';
import {
  clientTokenRefusal, createTunnel, DEFAULT_ACCOUNT_ID, DEFAULT_REGION, expiresAt, hashToken, mergeTags, OperationError, removeTags, rotatedModes,
  rotateTunnel, spendToken, type OpenTunnelRequest,
} from './rules';

/** Said to a peer whose handshake was accepted while its tunnel closed or its token was rotated. */
export const GONE_MEANWHILE = 'the tunnel closed or its token was rotated meanwhile';

export interface LocalDirectoryOptions {
  statePath?: string;
  clock?: Clock;
  limits?: Pick<RelayLimits, 'maxOpenTunnels' | 'maxClosedTunnels' | 'maxServicesPerTunnel'>;
  /** For ARNs; without it, the region of the request (SigV4 scope), else `local`. */
  region?: string;
  /** For ARNs (default 000000000000). */
  accountId?: string;
  /** A tunnel closed (CloseTunnel, lifetime), a token stopped working (rotation): its peers are closed. */
  events?: DirectoryEvents;
  /** The state file could not be written (`ok` false), or can again (`ok` true); once per change. */
  onSaveProblem?: (message: string, ok: boolean) => void;
}

interface TokenOwner {
  tunnel: TunnelRecord;
  mode: PeerMode;
}

export class LocalDirectory implements TunnelDirectory {
  private readonly tunnels = new Map<string, TunnelRecord>();
  private readonly byToken = new Map<string, TokenOwner>();
  private readonly byArn = new Map<string, TunnelRecord>();
  /** Closed tunnels, oldest closed first (Map order). */
  private readonly closedOrder = new Map<string, true>();
  private readonly expiryTimers = new Map<string, ClockTimer>();
  private readonly options: LocalDirectoryOptions;
  private readonly clock: Clock;
  private readonly limits: NonNullable<LocalDirectoryOptions['limits']>;
  private readonly journal?: Journal;
  private openCount = 0;
  private lastWrite: Promise<void> = Promise.resolve();
  private disposed = false;

  /** Throws a one-line StateFileError when the state cannot be read or written: the relay must not start then. */
  constructor(options: LocalDirectoryOptions = {}) {
    this.options = options;
    this.clock = options.clock ?? systemClock;
    this.limits = options.limits ?? defaultLimits();
    if (options.statePath) {
      const journal = new Journal(options.statePath, { snapshot: () => [...this.tunnels.values()], onProblem: options.onSaveProblem });
      this.journal = journal;
      this.restore(journal.load());
      // A file that cannot be written is found out now, not at the first OpenTunnel or connect.
      journal.openNow();
    }
  }

  health(): { ready: boolean } {
    return { ready: true };
  }

  /** Opens a tunnel. `region`: the request's, used in the ARN unless the relay has its own. */
  async open(req: OpenTunnelRequest = {}, region?: string): Promise<OpenedTunnel> {
    if (this.openCount >= this.limits.maxOpenTunnels) throw new OperationError('LimitExceededException', `At most ${this.limits.maxOpenTunnels} tunnels may be open at once`);
    const { tunnel, opened } = createTunnel(req, {
      now: this.clock.now(),
      region: this.options.region ?? region ?? DEFAULT_REGION,
      accountId: this.options.accountId ?? DEFAULT_ACCOUNT_ID,
      maxServices: this.limits.maxServicesPerTunnel,
    });
    this.add(tunnel);
    this.persist(tunnel);
    try {
      await this.lastWrite;
    } catch (err) {
      // Nobody will ever hold these tokens: the tunnel is taken back rather than left unknown.
      this.discard(opened.tunnelId);
      throw err;
    }
    return opened;
  }

  async get(tunnelId: string): Promise<TunnelRecord> {
    return this.find(tunnelId);
  }

  async getByArn(arn: string): Promise<TunnelRecord> {
    return this.findByArn(arn);
  }

  async list(filter: { thingName?: string; after?: ListPosition; max: number }): Promise<TunnelPage> {
    // Newest first, ties by id ascending (stable paging).
    const all = [...this.tunnels.values()].filter((t) => filter.thingName === undefined || t.thingName === filter.thingName);
    all.sort((a, b) => b.createdAt - a.createdAt || (a.tunnelId < b.tunnelId ? -1 : a.tunnelId > b.tunnelId ? 1 : 0));
    const after = filter.after;
    // Skip everything up to and including the position's tunnel.
    let start = 0;
    if (after) {
      start = all.findIndex((t) => t.createdAt < after.createdAt || (t.createdAt === after.createdAt && t.tunnelId > after.tunnelId));
      if (start < 0) start = all.length;
    }
    const tunnels = all.slice(start, start + filter.max);
    const last = tunnels[tunnels.length - 1];
    return { tunnels, ...(start + filter.max < all.length && last ? { next: { createdAt: last.createdAt, tunnelId: last.tunnelId } } : {}) };
  }

  async close(tunnelId: string, options: { delete?: boolean } = {}): Promise<void> {
    this.closeNow(tunnelId, options, 'tunnel closed');
    await this.lastWrite;
  }

  /**
   * New tokens for `mode`; the old ones stop working and their peers are disconnected. With a
   * destination config (not for SOURCE, as in the cloud) the services and thing name are
   * replaced; the next SERVICE_IDS carries them.
   */
  async rotate(tunnelId: string, mode: ClientMode, destination?: DestinationConfig): Promise<RotatedTokens> {
    const tunnel = this.find(tunnelId);
    const oldHashes = rotatedModes(mode).map((m) => tunnel[m]?.tokenHash);
    const tokens = rotateTunnel(tunnel, mode, destination, this.clock.now(), this.limits.maxServicesPerTunnel);
    for (const hash of oldHashes) this.byToken.delete(hash);
    for (const peerMode of rotatedModes(mode)) this.byToken.set(tunnel[peerMode].tokenHash, { tunnel, mode: peerMode });
    this.persist(tunnel);
    for (const peerMode of rotatedModes(mode)) this.options.events?.onTokenRevoked(tunnel.tunnelId, peerMode);
    await this.lastWrite;
    return tokens;
  }

  /** Adds tags or replaces the values of existing keys. */
  async tag(arn: string, tags: Tag[]): Promise<void> {
    const tunnel = this.findByArn(arn);
    tunnel.tags = mergeTags(tunnel.tags, tags);
    this.persist(tunnel);
    await this.lastWrite;
  }

  async untag(arn: string, keys: string[]): Promise<void> {
    const tunnel = this.findByArn(arn);
    tunnel.tags = removeTags(tunnel.tags, keys);
    this.persist(tunnel);
    await this.lastWrite;
  }

  openTunnels(): number {
    return this.openCount;
  }

  async authorize(accessToken: string, mode: PeerMode, clientToken: string | undefined): Promise<Authorized | Refusal> {
    const owner = this.byToken.get(hashToken(accessToken));
    if (!owner) return { status: 403, reason: 'Invalid access token' };
    if (owner.mode !== mode) return { status: 400, reason: `Invalid access token: the token is for local-proxy-mode=${owner.mode}, not ${mode}` };
    const refused = clientTokenRefusal(owner.tunnel[owner.mode], clientToken);
    if (refused) return { status: 400, reason: refused };
    return { tunnel: owner.tunnel, mode, tokenHash: hashToken(accessToken) };
  }

  async accept(auth: Authorized, clientToken: string | undefined): Promise<TunnelRecord | Refusal> {
    const tunnel = auth.tunnel;
    // The tunnel may have closed or the token rotated while the upgrade completed.
    if (tunnel.status !== 'OPEN' || tunnel[auth.mode].tokenHash !== auth.tokenHash) return { status: 410, reason: GONE_MEANWHILE };
    const endpoint = tunnel[auth.mode];
    const refused = clientTokenRefusal(endpoint, clientToken);
    if (refused) return { status: 400, reason: refused };
    const changed = spendToken(endpoint, clientToken);
    this.connected(endpoint, true);
    // The token's spent/bound state must survive a restart; connection states need not (a
    // restarted relay has no peers), so only a change of the token's state is written.
    if (changed) this.persist(tunnel);
    return tunnel;
  }

  setConnected(tunnelId: string, mode: PeerMode, connected: boolean): void {
    // Forgotten meanwhile (CloseTunnel with delete): nothing to record.
    const tunnel = this.tunnels.get(tunnelId);
    if (tunnel?.status === 'OPEN') this.connected(tunnel[mode], connected);
  }

  /** Resolves once every change made so far is on disk; rejects when the write carrying the last one failed. */
  flush(): Promise<void> {
    return this.lastWrite;
  }

  /** Stops expiry timers and waits for pending writes. */
  async dispose(): Promise<void> {
    this.disposed = true;
    for (const timer of this.expiryTimers.values()) timer.cancel();
    this.expiryTimers.clear();
    await this.journal?.close();
  }

  private find(tunnelId: string): TunnelRecord {
    const tunnel = this.tunnels.get(tunnelId);
    if (!tunnel) throw new OperationError('ResourceNotFoundException', `Tunnel ${tunnelId} not found`);
    return tunnel;
  }

  /** The tunnel an ARN names (TagResource and friends). */
  private findByArn(arn: string): TunnelRecord {
    const tunnel = this.byArn.get(arn);
    if (!tunnel) throw new OperationError('ResourceNotFoundException', `Resource ${arn} not found`);
    return tunnel;
  }

  private connected(endpoint: TunnelRecord['source'], connected: boolean): void {
    endpoint.connected = connected;
    endpoint.lastUpdatedAt = this.clock.now();
  }

  private closeNow(tunnelId: string, options: { delete?: boolean }, reason: string): void {
    const tunnel = this.find(tunnelId);
    if (tunnel.status === 'OPEN') {
      tunnel.status = 'CLOSED';
      tunnel.lastUpdatedAt = this.clock.now();
      this.openCount--;
      this.unindex(tunnel);
      this.expiryTimers.get(tunnelId)?.cancel();
      this.expiryTimers.delete(tunnelId);
      this.closedOrder.set(tunnelId, true);
      this.options.events?.onClosed(tunnelId, reason);
    }
    if (options.delete) this.forget(tunnelId);
    else this.persist(tunnel);
    this.forgetOldClosed();
  }

  /**
   * Takes back an open whose state could not be written: the API refused it, so no client
   * holds its tokens. Unlike a close, nobody is told.
   */
  private discard(tunnelId: string): void {
    const tunnel = this.tunnels.get(tunnelId);
    if (!tunnel) return;
    if (tunnel.status === 'OPEN') {
      this.openCount--;
      this.unindex(tunnel);
      this.expiryTimers.get(tunnelId)?.cancel();
      this.expiryTimers.delete(tunnelId);
    }
    this.forget(tunnelId);
  }

  private persist(tunnel: TunnelRecord): void {
    if (!this.journal || this.disposed) return;
    this.track(this.journal.put(tunnel));
  }

  private forget(tunnelId: string): void {
    const tunnel = this.tunnels.get(tunnelId);
    if (!tunnel) return;
    this.tunnels.delete(tunnelId);
    this.byArn.delete(tunnel.tunnelArn);
    this.closedOrder.delete(tunnelId);
    if (this.journal && !this.disposed) this.track(this.journal.delete(tunnelId));
  }

  /** The journal reports failures itself; `lastWrite` hands the outcome of the last write to whoever waits. */
  private track(write: Promise<void>): void {
    write.catch(() => {});
    this.lastWrite = write;
  }

  private restore(records: TunnelRecord[]): void {
    const closed = records.filter((t) => t.status === 'CLOSED').sort((a, b) => a.lastUpdatedAt - b.lastUpdatedAt);
    for (const tunnel of records.filter((t) => t.status === 'OPEN')) this.add(tunnel);
    for (const tunnel of closed) {
      this.tunnels.set(tunnel.tunnelId, tunnel);
      this.byArn.set(tunnel.tunnelArn, tunnel);
      this.closedOrder.set(tunnel.tunnelId, true);
    }
    this.forgetOldClosed();
  }

  /** An open tunnel enters the maps and its lifetime starts counting. */
  private add(tunnel: TunnelRecord): void {
    this.tunnels.set(tunnel.tunnelId, tunnel);
    this.byArn.set(tunnel.tunnelArn, tunnel);
    this.byToken.set(tunnel.source.tokenHash, { tunnel, mode: 'source' });
    this.byToken.set(tunnel.destination.tokenHash, { tunnel, mode: 'destination' });
    this.openCount++;
    const remaining = expiresAt(tunnel) - this.clock.now();
    this.expiryTimers.set(tunnel.tunnelId, this.clock.setTimer(() => {
      this.expiryTimers.delete(tunnel.tunnelId);
      if (this.tunnels.get(tunnel.tunnelId)?.status === 'OPEN') this.closeNow(tunnel.tunnelId, {}, 'tunnel lifetime expired');
    }, Math.max(0, remaining)));
  }

  private unindex(tunnel: TunnelRecord): void {
    this.byToken.delete(tunnel.source.tokenHash);
    this.byToken.delete(tunnel.destination.tokenHash);
  }

  private forgetOldClosed(): void {
    for (const tunnelId of this.closedOrder.keys()) {
      if (this.closedOrder.size <= this.limits.maxClosedTunnels) break;
      this.forget(tunnelId);
    }
  }
}
