/**
 * The tunnel core through the real relay over TLS: one service, several services, and
 * simultaneous connections on one service (V3 CONNECTION_START).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { echoServer, sendPattern, sinkServer, patternSha256 } from '../helpers/apps';
import { startTunnel } from '../helpers/tunnel';
import { within } from '../helpers/wait';

const relay = suite('tunnel through the relay');

relay('one service: bytes go both ways unchanged', async () => {
  const app = await echoServer();
  const t = await startTunnel({ destinationMap: { SSH1: app.port } });
  try {
    const sent = await within(sendPattern(t.port('SSH1'), 3_000_000, { expectEcho: true }), 20_000, 'echo of 3 MB');
    assert.is(sent.echo!.bytes, 3_000_000);
    assert.is(sent.echo!.sha256, sent.sha256);
  } finally {
    await t.close();
    await app.close();
  }
});

relay('three services at once, each to its own application', async () => {
  const apps = [await sinkServer(), await sinkServer(), await sinkServer()];
  const t = await startTunnel({ destinationMap: { A: apps[0].port, B: apps[1].port, C: apps[2].port } });
  try {
    const sizes = [1_000_000, 2_000_000, 500_000];
    await within(Promise.all(['A', 'B', 'C'].map((id, i) => sendPattern(t.port(id), sizes[i], { seed: i + 1 }))), 20_000, 'three transfers');
    for (let i = 0; i < 3; i++) {
      const [received] = await within(apps[i].waitFor(1), 10_000, `app ${i} closed`);
      assert.is(received.bytes, sizes[i]);
      assert.is(received.sha256, patternSha256(sizes[i], i + 1));
    }
  } finally {
    await t.close();
    for (const app of apps) await app.close();
  }
});

relay('16 simultaneous connections on one service all arrive intact', async () => {
  const app = await sinkServer();
  const t = await startTunnel({ destinationMap: { HTTP1: app.port } });
  try {
    const n = 16;
    await within(Promise.all(Array.from({ length: n }, (_, i) => sendPattern(t.port('HTTP1'), 200_000 + i, { seed: i + 10 }))), 20_000, '16 transfers');
    const results = await within(app.waitFor(n), 10_000, 'all 16 connections closed');
    const expected = new Set(Array.from({ length: n }, (_, i) => patternSha256(200_000 + i, i + 10)));
    for (const r of results) assert.ok(expected.has(r.sha256), `unexpected content of ${r.bytes} bytes`);
    assert.is(new Set(results.map((r) => r.sha256)).size, n);
  } finally {
    await t.close();
    await app.close();
  }
});

relay.run();
