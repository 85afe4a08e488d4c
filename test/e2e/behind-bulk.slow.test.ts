/**
 * Issue 13, the capped case: a tunnel through a relay that holds each direction to 800 kB/s
 * (the cloud's class of limit, `--bandwidth`), bulk transfers on some connections and 1-byte
 * echoes on another. Before pacing each echo took 2 to 5.5 s (the C++ reference: 7.5 s),
 * queued behind megabytes in the socket buffers. Wide bounds: speed belongs to `npm run bench`
 * (docs/BENCHMARKS.md, "Echo behind bulk"), this holds the shape.
 */
import { performance } from 'node:perf_hooks';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { blastServer, echoServer, patternSha256, receiveAll, sendPattern, sinkServer } from '../helpers/apps';
import { echoes, p99 } from '../helpers/echoes';
import { startTunnel } from '../helpers/tunnel';
import { within } from '../helpers/wait';

const CAP = 800_000;
const BULK = 6 * 1024 * 1024;
const behind = suite('e2e: interactive traffic behind bulk transfers, tunnel capped at 800 kB/s');

behind('6 MiB up: every echo behind it comes back, p99 under 1 s, while the upload keeps over 500 kB/s', async () => {
  const sink = await sinkServer();
  const echo = await echoServer();
  const tunnel = await startTunnel({ services: ['BULK', 'ECHO'], destinationMap: { BULK: sink.port, ECHO: echo.port }, bandwidth: CAP });
  try {
    // The upload is over when the application behind the destination has every byte (our
    // source has read them all well before: they wait in its queues).
    let uploaded = false;
    const started = performance.now();
    void sendPattern(tunnel.port('BULK'), BULK, { seed: 3 });
    const sunk = sink.waitFor(1).then(([r]) => {
      uploaded = true;
      return { r, seconds: (performance.now() - started) / 1000 };
    });
    const rtts = await echoes(tunnel.port('ECHO'), () => uploaded);
    const up = await within(sunk, 60_000, 'the upload');
    assert.is(up.r.sha256, patternSha256(BULK, 3), 'the upload arrived byte-exact');
    const rate = BULK / up.seconds;
    assert.ok(rtts.length >= 20, `${rtts.length} echoes`);
    assert.ok(p99(rtts) < 1000, `echo p99 ${p99(rtts).toFixed(0)} ms (max ${Math.max(...rtts).toFixed(0)} ms, ${rtts.length} echoes)`);
    assert.ok(rate > 500_000, `upload ${Math.round(rate / 1000)} kB/s`);
  } finally {
    await tunnel.close();
    await sink.close();
    await echo.close();
  }
});

behind('6 MiB up and 6 MiB down at once: echoes p99 under 1 s, each direction over 500 kB/s', async () => {
  const sink = await sinkServer();
  const echo = await echoServer();
  const blast = await blastServer(BULK, 4);
  const tunnel = await startTunnel({ services: ['UP', 'DOWN', 'ECHO'], destinationMap: { UP: sink.port, DOWN: blast.port, ECHO: echo.port }, bandwidth: CAP });
  try {
    let running = 2;
    const started = performance.now();
    const timed = <T>(p: Promise<T>) => p.then((r) => {
      running--;
      return { r, seconds: (performance.now() - started) / 1000 };
    });
    void sendPattern(tunnel.port('UP'), BULK, { seed: 3 });
    const upload = timed(sink.waitFor(1).then(([r]) => r));
    const download = timed(receiveAll(tunnel.port('DOWN')));
    const rtts = await echoes(tunnel.port('ECHO'), () => running === 0);
    const up = await within(upload, 60_000, 'the upload');
    const down = await within(download, 60_000, 'the download');
    assert.is(up.r.sha256, patternSha256(BULK, 3), 'the upload arrived byte-exact');
    assert.is(down.r.sha256, patternSha256(BULK, 4), 'the download arrived byte-exact');
    assert.ok(rtts.length >= 20, `${rtts.length} echoes`);
    assert.ok(p99(rtts) < 1000, `echo p99 ${p99(rtts).toFixed(0)} ms (max ${Math.max(...rtts).toFixed(0)} ms, ${rtts.length} echoes)`);
    for (const [name, t] of [['upload', up], ['download', down]] as const) {
      assert.ok(BULK / t.seconds > 500_000, `${name} ${Math.round(BULK / t.seconds / 1000)} kB/s`);
    }
  } finally {
    await tunnel.close();
    await sink.close();
    await echo.close();
    await blast.close();
  }
});

behind.run();
