import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync, lstatSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { connectToService, ConnectErrorCode, type ConnectError } from '../../src/transport/index';
import { loadCaDirectory, loadCaPath, namesInSubjectAltName, nativeStoreCertificates } from '../../src/transport/ca';
import { within } from '../helpers/wait';
import { captureLog, makePki, optionsFor, startFakeService, type FakeService, type Pki } from './fixtures';

const test = suite('TLS and -c');
let pki: Pki;
let otherCa: Pki;
let service: FakeService;
let scratch: string;

test.before(async () => {
  pki = makePki('service CA');
  otherCa = makePki('some other CA');
  service = await startFakeService(pki);
  scratch = mkdtempSync(join(tmpdir(), 'lp-cadir-'));
});
test.after(async () => {
  await service.close();
  pki.remove();
  otherCa.remove();
  rmSync(scratch, { recursive: true, force: true });
});

function freshDir(name: string): string {
  const dir = join(scratch, name);
  mkdirSync(dir);
  return dir;
}

async function expectFailure(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    const conn = (await within(promise, 10_000, 'connect attempt')) as { ws: { terminate(): void } };
    conn.ws.terminate();
  } catch (err) {
    return err as ConnectError;
  }
  throw new Error('the connection unexpectedly succeeded');
}

async function connects(caPath: string | undefined, extra: Parameters<typeof optionsFor>[2] = {}): Promise<string> {
  const { log, text } = captureLog();
  const conn = await within(connectToService(optionsFor(service.port, log, { caPath, ...extra })), 10_000, 'connect');
  assert.is(conn.version, 3);
  conn.ws.terminate();
  return text();
}

test('-c with an `openssl rehash` directory (hash links only name the CA)', async () => {
  const dir = freshDir('hashed');
  copyFileSync(otherCa.caFile, join(dir, 'other.pem'));
  copyFileSync(pki.caFile, join(dir, 'service.pem'));
  execFileSync('openssl', ['rehash', dir], { stdio: 'ignore' });
  const links = readdirSync(dir).filter((n) => /^[0-9a-f]{8}\.0$/.test(n));
  assert.is(links.length, 2, 'openssl rehash made the hash links');
  assert.ok(lstatSync(join(dir, links[0])).isSymbolicLink());
  await connects(dir);
});

test('-c with a hashed directory holding copies named <hash>.0 (c_rehash on Windows)', async () => {
  const dir = freshDir('hash-copies');
  const hash = execFileSync('openssl', ['x509', '-hash', '-noout', '-in', pki.caFile], { encoding: 'utf8' }).trim();
  copyFileSync(pki.caFile, join(dir, `${hash}.0`));
  await connects(dir);
});

test('-c with plain .crt and .pem files; every certificate of a bundle is read', async () => {
  const dir = freshDir('plain');
  writeFileSync(join(dir, 'bundle.crt'), `${otherCa.caPem}\r\n${pki.caPem.replace(/\n/g, '\r\n')}`);
  writeFileSync(join(dir, 'README.txt'), 'not a certificate');
  const loaded = await loadCaDirectory(dir);
  assert.is(loaded.certificates.length, 2);
  assert.equal(loaded.problems, []);
  await connects(dir);
});

test('-c with a DER .cer file', async () => {
  const dir = freshDir('der');
  writeFileSync(join(dir, 'service.cer'), new X509Certificate(pki.caPem).raw);
  await connects(dir);
});

test('-c FILE: a PEM file (a relay\'s cert.pem, a bundle) is read like a directory of one file', async () => {
  await connects(pki.caFile);
  const bundle = join(scratch, 'bundle.pem');
  writeFileSync(bundle, `${otherCa.caPem}${pki.caPem}`);
  const loaded = await loadCaPath(bundle);
  assert.is(loaded.certificates.length, 2);
  assert.equal(loaded.problems, []);
  const out = await connects(bundle);
  assert.not.match(out, 'not a directory');
});

test('-c FILE in DER form, and a file without certificates is named as such', async () => {
  const der = join(scratch, 'service.der');
  writeFileSync(der, new X509Certificate(pki.caPem).raw);
  await connects(der);
  const empty = join(scratch, 'notes.txt');
  writeFileSync(empty, 'no certificate here');
  assert.equal(await loadCaPath(empty), { certificates: [], problems: [`no certificates found in CA file ${empty}`] });
});

test('IPv6 and DNS names of a subjectAltName as Node prints it are listed in their usual form', () => {
  assert.equal(namesInSubjectAltName('DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, IP Address:2001:DB8:0:0:0:0:0:2, DNS:relay.example.com'),
    ['localhost', '127.0.0.1', '::1', '2001:db8::2', 'relay.example.com']);
  assert.equal(namesInSubjectAltName(undefined), []);
});

