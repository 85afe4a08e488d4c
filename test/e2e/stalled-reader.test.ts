import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { blastServer, connectTo, echoServer, hashUntilClose, patternSha256, sendPattern } from '../helpers/apps';
import { startTunnel } from '../helpers/tunnel';
import { within } from '../helpers/wait';

const MiB = 1024 * 1024;
const PING_PERIOD_MS = 300;
/** The application's pause: ten ping periods, far past max_missed_pings (3). */
const STALL_MS = 10 * PING_PERIOD_MS;
const stalled = suite('e2e: an application that stops reading (flow control meets keepalive)');

stalled('a consumer that stops reading beyond the inbound budget for longer than the keepalive window does not bring the session down', async () => {
  // 64 MiB is more than the 16 MiB inbound budget, so the source must pause its WebSocket reader
  // while the application does not read. Pongs queued behind that data are not seen either: a
  // keepalive that counts them as missed tears down a healthy session and every connection on it.
  const blast = await blastServer(64 * MiB, 9);
  const echo = await echoServer();
  // Without per-connection credit (issue 14), as with a peer that lacks it: then the reader pauses.
  const tunnel = await startTunnel({ destinationMap: { HOLD: blast.port, ECHO: echo.port }, settings: { pingPeriodMs: PING_PERIOD_MS, maxMissedPings: 3, creditExtension: 'off' } });
  try {
    const socket = await connectTo(tunnel.port('HOLD'));
    const received = hashUntilClose(socket);
    socket.pause();
    // The timer is the application's behaviour (it stops reading for a while), not synchronisation.
    await new Promise((resolve) => setTimeout(resolve, STALL_MS));
    socket.resume();
    const result = await within(received, 30_000, 'the held download completes');
    assert.is(result.bytes, 64 * MiB, 'every byte arrived');
    assert.is(result.sha256, patternSha256(64 * MiB, 9), 'byte-exact');
    const after = await within(sendPattern(tunnel.port('ECHO'), 64 * 1024, { seed: 2, expectEcho: true }), 10_000, 'echo after the stall');
    assert.is(after.echo?.sha256, after.sha256, 'the session still carries new connections');
  } finally {
    await tunnel.close();
    await blast.close();
    await echo.close();
  }
});

stalled.run();
