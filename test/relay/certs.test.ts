import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { generateSelfSigned, loadOrCreateSelfSigned, namesOf, tlsNameProblem } from '../../src/relay/certs';
import { RelayConfigError } from '../../src/relay/errors';
import { Logger, silentLogger } from '../../src/log';
import { makePki } from '../transport/fixtures';
import { startRelay } from '../../src/relay/server';
import { within } from '../helpers/wait';

const certs = suite('relay certificates');

certs('a generated certificate names localhost, 127.0.0.1 and ::1 and is a CA', () => {
  const { certPem } = generateSelfSigned();
  const x509 = new X509Certificate(certPem);
  assert.is(x509.ca, true);
  assert.is(x509.subjectAltName, 'DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1');
  assert.ok(x509.checkHost('localhost'));
  assert.ok(x509.checkIP('127.0.0.1'));
  assert.ok(x509.checkIP('::1'));
  assert.ok(x509.verify(x509.publicKey), 'self-signature verifies');
  assert.ok(new Date(x509.validTo).getTime() > Date.now() + 5 * 365 * 24 * 3600 * 1000, 'valid for years');
});

certs('the subject hash matches `openssl x509 -subject_hash` and openssl verifies the hashed directory', () => {
  const dir = mkdtempSync(join(tmpdir(), 'relay-certs-'));
  try {
    const cert = loadOrCreateSelfSigned(dir);
    assert.equal(readdirSync(dir).sort(), [`${cert.subjectHash}.0`, 'cert.pem', 'key.pem'].sort());
    const opensslHash = execFileSync('openssl', ['x509', '-noout', '-subject_hash', '-in', join(dir, 'cert.pem')]).toString().trim();
    assert.is(cert.subjectHash, opensslHash);
    const verified = execFileSync('openssl', ['verify', '-x509_strict', '-CApath', dir, join(dir, 'cert.pem')]).toString();
    assert.match(verified, /: OK/);
    // A second start reuses the certificate (proxies configured with -c DIR keep working).
    const again = loadOrCreateSelfSigned(dir);
    assert.is(again.certPem, readFileSync(join(dir, 'cert.pem'), 'utf8'));
    assert.is(again.certPem, cert.certPem);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

certs('Node verifies the relay over TLS when trusting only relay.caPem, for 127.0.0.1 and localhost', async () => {
  const relay = await startRelay({ port: 0, tls: 'self-signed' });
  try {
    assert.match(relay.url, /^wss:\/\/127\.0\.0\.1:\d+$/);
    for (const host of ['127.0.0.1', 'localhost']) {
      const status = await within(new Promise<number>((resolve, reject) => {
        request({ host: '127.0.0.1', servername: host === 'localhost' ? 'localhost' : '', port: relay.port, path: '/health', ca: relay.caPem, headers: { host } }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        }).on('error', reject).end();
      }), 5000, `GET /health as ${host}`);
      assert.is(status, 200);
    }
  } finally {
    await relay.close();
  }
});

certs('curl verifies the relay with --capath pointing at the --tls-self-signed directory', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'relay-capath-'));
  const relay = await startRelay({ port: 0, selfSignedDir: dir });
  try {
    const { execFile } = await import('node:child_process');
    const out = await within(new Promise<string>((resolve, reject) => {
      execFile('curl', ['-sS', '--capath', dir, `https://localhost:${relay.port}/health`], (err, stdout, stderr) => (err ? reject(new Error(stderr)) : resolve(stdout)));
    }), 10000, 'curl');
    assert.is(out, 'ok\n');
  } finally {
    await relay.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

async function startError(options: Parameters<typeof startRelay>[0]): Promise<Error> {
  const err = await startRelay({ port: 0, log: silentLogger(), ...options }).then(async (relay) => { await relay.close(); return undefined; }, (e: Error) => e);
  if (!err) throw new Error('the relay started');
  return err;
}

certs('a certificate option that holds the key, a key that is not one or not the certificate\'s: one line naming the file, before anything is served (issue 16)', async () => {
  const a = generateSelfSigned();
  const b = generateSelfSigned();
  for (const [tls, pattern] of [
    [{ cert: a.keyPem, key: a.keyPem, certFile: '/etc/relay/key.pem', keyFile: '/etc/relay/key.pem' }, /^\/etc\/relay\/key\.pem is not a PEM certificate \(it holds a private key, not a certificate\)$/],
    [{ cert: a.certPem, key: a.certPem, certFile: 'cert.pem', keyFile: 'cert-again.pem' }, /^cert-again\.pem is not a PEM private key \(it holds a certificate\)$/],
    [{ cert: a.certPem, key: b.keyPem, certFile: 'a.pem', keyFile: 'b.key' }, /^b\.key does not belong to the certificate in a\.pem$/],
    [{ cert: 'hello', key: a.keyPem }, /^the TLS certificate is not a PEM certificate$/],
  ] as const) {
    const err = await startError({ tls });
    assert.instance(err, RelayConfigError);
    assert.match(err.message, pattern);
  }
});

certs('--tls-self-signed given a file, or a directory it cannot create: one line naming it (issue 16: EEXIST ... mkdir)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'relay-certs-'));
  try {
    const file = join(dir, 'hostname');
    writeFileSync(file, 'myhost\n');
    const isFile = await startError({ selfSignedDir: file });
    assert.instance(isFile, RelayConfigError);
    assert.is(isFile.message, `certificate directory ${file} is not a directory`);
    const under = await startError({ selfSignedDir: join(file, 'certs') });
    assert.instance(under, RelayConfigError);
    assert.match(under.message, /^cannot create certificate directory .*hostname\/certs: (a part of the path is a file, not a directory|it already exists)$/);
    writeFileSync(join(dir, 'cert.pem'), 'not a certificate');
    writeFileSync(join(dir, 'key.pem'), generateSelfSigned().keyPem);
    const broken = await startError({ selfSignedDir: dir });
    assert.instance(broken, RelayConfigError);
    assert.is(broken.message, `${join(dir, 'cert.pem')} is not a PEM certificate`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

certs('--tls-name: DNS names, a wildcard and IPv4/IPv6 addresses go in the subjectAltName besides localhost', () => {
  const names = ['relay.example.com', '*.devices.example.net', '192.0.2.10', '2001:db8::1', '::ffff:192.0.2.7', 'LOCALHOST', '127.0.0.1'];
  const { certPem } = generateSelfSigned(new Date(), names);
  const x509 = new X509Certificate(certPem);
  assert.is(x509.subjectAltName, 'DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, DNS:relay.example.com, DNS:*.devices.example.net, '
    + 'IP Address:192.0.2.10, IP Address:2001:DB8:0:0:0:0:0:1, IP Address:0:0:0:0:0:FFFF:C000:207');
  assert.ok(x509.checkHost('relay.example.com'));
  assert.ok(x509.checkHost('pi-7.devices.example.net'));
  assert.ok(x509.checkIP('192.0.2.10'));
  assert.ok(x509.checkIP('2001:db8:0::1'));
  assert.not.ok(x509.checkHost('other.example.com'));
  // OpenSSL reads what we wrote.
  const text = execFileSync('openssl', ['x509', '-noout', '-ext', 'subjectAltName'], { input: certPem }).toString();
  assert.match(text, 'DNS:relay.example.com, DNS:*.devices.example.net, IP Address:192.0.2.10, IP Address:2001:DB8:0:0:0:0:0:1');
});

certs('--tls-name values: DNS names and IP addresses pass, anything else is named as wrong', () => {
  for (const good of ['relay', 'relay.example.com', '*.example.com', 'xn--bcher-kva.example', '10.0.0.1', 'fe80::1', '::']) assert.is(tlsNameProblem(good), undefined, good);
  for (const bad of ['', 'relay example', 'https://relay', 'relay.example.com:8443', '-relay', 'a..b', `${'a'.repeat(64)}.com`, '*', 'a.*.com']) assert.ok(tlsNameProblem(bad), bad);
});

certs('a kept certificate lacking a --tls-name is re-issued for its names and the new ones, with the same key; said once', () => {
  const dir = mkdtempSync(join(tmpdir(), 'relay-certs-'));
  try {
    const first = loadOrCreateSelfSigned(dir);
    const lines: string[] = [];
    const log = new Logger({ level: 6, sink: (line) => lines.push(line) });
    const second = loadOrCreateSelfSigned(dir, { names: ['relay.example.com', '192.0.2.10'], log });
    assert.is.not(second.certPem, first.certPem);
    assert.is(second.keyPem, first.keyPem);
    assert.is(readFileSync(join(dir, 'cert.pem'), 'utf8'), second.certPem);
    assert.is(readFileSync(join(dir, `${second.subjectHash}.0`), 'utf8'), second.certPem, 'the hash file follows');
    assert.equal(namesOf(second.certPem), ['localhost', '127.0.0.1', '::1', 'relay.example.com', '192.0.2.10']);
    assert.is(lines.length, 1);
    assert.match(lines[0], `[warning] ${join(dir, 'cert.pem')} did not name relay.example.com, 192.0.2.10: re-issued for localhost, 127.0.0.1, ::1, relay.example.com, 192.0.2.10 (same key)`);
    // Names it has already: kept as it is, nothing said; a further name keeps the earlier ones.
    assert.is(loadOrCreateSelfSigned(dir, { names: ['192.0.2.10'], log }).certPem, second.certPem);
    assert.is(lines.length, 1);
    const third = loadOrCreateSelfSigned(dir, { names: ['relay2.example.com'], log });
    assert.equal(namesOf(third.certPem), ['localhost', '127.0.0.1', '::1', 'relay.example.com', '192.0.2.10', 'relay2.example.com']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

certs('a kept certificate the relay did not make is not replaced for --tls-name: one line saying what to do', () => {
  const dir = mkdtempSync(join(tmpdir(), 'relay-certs-'));
  const pki = makePki('someone else\'s CA');
  try {
    writeFileSync(join(dir, 'cert.pem'), pki.certPem);
    writeFileSync(join(dir, 'key.pem'), pki.keyPem);
    const err = (() => { try { loadOrCreateSelfSigned(dir, { names: ['relay.example.com'] }); } catch (e) { return e as Error; } return undefined; })();
    assert.instance(err, RelayConfigError);
    assert.is(err!.message, `${join(dir, 'cert.pem')} does not name relay.example.com (--tls-name), and it is not a certificate this relay made: remove it to have one made, or use --tls-cert/--tls-key`);
    assert.is(readFileSync(join(dir, 'cert.pem'), 'utf8'), pki.certPem, 'left as it was');
  } finally {
    pki.remove();
    rmSync(dir, { recursive: true, force: true });
  }
});

certs.run();
