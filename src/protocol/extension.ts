/**
 * localproxy's protocol extensions (issue 14): messages the AWS protocol does not define, sent
 * only between peers that both declared them. They are ordinary tunnel messages with
 * `ignorable = true` and a type number far above the protocol's own (1-7), so that a receiver
 * that does not know them drops them (V3 guide, "Ignorable field"). They use only the schema's
 * fields — type, streamId, connectionId, serviceId, ignorable, payload — because the service
 * closes a connection whose messages carry any other; their data is in `payload`, in the fixed
 * layouts below (big-endian). I/O-free.
 *
 * credit/1 — per-connection flow control (SSH channel windows, HTTP/2 WINDOW_UPDATE):
 * - CREDIT_HELLO (0x4C50): serviceId = the first service id of SERVICE_IDS ("" without one),
 *   streamId 0, connectionId 0. Payload: version (1 byte, 1), nonce (8 random bytes naming the
 *   sender's WebSocket session).
 * - CREDIT_WINDOW (0x4C51): serviceId, streamId, connectionId as on the DATA of the connection it
 *   is for. Payload: limit (8 bytes, unsigned: the total payload bytes the receiver of this
 *   message may have sent on the connection), flags (1 byte; bit 0 = ACK: the sender of this
 *   message keeps its own DATA on the connection within the receiver's grants from here on).
 *   resume/1 adds `received` (8 bytes, unsigned) after the flags: an acknowledgement.
 * resume/1 — connections that survive a dropped service connection (resume.ts has its messages).
 * Receivers ignore bytes after the ones they know, and flag bits they do not know. docs/DESIGN.md
 * has the rules of both.
 */

/** The handshake header naming the extensions a proxy wants (request) and a relay forwards to it (response). */
export const EXTENSIONS_HEADER = 'localproxy-extensions';
export const CREDIT_EXTENSION = 'credit/1';
export const RESUME_EXTENSION = 'resume/1';

/** Message types of the extensions: 'L' 'P' (0x4C50) and up. */
export const ExtensionType = {
  CREDIT_HELLO: 0x4c50,
  CREDIT_WINDOW: 0x4c51,
  RESUME_HELLO: 0x4c52,
  RESUME: 0x4c53,
} as const;

const EXTENSION_OF_TYPE = new Map<number, string>([
  [ExtensionType.CREDIT_HELLO, CREDIT_EXTENSION],
  [ExtensionType.CREDIT_WINDOW, CREDIT_EXTENSION],
  [ExtensionType.RESUME_HELLO, RESUME_EXTENSION],
  [ExtensionType.RESUME, RESUME_EXTENSION],
]);
const TYPE_NAMES = new Map<number, string>(Object.entries(ExtensionType).map(([name, type]) => [type, name]));

/** The extension a message type belongs to, or undefined. */
export function extensionOf(type: number): string | undefined {
  return EXTENSION_OF_TYPE.get(type);
}

/** `CREDIT_HELLO`, `RESUME`, …, or undefined for a type of no extension. */
export function extensionTypeName(type: number): string | undefined {
  return TYPE_NAMES.get(type);
}

/** The extension names in a header value (`credit/1, other/2`), lower-cased, without duplicates. */
export function parseExtensions(value: string | string[] | undefined): string[] {
  const text = Array.isArray(value) ? value.join(',') : (value ?? '');
  const names = text.split(',').map((s) => s.trim().toLowerCase()).filter((s) => s.length > 0 && s.length <= 64);
  return [...new Set(names)];
}

export const CREDIT_VERSION = 1;
export const NONCE_BYTES = 8;
const HELLO_BYTES = 1 + NONCE_BYTES;
const WINDOW_BYTES = 8;
/** limit, flags, and resume/1's `received`. */
const WINDOW_RECEIVED_AT = WINDOW_BYTES + 1;
export const WINDOW_FLAG_ACK = 0x01;

export interface CreditHello {
  version: number;
  /** The sender's session, as 16 hex digits. */
  nonce: string;
}

export interface CreditWindow {
  /** Absolute: payload bytes the receiver may have sent on the connection (Number.MAX_SAFE_INTEGER at most). */
  limit: number;
  ack: boolean;
  /** resume/1: payload bytes the sender of this WINDOW has received on the connection (an acknowledgement). */
  received?: number;
}

export function encodeHello(nonce: string): Uint8Array {
  const out = new Uint8Array(HELLO_BYTES);
  out[0] = CREDIT_VERSION;
  out.set(Buffer.from(nonce, 'hex').subarray(0, NONCE_BYTES), 1);
  return out;
}

/** Undefined when the payload is too short or names version 0. */
export function decodeHello(payload: Uint8Array): CreditHello | undefined {
  if (payload.length < HELLO_BYTES || payload[0] === 0) return undefined;
  return { version: payload[0], nonce: Buffer.from(payload.buffer, payload.byteOffset + 1, NONCE_BYTES).toString('hex') };
}

export function encodeWindow(window: CreditWindow): Uint8Array {
  const out = Buffer.alloc(window.received === undefined ? WINDOW_RECEIVED_AT : WINDOW_RECEIVED_AT + 8);
  out.writeBigUInt64BE(BigInt(Math.max(0, Math.floor(window.limit))), 0);
  out[WINDOW_BYTES] = window.ack ? WINDOW_FLAG_ACK : 0;
  if (window.received !== undefined) out.writeBigUInt64BE(BigInt(Math.max(0, Math.floor(window.received))), WINDOW_RECEIVED_AT);
  return out;
}

/**
 * Undefined when the payload is shorter than the limit. Counts above 2^53 - 1 read as 2^53 - 1.
 * `received` is there only when the payload carries all 8 of its bytes.
 */
export function decodeWindow(payload: Uint8Array): CreditWindow | undefined {
  if (payload.length < WINDOW_BYTES) return undefined;
  const view = new DataView(payload.buffer, payload.byteOffset, payload.length);
  const flags = payload.length > WINDOW_BYTES ? payload[WINDOW_BYTES] : 0;
  const window: CreditWindow = { limit: readCount(view, 0), ack: (flags & WINDOW_FLAG_ACK) !== 0 };
  if (payload.length >= WINDOW_RECEIVED_AT + 8) window.received = readCount(view, WINDOW_RECEIVED_AT);
  return window;
}

/** An unsigned 64-bit count at `at`, clamped to 2^53 - 1. */
export function readCount(view: DataView, at: number): number {
  const value = view.getBigUint64(at);
  return value > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(value);
}
