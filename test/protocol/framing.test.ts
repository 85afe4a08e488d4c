import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { encodeFrame, FrameDecoder, packFrames } from '../../src/protocol/framing';
import { encodeMessage, MessageType, type Message, type MessageInit } from '../../src/protocol/message';
import { ErrorCode, TunnelError } from '../../src/protocol/errors';
import { MAX_WS_MESSAGE_BYTES } from '../../src/protocol/constants';
import { GOLDEN } from './fixtures';

const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');

function summary(m: Message) {
  return { ...m, payload: toHex(m.payload) };
}

function decodeAll(chunks: Uint8Array[], maxMessageBytes?: number) {
  const d = new FrameDecoder({ maxMessageBytes });
  const msgs: Message[] = [];
  const errs: TunnelError[] = [];
  for (const c of chunks) d.push(c, (m) => msgs.push(m), (e) => errs.push(e));
  return { msgs, errs, decoder: d };
}

const BIG: MessageInit = { type: MessageType.DATA, streamId: 9, serviceId: 'SSH1', connectionId: 3, payload: new Uint8Array(64512).map((_, i) => (i * 7) & 0xff) };
const FIXTURES: MessageInit[] = [...GOLDEN.map((g) => g.msg), BIG];

const encode = suite('frame encoding');

encode('prefix is the 2-byte big-endian length of the message', () => {
  for (const msg of FIXTURES) {
    const frame = encodeFrame(msg);
    const body = encodeMessage(msg);
    assert.is(frame.length, body.length + 2);
    assert.is(frame.readUInt16BE(0), body.length);
    assert.is(toHex(frame.subarray(2)), toHex(body));
  }
});

encode('the 64512-byte DATA frame has prefix fc10', () => {
  assert.is(toHex(encodeFrame(BIG).subarray(0, 2)), 'fc10');
});

encode('V1 STREAM_RESET is a 6-byte frame', () => {
  assert.is(toHex(encodeFrame({ type: MessageType.STREAM_RESET, streamId: 4 })), '000408031004');
});

encode('a message that cannot be framed is rejected with ERR_FRAME_TOO_LARGE', () => {
  try {
    encodeFrame({ type: MessageType.DATA, streamId: 1, payload: new Uint8Array(70000) });
    assert.unreachable();
  } catch (err) {
    assert.is((err as TunnelError).code, ErrorCode.FRAME_TOO_LARGE);
  }
});

const pack = suite('packing frames into WebSocket messages');

pack('keeps order, never exceeds 131076 bytes, never splits a frame', () => {
  const frames = [BIG, BIG, { type: 1, streamId: 1, payload: Buffer.from('x') }, BIG, ...GOLDEN.map((g) => g.msg)].map(encodeFrame);
  const payloads = packFrames(frames);
  for (const p of payloads) assert.ok(p.length <= MAX_WS_MESSAGE_BYTES);
  assert.is(toHex(Buffer.concat(payloads)), toHex(Buffer.concat(frames)));
  const { msgs, errs } = decodeAll(payloads);
  assert.is(errs.length, 0);
  assert.is(msgs.length, frames.length);
  // Two 64530-byte frames and the 9-byte one fit in 131076; the next big frame starts a new message.
  assert.is(payloads[0].length, 2 * frames[0].length + frames[2].length);
  assert.is(payloads[1].subarray(0, frames[3].length).equals(frames[3]), true);
});

pack('many small frames share one message', () => {
  const frames = Array.from({ length: 1000 }, (_, i) => encodeFrame({ type: 1, streamId: 1, connectionId: i + 1, payload: Buffer.from([i & 0xff]) }));
  const payloads = packFrames(frames);
  assert.is(payloads.length, 1);
  assert.is(decodeAll(payloads).msgs.length, 1000);
});

pack('a lone frame is passed through without a copy', () => {
  const frame = encodeFrame(BIG);
  const [only] = packFrames([frame]);
  assert.is(only.buffer, frame.buffer);
});

pack('a frame over the limit is refused', () => {
  assert.throws(() => packFrames([new Uint8Array(100)], 50), (e: TunnelError) => e.code === ErrorCode.FRAME_TOO_LARGE);
});

const decode = suite('incremental frame decoding');

