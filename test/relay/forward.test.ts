import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { SUBPROTOCOL_V1, SUBPROTOCOL_V2 } from '../../src/protocol/constants';
import { encodeFrame } from '../../src/protocol/framing';
import { MessageType } from '../../src/protocol/message';
import { silentLogger } from '../../src/log';
import { fitCloseReason } from '../../src/relay/link';
import { startRelay, type Relay } from '../../src/relay/server';
import { EventLog } from './events';
import { connectPeer, connectReady, type TestPeer } from './peer';

const { DATA, STREAM_START, STREAM_RESET, SERVICE_IDS, SESSION_RESET, CONNECTION_START, CONNECTION_RESET } = MessageType;

interface Ctx { relay: Relay; peers: TestPeer[]; events: EventLog }
const forward = suite<Ctx>('relay data plane: forwarding');

forward.before.each(async (ctx) => {
  ctx.events = new EventLog();
  ctx.relay = await startRelay({ port: 0, tls: 'self-signed', log: silentLogger(), onEvent: ctx.events.onEvent });
  ctx.peers = [];
});

/** `n` bytes that differ per (seed, offset): a shifted, repeated or truncated payload does not match. */
function bytes(n: number, seed: number): Buffer {
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i++) out[i] = (seed * 31 + i * 7 + (i >> 8)) & 0xff;
  return out;
}
forward.after.each(async (ctx) => {
  for (const p of ctx.peers) p.terminate();
  await ctx.relay.close();
});

async function pair(ctx: Ctx, services: string[], protocols?: { source?: string[]; destination?: string[] }) {
  const t = await ctx.relay.openTunnel({ services });
  const src = await connectPeer(ctx.relay, t.sourceAccessToken, { mode: 'source', protocols: protocols?.source });
  const dst = await connectPeer(ctx.relay, t.destinationAccessToken, { mode: 'destination', protocols: protocols?.destination });
  ctx.peers.push(src, dst);
  return { t, src, dst };
}

/** A pair on one SSH service, past SERVICE_IDS, with stream 1 started at the destination. */
async function sshStream(ctx: Ctx) {
  const { src, dst } = await pair(ctx, ['SSH']);
  await src.next();
  await dst.next();
  src.send({ type: STREAM_START, streamId: 1, serviceId: 'SSH', connectionId: 1 });
  await dst.next();
  return { src, dst };
}

forward('sends SERVICE_IDS with the tunnel services right after a 3.0 upgrade', async (ctx) => {
  const { src, dst } = await pair(ctx, ['SSH', 'HTTP']);
  for (const p of [src, dst]) {
    const m = await p.next();
    assert.is(m.type, SERVICE_IDS);
    assert.equal(m.availableServiceIds, ['SSH', 'HTTP']);
  }
});

forward('sends an empty SERVICE_IDS for a tunnel without services, none on 1.0', async (ctx) => {
  const { src, dst } = await pair(ctx, [], { destination: [SUBPROTOCOL_V1] });
  const m = await src.next();
  assert.is(m.type, SERVICE_IDS);
  assert.equal(m.availableServiceIds, []);
  // The 1.0 destination gets no SERVICE_IDS: the first thing it sees is forwarded traffic.
  src.send({ type: STREAM_START, streamId: 1 });
  const first = await dst.next();
  assert.is(first.type, STREAM_START);
  assert.is(first.streamId, 1);
});

forward('forwards messages in order both ways, aggregated into WebSocket messages of at most 131076 bytes', async (ctx) => {
  const { src, dst } = await pair(ctx, ['SSH']);
  await src.next();
  await dst.next();
  src.send({ type: STREAM_START, streamId: 1, serviceId: 'SSH', connectionId: 1 });
  const sizes: number[] = [];
  dst.ws.on('message', (d: Buffer) => sizes.push(d.length));
  const count = 40;
  const small = Array.from({ length: count }, (_, i) => bytes(1000 + i, i));
  const large = Array.from({ length: 20 }, (_, i) => bytes(64512, 100 + i));
  // Several frames per WebSocket message from the sender, a frame split across two messages.
  const frames = Buffer.concat(small.map((payload) => encodeFrame({ type: DATA, streamId: 1, serviceId: 'SSH', connectionId: 1, payload })));
  src.ws.send(frames.subarray(0, 12345));
  src.ws.send(frames.subarray(12345));
  for (const payload of large) src.send({ type: DATA, streamId: 1, serviceId: 'SSH', connectionId: 1, payload });
  const start = await dst.next();
  assert.is(start.type, STREAM_START);
  for (const [i, payload] of [...small, ...large].entries()) {
    const m = await dst.next();
    assert.is(m.type, DATA);
    assert.is(m.streamId, 1);
    assert.is(m.serviceId, 'SSH');
    assert.ok(Buffer.from(m.payload).equals(payload), `message ${i} arrived intact and in order`);
  }
  assert.ok(sizes.every((n) => n <= 131076), `largest message ${Math.max(...sizes)}`);
  assert.ok(sizes.length < count + 21, 'small frames were aggregated');
  dst.send({ type: DATA, streamId: 1, serviceId: 'SSH', connectionId: 1, payload: Buffer.from('back') });
  const back = await src.next();
  assert.is(Buffer.from(back.payload).toString(), 'back');
  assert.is(back.serviceId, 'SSH');
});

