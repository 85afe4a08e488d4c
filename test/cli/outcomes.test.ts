/**
 * Exit codes of the built CLI for how a run ends (Decisions 1), against our relay:
 * retries exhausted → 1, token refused → 3, service ids that do not match → 3,
 * tunnel closed by the service → 0.
 */
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { caDir } from '../helpers/child';
import { startRelayForTests, type Relay } from '../helpers/tunnel';
import { freePort, within } from '../helpers/wait';
import { startCli, type LiveCli } from './live-cli';

let relay: Relay;
let ca: ReturnType<typeof caDir>;
let work: string;
const running = new Set<LiveCli>();

const outcomes = suite('exit codes of a run');

outcomes.before(async () => {
  relay = await startRelayForTests();
  ca = caDir(relay);
  work = mkdtempSync(join(tmpdir(), 'localproxy-outcomes-'));
});

outcomes.after(async () => {
  for (const cli of running) cli.kill();
  await relay.close();
  ca.remove();
  rmSync(work, { recursive: true, force: true });
});

async function exitOf(cli: LiveCli): Promise<number | null> {
  running.add(cli);
  const { code, signal } = await within(cli.exited, 15_000, 'the proxy exits');
  running.delete(cli);
  assert.is(signal, null);
  return code;
}

outcomes('connect_retry_count 0 and nothing listening: exit 1', async () => {
  const settings = join(work, 'no-retry.json');
  writeFileSync(settings, JSON.stringify({ tunneling: { proxy: { websocket: { connect_retry_count: '0' } } } }));
  const port = await freePort();
  const cli = startCli(['-e', `127.0.0.1:${port}`, '-m', 'src', '--settings-json', settings], { env: { AWSIOT_TUNNEL_ACCESS_TOKEN: 'not-a-real-token-0123456789' }, cwd: work });
  assert.is(await exitOf(cli), 1, cli.stderr());
});

outcomes('a token the service refuses: exit 3, the refusal said once, with its hint', async () => {
  const cli = startCli(['-e', `127.0.0.1:${relay.port}`, '-c', ca.dir, '-m', 'src'], { env: { AWSIOT_TUNNEL_ACCESS_TOKEN: 'not-a-real-token-0123456789' }, cwd: work });
  assert.is(await exitOf(cli), 3, cli.stderr());
  const refusals = cli.stderr().split('\n').filter((line) => line.includes('rejected web socket upgrade request'));
  assert.is(refusals.length, 1, cli.stderr());
  assert.match(refusals[0], '"Invalid access token"; check that the region (-r) or endpoint (-e)');
});

outcomes('a missing -c directory is said once, not again before every attempt', async () => {
  const settings = join(work, 'two-retries.json');
  writeFileSync(settings, JSON.stringify({ tunneling: { proxy: { websocket: { connect_retry_count: '2', retry_delay_ms: '10' } } } }));
  const port = await freePort();
  const missing = join(work, 'no-such-ca-dir');
  const cli = startCli(['-e', `127.0.0.1:${port}`, '-m', 'src', '-c', missing, '--settings-json', settings], { env: { AWSIOT_TUNNEL_ACCESS_TOKEN: 'not-a-real-token-0123456789' }, cwd: work });
  assert.is(await exitOf(cli), 1, cli.stderr());
  const count = (text: string): number => cli.stderr().split(text).length - 1;
  assert.is(count('Attempting to establish web socket connection'), 3, cli.stderr());
  assert.is(count(`CA file or directory ${missing} does not exist; only the system CAs are used`), 1, cli.stderr());
});

outcomes('service ids that do not match -d: exit 3', async () => {
  const tunnel = await relay.openTunnel({ services: ['SSH1'] });
  const cli = startCli(['-e', `127.0.0.1:${relay.port}`, '-c', ca.dir, '-d', 'HTTP1=80'], { env: { AWSIOT_TUNNEL_ACCESS_TOKEN: tunnel.destinationAccessToken }, cwd: work });
  assert.is(await exitOf(cli), 3, cli.stderr());
  assert.match(cli.stderr(), /SSH1/);
  // The long explanation once, as the error that ends the run; the close line is short.
  const explained = cli.stderr().split('\n').filter((line) => line.includes('Wrong configurations detected'));
  assert.is(explained.length, 1, cli.stderr());
  assert.match(explained[0], '[error]');
  assert.match(cli.stderr(), "Closing the service connection: the tunnel's service ids do not match this proxy's\n");
});

outcomes('a source whose destination is not connected says so at the default level when a connection is reset', async () => {
  const tunnel = await relay.openTunnel({ services: ['SSH1'] });
  const cli = startCli(['-e', `127.0.0.1:${relay.port}`, '-c', ca.dir, '-m', 'src'], { env: { AWSIOT_TUNNEL_ACCESS_TOKEN: tunnel.sourceAccessToken }, cwd: work });
  running.add(cli);
  try {
    const port = Number((await cli.waitFor(/Listening for new connection on port (\d+)/))[1]);
    const socket = createConnection({ host: '127.0.0.1', port });
    socket.on('error', () => {});
    socket.write('hello?');
    await within(once(socket, 'close'), 10_000, 'the connection closed by the reset');
    const line = (await cli.waitFor(/\[info\] SSH1 stream#1 conn#1: reset by the service before any reply — is the destination connected\?[^\n]*/))[0];
    assert.ok(line.length > 0);
  } finally {
    cli.kill();
    running.delete(cli);
  }
});

outcomes('the service closes the tunnel: exit 0', async () => {
  const tunnel = await relay.openTunnel({ services: ['SSH1'] });
  const cli = startCli(['-e', `127.0.0.1:${relay.port}`, '-c', ca.dir, '-d', 'SSH1=22'], { env: { AWSIOT_TUNNEL_ACCESS_TOKEN: tunnel.destinationAccessToken }, cwd: work });
  running.add(cli);
  await cli.waitFor(/Successfully established websocket connection/);
  await relay.closeTunnel(tunnel.tunnelId);
  assert.is(await exitOf(cli), 0, cli.stderr());
});

outcomes.run();