decode('every fixture split at every byte offset decodes identically', () => {
  for (const msg of FIXTURES) {
    const frame = encodeFrame(msg);
    const whole = decodeAll([frame]).msgs.map(summary);
    assert.is(whole.length, 1);
    // For the 64 KiB frame, every offset is 64530 decoders: check the edges and a stride.
    const offsets = frame.length < 100 ? [...Array(frame.length + 1).keys()]
      : [...Array(frame.length + 1).keys()].filter((i) => i < 40 || i > frame.length - 40 || i % 997 === 0);
    for (const cut of offsets) {
      const { msgs, errs, decoder } = decodeAll([frame.subarray(0, cut), frame.subarray(cut)]);
      assert.is(errs.length, 0);
      assert.equal(msgs.map(summary), whole, `cut at ${cut}`);
      assert.is(decoder.bufferedBytes, 0);
    }
  }
});

/**
 * Runs `fn` and counts the elements that array and byte-array methods move or copy meanwhile:
 * shifting an array moves the elements behind the first, copying bytes moves each byte. A count
 * of what the algorithm does, not of time, so it holds on any machine.
 */
function elementsMoved(fn: () => void): number {
  let moved = 0;
  const patches: Array<[object, string, (original: (...args: never[]) => unknown) => (this: never, ...args: never[]) => unknown]> = [
    [Array.prototype, 'shift', (original) => function (this: unknown[]) { moved += Math.max(0, this.length - 1); return original.call(this); }],
    [Array.prototype, 'unshift', (original) => function (this: unknown[], ...items: unknown[]) { moved += this.length; return original.apply(this, items as never[]); }],
    [Array.prototype, 'splice', (original) => function (this: unknown[], ...args: unknown[]) { moved += this.length; return original.apply(this, args as never[]); }],
    [Array.prototype, 'slice', (original) => function (this: unknown[], ...args: unknown[]) { const out = original.apply(this, args as never[]) as unknown[]; moved += out.length; return out; }],
    [Array.prototype, 'concat', (original) => function (this: unknown[], ...args: unknown[]) { const out = original.apply(this, args as never[]) as unknown[]; moved += out.length; return out; }],
    [Object.getPrototypeOf(Uint8Array.prototype), 'set', (original) => function (this: Uint8Array, source: ArrayLike<number>, offset?: number) { moved += source.length; return original.call(this, source as never, offset as never); }],
    [Object.getPrototypeOf(Uint8Array.prototype), 'slice', (original) => function (this: Uint8Array, ...args: unknown[]) { const out = original.apply(this, args as never[]) as Uint8Array; moved += out.length; return out; }],
    [Buffer.prototype, 'copy', (original) => function (this: Buffer, ...args: unknown[]) { const n = original.apply(this, args as never[]) as number; moved += n; return n; }],
    [Buffer, 'concat', (original) => function (...args: unknown[]) { const out = original.apply(Buffer, args as never[]) as Buffer; moved += out.length; return out; }],
  ];
  const saved = patches.map(([owner, name]) => [owner, name, (owner as Record<string, unknown>)[name]] as const);
  try {
    for (const [owner, name, wrap] of patches) (owner as Record<string, unknown>)[name] = wrap((owner as Record<string, never>)[name]);
    fn();
  } finally {
    for (const [owner, name, original] of saved) (owner as Record<string, unknown>)[name] = original;
  }
  return moved;
}

decode('the work is linear in the bytes pushed: a 64 KiB frame one byte per push moves each byte at most once', () => {
  const frame = encodeFrame(BIG);
  const d = new FrameDecoder();
  const pieces = [...Array(frame.length).keys()].map((i) => frame.subarray(i, i + 1));
  const seen: Message[] = [];
  const moved = elementsMoved(() => {
    for (const piece of pieces) d.push(piece, (m) => seen.push(m), (err) => { throw err; });
  });
  assert.is(seen.length, 1);
  assert.equal(summary(seen[0]), summary(decodeAll([frame]).msgs[0]));
  assert.ok(moved <= frame.length, `${moved} elements moved for a ${frame.length}-byte frame`);
  assert.is(d.bufferedBytes, 0);
});