forward('a peer that does not read still has its own data forwarded: the two directions are independent', async (ctx) => {
  // Regression: the relay paused reading a peer whenever its own backlog towards that peer was
  // high, so an echo-style app that stops reading while its writes are blocked deadlocked the
  // tunnel (seen as a hang of test/e2e/concurrent "three services at once").
  const { src, dst } = await sshStream(ctx);
  dst.ws.pause();
  const payload = Buffer.alloc(64512, 1);
  // 32 MiB towards the destination: more than the kernel buffers and the relay's high-water mark.
  for (let i = 0; i < 512; i++) src.send({ type: DATA, streamId: 1, serviceId: 'SSH', connectionId: 1, payload });
  await ctx.events.waitFor('paused', (e) => e.mode === 'source' && e.receiver === 'destination', 10_000);
  // The stalled destination keeps sending: every byte must reach the source.
  for (let i = 0; i < 64; i++) dst.send({ type: DATA, streamId: 1, serviceId: 'SSH', connectionId: 1, payload: bytes(64512, i) });
  for (let i = 0; i < 64; i++) {
    const m = await src.next(10_000);
    assert.is(m.type, DATA);
    assert.ok(Buffer.from(m.payload).equals(bytes(64512, i)), `message ${i} intact`);
  }
  assert.ok(dst.ws.isPaused, 'the destination never read in the meantime');
});

forward('fills in the service id of a V1 message in a one-service tunnel and strips it towards a 1.0 peer', async (ctx) => {
  const { src, dst } = await pair(ctx, ['SSH'], { source: [SUBPROTOCOL_V1], destination: [SUBPROTOCOL_V2] });
  await dst.next(); // SERVICE_IDS (2.0)
  src.send({ type: STREAM_START, streamId: 3 });
  const m = await dst.next();
  assert.is(m.type, STREAM_START);
  assert.is(m.serviceId, 'SSH');
  dst.send({ type: DATA, streamId: 3, serviceId: 'SSH', payload: Buffer.from('x') });
  const back = await src.next();
  assert.is(back.serviceId, '');
  assert.is(back.streamId, 3);
});

/** A DATA frame for stream 1, connection 1 of SSH, with its fields in reverse order (valid protobuf, not what our encoder writes), and `extra` bytes of further fields at the end. */
function reversedFrame(payload: string, extra: number[] = []): Buffer {
  const p = Buffer.from(payload);
  const body = Buffer.from([0x38, 0x01, 0x2a, 0x03, ...Buffer.from('SSH'), 0x22, p.length, ...p, 0x10, 0x01, 0x08, DATA, ...extra]);
  return Buffer.concat([Buffer.from([body.length >> 8, body.length & 0xff]), body]);
}

forward('forwards a message of whole frames that need no rewrite as it came, byte for byte (issue 15)', async (ctx) => {
  const { src, dst } = await sshStream(ctx);
  const raw: Buffer[] = [];
  dst.ws.on('message', (d: Buffer) => raw.push(d));
  // Re-encoding would put the fields back in field-number order: these arrive as they were sent.
  const message = Buffer.concat([reversedFrame('one'), reversedFrame('two')]);
  src.ws.send(message);
  const [a, b] = [await dst.next(), await dst.next()];
  assert.equal([Buffer.from(a.payload).toString(), Buffer.from(b.payload).toString()], ['one', 'two']);
  assert.equal(raw.length, 1);
  assert.ok(raw[0].equals(message), 'the same bytes');
});

