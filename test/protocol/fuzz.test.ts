/**
 * Fuzzing the decoder: 100,000+ random and mutated inputs must produce only valid
 * messages or TunnelErrors, never another exception, and every push must return.
 * The generator is seeded, so a failure reproduces.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { decodeMessage, encodeMessage, type Message } from '../../src/protocol/message';
import { encodeFrame, FrameDecoder } from '../../src/protocol/framing';
import { TunnelError } from '../../src/protocol/errors';
import { GOLDEN } from './fixtures';

/** xorshift32: small, fast, deterministic. */
function rng(seed: number) {
  let x = seed >>> 0 || 1;
  const next = () => {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    return x;
  };
  return { next, int: (n: number) => next() % n, bytes: (n: number) => Uint8Array.from({ length: n }, () => next() & 0xff) };
}

const SEEDS = GOLDEN.map((g) => encodeMessage(g.msg)).filter((b) => b.length > 0);

/** One mutated input: truncation, bit flips, inserted varint garbage, wrong wire types, or pure noise. */
function mutate(r: ReturnType<typeof rng>): Uint8Array {
  const base = SEEDS[r.int(SEEDS.length)];
  switch (r.int(7)) {
    case 0: return base.subarray(0, r.int(base.length + 1));                 // truncated
    case 1: { const b = Uint8Array.from(base); b[r.int(b.length)] ^= 1 << r.int(8); return b; } // bit flip
    case 2: { const b = Uint8Array.from(base); b[r.int(b.length)] = r.next() & 0xff; return b; } // byte replace
    case 3: { const at = r.int(base.length + 1); const junk = Uint8Array.from({ length: 1 + r.int(12) }, () => 0x80 | (r.next() & 0x7f)); return Uint8Array.from([...base.subarray(0, at), ...junk, ...base.subarray(at)]); } // unterminated varints
    case 4: { const b = Uint8Array.from(base); const i = r.int(b.length); b[i] = (b[i] & ~7) | r.int(8); return b; } // wire type swap
    case 5: return Uint8Array.from([...base, ...r.bytes(r.int(8))]);           // trailing garbage
    default: return r.bytes(r.int(40));                                        // noise
  }
}

/**
 * What a stream holds, read plainly from the start: the body of every complete frame (2-byte
 * length, then that many bytes), and how many bytes of a partial frame are left at the end.
 */
function splitFrames(stream: Uint8Array): { bodies: Uint8Array[]; rest: number } {
  const bodies: Uint8Array[] = [];
  let pos = 0;
  while (stream.length - pos >= 2) {
    const length = (stream[pos] << 8) | stream[pos + 1];
    if (stream.length - pos - 2 < length) break;
    bodies.push(stream.subarray(pos + 2, pos + 2 + length));
    pos += 2 + length;
  }
  return { bodies, rest: stream.length - pos };
}

/** Bytes that complete the partial frame at the end of `stream` (a zero-filled body), so the stream ends on a frame boundary. */
function completion(stream: Uint8Array): Uint8Array {
  const { rest } = splitFrames(stream);
  if (rest === 0) return new Uint8Array(0);
  if (rest === 1) return new Uint8Array(1 + stream[stream.length - 1] * 256);   // low length byte 0, then the body
  const at = stream.length - rest;
  return new Uint8Array(2 + ((stream[at] << 8) | stream[at + 1]) - rest);
}

/** A decoder outcome in comparable form: the message, or the error's code. */
type Outcome = { msg: unknown } | { error: string };
const outcomeOf = (m: Message): Outcome => ({ msg: { ...m, payload: [...m.payload] } });

/** What decoding one complete frame body must give (FrameDecoder's default limit is 65536). */
function expectedOutcome(body: Uint8Array): Outcome {
  if (body.length > 65536) return { error: 'ERR_FRAME_TOO_LARGE' };
  try {
    return outcomeOf(decodeMessage(body));
  } catch (err) {
    return { error: (err as TunnelError).code };
  }
}

function check(m: Message) {
  assert.type(m.type, 'number');
  assert.ok(Number.isInteger(m.streamId) && m.streamId >= -(2 ** 31) && m.streamId < 2 ** 31);
  assert.ok(Number.isInteger(m.connectionId) && m.connectionId >= 0 && m.connectionId <= 0xffffffff);
  assert.instance(m.payload, Uint8Array);
  assert.type(m.serviceId, 'string');
}

