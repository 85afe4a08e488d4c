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
  assert.is(d.bufferedBytes, 3);
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
