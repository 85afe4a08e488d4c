/**
 * What a cluster node needs from the shared store about peers: who holds which peer (a holder
 * record, with a lease the holder renews), and the 'attached' events that tell the other nodes.
 * Implemented by the Redis store (redis.ts).
 */
import type { PeerMode } from './record';

/** The node holding one peer of a tunnel, and which connection of it (channel id). */
export interface Holder {
  node: string;
  /** Where other nodes reach it (`--node-url`). */
  url: string;
  channel: string;
  /** Grows with every new holder of this tunnel's peer of this mode: the newest wins. */
  gen: number;
  /** The holding node's signature of the record with the cluster secret (auth.ts `signHolder`). */
  sig: string;
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
  /** This node's signature of its holder record. */
  sig: string;
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

export interface LeaseStore {
  readonly nodeId: string;
  readonly nodeUrl: string;
  readonly leaseMs: number;
  /** Records this node as the holder of the peer (`sig`: the record's signature); the previous holder and the other peer's. */
  hold(tunnelId: string, mode: PeerMode, channel: string, tokenHash: string, sig: string): Promise<HoldResult>;
  /** The peer left this node (no effect if another node holds it now). */
  release(tunnelId: string, mode: PeerMode, channel: string): Promise<void>;
  holder(tunnelId: string, mode: PeerMode): Promise<Holder | undefined>;
  /** Renews the leases of `peers`; per peer, whether it may stay and who holds the other one. */
  renew(peers: HeldPeer[]): Promise<RenewAnswer[]>;
  /** Handlers: another node recorded a holder; the store was unreachable and is back (events may have been missed). */
  onAttached?: (event: AttachedEvent) => void;
  onReconnected?: () => void;
}

/** Longest node id, URL or channel id taken from the store (ours are far shorter). */
export const MAX_HOLDER_TEXT = 1024;

export function isHolderText(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0 && value.length <= MAX_HOLDER_TEXT;
}

/** The holder in a parsed record or event, if it has a holder's shape (its signature is checked by the node). */
export function holderOf(value: unknown): Holder | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const h = value as Partial<Record<keyof Holder, unknown>>;
  if (!isHolderText(h.node) || !isHolderText(h.url) || !isHolderText(h.channel) || !Number.isSafeInteger(h.gen) || (h.gen as number) < 1) return undefined;
  if (typeof h.sig !== 'string' || !/^[0-9a-f]{64}$/.test(h.sig)) return undefined;
  return { node: h.node, url: h.url, channel: h.channel, gen: h.gen as number, sig: h.sig };
}

/** A holder as stored (JSON), or undefined when absent or not one. */
export function parseHolder(text: string | null | undefined): Holder | undefined {
  if (!text) return undefined;
  try {
    return holderOf(JSON.parse(text));
  } catch {
    return undefined;
  }
}