forward('re-encodes what needs it: a frame with a field the protocol does not define loses it, a frame split across messages arrives whole', async (ctx) => {
  const { src, dst } = await sshStream(ctx);
  const raw: Buffer[] = [];
  dst.ws.on('message', (d: Buffer) => raw.push(d));
  // Field 15 (varint 5) is no field of Message: the relay forwards the message without it, as before.
  src.ws.send(Buffer.concat([reversedFrame('one'), reversedFrame('odd', [0x78, 0x05])]));
  await dst.next();
  const odd = await dst.next();
  assert.is(Buffer.from(odd.payload).toString(), 'odd');
  const expected = Buffer.concat([reversedFrame('one'), encodeFrame({ type: DATA, streamId: 1, serviceId: 'SSH', connectionId: 1, payload: Buffer.from('odd') })]);
  assert.ok(Buffer.concat(raw).equals(expected), `forwarded ${Buffer.concat(raw).toString('hex')}`);
  raw.length = 0;
  const split = reversedFrame('split');
  src.ws.send(split.subarray(0, 5));
  src.ws.send(split.subarray(5));
  const m = await dst.next();
  assert.is(Buffer.from(m.payload).toString(), 'split');
  assert.ok(Buffer.concat(raw).equals(encodeFrame({ type: DATA, streamId: 1, serviceId: 'SSH', connectionId: 1, payload: Buffer.from('split') })));
});

async function expectViolation(ctx: Ctx, sender: 'source' | 'destination', msg: Parameters<TestPeer['send']>[0], reason: RegExp, services = ['SSH']) {
  const { src, dst } = await pair(ctx, services);
  await src.next();
  await dst.next();
  const peer = sender === 'source' ? src : dst;
  peer.send(msg);
  const { code, reason: text } = await peer.waitClosed();
  assert.is(code, 1008);
  assert.match(text, reason);
}

forward('closes with 1008 on STREAM_START from a destination', (ctx) => expectViolation(ctx, 'destination', { type: STREAM_START, streamId: 1, serviceId: 'SSH' }, /only be sent by a source/));
forward('closes with 1008 on CONNECTION_START from a destination', (ctx) => expectViolation(ctx, 'destination', { type: CONNECTION_START, streamId: 1, serviceId: 'SSH', connectionId: 2 }, /only be sent by a source/));
forward('closes with 1008 on stream id 0', (ctx) => expectViolation(ctx, 'source', { type: DATA, streamId: 0, serviceId: 'SSH', payload: Buffer.from('x') }, /without a stream id/));
forward('closes with 1008 on a service id not in the tunnel', (ctx) => expectViolation(ctx, 'source', { type: STREAM_START, streamId: 1, serviceId: 'RDP' }, /not part of this tunnel/));
forward('closes with 1008 on SERVICE_IDS from a client', (ctx) => expectViolation(ctx, 'source', { type: SERVICE_IDS, availableServiceIds: ['SSH'] }, /only be sent by the service/));
forward('closes with 1008 on SESSION_RESET from a client', (ctx) => expectViolation(ctx, 'destination', { type: SESSION_RESET }, /only be sent by the service/));
forward('closes with 1008 on a negative stream id instead of forwarding it (issue 16)', (ctx) => expectViolation(ctx, 'source', { type: STREAM_START, streamId: -5, serviceId: 'SSH' }, /negative stream id \(-5\)/));
forward('closes with 1008 on a message without service id in a tunnel with several services', (ctx) => expectViolation(ctx, 'source', { type: STREAM_START, streamId: 1 }, /without a service id/, ['SSH', 'HTTP']));

forward('closes with 1008 on an undecodable frame and on a text frame', async (ctx) => {
  const { src, dst } = await pair(ctx, ['SSH']);
  await src.next();
  await dst.next();
  src.ws.send(Buffer.from([0, 3, 0xff, 0xff, 0xff]));
  assert.is((await src.waitClosed()).code, 1008);
  dst.ws.send('hello');
  const closed = await dst.waitClosed();
  assert.is(closed.code, 1008);
  assert.match(closed.reason, /text frames/);
});

forward('delivers what arrived before a violation, then closes only the offender', async (ctx) => {
  const { src, dst } = await pair(ctx, ['SSH']);
  await src.next();
  await dst.next();
  src.send({ type: STREAM_START, streamId: 1, serviceId: 'SSH' }, { type: DATA, streamId: 1, serviceId: 'SSH', payload: Buffer.from('ok') }, { type: SERVICE_IDS });
  assert.is((await dst.next()).type, STREAM_START);
  assert.is(Buffer.from((await dst.next()).payload).toString(), 'ok');
  assert.is((await src.waitClosed()).code, 1008);
  // The destination learns the stream is gone, and stays connected.
  const reset = await dst.next();
  assert.is(reset.type, STREAM_RESET);
  assert.is(reset.streamId, 1);
  assert.is(dst.closeCode, undefined);
});

