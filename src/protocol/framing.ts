/**
 * Tunnel frames: a 2-byte big-endian length, then that many bytes of protobuf Message.
 *
 * WebSocket message boundaries mean nothing to the protocol: one WebSocket message may
 * carry several frames and one frame may span several WebSocket messages (V1 guide,
 * "Tunneling message frames"). The decoder therefore works on a byte stream.
 */
import { PbfWriter } from 'pbf';
import { LENGTH_PREFIX_BYTES, MAX_MESSAGE_BYTES, MAX_WS_MESSAGE_BYTES } from './constants';
import { ErrorCode, TunnelError } from './errors';
import { decodeMessage, maxEncodedSize, writeMessage, type Message, type MessageInit } from './message';

const MAX_LENGTH_PREFIX = 0xffff;

/** Encodes one message with its length prefix into a fresh buffer. */
export function encodeFrame(msg: MessageInit): Buffer {
  const pbf = new PbfWriter(Buffer.allocUnsafe(LENGTH_PREFIX_BYTES + maxEncodedSize(msg) + 16));
  pbf.pos = LENGTH_PREFIX_BYTES;
  writeMessage(msg, pbf);
  const len = pbf.pos - LENGTH_PREFIX_BYTES;
  if (len > MAX_LENGTH_PREFIX) throw new TunnelError(ErrorCode.FRAME_TOO_LARGE, `message of ${len} bytes cannot be framed (limit ${MAX_LENGTH_PREFIX})`);
  const out = pbf.buf;
  out[0] = len >>> 8;
  out[1] = len & 0xff;
  return Buffer.from(out.buffer, out.byteOffset, LENGTH_PREFIX_BYTES + len);
}

/**
 * Groups consecutive frames, in order, into WebSocket payloads of at most `maxBytes`.
 * A frame is never split; a payload holding a single frame is that frame (no copy).
 */
export function packFrames(frames: readonly Uint8Array[], maxBytes = MAX_WS_MESSAGE_BYTES): Buffer[] {
  const out: Buffer[] = [];
  let group: Uint8Array[] = [];
  let groupBytes = 0;
  const flush = () => {
    if (group.length === 1) out.push(asBuffer(group[0]));
    else if (group.length > 1) out.push(Buffer.concat(group, groupBytes));
    group = [];
    groupBytes = 0;
  };
  for (const frame of frames) {
    if (frame.length > maxBytes) throw new TunnelError(ErrorCode.FRAME_TOO_LARGE, `frame of ${frame.length} bytes exceeds the WebSocket message limit ${maxBytes}`);
    if (groupBytes + frame.length > maxBytes) flush();
    group.push(frame);
    groupBytes += frame.length;
  }
  flush();
  return out;
}

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
}

// Decoder states.
const GET_LENGTH = 0;
const GET_BODY = 1;

export interface FrameDecoderOptions {
  /** Largest accepted message (length prefix value). Default 65536 (`message.max_size`). */
  maxMessageBytes?: number;
}

/**
 * Incremental frame decoder. Feed it WebSocket payloads with `push`; it calls
 * `onMessage` for every complete, well-formed message and `onError` with a TunnelError
 * for every frame that is not. Because frames are length-delimited, a malformed frame
 * does not desynchronise the stream: decoding goes on with the next one. The caller
 * decides whether an error ends the session.
 */
export class FrameDecoder {
  readonly maxMessageBytes: number;
  private chunks: Uint8Array[] = [];
  private buffered = 0;
  private state = GET_LENGTH;
  private bodyLength = 0;

  constructor(options: FrameDecoderOptions = {}) {
    this.maxMessageBytes = options.maxMessageBytes ?? MAX_MESSAGE_BYTES;
  }

  /** Bytes received but not yet decoded (a partial frame). */
  get bufferedBytes(): number {
    return this.buffered;
  }

  /** Drops any partial frame, e.g. when a session ends. */
  reset(): void {
    this.chunks = [];
    this.buffered = 0;
    this.state = GET_LENGTH;
  }

  push(chunk: Uint8Array, onMessage: (msg: Message) => void, onError: (err: TunnelError) => void): void {
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    // Each iteration consumes bytes or returns, so the loop always ends.
    for (;;) {
      if (this.state === GET_LENGTH) {
        if (this.buffered < LENGTH_PREFIX_BYTES) return;
        const prefix = this.consume(LENGTH_PREFIX_BYTES);
        this.bodyLength = (prefix[0] << 8) | prefix[1];
        this.state = GET_BODY;
      }
      if (this.buffered < this.bodyLength) return;
      const body = this.consume(this.bodyLength);
      this.state = GET_LENGTH;
      if (body.length > this.maxMessageBytes) {
        onError(new TunnelError(ErrorCode.FRAME_TOO_LARGE, `message of ${body.length} bytes exceeds the limit of ${this.maxMessageBytes}`));
        continue;
      }
      let msg: Message;
      try {
        msg = decodeMessage(body);
      } catch (err) {
        onError(err instanceof TunnelError ? err : new TunnelError(ErrorCode.TRUNCATED, String(err), { cause: err }));
        continue;
      }
      onMessage(msg);
    }
  }

  /** Takes `n` buffered bytes: a view when they lie in one chunk, else one copy. */
  private consume(n: number): Uint8Array {
    this.buffered -= n;
    const first = this.chunks[0];
    if (n === 0) return first ? first.subarray(0, 0) : new Uint8Array(0);
    if (first.length === n) {
      this.chunks.shift();
      return first;
    }
    if (first.length > n) {
      this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.chunks[0];
      const take = Math.min(chunk.length, n - filled);
      out.set(chunk.subarray(0, take), filled);
      filled += take;
      if (take === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(take);
    }
    return out;
  }
}