const fuzz = suite('decoder fuzzing');

fuzz('100,000 mutated messages: a Message or a TunnelError, nothing else', () => {
  const r = rng(0xc0ffee);
  let ok = 0;
  let rejected = 0;
  for (let i = 0; i < 100_000; i++) {
    const input = mutate(r);
    try {
      check(decodeMessage(input));
      ok++;
    } catch (err) {
      if (!(err instanceof TunnelError)) throw new Error(`input ${Buffer.from(input).toString('hex')} threw ${String(err)}`);
      rejected++;
    }
  }
  // Both outcomes must actually occur, or the generator is not exercising anything.
  assert.ok(ok > 1000, `valid ${ok}`);
  assert.ok(rejected > 1000, `rejected ${rejected}`);
});

fuzz('random byte streams in random chunks, with lengths 0 and 65535: every complete frame is decoded in order, the partial one is kept', () => {
  const r = rng(42);
  let messages = 0;
  let errors = 0;
  for (let round = 0; round < 2000; round++) {
    const d = new FrameDecoder();
    const parts: Uint8Array[] = [];
    for (let k = 0; k < 20; k++) {
      const kind = r.int(5);
      if (kind === 0) parts.push(Uint8Array.of(0, 0));                               // length 0
      else if (kind === 1) parts.push(Uint8Array.of(0xff, 0xff, ...r.bytes(r.int(64)))); // length 65535, short body
      else if (kind === 2) parts.push(encodeFrame(GOLDEN[r.int(GOLDEN.length)].msg));
      else if (kind === 3) { const m = mutate(r); parts.push(Uint8Array.of(m.length >> 8, m.length & 0xff), m); }
      else parts.push(r.bytes(r.int(100)));
    }
    const stream = Buffer.concat(parts);
    const outcomes: Outcome[] = [];
    const onMessage = (m: Message): void => { check(m); messages++; outcomes.push(outcomeOf(m)); };
    const onError = (e: TunnelError): void => { assert.instance(e, TunnelError); errors++; outcomes.push({ error: e.code }); };
    let pos = 0;
    while (pos < stream.length) {
      const n = 1 + r.int(300);
      d.push(stream.subarray(pos, pos + n), onMessage, onError);
      pos += n;
    }
    // Chunking must not matter: the same outcomes, in order, as reading the whole stream at
    // once, and nothing held back but the partial frame at the end (its length prefix, once
    // read, is no longer counted).
    const { bodies, rest } = splitFrames(stream);
    assert.equal(outcomes, bodies.map(expectedOutcome), `round ${round}`);
    assert.is(d.bufferedBytes, rest, `round ${round}: bytes kept`);
    // Completing that frame and sending one more: both come out, and nothing is kept.
    const last = encodeFrame(GOLDEN[round % GOLDEN.length].msg);
    const tail = Buffer.concat([completion(stream), last]);
    d.push(tail, onMessage, onError);
    const whole = splitFrames(Buffer.concat([stream, tail]));
    assert.is(whole.rest, 0);
    assert.equal(outcomes, whole.bodies.map(expectedOutcome), `round ${round}: after completing the stream`);
    assert.is(d.bufferedBytes, 0, `round ${round}: nothing kept`);
  }
  // A random length prefix often swallows the rest of a stream; both outcomes must still be common.
  assert.ok(messages > 500, `messages ${messages}`);
  assert.ok(errors > 500, `errors ${errors}`);
});

fuzz('random valid messages round-trip exactly', () => {
  const r = rng(7);
  for (let i = 0; i < 20_000; i++) {
    const msg = {
      type: r.int(10),
      streamId: (r.next() | 0) >> r.int(32),
      ignorable: r.int(2) === 1,
      payload: r.bytes(r.int(3) === 0 ? 0 : r.int(300)),
      serviceId: r.int(2) ? '' : `svc${r.int(1000)}`,
      availableServiceIds: Array.from({ length: r.int(4) }, () => `id${r.int(99)}`),
      connectionId: r.next() >>> r.int(32),
    };
    const back = decodeMessage(encodeMessage(msg));
    assert.equal({ ...back, payload: [...back.payload] }, { ...msg, payload: [...msg.payload] });
  }
});

fuzz.run();
