import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { blastServer, patternSha256, receiveAll, sendPattern, sinkServer, type AppServer, type SinkServer } from '../helpers/apps';
import { startChildTunnel, type ChildTunnel } from '../helpers/child';
import { within } from '../helpers/wait';

const GiB = 1024 * 1024 * 1024;
// The proxies run as processes of the built CLI, so the transfer spreads over the cores and the
// shipped bundle itself carries the gigabyte.
const bulk = suite('e2e: 1 GiB on one connection, through the relay over TLS (proxies as processes)');

let sink: SinkServer;
let blast: AppServer;
let tunnel: ChildTunnel;

bulk.before(async () => {
  sink = await sinkServer();
  blast = await blastServer(GiB, 7);
  tunnel = await startChildTunnel({ UP: sink.port, DOWN: blast.port });
});

bulk.after(async () => {
  await tunnel?.close();
  await sink?.close();
  await blast?.close();
});

bulk('source app → destination app: 1 GiB arrives byte-exact (sha256)', async () => {
  const sent = await within(sendPattern(tunnel.source.ports.UP, GiB, { seed: 3 }), 100_000, '1 GiB upload');
  const [received] = await within(sink.waitFor(1), 10_000, 'sink connection close');
  assert.is(received.bytes, GiB);
  assert.is(received.sha256, sent.sha256);
});

bulk('destination app → source app: 1 GiB arrives byte-exact (sha256)', async () => {
  const received = await within(receiveAll(tunnel.source.ports.DOWN), 100_000, '1 GiB download');
  assert.is(received.bytes, GiB);
  assert.is(received.sha256, patternSha256(GiB, 7));
});

bulk.run();
