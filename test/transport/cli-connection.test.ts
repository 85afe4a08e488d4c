/**
 * The service connection as users run it: the built CLI (dist/localproxy.cjs, made by
 * `npm test`'s build step) with `https_proxy`/`NO_PROXY` from the environment, `-c` with a
 * directory, and the exit codes of a refused and an exhausted connection.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startRelay, type Relay } from '../../src/relay/server';
import { echoServer, type AppServer } from '../helpers/apps';
import { freePort, within } from '../helpers/wait';
import { captureLog, makePki, type Pki } from './fixtures';
import { startTinyproxy, type Tinyproxy } from './tinyproxy';

const CLI = join(new URL('../..', import.meta.url).pathname, 'dist/localproxy.cjs');

interface Run {
  output(): string;
  waitFor(text: string): Promise<void>;
  exited: Promise<number | null>;
  stop(): Promise<number | null>;
}

function run(args: string[], env: Record<string, string | undefined>): Run {
  const clean = { ...process.env };
  for (const name of ['https_proxy', 'HTTPS_PROXY', 'no_proxy', 'NO_PROXY', 'AWSIOT_TUNNEL_ACCESS_TOKEN', 'AWSIOT_TUNNEL_CLIENT_TOKEN']) delete clean[name];
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...clean, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const waiters: Array<{ text: string; resolve: () => void }> = [];
  const onData = (d: Buffer): void => {
    output += d.toString();
    for (const w of waiters.filter((x) => output.includes(x.text))) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  return {
    output: () => output,
    waitFor: (text) => within(output.includes(text) ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ text, resolve })), 15_000, `"${text}" from the CLI:\n${output}`),
    exited: within(exited, 30_000, 'CLI exit'),
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return within(exited, 10_000, 'CLI exit after SIGTERM');
    },
  };
}

const test = suite('CLI: service connection');
let pki: Pki;
let caDir: string;
let relay: Relay;
let echo: AppServer;
let tinyproxy: Tinyproxy;

test.before(async () => {
  assert.ok(existsSync(CLI), 'dist/localproxy.cjs is built (npm test builds it first)');
  pki = makePki('relay CA');
  caDir = mkdtempSync(join(tmpdir(), 'lp-cli-ca-'));
  writeFileSync(join(caDir, 'relay-ca.crt'), pki.caPem);
  relay = await startRelay({ port: 0, tls: { cert: pki.certPem, key: pki.keyPem }, log: captureLog(0, 'relay').log });
  echo = await echoServer();
  tinyproxy = await startTinyproxy([relay.port]);
});
test.after(async () => {
  await tinyproxy?.stop();
  await relay?.close();
  await echo?.close();
  pki?.remove();
  if (caDir) rmSync(caDir, { recursive: true, force: true });
});

test('https_proxy from the environment: the CLI connects through tinyproxy, -c DIR trusts the relay, SIGTERM exits 0', async () => {
  const opened = await relay.openTunnel({ services: ['ECHO'] });
  const cli = run(['-e', `localhost:${relay.port}`, '-c', caDir, '-d', `ECHO=${echo.port}`, '-v', '5'], {
    AWSIOT_TUNNEL_ACCESS_TOKEN: opened.destinationAccessToken,
    HTTPS_PROXY: 'http://127.0.0.1:1',
    https_proxy: `127.0.0.1:${tinyproxy.port}`,
  });
  await cli.waitFor('Successfully established websocket connection with proxy server: wss://localhost:');
  assert.match(cli.output(), 'Found Web proxy information in the environment variables');
  assert.match(cli.output(), `Connecting to the web proxy http://127.0.0.1:${tinyproxy.port}`);
  assert.match(tinyproxy.output(), 'Established connection to host "localhost"');
  assert.not.match(cli.output(), opened.destinationAccessToken);
  assert.is(await cli.stop(), 0);
});

test('NO_PROXY naming the endpoint: the CLI goes direct although https_proxy is unusable', async () => {
  const opened = await relay.openTunnel({ services: ['ECHO'] });
  const dead = await freePort();
  const cli = run(['-e', `localhost:${relay.port}`, '-c', caDir, '-d', `ECHO=${echo.port}`, '-v', '5'], {
    AWSIOT_TUNNEL_ACCESS_TOKEN: opened.destinationAccessToken,
    https_proxy: `http://127.0.0.1:${dead}`,
    NO_PROXY: 'localhost',
  });
  await cli.waitFor('Successfully established websocket connection');
  assert.match(cli.output(), 'listed in NO_PROXY');
  assert.is(await cli.stop(), 0);
});

test('a token the service refuses: exit 3 with the reason and a hint, no retry', async () => {
  const cli = run(['-e', `localhost:${relay.port}`, '-c', caDir, '-d', `ECHO=${echo.port}`], { AWSIOT_TUNNEL_ACCESS_TOKEN: 'not-a-token-of-this-relay' });
  assert.is(await cli.exited, 3);
  assert.match(cli.output(), 'Invalid access token');
  assert.match(cli.output(), "tunnel's region");
  assert.is(cli.output().split('Attempting to establish').length - 1, 1);
  assert.not.match(cli.output(), 'not-a-token-of-this-relay');
});

test('nothing listening and connect_retry_count 2: three logged attempts, then exit 1', async () => {
  const dead = await freePort();
  const settings = join(caDir, 'settings.json');
  writeFileSync(settings, JSON.stringify({ tunneling: { proxy: { websocket: { connect_retry_count: '2', retry_delay_ms: '20', retry_max_delay_ms: '50' } } } }));
  const cli = run(['-e', `localhost:${dead}`, '-c', caDir, '-d', `ECHO=${echo.port}`, '--settings-json', settings], { AWSIOT_TUNNEL_ACCESS_TOKEN: 'some-access-token' });
  assert.is(await cli.exited, 1);
  assert.is(cli.output().split('Could not connect to proxy server').length - 1 >= 3, true, cli.output());
  assert.match(cli.output(), 'gave up after 2 retries');
});

test.run();
