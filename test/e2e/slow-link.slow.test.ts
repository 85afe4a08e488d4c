/**
 * Issue 13, the destination on a slow link: the relay on a fast network, the device behind a
 * 1 MB/s last mile (test/helpers/link.ts), an upload on one connection and 1-byte echoes on
 * another. The queue now builds between the relay and the destination, where the source's
 * pacer cannot see it: before the relay paced what it sends (src/relay/paced.ts) it wrote
 * everything to its socket, the socket buffers on both sides of the link took megabytes, and
 * each echo waited seconds behind them (with `pace: false` this case fails: by hand, 6 echoes
 * in the whole upload and a p99 of 1.6-1.8 s). Now the relay keeps that queue short with probes of its own, the
 * rest waits in its per-connection lanes, and the echo's lane goes first. Wide bounds: this
 * holds the shape; `npm run bench` measures.
 */
import { performance } from 'node:perf_hooks';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { echoServer, patternSha256, sendPattern, sinkServer } from '../helpers/apps';
import { echoes, p99 } from '../helpers/echoes';
import { slowLink, type SlowLink } from '../helpers/link';
import { startTunnel } from '../helpers/tunnel';
import { within } from '../helpers/wait';

const LINK = 1_000_000;
const BULK = 4 * 1024 * 1024;
const slow = suite('e2e: interactive traffic behind an upload, destination on a 1 MB/s link');

slow('4 MiB up through the slow link: the relay keeps the echoes under 1 s (p99) and the upload over 500 kB/s', async () => {
  const sink = await sinkServer();
  const echo = await echoServer();
  let link: SlowLink | undefined;
  const tunnel = await startTunnel({
    services: ['BULK', 'ECHO'],
    destinationMap: { BULK: sink.port, ECHO: echo.port },
    destinationVia: async (relayPort) => (link = await slowLink(relayPort, LINK)).port,
  });
  try {
    let uploaded = false;
    const started = performance.now();
    void sendPattern(tunnel.port('BULK'), BULK, { seed: 5 });
    const sunk = sink.waitFor(1).then(([r]) => {
      uploaded = true;
      return { r, seconds: (performance.now() - started) / 1000 };
    });
    const rtts = await echoes(tunnel.port('ECHO'), () => uploaded);
    const up = await within(sunk, 60_000, 'the upload');
    assert.is(up.r.sha256, patternSha256(BULK, 5), 'the upload arrived byte-exact');
    assert.ok(link!.carried >= BULK, `the link carried ${link!.carried} bytes`);
    assert.ok(p99(rtts) < 1000, `echo p99 ${p99(rtts).toFixed(0)} ms (max ${Math.max(...rtts).toFixed(0)} ms, ${rtts.length} echoes)`);
    assert.ok(rtts.length >= 20, `${rtts.length} echoes`);
    const rate = BULK / up.seconds;
    assert.ok(rate > 500_000, `upload ${Math.round(rate / 1000)} kB/s`);
  } finally {
    await tunnel.close();
    await link?.close();
    await sink.close();
    await echo.close();
  }
});

slow.run();
