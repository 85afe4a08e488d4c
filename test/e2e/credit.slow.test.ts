/**
 * Issue 14, end to end with the proxies as processes (the built CLI at default settings) through
 * our relay over TLS: per-connection credit between our peers. One connection's application
 * reads nothing while another moves 256 MiB, in each direction; the bulk transfer must complete
 * while the stalled one still holds its bytes, which all arrive once its application reads; each
 * proxy stays under 150 MiB peak RSS. The stall (64 MiB) is four times the inbound budget:
 * without credit the reader pauses for every connection and the bulk transfer does not complete.
 * How fast the bulk transfer goes next to the same one alone is in bench/ ("slow consumer").
 */
import { once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { blastServer, connectTo, hashUntilClose, pattern, patternSha256, receiveAll, sendPattern, sinkServer, writeAll, type AppServer, type Received, type SinkServer } from '../helpers/apps';
import { startChildTunnel, type ChildTunnel } from '../helpers/child';
import { within } from '../helpers/wait';

const MiB = 1024 * 1024;
const PEAK_RSS_BOUND_MIB = 150;
const STALL_BYTES = 64 * MiB;
const BULK_BYTES = 256 * MiB;

const credit = suite('e2e: per-connection credit, proxies as processes (issue 14)');

/** A destination application that reads nothing until `read()`. */
interface Stalled {
  port: number;
  accepted: Promise<void>;
  read(): void;
  received: Promise<Received>;
}

async function stalledApp(): Promise<Stalled & { server: Server }> {
  let socket: Socket | undefined;
  let onAccept!: () => void;
  let onReceived!: (r: Received) => void;
  const accepted = new Promise<void>((resolve) => { onAccept = resolve; });
  const received = new Promise<Received>((resolve) => { onReceived = resolve; });
  const server = createServer({ pauseOnConnect: true }, (s) => {
    socket = s;
    void hashUntilClose(s).then(onReceived);
    s.pause();
    onAccept();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as { port: number }).port, accepted, read: () => socket?.resume(), received };
}

let tunnel: ChildTunnel;
let stallUp: Stalled & { server: Server };
let stallDown: AppServer;
let fastDown: AppServer;
let fastUp: SinkServer;

credit.before(async () => {
  stallUp = await stalledApp();
  stallDown = await blastServer(STALL_BYTES, 71);
  fastDown = await blastServer(BULK_BYTES, 72);
  fastUp = await sinkServer();
  tunnel = await startChildTunnel({ STALLUP: stallUp.port, STALLDOWN: stallDown.port, FASTDOWN: fastDown.port, FASTUP: fastUp.port });
});

credit.after(async () => {
  await tunnel?.close();
  stallUp?.server.close();
  for (const app of [stallDown, fastDown, fastUp]) await app?.close();
});

credit('upload: a destination app reads nothing while 256 MiB go through another connection; then it reads all its 64 MiB, in order', async () => {
  const client = await connectTo(tunnel.source.ports.STALLUP);
  client.on('error', () => {});
  const closed = once(client, 'close');
  const writing = writeAll(client, pattern(STALL_BYTES, 73)).then(() => client.end());
  await within(stallUp.accepted, 10_000, 'the stalled app accepts');
  const bulk = await within(sendPattern(tunnel.source.ports.FASTUP, BULK_BYTES, { seed: 74 }), 120_000, '256 MiB upload while another app reads nothing');
  const [got] = await within(fastUp.waitFor(1), 10_000, 'the sink closes');
  assert.is(got.bytes, BULK_BYTES);
  assert.is(got.sha256, bulk.sha256, 'byte-exact');
  stallUp.read();
  await within(writing, 60_000, 'the client writes its 64 MiB once the app reads');
  const stalled = await within(stallUp.received, 60_000, 'the stalled app receives everything');
  await within(closed, 10_000, 'the client sees the close');
  assert.is(stalled.bytes, STALL_BYTES);
  assert.is(stalled.sha256, patternSha256(STALL_BYTES, 73), 'in order');
});

credit('download: a source-side client reads nothing while 256 MiB come through another connection; then it reads all its 64 MiB, in order', async () => {
  const slow = await connectTo(tunnel.source.ports.STALLDOWN);
  slow.pause();
  const slowReceived = hashUntilClose(slow);
  const loaded = await within(receiveAll(tunnel.source.ports.FASTDOWN), 120_000, '256 MiB download while another client reads nothing');
  assert.is(loaded.bytes, BULK_BYTES);
  assert.is(loaded.sha256, patternSha256(BULK_BYTES, 72), 'byte-exact');
  slow.resume();
  const got = await within(slowReceived, 60_000, 'the stalled client receives everything');
  assert.is(got.bytes, STALL_BYTES);
  assert.is(got.sha256, patternSha256(STALL_BYTES, 71), 'in order');
});

credit(`each proxy process stayed under ${PEAK_RSS_BOUND_MIB} MiB peak RSS`, () => {
  const rss = { source: tunnel.source.peakRssMiB(), destination: tunnel.destination.peakRssMiB() };
  console.log(`peak RSS: source ${rss.source.toFixed(1)} MiB, destination ${rss.destination.toFixed(1)} MiB`);
  assert.ok(rss.source < PEAK_RSS_BOUND_MIB, `source peak RSS ${rss.source.toFixed(1)} MiB`);
  assert.ok(rss.destination < PEAK_RSS_BOUND_MIB, `destination peak RSS ${rss.destination.toFixed(1)} MiB`);
});

credit.run();
