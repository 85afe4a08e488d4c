import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { runTunnelCli } from '../../src/api/cli';
import { runRelayCli } from '../../src/relay/cli';
import { inProcess, runCli, startRelayCli } from './cli-run';
import { makePki } from '../transport/fixtures';

const cli = suite('localproxy relay (command line)');

cli('--help prints the options and exits 0', async () => {
  const r = await inProcess(runRelayCli, ['--help']);
  assert.is(r.code, 0);
  assert.match(r.stdout, /--listen HOST:PORT/);
  assert.match(r.stdout, /--tls-self-signed DIR/);
});

for (const [args, pattern] of [
  [['--bogus'], /--bogus/],
  [['--listen', 'localhost'], /invalid --listen 'localhost'/],
  [['--listen', '127.0.0.1:99999'], /invalid --listen/],
  [['--plain', '--tls-self-signed', '/tmp/x'], /cannot be combined/],
  [['--tls-cert', 'a.pem'], /--tls-cert and --tls-key must be given together/],
  [['--tls-cert', '/nonexistent/a.pem', '--tls-key', '/nonexistent/k.pem'], /cannot read certificate '\/nonexistent\/a.pem': it does not exist \(try/],
  [['-v', '9'], /invalid --verbose/],
  [['--bandwidth', 'fast'], /invalid --bandwidth 'fast': expected bytes per second, at least 1024/],
  [['--bandwidth', '100'], /invalid --bandwidth '100'/],
] as Array<[string[], RegExp]>) {
  cli(`bad usage exits 2 with one line: ${args.join(' ')}`, async () => {
    const r = await inProcess(runRelayCli, args);
    assert.is(r.code, 2);
    assert.match(r.stderr, pattern);
    assert.is(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.not.match(r.stderr, /\n\s+at /);
  });
}

cli('a port in use is one line and exit 1', async () => {
  const first = await startRelayCli(['--listen', '127.0.0.1:0', '--plain']);
  try {
    const port = new URL(first.url).port;
    const r = await runCli('relay', ['--listen', `127.0.0.1:${port}`, '--plain']);
    assert.is(r.code, 1);
    assert.match(r.stderr, /address 127\.0\.0\.1:\d+ is already in use/);
  } finally {
    await first.stop();
  }
});

cli('--plain warns; SIGTERM stops the relay with exit 0', async () => {
  const relay = await startRelayCli(['--listen', '127.0.0.1:0', '--plain']);
  assert.match(relay.url, /^ws:\/\/127\.0\.0\.1:\d+$/);
  assert.match(relay.stderr(), /\[warning\] --plain/);
  assert.is(await relay.stop(), 0);
});

cli('--tls-self-signed DIR, --state FILE and the tunnel CLI: a tunnel survives a restart', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'relay-cli-'));
  const env = { LOCALPROXY_RELAY_ACCESS_KEY_ID: 'AKIDCLI', LOCALPROXY_RELAY_SECRET_ACCESS_KEY: 'cli-secret', AWS_ACCESS_KEY_ID: 'AKIDCLI', AWS_SECRET_ACCESS_KEY: 'cli-secret', AWS_SESSION_TOKEN: '' };
  const args = ['--listen', '127.0.0.1:0', '--tls-self-signed', join(dir, 'certs'), '--state', join(dir, 'state.json')];
  try {
    let relay = await startRelayCli(args, env);
    let endpoint = relay.url.replace('wss:', 'https:');
    const common = ['--endpoint', endpoint, '--region', 'us-west-2', '--ca', join(dir, 'certs', 'cert.pem')];
    const opened = await runCli('tunnel', ['open', '--services', 'SSH,HTTP', '--lifetime', '60', ...common], env);
    assert.is(opened.code, 0, opened.stderr);
    const tunnel = JSON.parse(opened.stdout);
    assert.type(tunnel.sourceAccessToken, 'string');
    assert.not.ok(readFileSync(join(dir, 'state.json'), 'utf8').includes(tunnel.sourceAccessToken));
    assert.is(await relay.stop(), 0);

    relay = await startRelayCli(args, env);
    endpoint = relay.url.replace('wss:', 'https:');
    const common2 = ['--endpoint', endpoint, '--ca', join(dir, 'certs', 'cert.pem')];
    const described = await runCli('tunnel', ['describe', '--tunnel-id', tunnel.tunnelId, ...common2], env);
    assert.is(described.code, 0, described.stderr);
    const d = JSON.parse(described.stdout).tunnel;
    assert.is(d.status, 'OPEN');
    assert.equal(d.destinationConfig.services, ['SSH', 'HTTP']);

    const rotated = await runCli('tunnel', ['rotate', '--tunnel-id', tunnel.tunnelId, '--client-mode', 'destination', ...common2], env);
    assert.is(rotated.code, 0, rotated.stderr);
    assert.type(JSON.parse(rotated.stdout).destinationAccessToken, 'string');

    const listed = await runCli('tunnel', ['list', ...common2], env);
    assert.is(JSON.parse(listed.stdout).tunnelSummaries[0].tunnelId, tunnel.tunnelId);

    assert.is((await runCli('tunnel', ['close', '--tunnel-id', tunnel.tunnelId, ...common2], env)).code, 0);
    const after = await runCli('tunnel', ['describe', '--tunnel-id', tunnel.tunnelId, ...common2], env);
    assert.is(JSON.parse(after.stdout).tunnel.status, 'CLOSED');

    const missing = await runCli('tunnel', ['describe', '--tunnel-id', 'nope', ...common2], env);
    assert.is(missing.code, 1);
    assert.match(missing.stderr, /^localproxy tunnel: DescribeTunnel failed: ResourceNotFoundException: Tunnel nope not found\n$/);

    const wrongKey = await runCli('tunnel', ['list', ...common2], { ...env, AWS_SECRET_ACCESS_KEY: 'wrong' });
    assert.is(wrongKey.code, 1);
    assert.match(wrongKey.stderr, /InvalidSignatureException/);
    assert.is(await relay.stop(), 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

cli('--tls-cert/--tls-key from a private CA and --credentials-file (~/.aws/credentials shape): the tunnel CLI trusting that CA opens a tunnel', async () => {
  const pki = makePki('relay cli CA');
  const dir = mkdtempSync(join(tmpdir(), 'relay-cli-'));
  try {
    writeFileSync(join(dir, 'leaf.pem'), pki.certPem);
    writeFileSync(join(dir, 'leaf.key'), pki.keyPem);
    writeFileSync(join(dir, 'credentials'), '[default]\naws_access_key_id = AKIDFILE\r\naws_secret_access_key=file-secret  \n');
    const relay = await startRelayCli(['--listen', '127.0.0.1:0', '--tls-cert', join(dir, 'leaf.pem'), '--tls-key', join(dir, 'leaf.key'), '--credentials-file', join(dir, 'credentials')], { LOCALPROXY_RELAY_ACCESS_KEY_ID: '', LOCALPROXY_RELAY_SECRET_ACCESS_KEY: '' });
    try {
      assert.match(relay.url, /^wss:\/\/127\.0\.0\.1:\d+$/);
      const env = { AWS_ACCESS_KEY_ID: 'AKIDFILE', AWS_SECRET_ACCESS_KEY: 'file-secret', AWS_SESSION_TOKEN: '' };
      const opened = await runCli('tunnel', ['open', '--services', 'SSH', '--endpoint', relay.url.replace('wss:', 'https:'), '--ca', pki.caFile], env);
      assert.is(opened.code, 0, opened.stderr);
      assert.type(JSON.parse(opened.stdout).destinationAccessToken, 'string');
      assert.not.match(relay.stderr(), /no management API credentials/);
    } finally {
      assert.is(await relay.stop(), 0);
    }
    const broken = await runCli('relay', ['--listen', '127.0.0.1:0', '--plain', '--credentials-file', join(dir, 'leaf.pem')]);
    assert.is(broken.code, 2);
    assert.match(broken.stderr, /^localproxy relay: credentials file '.*leaf\.pem' needs aws_access_key_id and aws_secret_access_key/);
    const noState = await runCli('relay', ['--listen', '127.0.0.1:0', '--plain', '--state', join(dir, 'missing', 'state.json')]);
    assert.is(noState.code, 2);
    assert.match(noState.stderr, /^\[[^\n]+\[info\] localproxy \S+ relay \(Node [^\n]+\)\nlocalproxy relay: cannot write state file .*state\.json: ENOENT[^\n]*\n$/);
  } finally {
    pki.remove();
    rmSync(dir, { recursive: true, force: true });
  }
});

cli('tunnel CLI usage errors exit 2 with one line', async () => {
  const env = { AWS_ACCESS_KEY_ID: 'A', AWS_SECRET_ACCESS_KEY: 'S' };
  for (const [args, pattern, extra] of [
    [[], /missing command/, {}],
    [['frobnicate'], /unknown command 'frobnicate'/, {}],
    [['describe', '--endpoint', 'https://127.0.0.1:1'], /--tunnel-id is required/, {}],
    [['rotate', '--tunnel-id', 'x', '--client-mode', 'both'], /invalid --client-mode 'both'/, {}],
    [['open', '--lifetime', '900'], /invalid --lifetime/, {}],
    // No credentials anywhere (no shared files, no instance metadata service to ask).
    [['list'], /set AWS_ACCESS_KEY_ID/, { AWS_ACCESS_KEY_ID: '', AWS_SECRET_ACCESS_KEY: '', AWS_PROFILE: '', AWS_CONFIG_FILE: '/nonexistent/config', AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/credentials', AWS_EC2_METADATA_DISABLED: 'true' }],
  ] as Array<[string[], RegExp, Record<string, string>]>) {
    const r = await inProcess(runTunnelCli, args, { ...env, ...extra });
    assert.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, pattern);
    assert.is(r.stderr.trim().split('\n').length, 1);
  }
});

cli('start-up file errors are usage errors: exit 2, one line naming the file and what is wrong, no warning before it (issue 16)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'relay-cli-'));
  try {
    const key = join(dir, 'relay.key');
    writeFileSync(key, makePki('key only').keyPem);
    const hostname = join(dir, 'hostname');
    writeFileSync(hostname, 'myhost\n');
    const badState = join(dir, 'state.json');
    writeFileSync(badState, JSON.stringify({ hello: 'world' }));
    for (const [args, message] of [
      [['--tls-cert', key, '--tls-key', key], `--tls-cert ${key} is not a PEM certificate (it holds a private key, not a certificate)`],
      [['--tls-self-signed', hostname], `certificate directory ${hostname} is not a directory`],
      [['--plain', '--state', badState], `state file ${badState}: not a localproxy relay state file (format 3)`],
      [['--plain', '--state', dir], `state file ${dir} is not a regular file`],
    ] as Array<[string[], string]>) {
      // No credentials: the warning about them used to come first.
      const r = await inProcess(runRelayCli, ['--listen', '127.0.0.1:0', ...args], { LOCALPROXY_RELAY_ACCESS_KEY_ID: '', LOCALPROXY_RELAY_SECRET_ACCESS_KEY: '' });
      assert.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      // Only the line naming the release comes first (it is not a warning).
      const [first, ...rest] = r.stderr.split('\n');
      assert.match(first, /\[info\] localproxy \S+ relay \(Node /);
      assert.is(rest.join('\n'), `localproxy relay: ${message} (try 'localproxy relay --help')\n`);
      assert.is(r.stdout, '');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

cli('--max-services, --region and --account-id: more services per tunnel, and the ARNs name the relay\'s region and account', async () => {
  const env = { LOCALPROXY_RELAY_ACCESS_KEY_ID: 'AKIDCLI', LOCALPROXY_RELAY_SECRET_ACCESS_KEY: 'cli-secret', AWS_ACCESS_KEY_ID: 'AKIDCLI', AWS_SECRET_ACCESS_KEY: 'cli-secret', AWS_SESSION_TOKEN: '' };
  const relay = await startRelayCli(['--listen', '127.0.0.1:0', '--plain', '--max-services', '5', '--region', 'eu-central-1', '--account-id', '123456789012'], env);
  try {
    const endpoint = relay.url.replace('ws:', 'http:');
    const opened = await inProcess(runTunnelCli, ['open', '--services', 'A,B,C,D,E', '--endpoint', endpoint, '--region', 'us-east-1'], env);
    assert.is(opened.code, 0, opened.stderr);
    assert.match(JSON.parse(opened.stdout).tunnelArn, /^arn:aws:iot:eu-central-1:123456789012:tunnel\//);
    const six = await inProcess(runTunnelCli, ['open', '--services', 'A,B,C,D,E,F', '--endpoint', endpoint], env);
    assert.is(six.code, 1);
    assert.match(six.stderr, /ValidationException: A tunnel may have at most 5 services/);
  } finally {
    assert.is(await relay.stop(), 0);
  }
  for (const [args, pattern] of [
    [['--max-services', '0'], /invalid --max-services '0'/],
    [['--region', 'Mars'], /invalid --region 'Mars'/],
    [['--region', `us-${'east'.repeat(8)}-1`], /invalid --region 'us-(east)+-1': expected a region such as eu-west-1 \(at most 32 characters\)/],
    [['--account-id', '12345'], /invalid --account-id '12345': expected 12 digits/],
  ] as Array<[string[], RegExp]>) {
    const r = await inProcess(runRelayCli, args);
    assert.is(r.code, 2);
    assert.match(r.stderr, pattern);
  }
});

cli.run();
