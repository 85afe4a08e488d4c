/**
 * The events nodes tell each other on the store's pub/sub channel (scripts.ts publishes them in
 * the same step as the change). Anyone who can publish there can send anything, so a message
 * is checked for its shape before any of it is used: one of the wrong shape is refused with a
 * reason and dropped, never half-applied.
 */
import { TUNNEL_ID_PATTERN } from '../../api/model';
import { holderOf, type Holder } from './leases';
import type { PeerMode } from './record';

/** Ours are a few hundred bytes: a longer message is not parsed at all. */
export const MAX_EVENT_BYTES = 8 * 1024;
const MAX_REASON_CHARS = 200;
const SHA256_HEX = /^[0-9a-f]{64}$/;

export type StoreEvent =
  | { t: 'closed'; id: string; reason: string }
  | { t: 'revoked'; id: string; tokens: Array<{ mode: PeerMode; hash: string }> }
  | { t: 'attached'; id: string; mode: PeerMode; holder: Holder };

function isMode(value: unknown): value is PeerMode {
  return value === 'source' || value === 'destination';
}

function isToken(value: unknown): value is { mode: PeerMode; hash: string } {
  if (typeof value !== 'object' || value === null) return false;
  const t = value as { mode?: unknown; hash?: unknown };
  return isMode(t.mode) && typeof t.hash === 'string' && SHA256_HEX.test(t.hash);
}

/** The event in a pub/sub message, or why it is not one. */
export function parseEvent(message: string): StoreEvent | { refused: string } {
  if (message.length > MAX_EVENT_BYTES) return { refused: `${message.length} bytes, more than ${MAX_EVENT_BYTES}` };
  let value: unknown;
  try {
    value = JSON.parse(message);
  } catch {
    return { refused: 'not JSON' };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { refused: 'not an object' };
  const e = value as Record<string, unknown>;
  if (typeof e.id !== 'string' || !TUNNEL_ID_PATTERN.test(e.id)) return { refused: 'no tunnel id' };
  switch (e.t) {
    case 'closed':
      if (typeof e.reason !== 'string' || e.reason.length > MAX_REASON_CHARS) return { refused: 'a closed event without a reason' };
      return { t: 'closed', id: e.id, reason: e.reason };
    case 'revoked':
      if (!Array.isArray(e.tokens) || e.tokens.length > 2 || !e.tokens.every(isToken)) return { refused: 'a revoked event without its tokens' };
      return { t: 'revoked', id: e.id, tokens: e.tokens };
    case 'attached': {
      const holder = holderOf(e);
      if (!isMode(e.mode) || !holder) return { refused: 'an attached event without its holder' };
      return { t: 'attached', id: e.id, mode: e.mode, holder };
    }
    default:
      return { refused: 'an unknown kind of event' };
  }
}