decode('the work is linear in the bytes pushed: frames of every size cut at random', () => {
  let seed = 7;
  const next = (n: number) => { seed = (seed * 1103515245 + 12345) >>> 0; return seed % n; };
  const frames = Array.from({ length: 200 }, (_, i) => encodeFrame({ type: MessageType.DATA, streamId: 1, serviceId: 'S', connectionId: 1, payload: new Uint8Array(next(i % 10 === 0 ? 65000 : 300)) }));
  const stream = Buffer.concat(frames);
  const pieces: Uint8Array[] = [];
  for (let pos = 0; pos < stream.length;) {
    const n = 1 + (next(4) === 0 ? next(20_000) : next(3));
    pieces.push(stream.subarray(pos, pos + n));
    pos += n;
  }
  const d = new FrameDecoder();
  let count = 0;
  const moved = elementsMoved(() => {
    for (const piece of pieces) d.push(piece, () => count++, (err) => { throw err; });
  });
  assert.is(count, frames.length);
  assert.ok(moved <= stream.length, `${moved} elements moved for ${stream.length} bytes`);
});

decode('an oversize frame split anywhere is reported once, not kept, and the next frame decodes', () => {
  const big = encodeFrame({ type: 1, streamId: 1, payload: new Uint8Array(200) });
  const small = encodeFrame({ type: 4 });
  const stream = Buffer.concat([big, small]);
  for (let cut = 0; cut <= stream.length; cut++) {
    const d = new FrameDecoder({ maxMessageBytes: 100 });
    const msgs: Message[] = [];
    const errs: TunnelError[] = [];
    d.push(stream.subarray(0, cut), (m) => msgs.push(m), (e) => errs.push(e));
    if (cut > 2 && cut < big.length) assert.is(d.bufferedBytes, cut, `cut at ${cut}`);
    d.push(stream.subarray(cut), (m) => msgs.push(m), (e) => errs.push(e));
    assert.equal(errs.map((e) => e.code), [ErrorCode.FRAME_TOO_LARGE], `cut at ${cut}`);
    assert.match(errs[0].message, /message of \d+ bytes exceeds the limit of 100/);
    assert.equal(msgs.map((m) => m.type), [MessageType.SESSION_RESET], `cut at ${cut}`);
    assert.is(d.bufferedBytes, 0);
  }
  // Fed one byte at a time, the oversize frame is dropped as it arrives: nothing is gathered.
  const d = new FrameDecoder({ maxMessageBytes: 100 });
  const moved = elementsMoved(() => {
    for (let i = 0; i < stream.length; i++) d.push(stream.subarray(i, i + 1), () => {}, () => {});
  });
  assert.ok(moved <= small.length, `${moved} elements moved`);
});

decode('a frame fed one byte at a time', () => {
  const frame = encodeFrame({ type: 1, streamId: 2, serviceId: 'HTTP1', connectionId: 9, payload: Buffer.from('hello world') });
  const { msgs } = decodeAll([...frame].map((b) => Uint8Array.of(b)));
  assert.is(msgs.length, 1);
  assert.is(Buffer.from(msgs[0].payload).toString(), 'hello world');
});

decode('many frames concatenated into one chunk', () => {
  const frames = Array.from({ length: 500 }, (_, i) => FIXTURES[i % FIXTURES.length]).map(encodeFrame);
  const { msgs, errs } = decodeAll([Buffer.concat(frames)]);
  assert.is(errs.length, 0);
  assert.is(msgs.length, 500);
  assert.equal(msgs.map(summary), frames.map((f) => summary(decodeAll([f]).msgs[0])));
});

decode('all fixtures concatenated and split at every offset', () => {
  const stream = Buffer.concat(GOLDEN.map((g) => encodeFrame(g.msg)));
  for (let cut = 0; cut <= stream.length; cut++) {
    const { msgs, errs } = decodeAll([stream.subarray(0, cut), stream.subarray(cut)]);
    assert.is(errs.length, 0);
    assert.is(msgs.length, GOLDEN.length);
  }
});

decode('a payload inside one chunk is a view into it', () => {
  const chunk = encodeFrame({ type: 1, streamId: 1, payload: Buffer.from('abc') });
  const { msgs } = decodeAll([chunk]);
  assert.is(msgs[0].payload.buffer, chunk.buffer);
});

