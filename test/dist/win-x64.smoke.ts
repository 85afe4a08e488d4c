import { spawnSync } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { sameAsBundle, strayNodeOptionsIgnored } from './behaviour';
import { within } from '../helpers/wait';
import { bundle, executable, platforms, prepareWinePrefix, Program, run, runBundle, start, tunnelThrough, WINE } from './harness';

// wine starts its server and, on the first run, creates the prefix (.cache/wine-prefix): slow.
const MS = 120_000;
const win = platforms['win-x64']!;
const test = suite('dist: win-x64 executable under wine');
let windowsVersion = '';

test.before(() => {
  // As a user's wine is set up: `winecfg -v win10` (creating the prefix on the first run).
  windowsVersion = prepareWinePrefix();
});

test.after(() => {
  // The wine server of our own prefix lingers after the last program; stop it so this file exits.
  spawnSync('/usr/lib/wine/wineserver64', ['-k'], { env: { ...process.env, ...win.env }, stdio: 'ignore' });
});

test('is a PE32+ x86-64 executable with no Authenticode signature left (its certificate table is empty)', () => {
  const image = readFileSync(executable(win));
  assert.is(image.subarray(0, 2).toString('latin1'), 'MZ');
  const pe = image.readUInt32LE(0x3c);
  assert.is(image.subarray(pe, pe + 4).toString('latin1'), 'PE\0\0');
  assert.is(image.readUInt16LE(pe + 4), 0x8664, 'machine x86-64');
  const optional = pe + 24;
  assert.is(image.readUInt16LE(optional), 0x20b, 'PE32+');
  // Data directory 4 (security): offset and size are both zero once the signature is removed.
  const security = optional + 112 + 4 * 8;
  assert.is(image.readUInt32LE(security), 0);
  assert.is(image.readUInt32LE(security + 4), 0);
});

test('runs on Windows 10 as it is, without NODE_SKIP_PLATFORM_CHECK (no Windows user sets it)', async () => {
  assert.is(windowsVersion, '10.0', 'the prefix reports Windows 10');
  assert.not.ok('NODE_SKIP_PLATFORM_CHECK' in win.env);
  const result = await run(win, ['--version'], { NODE_SKIP_PLATFORM_CHECK: undefined }, MS);
  assert.is(result.code, 0, `exit ${result.code}: ${result.stdout}${result.stderr}`);
  assert.not.match(result.stdout + result.stderr, 'only supported on Windows');
});

test('--version prints the product and version like node dist/localproxy.cjs', async () => {
  const result = await run(win, ['--version'], {}, MS);
  assert.is(result.code, 0, result.stderr);
  assert.match(result.stdout, /^localproxy \d+\.\d+\.\d+/);
  await sameAsBundle(win, ['--version'], MS);
});

test('--help: same output and exit code as node dist/localproxy.cjs', async () => {
  await sameAsBundle(win, ['--help'], MS);
});

test('a stray NODE_OPTIONS (a --require preload) does not reach the application', async () => {
  await strayNodeOptionsIgnored(win, MS);
});

/** The .exe with its stdout and stderr connected to pipes, as `| findstr` or a service manager does. */
function startPiped(args: string[]): Program {
  const env: NodeJS.ProcessEnv = { ...process.env, ...win.env };
  delete env.NODE_OPTIONS;
  return new Program(WINE, [executable(win), ...args], env, false);
}

test('writing to pipes (stdout and stderr) works: no EBADF at the first write, same output as to a file', async () => {
  const version = startPiped(['--version']);
  const done = await within(version.exited, MS, '--version to a pipe');
  assert.is(done.code, 0, version.stderr);
  assert.is(version.stdout.replace(/\r\n/g, '\n'), (await runBundle(['--version'])).stdout);
  assert.not.match(version.stderr, /EBADF|createWritableStdioStream/);

  const bad = startPiped(['--no-such-flag-xyz']);
  const failed = await within(bad.exited, MS, 'a usage error to a pipe');
  assert.is(failed.code, 2);
  assert.is(bad.stderr.replace(/\r\n/g, '\n'), (await runBundle(['--no-such-flag-xyz'])).stderr);

  // A long run: log lines on stderr and the listening line on stdout, while it runs.
  const relay = startPiped(['relay', '--listen', '127.0.0.1:0', '--plain']);
  try {
    await relay.waitFor(/listening on ws:\/\/127\.0\.0\.1:\d+/, MS, 'relay listening line on a stdout pipe');
    await relay.waitFor(/\[warning\] --plain/, MS, 'relay warning on a stderr pipe');
  } finally {
    await relay.stop();
  }
});

