import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { blastServer, patternSha256, receiveAll, sendPattern, sinkServer, type AppServer, type SinkServer } from '../helpers/apps';
import { startTunnel, type Tunnel } from '../helpers/tunnel';
import { within } from '../helpers/wait';

const GiB = 1024 * 1024 * 1024;
const bulk = suite('e2e: 1 GiB on one connection, through the relay over TLS');

let sink: SinkServer;
let blast: AppServer;
let tunnel: Tunnel;

bulk.before(async () => {
  sink = await sinkServer();
  blast = await blastServer(GiB, 7);
  tunnel = await startTunnel({ destinationMap: { UP: sink.port, DOWN: blast.port } });
});

bulk.after(async () => {
  await tunnel?.close();
  await sink?.close();
  await blast?.close();
});

bulk('source app → destination app: 1 GiB arrives byte-exact (sha256)', async () => {
  const sent = await within(sendPattern(tunnel.port('UP'), GiB, { seed: 3 }), 100_000, '1 GiB upload');
  const [received] = await within(sink.waitFor(1), 10_000, 'sink connection close');
  assert.is(received.bytes, GiB);
  assert.is(received.sha256, sent.sha256);
});

bulk('destination app → source app: 1 GiB arrives byte-exact (sha256)', async () => {
  const received = await within(receiveAll(tunnel.port('DOWN')), 100_000, '1 GiB download');
  assert.is(received.bytes, GiB);
  assert.is(received.sha256, patternSha256(GiB, 7));
});

bulk.run();
