/**
 * The resume/1 extension's messages (docs/DESIGN.md, "The resume/1 extension"): plain tunnel
 * messages with `ignorable = true`, their data in `payload`, big-endian. I/O-free.
 * - RESUME_HELLO (0x4C52): serviceId = the first service id of SERVICE_IDS ("" without one),
 *   streamId 0, connectionId 0. Payload: version (1 byte, 1), instance (16 bytes: one per proxy
 *   run), grace_ms (4 bytes), count (4 bytes: the RESUME messages that follow it).
 * - RESUME (0x4C53): serviceId, streamId, connectionId as on the connection's DATA. Payload:
 *   received (8 bytes), sent (8 bytes), flags (1 byte; bit 0 = CLOSED: the sender's side is
 *   closed and `sent` is final).
 * Receivers ignore bytes after the ones they know, and flag bits they do not know.
 */
import { readCount } from './extension';

export const RESUME_VERSION = 1;
export const INSTANCE_BYTES = 16;
const HELLO_BYTES = 1 + INSTANCE_BYTES + 4 + 4;
const RESUME_BYTES = 8 + 8 + 1;
export const RESUME_FLAG_CLOSED = 0x01;

export interface ResumeHello {
  version: number;
  /** The sender's run, as 32 hex digits. */
  instance: string;
  graceMs: number;
  /** RESUME messages that follow on this WebSocket. */
  count: number;
}

export interface ResumeState {
  /** Payload bytes the sender of this message has received on the connection. */
  received: number;
  /** Payload bytes the sender has sent on it (queued or on the wire). */
  sent: number;
  /** The sender's side of the connection is closed: `sent` is final. */
  closed: boolean;
}

export function encodeResumeHello(hello: Omit<ResumeHello, 'version'>): Uint8Array {
  const out = Buffer.alloc(HELLO_BYTES);
  out[0] = RESUME_VERSION;
  Buffer.from(hello.instance, 'hex').copy(out, 1, 0, INSTANCE_BYTES);
  out.writeUInt32BE(clampU32(hello.graceMs), 1 + INSTANCE_BYTES);
  out.writeUInt32BE(clampU32(hello.count), 1 + INSTANCE_BYTES + 4);
  return out;
}

/** Undefined when the payload is too short or names version 0. */
export function decodeResumeHello(payload: Uint8Array): ResumeHello | undefined {
  if (payload.length < HELLO_BYTES || payload[0] === 0) return undefined;
  const view = new DataView(payload.buffer, payload.byteOffset, payload.length);
  return {
    version: payload[0],
    instance: Buffer.from(payload.buffer, payload.byteOffset + 1, INSTANCE_BYTES).toString('hex'),
    graceMs: view.getUint32(1 + INSTANCE_BYTES),
    count: view.getUint32(1 + INSTANCE_BYTES + 4),
  };
}

export function encodeResume(state: ResumeState): Uint8Array {
  const out = Buffer.alloc(RESUME_BYTES);
  out.writeBigUInt64BE(BigInt(Math.max(0, Math.floor(state.received))), 0);
  out.writeBigUInt64BE(BigInt(Math.max(0, Math.floor(state.sent))), 8);
  out[16] = state.closed ? RESUME_FLAG_CLOSED : 0;
  return out;
}

/** Undefined when the payload is too short. */
export function decodeResume(payload: Uint8Array): ResumeState | undefined {
  if (payload.length < RESUME_BYTES) return undefined;
  const view = new DataView(payload.buffer, payload.byteOffset, payload.length);
  return { received: readCount(view, 0), sent: readCount(view, 8), closed: (payload[16] & RESUME_FLAG_CLOSED) !== 0 };
}

function clampU32(value: number): number {
  return Math.max(0, Math.min(0xffffffff, Math.floor(value)));
}