/**
 * Installs a certificate in the wine prefix's Windows store for trusted roots of the current
 * user, where Windows (and wine's crypt32) keep them: the registry key named by the
 * certificate's SHA-1, holding the serialized certificate (property 32, CERT_CERT_PROP_ID).
 * Returns the removal.
 */
function trustInWindowsStore(certPem: string): () => void {
  const der = new X509Certificate(certPem).raw;
  const header = Buffer.alloc(12);
  header.writeUInt32LE(32, 0);
  header.writeUInt32LE(1, 4);
  header.writeUInt32LE(der.length, 8);
  const key = `HKCU\\Software\\Microsoft\\SystemCertificates\\Root\\Certificates\\${createHash('sha1').update(der).digest('hex').toUpperCase()}`;
  const env = { ...process.env, ...win.env };
  const reg = (args: string[]): void => {
    const result = spawnSync(WINE, ['reg', ...args], { env, encoding: 'utf8', timeout: MS });
    if (result.status !== 0) throw new Error(`wine reg ${args[0]} failed: ${result.stdout}${result.stderr}`);
  };
  reg(['add', key, '/v', 'Blob', '/t', 'REG_BINARY', '/d', Buffer.concat([header, der]).toString('hex'), '/f']);
  return () => reg(['delete', key, '/f']);
}

test('the Windows certificate store is trusted: with the relay\'s CA installed there, the .exe connects without -c', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'localproxy-winstore-'));
  const keys = { LOCALPROXY_RELAY_ACCESS_KEY_ID: 'AKIDWINSTORE', LOCALPROXY_RELAY_SECRET_ACCESS_KEY: 'windows-store-test-secret' };
  const relay = new Program(process.execPath, [bundle, 'relay', '--listen', '127.0.0.1:0', '--tls-self-signed', dir], { ...process.env, ...keys }, false);
  const programs: Program[] = [relay];
  let untrust: (() => void) | undefined;
  try {
    const [, port] = await relay.waitFor(/listening on wss:\/\/127\.0\.0\.1:(\d+)/, MS, 'relay listening');
    const opened = await runBundle(['tunnel', 'open', '--endpoint', `https://127.0.0.1:${port}`, '--region', 'us-east-1', '--services', 'SSH1', '--ca', join(dir, 'cert.pem')],
      { AWS_ACCESS_KEY_ID: keys.LOCALPROXY_RELAY_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: keys.LOCALPROXY_RELAY_SECRET_ACCESS_KEY });
    assert.is(opened.code, 0, opened.stderr);
    const token = { AWSIOT_TUNNEL_ACCESS_TOKEN: (JSON.parse(opened.stdout) as { destinationAccessToken: string }).destinationAccessToken };
    const args = ['-e', `127.0.0.1:${port}`, '-d', 'SSH1=22'];
    // Not in the store yet: the relay's certificate is not trusted (the check can fail).
    const untrusted = start(win, args, token);
    programs.push(untrusted);
    await untrusted.waitFor(/certificate verify failed/, MS, 'the untrusted relay refused');
    await untrusted.stop();
    untrust = trustInWindowsStore(readFileSync(join(dir, 'cert.pem'), 'utf8'));
    const trusted = start(win, args, token);
    programs.push(trusted);
    await trusted.waitFor(/Successfully established websocket connection/, MS, 'connected through the Windows store');
    assert.not.match(trusted.stderr, /certificate verify failed/);
  } finally {
    for (const program of programs.reverse()) await program.stop();
    untrust?.();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a real tunnel on loopback, every program from the .exe (CA directory given as Z:\\...), carries 512 KiB byte-exactly', async () => {
  const result = await tunnelThrough(win, 512 << 10, MS);
  assert.is(result.length, 512 << 10);
  assert.is(result.received, result.sent);
});

test.run();
