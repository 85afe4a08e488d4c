import { createHash } from 'node:crypto';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { blastServer, connectTo, patternSha256, receiveAll, type AppServer, type Received } from '../helpers/apps';
import { startChildTunnel, type ChildTunnel } from '../helpers/child';
import { within } from '../helpers/wait';

const MiB = 1024 * 1024;
/** Documented bound (README, "Try it"): peak RSS of each proxy process during this test. */
const PEAK_RSS_BOUND_MIB = 200;
const SLOW_BYTES = 8 * MiB;          // below the 16 MiB default inbound budget
const SLOW_RATE_BYTES_PER_S = MiB;
const FAST_BYTES = 256 * MiB;

const slow = suite('e2e: a slow consumer does not block other connections (proxies as processes)');

let slowApp: AppServer;
let fastApp: AppServer;
let tunnel: ChildTunnel;

slow.before(async () => {
  slowApp = await blastServer(SLOW_BYTES, 61);
  fastApp = await blastServer(FAST_BYTES, 62);
  tunnel = await startChildTunnel({ SLOW: slowApp.port, FAST: fastApp.port });
});

slow.after(async () => {
  await tunnel?.close();
  await slowApp?.close();
  await fastApp?.close();
});

interface SlowReader {
  /** Resolves once the reader holds its first MiB and has stopped reading. */
  holding: Promise<void>;
  /** Lets it read on at `rate`. */
  release(): void;
  done: Promise<Received & { finishedAt: number }>;
}

/**
 * An application that consumes slowly: it reads 1 MiB, then nothing until released, then at
 * most `rate` bytes per second. The timers pace the application; they synchronise nothing.
 */
async function slowReader(port: number, rate: number): Promise<SlowReader> {
  const socket = await connectTo(port);
  const hash = createHash('sha256');
  let bytes = 0;
  let reset = false;
  let releasedAt = 0;
  let nowHolding!: () => void;
  const holding = new Promise<void>((resolve) => { nowHolding = resolve; });
  socket.on('error', () => { reset = true; });
  socket.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
    hash.update(chunk);
    if (releasedAt === 0) {
      if (bytes >= MiB) {
        socket.pause();
        nowHolding();
      }
      return;
    }
    const aheadMs = ((bytes - MiB) / rate) * 1000 - (Date.now() - releasedAt);
    if (aheadMs > 0) {
      socket.pause();
      setTimeout(() => socket.resume(), aheadMs);
    }
  });
  const done = new Promise<Received & { finishedAt: number }>((resolve) => {
    socket.once('close', () => resolve({ bytes, sha256: hash.digest('hex'), reset, finishedAt: Date.now() }));
  });
  return {
    holding,
    release() {
      releasedAt = Date.now();
      socket.resume();
    },
    done,
  };
}

async function timedDownload(port: number): Promise<{ ms: number; received: Received; finishedAt: number }> {
  const started = Date.now();
  const received = await receiveAll(port);
  return { ms: Date.now() - started, received, finishedAt: Date.now() };
}

slow(`256 MiB moves at full speed while another connection holds 7 MiB unread, then reads it at 1 MiB/s; each proxy stays under ${PEAK_RSS_BOUND_MIB} MiB peak RSS`, async () => {
  const fastPort = tunnel.source.ports.FAST;
  const alone = await within(timedDownload(fastPort), 60_000, '256 MiB download alone');
  assert.is(alone.received.sha256, patternSha256(FAST_BYTES, 62), 'alone: byte-exact');

  const slowOne = await slowReader(tunnel.source.ports.SLOW, SLOW_RATE_BYTES_PER_S);
  await within(slowOne.holding, 10_000, 'slow reader gets its first MiB');
  // The slow reader now leaves 7 MiB undelivered in the tunnel. A proxy that stopped reading the
  // WebSocket for it (head-of-line blocking) would stall the bulk transfer until the bound.
  const loaded = await within(timedDownload(fastPort), 60_000, '256 MiB download while another connection does not read');
  slowOne.release();
  const slowDone = await within(slowOne.done, 30_000, 'slow reader reads the rest at 1 MiB/s');

  assert.is(loaded.received.sha256, patternSha256(FAST_BYTES, 62), 'loaded: byte-exact');
  assert.is(slowDone.bytes, SLOW_BYTES, 'slow reader got every byte');
  assert.is(slowDone.sha256, patternSha256(SLOW_BYTES, 61), 'slow reader byte-exact');
  assert.ok(loaded.ms < 3 * alone.ms, `256 MiB took ${loaded.ms} ms next to the slow reader, ${alone.ms} ms alone`);

  const rss = { source: tunnel.source.peakRssMiB(), destination: tunnel.destination.peakRssMiB() };
  // The runner shows this only for a failing file; run the file alone to read the measurements.
  console.log(`256 MiB: ${alone.ms} ms alone, ${loaded.ms} ms next to the slow reader; peak RSS source ${rss.source.toFixed(1)} MiB, destination ${rss.destination.toFixed(1)} MiB (${tunnel.kind} children)`);
  assert.ok(rss.source < PEAK_RSS_BOUND_MIB, `source peak RSS ${rss.source.toFixed(1)} MiB`);
  assert.ok(rss.destination < PEAK_RSS_BOUND_MIB, `destination peak RSS ${rss.destination.toFixed(1)} MiB`);
});

slow.run();
