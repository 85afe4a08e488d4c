/**
 * The relay pacing what it sends (src/relay/paced.ts, issue 13), seen by raw peers: probes
 * only to peers of ours (they declared an extension), never to others (the C++ reference:
 * Boost.Beast stops reading until its pong is written); a ping from a peer of ours answered
 * once its earlier messages have left the relay's queue; `pace: false` as before.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { CREDIT_EXTENSION } from '../../src/protocol/extension';
import { MessageType as T, type MessageInit } from '../../src/protocol/message';
import { startRelay, type Relay } from '../../src/relay/server';
import { probeId } from '../../src/flow/probes';
import { silentLogger } from '../../src/log';
import { EventLog } from './events';
import { connectReady, type PeerOptions, type TestPeer } from './peer';

interface Ctx { relay: Relay; peers: TestPeer[] }
const pacing = suite<Ctx>('relay: pacing towards peers');

async function withRelay(ctx: Ctx, pace?: boolean, events?: EventLog): Promise<void> {
  ctx.relay = await startRelay({ port: 0, tls: 'self-signed', log: silentLogger(), pace, onEvent: events?.onEvent });
}
pacing.before.each((ctx) => {
  ctx.peers = [];
});
pacing.after.each(async (ctx) => {
  for (const p of ctx.peers) p.terminate();
  await ctx.relay?.close();
});

const ours: PeerOptions = { headers: { 'localproxy-extensions': CREDIT_EXTENSION } };

async function pair(ctx: Ctx, source: PeerOptions, destination: PeerOptions): Promise<{ src: TestPeer; dst: TestPeer }> {
  const t = await ctx.relay.openTunnel({ services: ['SSH'] });
  const src = await connectReady(ctx.relay, t.sourceAccessToken, { ...source, mode: 'source' });
  const dst = await connectReady(ctx.relay, t.destinationAccessToken, { ...destination, mode: 'destination' });
  ctx.peers.push(src, dst);
  return { src, dst };
}

const data = (conn: number, bytes: number, fill = 1): MessageInit => ({ type: T.DATA, serviceId: 'SSH', streamId: 1, connectionId: conn, payload: Buffer.alloc(bytes, fill) });
const isProbe = (p: Buffer) => probeId(p) !== undefined;

pacing('probes go to a peer that declared an extension, while bulk flows; none to a peer that did not (the C++ reference)', async (ctx) => {
  await withRelay(ctx);
  for (const [destination, expectProbes] of [[ours, true], [{}, false]] as const) {
    const { src, dst } = await pair(ctx, ours, destination);
    src.send({ type: T.STREAM_START, serviceId: 'SSH', streamId: 1, connectionId: 1 });
    for (let i = 0; i < 32; i++) src.send(data(1, 60_000));
    await dst.until(() => dst.bytesReceived >= 32 * 60_000, 10_000, 'all the bulk data');
    assert.is(dst.pings.some(isProbe), expectProbes, `probes to a destination ${expectProbes ? 'of ours' : 'without extensions'}: ${dst.pings.length} pings`);
  }
});

pacing('a ping from a peer of ours waits for its earlier messages to leave the relay\'s queue; from another peer it is answered when read', async (ctx) => {
  await withRelay(ctx);
  for (const [source, deferred] of [[ours, true], [{}, false]] as const) {
    // The destination does not answer the relay's probes yet: its window holds the bulk data in
    // the relay (less than the relay's high-water mark, which would stop it reading the source).
    const { src, dst } = await pair(ctx, source, { ...ours, autoPong: false });
    src.send({ type: T.STREAM_START, serviceId: 'SSH', streamId: 1, connectionId: 1 });
    for (let i = 0; i < 4; i++) src.send(data(1, 60_000));
    src.ws.ping('mine');
    // A marker on another connection passes the window: once the destination has it, the relay
    // has read the ping. The destination's reply then comes back on the same connection as a
    // pong the relay sent on reading the ping would: after it.
    src.send(data(2, 1, 7));
    await dst.until(() => dst.messages.some((m) => m.type === T.DATA && m.connectionId === 2), 5000, 'the marker');
    dst.send(data(2, 1, 8));
    await src.until(() => src.messages.some((m) => m.type === T.DATA && m.connectionId === 2), 5000, 'the reply');
    const answered = () => src.pongs.some((p) => p.toString() === 'mine');
    assert.is(answered(), !deferred, deferred ? 'no pong while the bulk before the ping waits in the relay' : 'answered when read');
    assert.ok(dst.bytesReceived < 4 * 60_000, `${dst.bytesReceived} bytes reached the destination: the bulk waits in the relay`);
    // The destination answers: the window opens, the queue drains, the pong follows.
    dst.ws.on('ping', (p: Buffer) => dst.ws.pong(p));
    for (const p of dst.pings.splice(0)) dst.ws.pong(p);
    await src.until(answered, 5000, 'the pong');
    await dst.until(() => dst.bytesReceived >= 4 * 60_000, 10_000, 'all the bulk data');
    src.terminate();
    dst.terminate();
  }
});

pacing('bytes queued for a paced peer hold its sender back past the high-water mark and release it once they are written, burst after burst', async (ctx) => {
  const events = new EventLog();
  await withRelay(ctx, undefined, events);
  // The destination answers no probe at first: the relay's window keeps the bulk in its queue.
  const { src, dst } = await pair(ctx, ours, { ...ours, autoPong: false });
  src.send({ type: T.STREAM_START, serviceId: 'SSH', streamId: 1, connectionId: 1 });
  const BURST = 12 * 60_000;
  for (let i = 0; i < 12; i++) src.send(data(1, 60_000));
  await events.waitFor('paused', (e) => e.mode === 'source' && e.receiver === 'destination');
  dst.ws.on('ping', (p: Buffer) => dst.ws.pong(p));
  for (const p of dst.pings.splice(0)) dst.ws.pong(p);
  await events.waitFor('resumed', (e) => e.mode === 'source');
  await dst.until(() => dst.bytesReceived >= BURST, 10_000, 'the first burst');
  // Were the queued bytes not all counted back, the second burst would stay held for good.
  for (let round = 2; round <= 3; round++) {
    for (let i = 0; i < 12; i++) src.send(data(1, 60_000));
    await dst.until(() => dst.bytesReceived >= round * BURST, 10_000, `burst ${round}`);
  }
  const count = (type: 'paused' | 'resumed') => events.events.filter((e) => e.type === type && e.mode === 'source').length;
  // The destination can read the last bytes before the relay has run the write callbacks for
  // them, one of which resumes the source: wait for that resume (bounded), then count.
  await events.waitFor('resumed', () => count('resumed') === count('paused')).catch(() => {});
  const held = count('paused');
  const released = count('resumed');
  assert.is(released, held, `${held} holds, ${released} releases`);
});

pacing('pace: false (--no-pacing): no probes to a peer of ours, and its pings are answered when read', async (ctx) => {
  await withRelay(ctx, false);
  const { src, dst } = await pair(ctx, ours, ours);
  src.send({ type: T.STREAM_START, serviceId: 'SSH', streamId: 1, connectionId: 1 });
  for (let i = 0; i < 32; i++) src.send(data(1, 60_000));
  src.ws.ping('mine');
  await src.until(() => src.pongs.some((p) => p.toString() === 'mine'), 5000, 'the pong');
  await dst.until(() => dst.bytesReceived >= 32 * 60_000, 10_000, 'all the bulk data');
  assert.is(dst.pings.filter(isProbe).length, 0);
});

pacing.run();
