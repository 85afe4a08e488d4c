/**
 * How one node proves to another that it belongs to the cluster: an HMAC-SHA256 of the bridge
 * request (tunnel, both node ids, time) under the shared cluster secret. The secret itself never
 * crosses the network, a request is good for one target node and for a minute, and over TLS
 * (wss://) nobody can see or replay it.
 *
 * Holder records in the shared store (which node holds a peer, and where it is reached) are
 * signed the same way, so whoever can write to Redis cannot point a node at an address of
 * their choosing: a node dials only what a node of its cluster signed.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { PeerMode } from '../store/record';

export const BRIDGE_PATH = '/cluster/bridge';
export const AUTH_HEADER = 'x-localproxy-cluster-auth';
/** How far a bridge request's time may be from the receiving node's clock. */
const MAX_SKEW_MS = 60_000;
/** A secret shorter than this is refused at start. */
export const MIN_SECRET_BYTES = 16;

export interface BridgeParams {
  tunnelId: string;
  /** The dialing node (it holds the source). */
  from: string;
  /** The node dialed (it holds the destination). */
  to: string;
  time: number;
}

function mac(secret: Buffer, p: BridgeParams): Buffer {
  return createHmac('sha256', secret).update(`localproxy-bridge\n${p.tunnelId}\n${p.from}\n${p.to}\n${p.time}`).digest();
}

/** The path with query and the header of a bridge request. */
export function bridgeRequest(secret: Buffer, p: BridgeParams): { path: string; headers: Record<string, string> } {
  const query = new URLSearchParams({ tunnel: p.tunnelId, from: p.from, to: p.to, time: String(p.time) });
  return { path: `${BRIDGE_PATH}?${query}`, headers: { [AUTH_HEADER]: mac(secret, p).toString('hex') } };
}

/** The request's parameters if it is signed with `secret` for node `self` and recent; else why not. */
export function verifyBridge(secret: Buffer, req: IncomingMessage, self: string, now: number): BridgeParams | { status: number; reason: string } {
  const url = new URL(req.url ?? '/', 'http://node');
  const tunnelId = url.searchParams.get('tunnel') ?? '';
  const from = url.searchParams.get('from') ?? '';
  const to = url.searchParams.get('to') ?? '';
  const time = Number(url.searchParams.get('time'));
  const given = Buffer.from(String(req.headers[AUTH_HEADER] ?? ''), 'hex');
  if (!tunnelId || !from || !to || !Number.isFinite(time)) return { status: 400, reason: 'Bad bridge request' };
  const params = { tunnelId, from, to, time };
  const expected = mac(secret, params);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return { status: 403, reason: 'Bridge request not signed with the cluster secret' };
  if (Math.abs(now - time) > MAX_SKEW_MS) return { status: 403, reason: 'Bridge request too old, or the node clocks differ by more than a minute' };
  if (to !== self) return { status: 409, reason: 'Bridge request meant for another node' };
  return params;
}

/** What a holder record's signature covers: the peer connection it names, and where its node is reached. */
export interface HolderClaim {
  tunnelId: string;
  mode: PeerMode;
  node: string;
  url: string;
  channel: string;
}

/**
 * The signature of a holder record (hex). The generation is not covered: Redis assigns it in
 * the same step that stores the record, after the node has signed.
 */
export function signHolder(secret: Buffer, c: HolderClaim): string {
  return createHmac('sha256', secret).update(`localproxy-holder\n${c.tunnelId}\n${c.mode}\n${c.node}\n${c.url}\n${c.channel}`).digest('hex');
}

export function isSignedHolder(secret: Buffer, c: HolderClaim, sig: string): boolean {
  const given = Buffer.from(sig, 'hex');
  const expected = Buffer.from(signHolder(secret, c), 'hex');
  return given.length === expected.length && timingSafeEqual(given, expected);
}
