/**
 * `--store redis://HOST:PORT[/DB]`: the tunnels of a cluster of relays in Redis (or Valkey).
 * Every node reads and changes them here; nothing is cached between requests. Each change is
 * a compare-and-set of the tunnel's record (its version) together with its indexes and the event
 * that tells the other nodes, in one Lua script (scripts.ts): two nodes rotating, closing or
 * spending one token at once cannot lose an update or reopen a closed tunnel; the loser re-reads
 * and applies the same rules (rules.ts) again.
 *
 * The connections (redis-link.ts) fail commands at once while Redis is away: the API answers
 * 503 instead of hanging. This module is loaded only for `--store`.
 */
import { LogLevel, type Logger } from '../../log';
import type { Clock } from '../clock';
import { RelayConfigError } from '../errors';
import type { RelayLimits } from '../limits';
import type { ClientMode, DestinationConfig, OpenedTunnel, RotatedTokens, Tag } from '../../api/model';
import { StoreUnavailableError, type Authorized, type DirectoryEvents, type ListPosition, type Refusal, type TunnelDirectory, type TunnelPage } from './directory';
import { isHolderText, MAX_HOLDER_TEXT, parseHolder, type AttachedEvent, type HeldPeer, type Holder, type HoldResult, type LeaseStore, type LeaseVerdict, type RenewAnswer } from './leases';
import { checkRecord, RecordError, type PeerMode, type TunnelRecord } from './record';
import {
  clientTokenRefusal, createTunnel, DEFAULT_ACCOUNT_ID, DEFAULT_REGION, expiresAt, hashToken, mergeTags, OperationError, removeTags, rotatedModes,
  rotateTunnel, spendToken, type OpenTunnelRequest,
} from './rules';
import { parseEvent } from './events';
import { RedisLink } from './redis-link';
import { COMMIT, HOLD, RELEASE, RENEW, SWEEP } from './scripts';

const PREFIX = 'localproxy:';
/** Compare-and-set attempts before an operation gives up (only under extreme contention on one tunnel). */
const MAX_ATTEMPTS = 50;
/** How often a node looks for tunnels whose lifetime ended, and refreshes its open-tunnel count. */
const SWEEP_EVERY_MS = 1000;
/** A node that claimed an expired tunnel has this long to close it before another node does. */
const SWEEP_CLAIM_MS = 30_000;
const SWEEP_BATCH = 100;
/** Peers per lease-renewal script call. */
const RENEW_BATCH = 200;

export interface RedisStoreOptions {
  /** redis://[[user]:password@]host[:port][/db] or rediss:// (TLS). */
  url: string;
  /** When the URL has none (LOCALPROXY_RELAY_REDIS_PASSWORD). */
  password?: string;
  /** PEM CA certificate(s) for rediss:// instead of the system ones. */
  ca?: string;
  log: Logger;
  clock: Clock;
  limits: Pick<RelayLimits, 'maxOpenTunnels' | 'maxClosedTunnels' | 'maxServicesPerTunnel'>;
  region?: string;
  accountId?: string;
  events: DirectoryEvents;
  nodeId: string;
  nodeUrl: string;
  leaseMs: number;
}

interface Stored {
  record: TunnelRecord;
  version: string;
}

interface Change<T> {
  /** The record as it should now be; null: forget the tunnel; undefined: nothing to write. */
  record?: TunnelRecord | null;
  event?: object;
  result: T;
}

function notFound(tunnelId: string): OperationError {
  return new OperationError('ResourceNotFoundException', `Tunnel ${tunnelId} not found`);
}

/** A tunnel id in an ARN (`...:tunnel/<id>`). */
function idOfArn(arn: string): string | undefined {
  const at = arn.lastIndexOf(':tunnel/');
  return at < 0 ? undefined : arn.slice(at + ':tunnel/'.length);
}