test('the operating system store is read on Windows and macOS only, through Node\'s reader, once; without it the reason is kept', () => {
  const pems = [pki.caPem];
  let calls = 0;
  const reader = { getCACertificates: (type: 'system') => { calls++; assert.is(type, 'system'); return pems; } };
  assert.equal(nativeStoreCertificates('linux', reader), { certificates: [] });
  assert.is(calls, 0, 'Linux: the bundle file is the store; Node\'s reader is not asked');
  assert.equal(nativeStoreCertificates('win32', reader), { certificates: pems });
  assert.equal(nativeStoreCertificates('darwin', reader), { certificates: pems });
  assert.is(calls, 2);
  const old = nativeStoreCertificates('win32', {});
  assert.equal(old.certificates, []);
  assert.match(old.unavailable ?? '', `Node ${process.versions.node} cannot read the Windows certificate store (Node 22.15 or later can): give the CA with -c FILE`);
  assert.match(nativeStoreCertificates('darwin', {}).unavailable ?? '', 'macOS keychain');
});

test('-c given as a Windows-style path such as D:\\certs is just a directory path', async () => {
  const dir = join(scratch, 'D:\\certs');
  mkdirSync(dir);
  copyFileSync(pki.caFile, join(dir, 'service.pem'));
  await connects(dir);
});

test('a wrong CA fails with a clear certificate error that is retryable', async () => {
  const dir = freshDir('wrong');
  copyFileSync(otherCa.caFile, join(dir, 'other.pem'));
  const { log } = captureLog();
  const err = await expectFailure(connectToService(optionsFor(service.port, log, { caPath: dir })));
  assert.is(err.code, ConnectErrorCode.CERTIFICATE);
  assert.is(err.refused, false);
  assert.match(err.message, 'Could not perform SSL handshake with proxy server: certificate verify failed:');
  assert.match(err.message, 'trust its CA with -c FILE (or a directory of CA files)');
  assert.not.match(err.message, '\n');
});

test('without any extra CA the default store does not trust a private CA', async () => {
  const { log } = captureLog();
  const err = await expectFailure(connectToService(optionsFor(service.port, log)));
  assert.is(err.code, ConnectErrorCode.CERTIFICATE);
});

test('a certificate for another name fails with a certificate error', async () => {
  const named = makePki('named CA', 'DNS:other.example');
  const other = await startFakeService(named);
  try {
    const { log } = captureLog();
    const err = await expectFailure(connectToService(optionsFor(other.port, log, { ca: [named.caPem] })));
    assert.is(err.code, ConnectErrorCode.CERTIFICATE);
    // The CA is trusted: the hint names what the certificate covers and what was asked for.
    assert.match(err.message, 'its certificate is for other.example, not for 127.0.0.1: give -e one of those names, or give the service a certificate naming 127.0.0.1 (localproxy relay --tls-name 127.0.0.1)');
    assert.not.match(err.message, 'trust its CA');
  } finally {
    await other.close();
    named.remove();
  }
});

test('a missing -c directory is logged and then fails verification (not silently)', async () => {
  const { log, text } = captureLog();
  const err = await expectFailure(connectToService(optionsFor(service.port, log, { caPath: join(scratch, 'nope') })));
  assert.is(err.code, ConnectErrorCode.CERTIFICATE);
  assert.match(text(), `[warning] CA file or directory ${join(scratch, 'nope')} does not exist`);
});

test('the system bundle is trusted (SSL_CERT_FILE names it here) without -c', async () => {
  const { systemCertificates } = await import('../../src/transport/ca');
  const before = process.env.SSL_CERT_FILE;
  process.env.SSL_CERT_FILE = pki.caFile;
  try {
    assert.is(systemCertificates().source, pki.caFile);
    await connects(undefined);
  } finally {
    if (before === undefined) delete process.env.SSL_CERT_FILE;
    else process.env.SSL_CERT_FILE = before;
  }
  assert.is.not(systemCertificates().source, pki.caFile);
});

test('-k succeeds without a trusted CA and warns on each attempt', async () => {
  const out = await connects(undefined, { insecure: true });
  assert.match(out, '[warning] SECURITY WARNING: SSL host verification is disabled - connection is vulnerable to MITM attacks');
  assert.is(out.split('SECURITY WARNING').length - 1, 1);
});

test('TLS below 1.2 is not offered', async () => {
  const { createServer } = await import('node:tls');
  const old = createServer({ cert: pki.certPem, key: pki.keyPem, maxVersion: 'TLSv1.1', minVersion: 'TLSv1' });
  old.on('tlsClientError', () => {});
  old.listen(0, '127.0.0.1');
  await new Promise((resolve) => old.once('listening', resolve));
  try {
    const { log } = captureLog();
    const err = await expectFailure(connectToService(optionsFor((old.address() as { port: number }).port, log, { ca: [pki.caPem] })));
    assert.is(err.code, ConnectErrorCode.TLS);
    assert.match(err.message, 'Could not perform SSL handshake with proxy server');
  } finally {
    old.close();
  }
});

test.run();
