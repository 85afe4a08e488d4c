/**
 * Tokens never appear in the output, at `-v 6`, with a real session through our relay:
 * the access token given with `-t`, in the environment and in a `--config` file, the
 * client token given with `-i`, and the client token derived from the access token.
 * Also: a `-t` or `-i` token does not stay visible in the process list.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { deriveClientToken } from '../../src/transport/client-token';
import { echoServer, connectTo, type AppServer } from '../helpers/apps';
import { caDir } from '../helpers/child';
import { startRelayForTests, type Relay } from '../helpers/tunnel';
import { within } from '../helpers/wait';
import { startCli, type LiveCli } from './live-cli';

const CLIENT_TOKEN = '0b7d2c4e-1f3a-4c5b-8d9e-aa11bb22cc33dd44';

let relay: Relay;
let app: AppServer;
let ca: ReturnType<typeof caDir>;
let work: string;
const running = new Set<LiveCli>();

const secrets = suite('tokens stay out of the output');

secrets.before(async () => {
  relay = await startRelayForTests();
  app = await echoServer();
  ca = caDir(relay);
  work = mkdtempSync(join(tmpdir(), 'localproxy-secrets-'));
});

secrets.after(async () => {
  for (const cli of running) cli.kill();
  await app.close();
  await relay.close();
  ca.remove();
  rmSync(work, { recursive: true, force: true });
});

type Via = 'argv' | 'env' | 'config';

/** Arguments and environment that hand `token` to the CLI the given way. */
function tokenVia(via: Via, token: string, name: string): { args: string[]; env: Record<string, string> } {
  if (via === 'argv') return { args: ['-t', token], env: {} };
  if (via === 'env') return { args: [], env: { AWSIOT_TUNNEL_ACCESS_TOKEN: token } };
  const path = join(work, `${name}.ini`);
  writeFileSync(path, `access-token = ${token}\n`);
  return { args: ['--config', path], env: {} };
}

async function session(via: Via, clientToken?: string): Promise<{ outputs: string[]; tokens: string[] }> {
  const tunnel = await relay.openTunnel({ services: ['SSH1'] });
  const common = ['-e', `127.0.0.1:${relay.port}`, '-c', ca.dir, '-v', '6'];
  const clientArgs = clientToken ? ['-i', clientToken] : [];
  const d = tokenVia(via, tunnel.destinationAccessToken, `dst-${via}`);
  const s = tokenVia(via, tunnel.sourceAccessToken, `src-${via}`);
  const destination = startCli([...d.args, ...common, '-d', `SSH1=127.0.0.1:${app.port}`, ...clientArgs], { env: d.env, cwd: work });
  const source = startCli([...s.args, ...common, '-m', 'src'], { env: s.env, cwd: work });
  running.add(destination);
  running.add(source);
  try {
    await destination.waitFor(/Successfully established websocket connection/);
    const port = Number((await source.waitFor(/Listening for new connection on port (\d+)/))[1]);
    if (via === 'argv') {
      // The process title overwrote argv: the token is not in /proc/<pid>/cmdline any more.
      const cmdline = readFileSync(`/proc/${source.child.pid}/cmdline`, 'latin1');
      assert.not.ok(cmdline.includes(tunnel.sourceAccessToken), 'token still in the process list');
      // Only the token is masked: the rest of the command line still tells this proxy apart.
      assert.is(cmdline.replace(/\0+$/, ''), `localproxy -t *** ${common.join(' ')} -m src`);
    }
    if (clientToken) {
      const cmdline = readFileSync(`/proc/${destination.child.pid}/cmdline`, 'latin1');
      assert.not.ok(cmdline.includes(clientToken), 'client token given with -i still in the process list');
      assert.match(cmdline, `-d SSH1=127.0.0.1:${app.port} -i ***`);
    }
    const socket = await connectTo(port);
    socket.write('ping through the tunnel');
    const [echo] = await within(new Promise<Buffer[]>((resolve) => socket.once('data', (d: Buffer) => resolve([d]))), 10_000, 'echo');
    assert.is(echo.toString(), 'ping through the tunnel');
    socket.destroy();
  } finally {
    source.child.kill('SIGTERM');
    destination.child.kill('SIGTERM');
    await within(Promise.all([source.exited, destination.exited]), 10_000, 'both proxies exit');
    running.delete(source);
    running.delete(destination);
  }
  const tokens = [tunnel.sourceAccessToken, tunnel.destinationAccessToken, deriveClientToken(tunnel.sourceAccessToken), deriveClientToken(tunnel.destinationAccessToken)];
  if (clientToken) tokens.push(clientToken);
  return { outputs: [source.stdout(), source.stderr(), destination.stdout(), destination.stderr()], tokens };
}

function assertNoTokens(outputs: string[], tokens: string[]): void {
  const all = outputs.join('\n');
  assert.ok(all.includes('[trace]'), 'ran at trace level');
  assert.ok(all.includes('Successfully established websocket connection'), 'a real session');
  for (const token of tokens) assert.not.ok(all.includes(token), `token ${token.slice(0, 6)}… appears in the output`);
}

secrets('access token from -t, at -v 6', async () => {
  const { outputs, tokens } = await session('argv');
  assertNoTokens(outputs, tokens);
  assert.ok(outputs.join('').includes('Found access token supplied via CLI arg'), 'warns about -t');
});

secrets('access token from AWSIOT_TUNNEL_ACCESS_TOKEN, at -v 6', async () => {
  const { outputs, tokens } = await session('env');
  assertNoTokens(outputs, tokens);
  assert.not.ok(outputs.join('').includes('Found access token supplied via CLI arg'));
});

secrets('access token from a --config file, client token from -i, at -v 6', async () => {
  const { outputs, tokens } = await session('config', CLIENT_TOKEN);
  assertNoTokens(outputs, tokens);
});

secrets.run();