forward('answers STREAM_START and CONNECTION_START with a reset while the other peer is absent, drops the rest', async (ctx) => {
  const t = await ctx.relay.openTunnel({ services: ['SSH'] });
  const src = await connectReady(ctx.relay, t.sourceAccessToken);
  ctx.peers.push(src);
  src.send({ type: DATA, streamId: 1, serviceId: 'SSH', payload: Buffer.from('dropped') }, { type: STREAM_START, streamId: 4, serviceId: 'SSH', connectionId: 1 });
  const reset = await src.next();
  assert.equal([reset.type, reset.streamId, reset.serviceId], [STREAM_RESET, 4, 'SSH']);
  src.send({ type: CONNECTION_START, streamId: 4, serviceId: 'SSH', connectionId: 2 });
  const creset = await src.next();
  assert.equal([creset.type, creset.streamId, creset.serviceId, creset.connectionId], [CONNECTION_RESET, 4, 'SSH', 2]);
  assert.is(src.messages.length, 0);
});

forward('rejects a WebSocket message over 131076 bytes (close 1009) and accepts one of exactly 131076', async (ctx) => {
  const { src, dst } = await pair(ctx, ['SSH']);
  await src.next();
  await dst.next();
  // Exactly 131076 bytes: two full DATA frames and a small one that fills the rest.
  const frame = (n: number) => encodeFrame({ type: DATA, streamId: 1, serviceId: 'SSH', payload: Buffer.alloc(n, 9) });
  const full = frame(64512);
  let size = 131076 - 2 * full.length;
  while (frame(size).length > 131076 - 2 * full.length) size--;
  const two = Buffer.concat([full, full, frame(size)]);
  assert.is(two.length, 131076);
  src.ws.send(two);
  await dst.until(() => dst.messages.length === 3, 5000, 'three DATA messages');
  assert.ok(Buffer.concat(dst.messages.map((m) => encodeFrame({ type: DATA, streamId: 1, serviceId: 'SSH', payload: m.payload }))).equals(two), 'the three frames arrived as sent');
  assert.is(src.closeCode, undefined);
  src.ws.send(Buffer.concat([two, Buffer.of(0)]));
  assert.is((await src.waitClosed()).code, 1009);
});

forward('random bytes from peers never crash the relay or disturb another tunnel', async (ctx) => {
  const good = await pair(ctx, ['SSH']);
  await good.src.next();
  await good.dst.next();
  let seed = 12345;
  const random = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed;
  };
  const fuzzers: TestPeer[] = [];
  for (let i = 0; i < 30; i++) {
    const { src, dst } = await pair(ctx, ['A', 'B']);
    fuzzers.push(src, dst);
    for (const peer of [src, dst]) {
      const bytes = Buffer.alloc(1 + (random() % 3000));
      for (let k = 0; k < bytes.length; k++) bytes[k] = random() & 0xff;
      // Mostly well-formed length prefixes, so the bodies reach the protobuf decoder.
      if (i % 2 === 0 && bytes.length > 2) bytes.writeUInt16BE(Math.min(bytes.length - 2, 1 + (random() % 200)), 0);
      peer.ws.send(bytes);
    }
  }
  good.src.send({ type: STREAM_START, streamId: 1, serviceId: 'SSH' }, { type: DATA, streamId: 1, serviceId: 'SSH', payload: Buffer.from('still fine') });
  assert.is((await good.dst.next()).type, STREAM_START);
  assert.is(Buffer.from((await good.dst.next()).payload).toString(), 'still fine');
  const closedCodes = fuzzers.filter((p) => p.closeCode !== undefined).map((p) => p.closeCode);
  assert.ok(closedCodes.every((c) => c === 1008), `close codes ${closedCodes}`);
});

forward('fitCloseReason keeps a close reason within 123 bytes of UTF-8 and never cuts a character in half (issue 12)', () => {
  // 40 emoji are 160 bytes; cutting UTF-16 units left a lone surrogate (sent as U+FFFD).
  const emoji = fitCloseReason('\u{1F600}'.repeat(40));
  assert.is(Buffer.from(emoji, 'utf8').toString('utf8'), emoji, 'a lone surrogate (UTF-8 round trip)');
  assert.is(emoji, '\u{1F600}'.repeat(30));
  const mixed = fitCloseReason(`service id "${'é'.repeat(70)}" is not part of this tunnel`);
  assert.ok(Buffer.byteLength(mixed) <= 123);
  assert.is(mixed, `service id "${'é'.repeat(55)}`);
  assert.is(fitCloseReason('short'), 'short');
  assert.is(fitCloseReason('x'.repeat(123)), 'x'.repeat(123));
});

forward.run();
