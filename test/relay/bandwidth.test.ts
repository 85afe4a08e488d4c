/**
 * `localproxy relay --bandwidth` (issue 13): each direction of a tunnel is read no faster than
 * the rate, the excess waiting in the sender's own socket buffers; pings are answered when they
 * are read. The token bucket on its own with a fake clock, then the relay with raw peers.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { performance } from 'node:perf_hooks';
import { encodeFrame } from '../../src/protocol/framing';
import { MessageType } from '../../src/protocol/message';
import { silentLogger } from '../../src/log';
import { BANDWIDTH_BURST_MS, MIN_QUEUE_BYTES, queueBoundBytes, TokenBucket } from '../../src/relay/bandwidth';
import { startRelay, type Relay } from '../../src/relay/server';
import { waitUntil, within } from '../helpers/wait';
import { startRelayCli } from './cli-run';
import { connectReady, type TestPeer } from './peer';

const bucket = suite('relay bandwidth: the token bucket');

bucket('starts with a short burst; past it, reading waits until the debt is paid at the rate', () => {
  const b = new TokenBucket(800_000, 0);
  assert.is(b.burstBytes, (800_000 * BANDWIDTH_BURST_MS) / 1000);
  b.take(b.burstBytes, 0);
  assert.is(b.waitMs(0), 0, 'the burst itself is free');
  b.take(80_000, 0);
  assert.is(b.waitMs(0), 100, '80 kB of debt at 800 kB/s: 100 ms');
  assert.is(b.waitMs(60), 40);
  assert.is(b.waitMs(100), 0);
});

bucket('a sender read whenever the bucket allows gets the rate, not more, over 10 s', () => {
  const rate = 800_000;
  const b = new TokenBucket(rate, 0);
  let read = 0;
  for (let now = 0; now <= 10_000; now++) {
    // Reads come in chunks of up to 64 kB, as from a socket.
    while (b.waitMs(now) === 0) {
      b.take(65_536, now);
      read += 65_536;
    }
  }
  const expected = rate * 10 + b.burstBytes;
  assert.ok(read <= expected + 65_536 && read >= expected - 65_536, `read ${read} bytes, expected about ${expected}`);
});

bucket('saved-up tokens never exceed the burst', () => {
  const b = new TokenBucket(1000, 0, 100);
  b.take(0, 1_000_000);
  b.take(101, 1_000_000);
  assert.ok(b.waitMs(1_000_000) > 0);
});

bucket('the queue towards a peer is bounded by time at the rate, not by bytes', () => {
  assert.is(queueBoundBytes(undefined, 256 * 1024), 256 * 1024);
  assert.is(queueBoundBytes(800_000, 256 * 1024), 80_000);
  assert.is(queueBoundBytes(10_000, 256 * 1024), MIN_QUEUE_BYTES);
});

bucket.run();

interface Ctx { relay?: Relay; peers: TestPeer[] }
const relay = suite<Ctx>('relay bandwidth: through the relay');
relay.before.each((ctx) => {
  ctx.peers = [];
});
relay.after.each(async (ctx) => {
  for (const p of ctx.peers) p.terminate();
  await ctx.relay?.close();
});

async function tunnel(ctx: Ctx, bandwidth?: number): Promise<{ src: TestPeer; dst: TestPeer }> {
  ctx.relay = await startRelay({ port: 0, tls: 'plain', log: silentLogger(), bandwidth });
  const t = await ctx.relay.openTunnel({ services: ['S'] });
  const src = await connectReady(ctx.relay, t.sourceAccessToken, { mode: 'source' });
  const dst = await connectReady(ctx.relay, t.destinationAccessToken, { mode: 'destination' });
  ctx.peers.push(src, dst);
  src.send({ type: MessageType.STREAM_START, serviceId: 'S', streamId: 1 });
  await dst.next();
  return { src, dst };
}

const DATA = encodeFrame({ type: MessageType.DATA, serviceId: 'S', streamId: 1, payload: Buffer.alloc(60_000, 7) });

/** Keeps the source's ws at least 1 MB ahead (more than the rate can take) until stopped. */
function pump(src: TestPeer): () => void {
  const timer = setInterval(() => {
    while (src.ws.bufferedAmount < 1 << 20) src.ws.send(DATA);
  }, 5);
  return () => clearInterval(timer);
}

/** Bytes per second the destination receives over `ms`, from its first byte. */
async function receiveRate(dst: TestPeer, ms: number): Promise<number> {
  await dst.until(() => dst.bytesReceived > 0, 5000, 'the first data');
  const from = dst.bytesReceived;
  const started = performance.now();
  await new Promise((resolve) => setTimeout(resolve, ms));
  return ((dst.bytesReceived - from) * 1000) / (performance.now() - started);
}

relay('a sender faster than --bandwidth is read at the rate (the same sender goes far faster without it)', async (ctx) => {
  const rate = 200_000;
  const { src, dst } = await tunnel(ctx, rate);
  const stop = pump(src);
  try {
    const got = await receiveRate(dst, 2000);
    assert.ok(got >= 0.6 * rate && got <= 1.3 * rate, `received ${Math.round(got)} B/s with --bandwidth ${rate}`);
  } finally {
    stop();
  }
});

relay('without --bandwidth the same sender is not held to it (what the previous test measures against)', async (ctx) => {
  const { src, dst } = await tunnel(ctx);
  const stop = pump(src);
  try {
    const got = await receiveRate(dst, 1000);
    assert.ok(got > 2 * 200_000, `received ${Math.round(got)} B/s without a limit`);
  } finally {
    stop();
  }
});

relay('a ping behind data is answered when the relay reads it: after the data before it, at the rate', async (ctx) => {
  const rate = 200_000;
  const { src, dst } = await tunnel(ctx, rate);
  const ahead = 8;
  for (let i = 0; i < ahead; i++) src.ws.send(DATA);
  const sentAt = performance.now();
  const pong = new Promise<number>((resolve) => src.ws.once('pong', () => resolve(performance.now() - sentAt)));
  src.ws.ping('behind');
  const took = await within(pong, 10_000, 'the pong');
  const dataMs = ((ahead * DATA.length - (rate * BANDWIDTH_BURST_MS) / 1000) * 1000) / rate;
  assert.ok(took >= 0.7 * dataMs, `pong after ${took.toFixed(0)} ms, behind ${dataMs.toFixed(0)} ms of data`);
  // The pong did not wait for the destination: the data is forwarded as it is read.
  await dst.until(() => dst.bytesReceived >= ahead * 60_000, 5000, 'the data');
});

relay('`localproxy relay --bandwidth 800000` says so when it starts', async () => {
  const running = await startRelayCli(['--plain', '--listen', '127.0.0.1:0', '--bandwidth', '800000']);
  try {
    const line = /each direction of every tunnel is limited to 800000 bytes\/s/;
    await waitUntil(running.child.stderr!, 'data', () => line.test(running.stderr()), 10_000, 'the bandwidth line');
    assert.match(running.stderr(), line);
  } finally {
    assert.is(await running.stop(), 0);
  }
});

relay.run();
