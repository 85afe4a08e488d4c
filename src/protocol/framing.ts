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

const EMPTY_BUFFER = Buffer.alloc(0);

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

/**
 * Decoder states: between frames (0 or 1 byte of the next length prefix seen), gathering a
 * frame split across chunks, and dropping the rest of a frame over the size limit.
 */
const GET_LENGTH = 0;
const GET_BODY = 1;
const SKIP_BODY = 2;

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
 * WebSocket message) are decoded in place, without copying or slicing. A frame split across
 * chunks is gathered into one buffer of its size as its bytes arrive, so every byte is copied
 * at most once and no chunk is kept: the work is linear in the bytes pushed however they are
 * cut (a peer sending a frame one byte per message costs one copy of it, not one per byte).
 */
export class FrameDecoder {
  readonly maxMessageBytes: number;
  private state = GET_LENGTH;
  /** Bytes of the partial frame received so far, its length prefix included (0: between frames). */
  private buffered = 0;
  /** GET_LENGTH with `buffered` 1: the high byte of the length prefix. */
  private prefixByte = 0;
  /** GET_BODY: the split frame being gathered, length prefix included, and how much of it arrived. */
  private frame: Buffer = EMPTY_BUFFER;
  private filled = 0;
  /** SKIP_BODY: the length of the oversize message, and how many of its bytes are still to come. */
  private skipLength = 0;
  private skipLeft = 0;
  private readonly info: ReadInfo = { unknownFields: false };

  constructor(options: FrameDecoderOptions = {}) {
    this.maxMessageBytes = options.maxMessageBytes ?? MAX_MESSAGE_BYTES;
  }

  /** Bytes received but not yet decoded: the partial frame, length prefix included. */
  get bufferedBytes(): number {
    return this.buffered;
  }

  /** Drops any partial frame, e.g. when a session ends. */
  reset(): void {
    this.state = GET_LENGTH;
    this.buffered = 0;
    this.frame = EMPTY_BUFFER;
    this.filled = 0;
    this.skipLeft = 0;
  }

  push(chunk: Uint8Array, onMessage: OnMessage, onError: (err: TunnelError) => void): void {
    const end = chunk.length;
    let pos = 0;
    if (this.buffered > 0) {
      pos = this.continueFrame(chunk, onMessage, onError);
      if (this.buffered > 0) return;
    }
    while (end - pos >= LENGTH_PREFIX_BYTES) {
      const length = (chunk[pos] << 8) | chunk[pos + 1];
      const frameEnd = pos + LENGTH_PREFIX_BYTES + length;
      if (frameEnd > end) break;
      this.decode(chunk, pos, frameEnd, true, onMessage, onError);
      pos = frameEnd;
    }
    if (pos < end) {
      // The start of a frame that ends in a later chunk.
      this.state = GET_LENGTH;
      this.prefixByte = chunk[pos];
      this.buffered = 1;
      if (end - pos > 1) this.continueFrame(chunk.subarray(pos + 1), onMessage, onError);
    }
  }

  /**
   * Takes the bytes of the partial frame from the start of `chunk`; returns where they end
   * (the whole chunk while the frame is still incomplete).
   */
  private continueFrame(chunk: Uint8Array, onMessage: OnMessage, onError: (err: TunnelError) => void): number {
    const end = chunk.length;
    let pos = 0;
    if (this.state === GET_LENGTH) {
      if (end === 0) return 0;
      const length = (this.prefixByte << 8) | chunk[0];
      pos = 1;
      this.buffered = LENGTH_PREFIX_BYTES;
      if (length > this.maxMessageBytes) {
        this.state = SKIP_BODY;
        this.skipLength = length;
        this.skipLeft = length;
      } else {
        this.state = GET_BODY;
        this.frame = Buffer.allocUnsafe(LENGTH_PREFIX_BYTES + length);
        this.frame[0] = length >>> 8;
        this.frame[1] = length & 0xff;
        this.filled = LENGTH_PREFIX_BYTES;
      }
    }
    if (this.state === SKIP_BODY) {
      const take = Math.min(this.skipLeft, end - pos);
      this.skipLeft -= take;
      this.buffered += take;
      if (this.skipLeft > 0) return end;
      const length = this.skipLength;
      this.reset();
      onError(tooLarge(length, this.maxMessageBytes));
      return pos + take;
    }
    const frame = this.frame;
    const take = Math.min(frame.length - this.filled, end - pos);
    if (take > 0) frame.set(take === end && pos === 0 ? chunk : chunk.subarray(pos, pos + take), this.filled);
    this.filled += take;
    this.buffered = this.filled;
    if (this.filled < frame.length) return end;
    this.reset();
    this.decode(frame, 0, frame.length, false, onMessage, onError);
    return pos + take;
  }

  /** Decodes the frame `bytes[start, end)`: a length prefix, then the message; `inChunk`: it lay whole in a pushed chunk. */
  private decode(bytes: Uint8Array, start: number, end: number, inChunk: boolean, onMessage: OnMessage, onError: (err: TunnelError) => void): void {
    const bodyStart = start + LENGTH_PREFIX_BYTES;
    const length = end - bodyStart;
    if (length > this.maxMessageBytes) {
      onError(tooLarge(length, this.maxMessageBytes));
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
    onMessage(msg, inChunk && !info.unknownFields ? bytes.subarray(start, end) : undefined);
  }
}

function tooLarge(length: number, limit: number): TunnelError {
  return new TunnelError(ErrorCode.FRAME_TOO_LARGE, `message of ${length} bytes exceeds the limit of ${limit}`);
}
