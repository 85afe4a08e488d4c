import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { blastServer, echoServer, patternSha256, receiveAll, sendPattern, type AppServer } from '../helpers/apps';
import { caDir, spawnProxy } from '../helpers/child';
import { startRelayForTests, startTunnel, type TunnelSpec } from '../helpers/tunnel';
import { within } from '../helpers/wait';

const KiB = 1024;
const interop = suite('e2e: older destinations (-y V1 / -y V2) with a source that has no -y');

/** Echo (both directions on one connection) twice in a row, then a download: V1/V2 carry one connection per stream. */
async function exercise(spec: (echo: AppServer) => TunnelSpec, label: string): Promise<void> {
  const echo = await echoServer();
  const tunnel = await startTunnel(spec(echo));
  try {
    for (const seed of [1, 2]) {
      const result = await within(sendPattern(tunnel.port('SSH1'), 512 * KiB, { seed, expectEcho: true }), 20_000, `${label} echo ${seed}`);
      assert.is(result.echo?.bytes, 512 * KiB, `${label} echo ${seed} bytes`);
      assert.is(result.echo?.sha256, result.sha256, `${label} echo ${seed} sha256`);
    }
    assert.is(echo.accepted, 2);
  } finally {
    await tunnel.close();
    await echo.close();
  }
}

interop('destination -y V2: data flows both ways on consecutive connections', async () => {
  await exercise((echo) => ({ services: ['SSH1'], destinationMap: { SSH1: echo.port }, destOptions: { clientType: 'V2' } }), 'V2');
});

interop('fixes reference bug 9.3#28: destination -y V1 (`-d <port>` form), source without -y: data flows both ways on consecutive connections', async () => {
  await exercise((echo) => ({ services: ['SSH1'], destinationMap: { '': echo.port }, sourceMap: { SSH1: { kind: 'tcp', port: 0 } }, destOptions: { clientType: 'V1' } }), 'V1');
});

interop('fixes reference bug 9.3#28: destination -y V1: a download from the destination app arrives byte-exact', async () => {
  const blast = await blastServer(8 * 1024 * KiB, 3);
  const tunnel = await startTunnel({ services: ['SSH1'], destinationMap: { '': blast.port }, sourceMap: { SSH1: { kind: 'tcp', port: 0 } }, destOptions: { clientType: 'V1' } });
  try {
    const received = await within(receiveAll(tunnel.port('SSH1')), 20_000, 'V1 download');
    assert.is(received.bytes, 8 * 1024 * KiB);
    assert.is(received.sha256, patternSha256(8 * 1024 * KiB, 3));
  } finally {
    await tunnel.close();
    await blast.close();
  }
});

interop('source -y V1 with a tunnel of two services (as a process): exit 3 with one line naming -y V1 and the services, no stack trace', async () => {
  const relay = await startRelayForTests();
  const ca = caDir(relay);
  const tunnel = await relay.openTunnel({ services: ['SSH1', 'HTTP1'] });
  const child = await spawnProxy({ relay, ca, mode: 'source', accessToken: tunnel.sourceAccessToken, services: { SSH1: 0, HTTP1: 0 }, clientType: 'V1' });
  try {
    const { code } = await within(child.exited, 15_000, 'source exits');
    assert.is(code, 3, child.output());
    assert.match(child.output(), /-y V1 cannot be used with a tunnel of several services \[SSH1, HTTP1\]/);
    assert.not.match(child.output(), /\n\s+at /, 'no stack trace');
    assert.not.match(child.output(), /Listening for new connection/, 'nothing bound');
  } finally {
    await child.stop('SIGKILL');
    await relay.close();
    ca.remove();
  }
});

interop.run();
