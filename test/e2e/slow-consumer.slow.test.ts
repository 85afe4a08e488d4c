import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { blastServer, connectTo, pattern, patternSha256, receiveAll, sendPattern, sinkServer, writeAll, type AppServer, type Received, type SinkServer } from '../helpers/apps';
import { startChildTunnel, type ChildTunnel } from '../helpers/child';
import { within } from '../helpers/wait';

const MiB = 1024 * 1024;
/** Documented bound (README, "Try it on this machine"): peak RSS of each proxy process during this file. */
const PEAK_RSS_BOUND_MIB = 200;
const SLOW_BYTES = 8 * MiB;          // below the 16 MiB default inbound budget
const SLOW_RATE_BYTES_PER_S = MiB;
const FAST_BYTES = 256 * MiB;

const slow = suite('e2e: a slow consumer does not block other connections (proxies as processes)');

interface SlowReader {
  /** Resolves once the reader holds its first MiB and has stopped reading. */
  holding: Promise<void>;
  /** Lets it read on at `rate`. */
  release(): void;
  done: Promise<Received>;
}

/**
 * An application that consumes slowly: it reads 1 MiB, then nothing until released, then at
 * most `rate` bytes per second. The timers pace the application; they synchronise nothing.
 */
function slowReader(socket: Socket, rate: number): SlowReader {
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
  const done = new Promise<Received>((resolve) => {
    socket.once('close', () => resolve({ bytes, sha256: hash.digest('hex'), reset }));
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

/**
 * The far end of a slow connection sends its 8 MiB and closes only once `end` is called:
 * the slow reader is then released. A connection the peer has closed gets a bounded time to
 * take its last bytes (CLOSE_FLUSH_TIMEOUT_MS, src/tunnel/connection.ts), and the hold must
 * not depend on how long the bulk transfer takes on a busy machine.
 */
function gate(): { opened: Promise<void>; open(): void } {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => { open = resolve; });
  return { opened, open };
}
const slowSourceEnd = gate();
const slowUploadEnd = gate();

/** Destination app: sends `bytes` pattern bytes to each connection, ends it once `end` opens. */
async function holdingBlastServer(bytes: number, seed: number, end: Promise<void>): Promise<AppServer> {
  const server = createServer((socket) => {
    socket.on('error', () => socket.destroy());
    writeAll(socket, pattern(bytes, seed)).then(() => end).then(() => socket.end(), () => socket.destroy());
  });
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => { sockets.add(socket); socket.once('close', () => sockets.delete(socket)); });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    server,
    port: (server.address() as { port: number }).port,
    accepted: 0,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Source client: sends `bytes` pattern bytes, ends once `end` opens, resolves with their sha256 when the connection closes. */
async function holdingUpload(port: number, bytes: number, seed: number, end: Promise<void>): Promise<string> {
  const socket = await connectTo(port);
  socket.on('error', () => {});
  const closed = once(socket, 'close');
  await writeAll(socket, pattern(bytes, seed));
  await end;
  socket.end();
  await closed;
  return patternSha256(bytes, seed);
}

let slowSource: AppServer;      // destination app that sends 8 MiB to the slow source-side reader
let fastSource: AppServer;      // destination app that sends 256 MiB
let slowSink: Server;           // destination app that reads slowly
const slowSinkReaders: SlowReader[] = [];
let fastSink: SinkServer;
let tunnel: ChildTunnel;

slow.before(async () => {
  slowSource = await holdingBlastServer(SLOW_BYTES, 61, slowSourceEnd.opened);
  fastSource = await blastServer(FAST_BYTES, 62);
  fastSink = await sinkServer();
  slowSink = createServer((socket) => { slowSinkReaders.push(slowReader(socket, SLOW_RATE_BYTES_PER_S)); });
  slowSink.listen(0, '127.0.0.1');
  await once(slowSink, 'listening');
  tunnel = await startChildTunnel({
    SLOWDOWN: slowSource.port,
    FASTDOWN: fastSource.port,
    SLOWUP: (slowSink.address() as { port: number }).port,
    FASTUP: fastSink.port,
  });
});

slow.after(async () => {
  slowSourceEnd.open();
  slowUploadEnd.open();
  await tunnel?.close();
  for (const app of [slowSource, fastSource, fastSink]) await app?.close();
  slowSink?.close();
});

// Speed belongs to bench/ (docs/BENCHMARKS.md, "Slow consumer"); these assert bytes and order:
// the bulk transfer must complete while the slow connection still holds its bytes unread (it is
// released only afterwards). A proxy that stopped reading the WebSocket for the slow one
// (head-of-line blocking) stalls the bulk transfer, which then never completes within its bound.

slow('fixes reference bug 9.4#33: source side: 256 MiB download completes while another connection holds 7 MiB unread, which then arrive in order', async () => {
  const slowOne = slowReader(await connectTo(tunnel.source.ports.SLOWDOWN), SLOW_RATE_BYTES_PER_S);
  await within(slowOne.holding, 10_000, 'slow reader gets its first MiB');
  const loaded = await within(receiveAll(tunnel.source.ports.FASTDOWN), 60_000, '256 MiB download while another connection does not read');
  assert.is(loaded.bytes, FAST_BYTES);
  assert.is(loaded.sha256, patternSha256(FAST_BYTES, 62), 'byte-exact');
  slowOne.release();
  slowSourceEnd.open();
  const slowDone = await within(slowOne.done, 30_000, 'slow reader reads the rest at 1 MiB/s');
  assert.is(slowDone.bytes, SLOW_BYTES, 'slow reader got every byte');
  assert.is(slowDone.sha256, patternSha256(SLOW_BYTES, 61), 'slow reader byte-exact');
});

slow('fixes reference bug 9.4#33: destination side: 256 MiB upload completes while another destination app holds 7 MiB unread, which then arrive in order', async () => {
  const accepted = once(slowSink, 'connection');
  const slowUpload = holdingUpload(tunnel.source.ports.SLOWUP, SLOW_BYTES, 64, slowUploadEnd.opened);
  await within(accepted.then(() => slowSinkReaders[0].holding), 10_000, 'slow destination app gets its first MiB');
  const loaded = await within(sendPattern(tunnel.source.ports.FASTUP, FAST_BYTES, { seed: 65 }), 60_000, '256 MiB upload while another destination app does not read');
  const [loadedReceived] = await within(fastSink.waitFor(1), 10_000, 'sink close');
  assert.is(loadedReceived.bytes, FAST_BYTES);
  assert.is(loadedReceived.sha256, loaded.sha256, 'byte-exact');
  slowSinkReaders[0].release();
  slowUploadEnd.open();
  const slowSent = await within(slowUpload, 30_000, 'slow upload completes at 1 MiB/s');
  const slowDone = await within(slowSinkReaders[0].done, 10_000, 'slow destination app closes');
  assert.is(slowDone.bytes, SLOW_BYTES, 'slow destination app got every byte');
  assert.is(slowDone.sha256, slowSent, 'slow destination app byte-exact');
});

slow(`fixes reference bug 9.4#34: each proxy process stayed under ${PEAK_RSS_BOUND_MIB} MiB peak RSS`, () => {
  const rss = { source: tunnel.source.peakRssMiB(), destination: tunnel.destination.peakRssMiB() };
  console.log(`peak RSS: source ${rss.source.toFixed(1)} MiB, destination ${rss.destination.toFixed(1)} MiB`);
  assert.ok(rss.source < PEAK_RSS_BOUND_MIB, `source peak RSS ${rss.source.toFixed(1)} MiB`);
  assert.ok(rss.destination < PEAK_RSS_BOUND_MIB, `destination peak RSS ${rss.destination.toFixed(1)} MiB`);
});

slow.run();