decode('length 0 yields an empty message (type 0) for validation to judge', () => {
  const { msgs, errs } = decodeAll([Uint8Array.of(0, 0, 0, 2, 0x08, 0x04)]);
  assert.is(errs.length, 0);
  assert.equal(msgs.map((m) => m.type), [0, MessageType.SESSION_RESET]);
});

decode('length 65535 is waited for, not misread', () => {
  const d = new FrameDecoder();
  const seen: unknown[] = [];
  d.push(Uint8Array.of(0xff, 0xff, 1, 2, 3), (m) => seen.push(m), (e) => seen.push(e));
  assert.is(seen.length, 0);
  // The length prefix is part of the partial frame: a relay must not take the chunk for whole frames.
  assert.is(d.bufferedBytes, 5);
});

decode('a chunk that ends right after a length prefix leaves a partial frame, not a clean boundary', () => {
  const a = encodeFrame({ type: MessageType.DATA, streamId: 1, payload: Buffer.from('a') });
  const b = encodeFrame({ type: MessageType.DATA, streamId: 2, payload: Buffer.from('b') });
  const d = new FrameDecoder();
  const seen: number[] = [];
  d.push(Buffer.concat([a, b.subarray(0, 2)]), (m) => seen.push(m.streamId), (err) => { throw err; });
  assert.equal(seen, [1]);
  assert.is(d.bufferedBytes, 2);
  d.push(b.subarray(2), (m) => seen.push(m.streamId), (err) => { throw err; });
  assert.equal(seen, [1, 2]);
  assert.is(d.bufferedBytes, 0);
});

decode('an oversize frame is reported and the next frame still decodes', () => {
  const big = encodeFrame({ type: 1, streamId: 1, payload: new Uint8Array(200) });
  const small = encodeFrame({ type: 4 });
  const { msgs, errs } = decodeAll([Buffer.concat([big, small])], 100);
  assert.is(errs.length, 1);
  assert.is(errs[0].code, ErrorCode.FRAME_TOO_LARGE);
  assert.equal(msgs.map((m) => m.type), [MessageType.SESSION_RESET]);
});

decode('a malformed body is reported and decoding continues', () => {
  const bad = Uint8Array.of(0, 1, 0x08); // truncated varint inside a 1-byte body
  const good = encodeFrame({ type: 3, streamId: 1 });
  const { msgs, errs } = decodeAll([Buffer.concat([bad, good])]);
  assert.is(errs[0].code, ErrorCode.TRUNCATED);
  assert.equal(msgs.map((m) => m.type), [MessageType.STREAM_RESET]);
});

decode('reset() drops a partial frame', () => {
  const d = new FrameDecoder();
  const seen: Message[] = [];
  d.push(Uint8Array.of(0, 4, 8), (m) => seen.push(m), () => {});
  d.reset();
  d.push(encodeFrame({ type: 4 }), (m) => seen.push(m), () => {});
  assert.equal(seen.map((m) => m.type), [4]);
});

decode('gives each whole frame\'s original bytes; none for a frame split across chunks or one with an unknown field (issue 15)', () => {
  const d = new FrameDecoder();
  const a = encodeFrame({ type: MessageType.DATA, streamId: 1, payload: Buffer.from('a') });
  const b = encodeFrame({ type: MessageType.STREAM_RESET, streamId: 2, serviceId: 'SSH' });
  // A DATA frame with field 15 (varint 5), which Message does not define.
  const unknown = Uint8Array.of(0, 6, 0x08, 0x01, 0x10, 0x03, 0x78, 0x05);
  const split = encodeFrame({ type: MessageType.DATA, streamId: 4, payload: Buffer.from('split') });
  const seen: Array<[number, string | undefined]> = [];
  const onMessage = (m: Message, frame: Uint8Array | undefined) => seen.push([m.streamId, frame && toHex(frame)]);
  d.push(Buffer.concat([a, b, unknown, split.subarray(0, 1)]), onMessage, (err) => { throw err; });
  d.push(split.subarray(1, 3), onMessage, (err) => { throw err; });
  d.push(Buffer.concat([split.subarray(3), a]), onMessage, (err) => { throw err; });
  assert.equal(seen, [[1, toHex(a)], [2, toHex(b)], [3, undefined], [4, undefined], [1, toHex(a)]]);
  assert.is(d.bufferedBytes, 0);
});

encode.run();
pack.run();
decode.run();