export class RedisDirectory implements TunnelDirectory, LeaseStore {
  readonly nodeId: string;
  readonly nodeUrl: string;
  readonly leaseMs: number;
  onAttached?: (event: AttachedEvent) => void;
  onReconnected?: () => void;
  private readonly options: RedisStoreOptions;
  private readonly link: RedisLink;
  private readonly where: string;
  private readonly log: Logger;
  private openCount = 0;
  private sweeper?: NodeJS.Timeout;
  private disposed = false;

  constructor(options: RedisStoreOptions) {
    this.options = options;
    this.nodeId = options.nodeId;
    this.nodeUrl = options.nodeUrl;
    this.leaseMs = options.leaseMs;
    this.log = options.log;
    // Written into every holder record: held to what the other nodes read back.
    if (!isHolderText(options.nodeId) || !isHolderText(options.nodeUrl)) throw new RelayConfigError(`a cluster node's id and URL must be 1-${MAX_HOLDER_TEXT} characters`);
    this.link = new RedisLink({ url: options.url, password: options.password, ca: options.ca, nodeId: options.nodeId, log: options.log });
    this.where = this.link.where;
    this.link.onMessage = (message) => this.onMessage(message);
    this.link.onReady = (again) => {
      void this.refreshCount();
      // Events published while either connection was down are lost: the cluster node checks its peers.
      if (again) this.onReconnected?.();
    };
  }

  /** Connects in the background (retrying with backoff); `health()` says when it is ready. */
  start(): void {
    this.link.start(`${PREFIX}events`);
    this.sweeper = setInterval(() => void this.sweep(), SWEEP_EVERY_MS);
    this.sweeper.unref();
  }

  health(): { ready: boolean; reason?: string } {
    return this.link.ready ? { ready: true } : { ready: false, reason: 'tunnel store unreachable' };
  }

  private onMessage(message: string): void {
    const e = parseEvent(message);
    if ('refused' in e) {
      this.log.limited(LogLevel.WARNING, 'store-bad-event', `tunnel store ${this.where}: dropped a message on ${PREFIX}events that is not an event of ours (${e.refused})`);
      return;
    }
    const events = this.options.events;
    if (e.t === 'closed') events.onClosed(e.id, e.reason);
    else if (e.t === 'revoked') for (const token of e.tokens) events.onTokenRevoked(e.id, token.mode, token.hash);
    else this.onAttached?.({ tunnelId: e.id, mode: e.mode, holder: e.holder });
  }

  /** A record as stored; throws RecordError (one line) when it is not one the relay would write. */
  private decode(json: string, tunnelId: string): TunnelRecord {
    const where = `tunnel store ${this.where} tunnel ${tunnelId}`;
    let value: unknown;
    try {
      value = JSON.parse(json);
    } catch {
      throw new RecordError(`${where}: not JSON`);
    }
    return checkRecord(value, where);
  }

  private async read(tunnelId: string): Promise<Stored | undefined> {
    const [json, version] = await this.link.call((redis) => redis.hmget(`${PREFIX}t:${tunnelId}`, 'r', 'v'));
    if (!json || !version) return undefined;
    return { record: this.decode(json, tunnelId), version };
  }

  /** Writes a change as one compare-and-set; false when another node changed the tunnel first. */
  private async commit(tunnelId: string, version: string, record: TunnelRecord | null, event?: object): Promise<boolean> {
    const stored = record ? JSON.stringify({ ...record, source: { ...record.source, connected: false }, destination: { ...record.destination, connected: false } }) : '';
    const reply = await this.link.script(COMMIT, [
      PREFIX, tunnelId, version, stored, this.options.limits.maxOpenTunnels, this.options.limits.maxClosedTunnels,
      event ? JSON.stringify(event) : '', record?.createdAt ?? 0, record ? expiresAt(record) : 0, record?.lastUpdatedAt ?? 0,
    ]) as string[];
    if (reply[0] === 'limit') throw new OperationError('LimitExceededException', `At most ${this.options.limits.maxOpenTunnels} tunnels may be open at once`);
    return reply[0] === 'ok';
  }

