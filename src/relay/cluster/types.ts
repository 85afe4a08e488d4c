/**
 * What a cluster node needs from the shared store about peers: who holds which peer (with a
 * lease the holder renews), and the 'attached' events that tell the other nodes. Implemented by
 * the Redis store (src/relay/store/redis.ts).
 */
import type { PeerMode } from '../record';

/** The node holding one peer of a tunnel, and which connection of it (channel id). */
export interface Holder {
  node: string;
  /** Where other nodes reach it (`--node-url`). */
  url: string;
  channel: string;
  /** Grows with every new holder of this tunnel's peer of this mode: the newest wins. */
  gen: number;
}

/** A peer connected to `holder.node`: published by the store when the holder is recorded. */
export interface AttachedEvent {
  tunnelId: string;
  mode: PeerMode;
  holder: Holder;
}

/** A peer this node holds, as the lease renewal needs it. */
export interface HeldPeer {
  tunnelId: string;
  mode: PeerMode;
  channel: string;
  tokenHash: string;
  gen: number;
}

/** Whether a held peer may stay: ok, or why not. */
export type LeaseVerdict = 'ok' | 'replaced' | 'revoked' | 'closed' | 'unknown';

/** A lease renewed: `gen` when the peer's record had to be taken again (a new holder generation). */
export interface RenewAnswer {
  verdict: LeaseVerdict;
  other?: Holder;
  gen?: number;
}

export type HoldResult =
  | { kind: 'held'; gen: number; previous?: Holder; other?: Holder }
  | { kind: 'closed' | 'revoked' | 'unknown' };

export interface PeerStore {
  readonly nodeId: string;
  readonly nodeUrl: string;
  readonly leaseMs: number;
  /** Records this node as the holder of the peer; the previous holder and the other peer's. */
  hold(tunnelId: string, mode: PeerMode, channel: string, tokenHash: string): Promise<HoldResult>;
  /** The peer left this node (no effect if another node holds it now). */
  release(tunnelId: string, mode: PeerMode, channel: string): Promise<void>;
  holder(tunnelId: string, mode: PeerMode): Promise<Holder | undefined>;
  /** Renews the leases of `peers`; per peer, whether it may stay and who holds the other one. */
  renew(peers: HeldPeer[]): Promise<RenewAnswer[]>;
  /** Handlers: another node recorded a holder; the store was unreachable and is back (events may have been missed). */
  onAttached?: (event: AttachedEvent) => void;
  onReconnected?: () => void;
}

/** A holder as stored (JSON), or undefined when absent or not one. */
export function parseHolder(text: string | null | undefined): Holder | undefined {
  if (!text) return undefined;
  try {
    const h = JSON.parse(text) as Partial<Holder>;
    if (typeof h.node !== 'string' || typeof h.url !== 'string' || typeof h.channel !== 'string' || typeof h.gen !== 'number') return undefined;
    return { node: h.node, url: h.url, channel: h.channel, gen: h.gen };
  } catch {
    return undefined;
  }
}
