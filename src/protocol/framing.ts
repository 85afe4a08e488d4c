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
import { decodeMessageAt, maxEncodedSize, writeMessage, type Message, type MessageInit, type ReadInfo } from './message';

const EMPTY = new Uint8Array(0);

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
 * Encodes several messages, each with its length prefix, one after the other into one fresh
 * buffer: what encodeFrame would give for each, concatenated, without the copy.
 */
export function encodeFrames(msgs: readonly MessageInit[]): Buffer {
  let room = 0;
  for (const msg of msgs) room += LENGTH_PREFIX_BYTES + maxEncodedSize(msg) + 16;
  const pbf = new PbfWriter(Buffer.allocUnsafe(room));
  for (const msg of msgs) {
    const start = pbf.pos;
    pbf.pos = start + LENGTH_PREFIX_BYTES;
    writeMessage(msg, pbf);
    const len = pbf.pos - start - LENGTH_PREFIX_BYTES;
    if (len > MAX_LENGTH_PREFIX) throw new TunnelError(ErrorCode.FRAME_TOO_LARGE, `message of ${len} bytes cannot be framed (limit ${MAX_LENGTH_PREFIX})`);
    pbf.buf[start] = len >>> 8;
    pbf.buf[start + 1] = len & 0xff;
  }
  const out = pbf.buf;
  return Buffer.from(out.buffer, out.byteOffset, pbf.pos);
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

/**
 * Hands `frames` to `write` as WebSocket messages, in order: each of `aloneBytes` or more in a
 * message of its own (not copied), the smaller ones between them packed up to `maxBytes`.
 * Returns the bytes written.
 */
export function writeMessages(frames: readonly Buffer[], aloneBytes: number, maxBytes: number, write: (message: Buffer) => void): number {
  let bytes = 0;
  let small: Buffer[] | undefined;
  for (const frame of frames) {
    bytes += frame.length;
    if (frame.length < aloneBytes) {
      (small ??= []).push(frame);
      continue;
    }
    if (small) {
      for (const message of packFrames(small, maxBytes)) write(message);
      small = undefined;
    }
    write(frame);
  }
  if (small) for (const message of packFrames(small, maxBytes)) write(message);
  return bytes;
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
 * Called for every complete, well-formed message. `frame` is the message's original bytes, length
 * prefix included, when they lie whole in one pushed chunk and hold no field the decoder does not
 * know (a view into that chunk: a relay can forward them as they are); else undefined.
 */
export type OnMessage = (msg: Message, frame: Uint8Array | undefined) => void;

/**
 * Incremental frame decoder. Feed it WebSocket payloads with `push`; it calls
 * `onMessage` for every complete, well-formed message and `onError` with a TunnelError
 * for every frame that is not. Because frames are length-delimited, a malformed frame
 * does not desynchronise the stream: decoding goes on with the next one. The caller
 * decides whether an error ends the session.
 *
 * Frames that lie whole in a pushed chunk (the usual case: senders put whole frames in each
 * WebSocket message) are decoded in place, without copying or slicing; only a frame split
 * across chunks is gathered first.
 */
export class FrameDecoder {
  readonly maxMessageBytes: number;
  /** The start of a frame split across chunks (its length prefix may be split too). */
  private chunks: Uint8Array[] = [];
  private buffered = 0;
  private state = GET_LENGTH;
  private bodyLength = 0;
  private readonly info: ReadInfo = { unknownFields: false };

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

  push(chunk: Uint8Array, onMessage: OnMessage, onError: (err: TunnelError) => void): void {
    let rest = chunk;
    if (this.buffered > 0 || this.state === GET_BODY) {
      // Complete the frame begun in earlier chunks; it ends within this one (else it would wait).
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      if (this.state === GET_LENGTH) {
        if (this.buffered < LENGTH_PREFIX_BYTES) return;
        const prefix = this.consume(LENGTH_PREFIX_BYTES);
        this.bodyLength = (prefix[0] << 8) | prefix[1];
        this.state = GET_BODY;
      }
      if (this.buffered < this.bodyLength) return;
      const body = this.consume(this.bodyLength);
      this.state = GET_LENGTH;
      this.decode(body, 0, body.length, false, onMessage, onError);
      rest = this.chunks.length > 0 ? this.chunks[0] : EMPTY;
      this.chunks = [];
      this.buffered = 0;
    }
    const end = rest.length;
    let pos = 0;
    while (end - pos >= LENGTH_PREFIX_BYTES) {
      const length = (rest[pos] << 8) | rest[pos + 1];
      const frameEnd = pos + LENGTH_PREFIX_BYTES + length;
      if (frameEnd > end) break;
      this.decode(rest, pos, frameEnd, true, onMessage, onError);
      pos = frameEnd;
    }
    if (end - pos >= LENGTH_PREFIX_BYTES) {
      // A frame whose length is known and whose body is incomplete: wait for the body.
      this.bodyLength = (rest[pos] << 8) | rest[pos + 1];
      this.state = GET_BODY;
      pos += LENGTH_PREFIX_BYTES;
    }
    if (pos < end) {
      this.chunks.push(pos === 0 ? rest : rest.subarray(pos));
      this.buffered = end - pos;
    }
  }

  /**
   * Decodes one frame: the message in `bytes[start + 2, end)` when `prefixed` (and then the
   * frame is `bytes[start, end)`), else the message is all of `bytes[start, end)`.
   */
  private decode(bytes: Uint8Array, start: number, end: number, prefixed: boolean, onMessage: OnMessage, onError: (err: TunnelError) => void): void {
    const bodyStart = prefixed ? start + LENGTH_PREFIX_BYTES : start;
    const length = end - bodyStart;
    if (length > this.maxMessageBytes) {
      onError(new TunnelError(ErrorCode.FRAME_TOO_LARGE, `message of ${length} bytes exceeds the limit of ${this.maxMessageBytes}`));
      return;
    }
    const info = this.info;
    info.unknownFields = false;
    let msg: Message;
    try {
      msg = decodeMessageAt(bytes, bodyStart, end, info);
    } catch (err) {
      onError(err instanceof TunnelError ? err : new TunnelError(ErrorCode.TRUNCATED, String(err), { cause: err }));
      return;
    }
    onMessage(msg, prefixed && !info.unknownFields ? bytes.subarray(start, end) : undefined);
  }

  /** Takes `n` buffered bytes: a view when they lie in one chunk, else one copy. */
  private consume(n: number): Uint8Array {
    this.buffered -= n;
    const first = this.chunks[0];
    if (n === 0) return first ? first.subarray(0, 0) : EMPTY;
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
