/**
 * A relay on every address, reached by a name its certificate lacks, as a new user does it: the
 * relay warns what its certificate covers, the proxy says which names the certificate has and
 * which one it asked for (not "trust its CA"), and `--tls-name` fixes it for a proxy that uses
 * `-c DIR` or `-c DIR/cert.pem`. 127.0.0.2 stands for the relay's address on the network: it
 * reaches this host, and no certificate names it unless told to. All through the built CLI.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startCli, type LiveCli } from '../cli/live-cli';
import { runCli } from '../cli/run-cli';
import { freePort, within } from '../helpers/wait';

const test = suite('relay certificates that fit the names proxies use');
const KEYS = { LOCALPROXY_RELAY_ACCESS_KEY_ID: 'AKIDNAMES', LOCALPROXY_RELAY_SECRET_ACCESS_KEY: 'names-test-secret' };
const running = new Set<LiveCli>();
let dir: string;

test.before(() => {
  dir = mkdtempSync(join(tmpdir(), 'relay-names-'));
});

test.after(() => {
  for (const cli of running) cli.kill();
  rmSync(dir, { recursive: true, force: true });
});

function start(args: string[], env: Record<string, string> = {}): LiveCli {
  const cli = startCli(args, { env, cwd: dir });
  running.add(cli);
  return cli;
}

async function stop(cli: LiveCli): Promise<void> {
  cli.child.kill('SIGTERM');
  await within(cli.exited, 10_000, 'exit after SIGTERM');
  running.delete(cli);
}

async function destinationToken(port: number, certs: string): Promise<string> {
  const opened = await runCli(['tunnel', 'open', '--endpoint', `https://127.0.0.1:${port}`, '--region', 'us-east-1', '--services', 'SSH1', '--ca', join(certs, 'cert.pem')],
    { env: { AWS_ACCESS_KEY_ID: KEYS.LOCALPROXY_RELAY_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: KEYS.LOCALPROXY_RELAY_SECRET_ACCESS_KEY } });
  assert.is(opened.code, 0, opened.stderr);
  return (JSON.parse(opened.stdout) as { destinationAccessToken: string }).destinationAccessToken;
}

test('0.0.0.0 and a name the certificate lacks: both sides say what to do; --tls-name makes -c DIR and -c FILE work', async () => {
  const certs = join(dir, 'certs');
  const port = await freePort();
  const listen = ['relay', '--listen', `0.0.0.0:${port}`, '--tls-self-signed', certs];

  const relay = start(listen, KEYS);
  await relay.waitFor(/listening on wss:\/\/0\.0\.0\.0:\d+/);
  assert.match(relay.stderr(), '[warning] listening on every address, but the certificate names only localhost, 127.0.0.1, ::1: proxies on other hosts will fail to verify it; add the names proxies use in -e with --tls-name NAME[,NAME...]');
  const token = await destinationToken(port, certs);
  const refused = start(['-e', `127.0.0.2:${port}`, '-c', certs, '-d', 'SSH1=22'], { AWSIOT_TUNNEL_ACCESS_TOKEN: token });
  const [line] = await refused.waitFor(/\[error\] [^\n]*certificate is for[^\n]*/);
  assert.match(line, 'its certificate is for localhost, 127.0.0.1, ::1, not for 127.0.0.2: give -e one of those names, or give the service a certificate naming 127.0.0.2 (localproxy relay --tls-name 127.0.0.2)');
  assert.not.match(refused.stderr(), 'trust its CA');
  await stop(refused);
  await stop(relay);

  const named = start([...listen, '--tls-name', 'relay.example.com,127.0.0.2'], KEYS);
  await named.waitFor(/listening on wss:\/\/0\.0\.0\.0:\d+/);
  assert.match(named.stderr(), `[warning] ${join(certs, 'cert.pem')} did not name relay.example.com, 127.0.0.2: re-issued for localhost, 127.0.0.1, ::1, relay.example.com, 127.0.0.2`);
  assert.match(named.stderr(), '[info] listening on every address; the certificate names localhost, 127.0.0.1, ::1, relay.example.com, 127.0.0.2: proxies connect with -e one of these');
  for (const ca of [certs, join(certs, 'cert.pem')]) {
    const proxy = start(['-e', `127.0.0.2:${port}`, '-c', ca, '-d', 'SSH1=22'], { AWSIOT_TUNNEL_ACCESS_TOKEN: await destinationToken(port, certs) });
    await proxy.waitFor(/Successfully established websocket connection with proxy server: wss:\/\/127\.0\.0\.2:\d+/);
    assert.not.match(proxy.stderr(), /\[warning\] CA/);
    await stop(proxy);
  }

  // The container image's health check against it: no certificate check, the status only.
  const healthy = await runCli(['relay', '--health-check', `https://127.0.0.1:${port}`]);
  assert.is(healthy.code, 0, healthy.stderr);
  assert.is(healthy.stdout, `https://127.0.0.1:${port}: HTTP 200 ok\n`);
  await stop(named);
  const gone = await runCli(['relay', '--health-check', `https://127.0.0.1:${port}`]);
  assert.is(gone.code, 1);
  assert.is(gone.stderr, `localproxy relay: unhealthy: https://127.0.0.1:${port}: connection refused: no relay listens on this port\n`);
});

test('--tls-name is refused with --plain and --tls-cert, and a value that is not a name or an address is named', async () => {
  for (const [args, message] of [
    [['--plain', '--tls-name', 'relay.example.com'], "--tls-name names the relay's self-signed certificate; --plain serves no certificate"],
    [['--tls-cert', 'a.pem', '--tls-key', 'k.pem', '--tls-name', 'relay.example.com'], "--tls-name names the relay's self-signed certificate; the names of --tls-cert are in that certificate"],
    [['--tls-self-signed', dir, '--tls-name', 'relay.example.com:8443'], "invalid --tls-name 'relay.example.com:8443': expected a DNS name"],
    [['--health-check', '127.0.0.1:8443'], "invalid --health-check '127.0.0.1:8443': expected https://HOST:PORT (http:// for a relay started with --plain)"],
  ] as Array<[string[], string]>) {
    const r = await runCli(['relay', ...args]);
    assert.is(r.code, 2, r.stderr);
    assert.match(r.stderr, `localproxy relay: ${message}`);
    assert.is(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
});

test.run();
