/**
 * The tunnel registry: tunnels, their token hashes and client-token bindings, lifetimes, tags
 * and quotas. No sockets here; the server asks the registry who a token belongs to and tells
 * it when a handshake succeeded. Every change is one call here, applied to the in-memory view
 * and handed to the store (`--state FILE`) as one record; `durable()` says when it is on disk.
 *
 * Tunnels are opened in `open()` and their tokens replaced in `rotate()`: the two places where
 * a destination learns (or relearns) a token.
 *
 * Tokens are never stored: only their SHA-256 hashes, in memory and in the state file.
 */
import { systemClock, type Clock, type ClockTimer } from './clock';
import { defaultLimits, type RelayLimits } from './limits';
import {
  clientTokenRefusal, createTunnel, expiresAt, hashToken, mergeTags, RegistryError, removeTags, rotatedModes, rotateTunnel, spendToken,
  type ClientMode, type DestinationConfig, type OpenedTunnel, type OpenTunnelRequest, type PeerMode, type RotatedTokens, type Tag, type TunnelRecord,
} from './record';
import { StateFile, type TunnelStore } from './state';

export { MAX_LIFETIME_MINUTES, MIN_LIFETIME_MINUTES, RegistryError, hashToken, partitionOf } from './record';
export type { ClientMode, DestinationConfig, EndpointState, OpenedTunnel, OpenTunnelRequest, PeerMode, RotatedTokens, Tag, TunnelRecord } from './record';

export interface TokenOwner {
  tunnel: TunnelRecord;
  mode: PeerMode;
}

export interface RegistryOptions {
  statePath?: string;
  /** Instead of `statePath`: any store (tests, or a shared store). */
  store?: TunnelStore;
  clock?: Clock;
  limits?: Pick<RelayLimits, 'maxOpenTunnels' | 'maxClosedTunnels' | 'maxServicesPerTunnel'>;
  /** For ARNs; without it, the region of the request (SigV4 scope), else `local`. */
  region?: string;
  /** For ARNs (default 000000000000). */
  accountId?: string;
  /** Called when a tunnel closes (CloseTunnel or lifetime expiry) so its peers can be closed. */
  onClosed?: (tunnel: TunnelRecord, reason: string) => void;
  /** Called when a token stops working (rotation) so a peer connected with it can be closed. */
  onTokenRevoked?: (tunnel: TunnelRecord, mode: PeerMode) => void;
  /** The state file could not be written (`ok` false), or can again (`ok` true); once per change. */
  onSaveProblem?: (message: string, ok: boolean) => void;
}

export const DEFAULT_ACCOUNT_ID = '000000000000';
const DEFAULT_REGION = 'local';

export class TunnelRegistry {
  private readonly tunnels = new Map<string, TunnelRecord>();
  private readonly byToken = new Map<string, TokenOwner>();
  private readonly byArn = new Map<string, TunnelRecord>();
  /** Closed tunnels, oldest closed first (Map order). */
  private readonly closedOrder = new Map<string, true>();
  private readonly expiryTimers = new Map<string, ClockTimer>();
  private readonly options: RegistryOptions;
  private readonly clock: Clock;
  private readonly limits: NonNullable<RegistryOptions['limits']>;
  private readonly store?: TunnelStore;
  private openCount = 0;
  private lastWrite: Promise<void> = Promise.resolve();
  private disposed = false;

  /** Throws a one-line StateFileError when the state cannot be read or written: the relay must not start then. */
  constructor(options: RegistryOptions = {}) {
    this.options = options;
    this.clock = options.clock ?? systemClock;
    this.limits = options.limits ?? defaultLimits();
    if (options.store) {
      this.store = options.store;
    } else if (options.statePath) {
      const file = new StateFile(options.statePath, { snapshot: () => this.snapshot(), onProblem: options.onSaveProblem });
      this.store = file;
      this.restore(file.load());
      // A file that cannot be written is found out now, not at the first OpenTunnel or connect.
      file.openNow();
      return;
    }
    if (this.store) this.restore(this.store.load());
  }

  /** Opens a tunnel. `region`: the request's, used in the ARN unless the relay has its own. */
  open(req: OpenTunnelRequest = {}, region?: string): OpenedTunnel {
    if (this.openCount >= this.limits.maxOpenTunnels) throw new RegistryError('LimitExceededException', `At most ${this.limits.maxOpenTunnels} tunnels may be open at once`);
    const { tunnel, opened } = createTunnel(req, {
      now: this.clock.now(),
      region: this.options.region ?? region ?? DEFAULT_REGION,
      accountId: this.options.accountId ?? DEFAULT_ACCOUNT_ID,
      maxServices: this.limits.maxServicesPerTunnel,
    });
    this.add(tunnel);
    this.persist(tunnel);
    return opened;
  }

  get(tunnelId: string): TunnelRecord {
    const tunnel = this.tunnels.get(tunnelId);
    if (!tunnel) throw new RegistryError('ResourceNotFoundException', `Tunnel ${tunnelId} not found`);
    return tunnel;
  }

  /** The tunnel an ARN names (TagResource and friends). */
  getByArn(arn: string): TunnelRecord {
    const tunnel = this.byArn.get(arn);
    if (!tunnel) throw new RegistryError('ResourceNotFoundException', `Resource ${arn} not found`);
    return tunnel;
  }