  /** Read, apply `change` to a copy, compare-and-set; again from the read when another node came first. */
  private async update<T>(tunnelId: string, change: (record: TunnelRecord) => Change<T>): Promise<T> {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const stored = await this.read(tunnelId);
      if (!stored) throw notFound(tunnelId);
      const out = change(stored.record);
      if (out.record === undefined) return out.result;
      if (await this.commit(tunnelId, stored.version, out.record, out.event)) return out.result;
    }
    const busy = `tunnel ${tunnelId} is being changed by too many requests at once`;
    throw new StoreUnavailableError(busy, busy);
  }

  async open(req: OpenTunnelRequest, region?: string): Promise<OpenedTunnel> {
    const { tunnel, opened } = createTunnel(req, {
      now: this.options.clock.now(),
      region: this.options.region ?? region ?? DEFAULT_REGION,
      accountId: this.options.accountId ?? DEFAULT_ACCOUNT_ID,
      maxServices: this.options.limits.maxServicesPerTunnel,
    });
    if (!(await this.commit(tunnel.tunnelId, '0', tunnel))) throw new StoreUnavailableError(`tunnel id ${tunnel.tunnelId} already taken`, 'a new tunnel id was taken already');
    this.openCount++;
    return opened;
  }

  async get(tunnelId: string): Promise<TunnelRecord> {
    const results = await this.link.call((redis) => redis.pipeline()
      .hmget(`${PREFIX}t:${tunnelId}`, 'r', 'cs', 'cd')
      .get(`${PREFIX}h:${tunnelId}:source`)
      .get(`${PREFIX}h:${tunnelId}:destination`)
      .exec());
    if (!results) throw new StoreUnavailableError(`tunnel store ${this.where}: no reply`);
    for (const [err] of results) if (err) throw new StoreUnavailableError(`tunnel store ${this.where}: ${err.message}`);
    const [json, cs, cd] = results[0][1] as Array<string | null>;
    if (!json) throw notFound(tunnelId);
    const record = this.decode(json, tunnelId);
    // Connection states: a peer is connected while a node holds its lease.
    const holders = [results[1][1], results[2][1]] as Array<string | null>;
    (['source', 'destination'] as const).forEach((mode, i) => {
      const changed = Number((i === 0 ? cs : cd) ?? 0);
      record[mode].connected = record.status === 'OPEN' && parseHolder(holders[i]) !== undefined;
      if (changed > record[mode].lastUpdatedAt) record[mode].lastUpdatedAt = changed;
    });
    return record;
  }

  async getByArn(arn: string): Promise<TunnelRecord> {
    const id = idOfArn(arn);
    const tunnel = id ? await this.get(id).catch((err: unknown) => {
      if (err instanceof OperationError) return undefined;
      throw err;
    }) : undefined;
    if (!tunnel || tunnel.tunnelArn !== arn) throw new OperationError('ResourceNotFoundException', `Resource ${arn} not found`);
    return tunnel;
  }

  async list(filter: { thingName?: string; after?: ListPosition; max: number }): Promise<TunnelPage> {
    const key = filter.thingName !== undefined ? `${PREFIX}thing:${filter.thingName}` : `${PREFIX}all`;
    const flat = await this.link.call((redis) => redis.zrange(key, '0', '-1', 'WITHSCORES'));
    const all: ListPosition[] = [];
    for (let i = 0; i + 1 < flat.length; i += 2) all.push({ tunnelId: flat[i], createdAt: Number(flat[i + 1]) });
    all.sort((a, b) => b.createdAt - a.createdAt || (a.tunnelId < b.tunnelId ? -1 : a.tunnelId > b.tunnelId ? 1 : 0));
    const after = filter.after;
    let start = 0;
    if (after) {
      start = all.findIndex((t) => t.createdAt < after.createdAt || (t.createdAt === after.createdAt && t.tunnelId > after.tunnelId));
      if (start < 0) start = all.length;
    }
    const page = all.slice(start, start + filter.max);
    const tunnels: TunnelRecord[] = [];
    if (page.length > 0) {
      const pipeline = this.link.redis.pipeline();
      for (const p of page) pipeline.hget(`${PREFIX}t:${p.tunnelId}`, 'r');
      const results = await this.link.call(() => pipeline.exec());
      for (const [i, [err, json]] of (results ?? []).entries()) {
        if (err) throw new StoreUnavailableError(`tunnel store ${this.where}: ${err.message}`);
        // Forgotten between the two reads: left out.
        if (typeof json !== 'string') continue;
        try {
          tunnels.push(this.decode(json, page[i].tunnelId));
        } catch (err) {
          // One record nobody can use must not take the listing of every other tunnel with it.
          if (!(err instanceof RecordError)) throw err;
          this.log.limited(LogLevel.ERROR, 'store-bad-record', `${err.message}; left out of ListTunnels`);
        }
      }
    }
    const last = page[page.length - 1];
    return { tunnels, ...(start + filter.max < all.length && last ? { next: last } : {}) };
  }

  close(tunnelId: string, options: { delete?: boolean } = {}, reason = 'tunnel closed'): Promise<void> {
    const now = this.options.clock.now();
    return this.update(tunnelId, (tunnel) => {
      const wasOpen = tunnel.status === 'OPEN';
      const event = wasOpen ? { t: 'closed', id: tunnelId, reason } : undefined;
      if (options.delete) return { record: null, event, result: undefined };
      if (!wasOpen) return { result: undefined };
      tunnel.status = 'CLOSED';
      tunnel.lastUpdatedAt = now;
      return { record: tunnel, event, result: undefined };
    });
  }

  rotate(tunnelId: string, mode: ClientMode, destination?: DestinationConfig): Promise<RotatedTokens> {
    const now = this.options.clock.now();
    return this.update(tunnelId, (tunnel) => {
      const old = rotatedModes(mode).map((m) => ({ mode: m, hash: tunnel[m]?.tokenHash }));
      const tokens = rotateTunnel(tunnel, mode, destination, now, this.options.limits.maxServicesPerTunnel);
      return { record: tunnel, event: { t: 'revoked', id: tunnelId, tokens: old }, result: tokens };
    });
  }

  async tag(arn: string, tags: Tag[]): Promise<void> {
    const { tunnelId } = await this.getByArn(arn);
    await this.update(tunnelId, (tunnel) => {
      tunnel.tags = mergeTags(tunnel.tags, tags);
      return { record: tunnel, result: undefined };
    });
  }

  async untag(arn: string, keys: string[]): Promise<void> {
    const { tunnelId } = await this.getByArn(arn);
    await this.update(tunnelId, (tunnel) => {
      tunnel.tags = removeTags(tunnel.tags, keys);
      return { record: tunnel, result: undefined };
    });
  }

  openTunnels(): number {
    return this.openCount;
  }

  async authorize(accessToken: string, mode: PeerMode, clientToken: string | undefined): Promise<Authorized | Refusal> {
    const tokenHash = hashToken(accessToken);
    const owner = await this.link.call((redis) => redis.get(`${PREFIX}k:${tokenHash}`));
    const [tunnelId, ownerMode] = (owner ?? '').split(' ');
    const stored = owner ? await this.read(tunnelId) : undefined;
    if (!stored || stored.record.status !== 'OPEN' || stored.record[ownerMode as PeerMode]?.tokenHash !== tokenHash) return { status: 403, reason: 'Invalid access token' };
    if (ownerMode !== mode) return { status: 400, reason: `Invalid access token: the token is for local-proxy-mode=${ownerMode}, not ${mode}` };
    const refused = clientTokenRefusal(stored.record[mode], clientToken);
    if (refused) return { status: 400, reason: refused };
    return { tunnel: stored.record, mode, tokenHash };
  }

  accept(auth: Authorized, clientToken: string | undefined): Promise<TunnelRecord | Refusal> {
    return this.update<TunnelRecord | Refusal>(auth.tunnel.tunnelId, (tunnel) => {
      if (tunnel.status !== 'OPEN' || tunnel[auth.mode].tokenHash !== auth.tokenHash) return { result: { status: 410, reason: 'the tunnel closed or its token was rotated meanwhile' } };
      const refused = clientTokenRefusal(tunnel[auth.mode], clientToken);
      if (refused) return { result: { status: 400, reason: refused } };
      return { record: spendToken(tunnel[auth.mode], clientToken) ? tunnel : undefined, result: tunnel };
    }).catch((err: unknown) => {
      if (err instanceof OperationError) return { status: 410, reason: 'the tunnel closed or its token was rotated meanwhile' };
      throw err;
    });
  }

  /** Connection states are the holders' leases (LeaseStore.hold/release). */
  setConnected(): void {}

  flush(): Promise<void> {
    return Promise.resolve();
  }

  async dispose(): Promise<void> {
    this.disposed = true;
    clearInterval(this.sweeper);
    await this.link.dispose();
  }

  // LeaseStore -------------------------------------------------------------------------------

  async hold(tunnelId: string, mode: PeerMode, channel: string, tokenHash: string, sig: string): Promise<HoldResult> {
    const reply = await this.link.script(HOLD, [PREFIX, tunnelId, mode, tokenHash, this.nodeId, this.nodeUrl, channel, sig, this.leaseMs, this.options.clock.now()]) as string[];
    if (reply[0] !== 'ok') return { kind: reply[0] as 'closed' | 'revoked' | 'unknown' };
    return { kind: 'held', gen: Number(reply[1]), previous: parseHolder(reply[2]), other: parseHolder(reply[3]) };
  }

  async release(tunnelId: string, mode: PeerMode, channel: string): Promise<void> {
    await this.link.script(RELEASE, [PREFIX, tunnelId, mode, channel, this.options.clock.now()]);
  }

  async holder(tunnelId: string, mode: PeerMode): Promise<Holder | undefined> {
    return parseHolder(await this.link.call((redis) => redis.get(`${PREFIX}h:${tunnelId}:${mode}`)));
  }

  async renew(peers: HeldPeer[]): Promise<RenewAnswer[]> {
    const out: RenewAnswer[] = [];
    for (let i = 0; i < peers.length; i += RENEW_BATCH) {
      const args: Array<string | number> = [PREFIX, this.leaseMs];
      for (const p of peers.slice(i, i + RENEW_BATCH)) args.push(p.tunnelId, p.mode, p.channel, p.tokenHash, this.nodeId, this.nodeUrl, String(p.gen), p.sig);
      const reply = await this.link.script(RENEW, args) as string[];
      for (let j = 0; j + 2 < reply.length; j += 3) out.push({ verdict: reply[j] as LeaseVerdict, other: parseHolder(reply[j + 1]), ...(reply[j + 2] ? { gen: Number(reply[j + 2]) } : {}) });
    }
    return out;
  }

  // Lifetimes -------------------------------------------------------------------------------

  /** Closes the tunnels whose lifetime ended; each is claimed by one node, so it is closed once. */
  private async sweep(): Promise<void> {
    if (this.disposed || this.link.redis.status !== 'ready') return;
    try {
      const due = await this.link.script(SWEEP, [PREFIX, this.options.clock.now(), SWEEP_CLAIM_MS, SWEEP_BATCH]) as string[];
      for (const id of due) {
        await this.close(id, {}, 'tunnel lifetime expired').catch(async (err: unknown) => {
          // A record nobody can use is left for its owner to look at; the rest of the batch goes on.
          if (err instanceof RecordError) return this.log.limited(LogLevel.ERROR, 'store-bad-record', `${err.message}; its lifetime cannot be enforced`);
          if (!(err instanceof OperationError)) throw err;
          // Forgotten meanwhile: nothing left to close, and nothing to sweep again.
          await this.link.call((redis) => redis.zrem(`${PREFIX}expiry`, id));
        });
      }
      await this.refreshCount();
    } catch (err) {
      this.log.limited(LogLevel.WARNING, 'store-sweep', `tunnel store ${this.where}: lifetime sweep failed: ${(err as Error).message}`);
    }
  }

  private async refreshCount(): Promise<void> {
    try {
      this.openCount = await this.link.call((redis) => redis.scard(`${PREFIX}open`));
    } catch {
      // Unreachable: the last count stands.
    }
  }
}
