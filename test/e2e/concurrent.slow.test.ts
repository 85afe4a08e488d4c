import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { blastServer, echoServer, patternSha256, receiveAll, sendPattern, sinkServer, type AppServer, type SinkServer } from '../helpers/apps';
import { startTunnel, type Tunnel } from '../helpers/tunnel';
import { within } from '../helpers/wait';

const MiB = 1024 * 1024;
const concurrent = suite('e2e: many connections and services at once');

let echo: AppServer;
let sink: SinkServer;
let blast: AppServer;
let tunnel: Tunnel;

concurrent.before(async () => {
  echo = await echoServer();
  sink = await sinkServer();
  blast = await blastServer(32 * MiB, 11);
  tunnel = await startTunnel({ destinationMap: { ECHO: echo.port, SINK: sink.port, BLAST: blast.port } });
});

concurrent.after(async () => {
  await tunnel?.close();
  for (const app of [echo, sink, blast]) await app?.close();
});

concurrent('64 connections × 4 MiB at once on one service, echoed byte-exact both ways', async () => {
  const runs = Array.from({ length: 64 }, (_, i) => sendPattern(tunnel.port('ECHO'), 4 * MiB, { seed: 100 + i, expectEcho: true }));
  const results = await within(Promise.all(runs), 90_000, '64 echoed transfers');
  for (const [i, result] of results.entries()) {
    assert.is(result.echo?.bytes, 4 * MiB, `connection ${i} bytes`);
    assert.is(result.echo?.sha256, result.sha256, `connection ${i} sha256`);
  }
  assert.is(echo.accepted, 64);
});

concurrent('three services at once: echo, upload and download all byte-exact', async () => {
  const before = sink.results.length;
  const [echoed, uploaded, downloaded] = await within(Promise.all([
    sendPattern(tunnel.port('ECHO'), 32 * MiB, { seed: 21, expectEcho: true }),
    sendPattern(tunnel.port('SINK'), 32 * MiB, { seed: 22 }),
    receiveAll(tunnel.port('BLAST')),
  ]), 90_000, 'three services');
  assert.is(echoed.echo?.sha256, echoed.sha256, 'echo service');
  const results = await within(sink.waitFor(before + 1), 10_000, 'sink close');
  assert.is(results[before].bytes, 32 * MiB, 'upload service bytes');
  assert.is(results[before].sha256, uploaded.sha256, 'upload service sha256');
  assert.is(downloaded.bytes, 32 * MiB, 'download service bytes');
  assert.is(downloaded.sha256, patternSha256(32 * MiB, 11), 'download service sha256');
});

concurrent.run();