  /** Newest first (ties by id, so that paging is stable). */
  list(filter: { thingName?: string } = {}): TunnelRecord[] {
    const all = [...this.tunnels.values()].filter((t) => filter.thingName === undefined || t.thingName === filter.thingName);
    return all.sort((a, b) => b.createdAt - a.createdAt || (a.tunnelId < b.tunnelId ? -1 : a.tunnelId > b.tunnelId ? 1 : 0));
  }

  /** Open tunnels now. */
  get openTunnels(): number {
    return this.openCount;
  }

  close(tunnelId: string, options: { delete?: boolean } = {}, reason = 'tunnel closed'): void {
    const tunnel = this.get(tunnelId);
    if (tunnel.status === 'OPEN') {
      tunnel.status = 'CLOSED';
      tunnel.lastUpdatedAt = this.clock.now();
      this.openCount--;
      this.unindex(tunnel);
      this.expiryTimers.get(tunnelId)?.cancel();
      this.expiryTimers.delete(tunnelId);
      this.closedOrder.set(tunnelId, true);
      this.options.onClosed?.(tunnel, reason);
    }
    if (options.delete) this.forget(tunnelId);
    else this.persist(tunnel);
    this.forgetOldClosed();
  }

  /**
   * New tokens for `mode`; the old ones stop working and their peers are disconnected. With a
   * destination config (not for SOURCE, as in the cloud) the services and thing name are
   * replaced; the next SERVICE_IDS carries them.
   */
  rotate(tunnelId: string, mode: ClientMode, destination?: DestinationConfig): RotatedTokens {
    const tunnel = this.get(tunnelId);
    const oldHashes = rotatedModes(mode).map((m) => tunnel[m]?.tokenHash);
    const out = rotateTunnel(tunnel, mode, destination, this.clock.now(), this.limits.maxServicesPerTunnel);
    for (const hash of oldHashes) this.byToken.delete(hash);
    for (const peerMode of rotatedModes(mode)) this.byToken.set(tunnel[peerMode].tokenHash, { tunnel, mode: peerMode });
    this.persist(tunnel);
    for (const peerMode of rotatedModes(mode)) this.options.onTokenRevoked?.(tunnel, peerMode);
    return out;
  }

  /** Adds tags or replaces the values of existing keys. */
  tag(tunnel: TunnelRecord, tags: Tag[]): void {
    tunnel.tags = mergeTags(tunnel.tags, tags);
    this.persist(tunnel);
  }

  untag(tunnel: TunnelRecord, keys: string[]): void {
    tunnel.tags = removeTags(tunnel.tags, keys);
    this.persist(tunnel);
  }

  /**
   * Takes back an open whose state could not be written: the API refused it, so no client
   * holds its tokens. Unlike close(), nobody is told.
   */
  discard(tunnelId: string): void {
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

  /** Who an access token belongs to (open tunnels only). */
  lookup(accessToken: string): TokenOwner | undefined {
    return this.byToken.get(hashToken(accessToken));
  }

  /**
   * The client-token rule of the protocol guide. Returns a refusal text, or undefined when
   * the handshake may proceed. Does not change state: call `accept` once the upgrade succeeded.
   */
  checkClientToken(owner: TokenOwner, clientToken: string | undefined): string | undefined {
    return clientTokenRefusal(owner.tunnel[owner.mode], clientToken);
  }

  accept(owner: TokenOwner, clientToken: string | undefined): void {
    const changed = spendToken(owner.tunnel[owner.mode], clientToken);
    this.setConnected(owner, true);
    // The token's spent/bound state must survive a restart; connection states need not (a
    // restarted relay has no peers), so only a change of the token's state is written.
    if (changed) this.persist(owner.tunnel);
  }

  setConnected(owner: TokenOwner, connected: boolean): void {
    const endpoint = owner.tunnel[owner.mode];
    endpoint.connected = connected;
    endpoint.lastUpdatedAt = this.clock.now();
  }

  /** Resolves once every change made so far is on disk; rejects when the write carrying the last one failed. */
  durable(): Promise<void> {
    return this.lastWrite;
  }

  /** Stops expiry timers and waits for pending writes. */
  async dispose(): Promise<void> {
    this.disposed = true;
    for (const timer of this.expiryTimers.values()) timer.cancel();
    this.expiryTimers.clear();
    await this.store?.close();
  }

  private persist(tunnel: TunnelRecord): void {
    if (!this.store || this.disposed) return;
    this.track(this.store.put(tunnel));
  }

  private forget(tunnelId: string): void {
    const tunnel = this.tunnels.get(tunnelId);
    if (!tunnel) return;
    this.tunnels.delete(tunnelId);
    this.byArn.delete(tunnel.tunnelArn);
    this.closedOrder.delete(tunnelId);
    if (this.store && !this.disposed) this.track(this.store.delete(tunnelId));
  }

  /** The store reports failures itself; `durable()` hands the outcome of the last write to whoever waits. */
  private track(write: Promise<void>): void {
    write.catch(() => {});
    this.lastWrite = write;
  }

  private snapshot(): TunnelRecord[] {
    return [...this.tunnels.values()];
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
      if (this.tunnels.get(tunnel.tunnelId)?.status === 'OPEN') this.close(tunnel.tunnelId, {}, 'tunnel lifetime expired');
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
