/**
 * A self-signed certificate for the relay, written in pure JS: an EC P-256 key from
 * node:crypto and an X.509 v3 certificate assembled as DER by hand (Node has no
 * certificate writer). The certificate is its own CA (basicConstraints CA:TRUE), so
 * OpenSSL and Node accept it as a trust anchor. It names localhost, 127.0.0.1 and ::1,
 * plus the DNS names and IP addresses given with --tls-name (the names proxies use in -e).
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import type { Logger } from '../log';
import { namesInSubjectAltName } from '../transport/ca';
import { fileProblem } from '../cli/read-file';
import { RelayConfigError } from './errors';

export interface SelfSignedCert {
  certPem: string;
  keyPem: string;
  /** OpenSSL subject-name hash (`openssl x509 -noout -subject_hash`), 8 hex digits. */
  subjectHash: string;
}

const SUBJECT_CN = 'localproxy relay';
const VALIDITY_YEARS = 20;

// Object identifiers (dotted form).
const OID_CN = '2.5.4.3';
const OID_ECDSA_SHA256 = '1.2.840.10045.4.3.2';
const OID_BASIC_CONSTRAINTS = '2.5.29.19';
const OID_KEY_USAGE = '2.5.29.15';
const OID_EXT_KEY_USAGE = '2.5.29.37';
const OID_SUBJECT_ALT_NAME = '2.5.29.17';
const OID_SUBJECT_KEY_ID = '2.5.29.14';
const OID_AUTHORITY_KEY_ID = '2.5.29.35';
const OID_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';

// DER tags.
const T_INTEGER = 0x02;
const T_BIT_STRING = 0x03;
const T_OCTET_STRING = 0x04;
const T_OID = 0x06;
const T_UTF8 = 0x0c;
const T_UTC_TIME = 0x17;
const T_GENERALIZED_TIME = 0x18;
const T_SEQUENCE = 0x30;
const T_SET = 0x31;
const T_BOOLEAN = 0x01;

function tlv(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  const n = body.length;
  let len: Buffer;
  if (n < 0x80) len = Buffer.of(n);
  else if (n < 0x100) len = Buffer.of(0x81, n);
  else if (n < 0x10000) len = Buffer.of(0x82, n >> 8, n & 0xff);
  else len = Buffer.of(0x83, n >> 16, (n >> 8) & 0xff, n & 0xff);
  return Buffer.concat([Buffer.of(tag), len, body]);
}

const seq = (...items: Buffer[]) => tlv(T_SEQUENCE, ...items);

function oid(dotted: string): Buffer {
  const parts = dotted.split('.').map(Number);
  const bytes = [parts[0] * 40 + parts[1]];
  for (const part of parts.slice(2)) {
    const group = [part & 0x7f];
    for (let v = Math.floor(part / 128); v > 0; v = Math.floor(v / 128)) group.unshift((v & 0x7f) | 0x80);
    bytes.push(...group);
  }
  return tlv(T_OID, Buffer.from(bytes));
}

/** A positive INTEGER from unsigned big-endian bytes. */
function uint(bytes: Buffer): Buffer {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start++;
  const trimmed = bytes.subarray(start);
  return tlv(T_INTEGER, trimmed[0] & 0x80 ? Buffer.concat([Buffer.of(0), trimmed]) : trimmed);
}

function time(date: Date): Buffer {
  const iso = date.toISOString().replace(/[-:T]/g, '').slice(0, 14) + 'Z'; // YYYYMMDDHHMMSSZ
  // RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
  return date.getUTCFullYear() < 2050 ? tlv(T_UTC_TIME, Buffer.from(iso.slice(2), 'ascii')) : tlv(T_GENERALIZED_TIME, Buffer.from(iso, 'ascii'));
}

function name(commonName: string): Buffer {
  return seq(tlv(T_SET, seq(oid(OID_CN), tlv(T_UTF8, Buffer.from(commonName, 'utf8')))));
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return critical ? seq(oid(id), tlv(T_BOOLEAN, Buffer.of(0xff)), tlv(T_OCTET_STRING, value)) : seq(oid(id), tlv(T_OCTET_STRING, value));
}

/**
 * OpenSSL's X509_NAME_hash: SHA-1 over the canonical name encoding (each RDN set with its
 * strings as lower-cased, space-collapsed UTF8String, without the outer SEQUENCE), first
 * four bytes read little-endian. Only the single-CN names written here need handling.
 */
export function opensslSubjectHash(commonName: string): string {
  const canonical = commonName.trim().replace(/\s+/g, ' ').toLowerCase();
  const rdn = tlv(T_SET, seq(oid(OID_CN), tlv(T_UTF8, Buffer.from(canonical, 'utf8'))));
  const digest = createHash('sha1').update(rdn).digest();
  return digest.readUInt32LE(0).toString(16).padStart(8, '0');
}

/** What every certificate names: the relay reached on this host. */
const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '::1'];

const DNS_NAME = /^(\*\.)?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;

/** Why `name` cannot go in the certificate, or undefined: a DNS name (a leading "*." allowed) or an IP address. */
export function tlsNameProblem(name: string): string | undefined {
  if (isIP(name)) return undefined;
  if (name.length <= 253 && DNS_NAME.test(name)) return undefined;
  return 'expected a DNS name (letters, digits, hyphens and dots, e.g. relay.example.com) or an IP address (192.0.2.10, 2001:db8::1)';
}

/** The 16 bytes of an IPv6 address that isIP() accepted (with "::" and a dotted IPv4 tail). */
function ipv6Bytes(address: string): Buffer {
  let text = address;
  const tail = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (tail) text = `${text.slice(0, tail.index)}0:0`;
  const [head, rest] = text.split('::');
  const first = head ? head.split(':') : [];
  const last = rest ? rest.split(':') : [];
  const groups = rest === undefined ? first : [...first, ...Array<string>(8 - first.length - last.length).fill('0'), ...last];
  const bytes = Buffer.alloc(16);
  groups.forEach((group, i) => bytes.writeUInt16BE(parseInt(group, 16), i * 2));
  if (tail) for (let i = 0; i < 4; i++) bytes[12 + i] = Number(tail[i + 1]);
  return bytes;
}

/** One subjectAltName entry: iPAddress [7] for an address, dNSName [2] for a name. */
function altName(name: string): Buffer {
  const family = isIP(name);
  if (family === 4) return tlv(0x87, Buffer.from(name.split('.').map(Number)));
  if (family === 6) return tlv(0x87, ipv6Bytes(name));
  return tlv(0x82, Buffer.from(name.toLowerCase(), 'ascii'));
}

/** The names of a certificate: localhost, 127.0.0.1, ::1, then `names` (without repeats, in order). */
function certificateNames(names: readonly string[]): string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const name of [...LOOPBACK_NAMES, ...names]) {
    const key = isIP(name) === 6 ? ipv6Bytes(name).toString('hex') : name.toLowerCase();
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(name);
  }
  return out;
}

/**
 * Generates a self-signed certificate for localhost, 127.0.0.1, ::1 and `names`, with a fresh
 * key, or with `key` (a re-issued certificate keeps its key, so a pin of the public key holds).
 */
export function generateSelfSigned(now = new Date(), names: readonly string[] = [], key?: KeyObject): SelfSignedCert {
  const privateKey = key ?? generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
  const publicKey = createPublicKey(privateKey);
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  // The subjectPublicKey BIT STRING is the last 65 bytes of a P-256 SPKI (uncompressed point).
  const keyId = createHash('sha1').update(spki.subarray(spki.length - 65)).digest();
  const serial = randomBytes(16);
  serial[0] &= 0x7f;
  const notBefore = new Date(now.getTime() - 24 * 3600 * 1000);
  const notAfter = new Date(now.getTime());
  notAfter.setUTCFullYear(notAfter.getUTCFullYear() + VALIDITY_YEARS);
  const sigAlg = seq(oid(OID_ECDSA_SHA256));
  const subject = name(SUBJECT_CN);
  const sans = seq(...certificateNames(names).map(altName));
  const extensions = tlv(0xa3, seq(
    extension(OID_BASIC_CONSTRAINTS, true, seq(tlv(T_BOOLEAN, Buffer.of(0xff)))),
    // digitalSignature (bit 0) and keyCertSign (bit 5): 1000 0100, 2 unused bits.
    extension(OID_KEY_USAGE, true, tlv(T_BIT_STRING, Buffer.of(0x02, 0x84))),
    extension(OID_EXT_KEY_USAGE, false, seq(oid(OID_SERVER_AUTH))),
    extension(OID_SUBJECT_ALT_NAME, false, sans),
    extension(OID_SUBJECT_KEY_ID, false, tlv(T_OCTET_STRING, keyId)),
    extension(OID_AUTHORITY_KEY_ID, false, seq(tlv(0x80, keyId))),
  ));
  const tbs = seq(
    tlv(0xa0, tlv(T_INTEGER, Buffer.of(2))), // v3
    uint(serial),
    sigAlg,
    subject,
    seq(time(notBefore), time(notAfter)),
    subject,
    spki,
    extensions,
  );
  const signature = sign('sha256', tbs, privateKey); // DER ECDSA-Sig-Value
  const der = seq(tbs, sigAlg, tlv(T_BIT_STRING, Buffer.of(0), signature));
  const certPem = `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/.{1,64}/g, '$&\n')}-----END CERTIFICATE-----\n`;
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  return { certPem, keyPem, subjectHash: opensslSubjectHash(SUBJECT_CN) };
}

function writeAtomic(path: string, data: string, mode: number): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, data, { mode });
  renameSync(tmp, path);
}

/** The names `certPem` is valid for (its subjectAltName), IPv6 in its short form. */
export function namesOf(certPem: string): string[] {
  return namesInSubjectAltName(new X509Certificate(certPem).subjectAltName);
}

/** The names of `wanted` that `certPem` does not cover (as a client would check them). */
function uncovered(certPem: string, wanted: readonly string[]): string[] {
  const cert = new X509Certificate(certPem);
  return wanted.filter((name) => (isIP(name) ? !cert.checkIP(name) : !cert.checkHost(name)));
}

/**
 * `--tls-self-signed DIR [--tls-name NAMES]`: reuses DIR/cert.pem and DIR/key.pem when both
 * exist, else creates them; always (re)writes DIR/<hash>.0 so DIR works as an OpenSSL hashed
 * CA directory (`-c DIR`). When the kept certificate lacks one of `names`, it is re-issued with
 * the same key for its old names and the new ones (said on `log`). The hash file is a copy
 * rather than a symlink so it also works on file systems without links.
 * Throws RelayConfigError (one line naming the directory or file) when DIR cannot be used.
 */
export function loadOrCreateSelfSigned(dir: string, options: { names?: readonly string[]; log?: Logger } = {}): SelfSignedCert {
  const names = options.names ?? [];
  try {
    if (existsSync(dir) && !statSync(dir).isDirectory()) throw new RelayConfigError(`certificate directory ${dir} is not a directory`);
    mkdirSync(dir, { recursive: true });
  } catch (err) {
    if (err instanceof RelayConfigError) throw err;
    throw new RelayConfigError(`cannot create certificate directory ${dir}: ${fileProblem(err)}`);
  }
  const certPath = join(dir, 'cert.pem');
  const keyPath = join(dir, 'key.pem');
  let cert: SelfSignedCert;
  if (existsSync(certPath) && existsSync(keyPath)) {
    const certPem = readPem(certPath);
    const keyPem = readPem(keyPath);
    checkKeyPair(certPem, keyPem, certPath, keyPath);
    cert = { certPem, keyPem, subjectHash: opensslSubjectHash(SUBJECT_CN) };
    const missing = uncovered(certPem, names);
    if (missing.length > 0) {
      const x509 = new X509Certificate(certPem);
      if (x509.subject !== `CN=${SUBJECT_CN}` || x509.issuer !== x509.subject) {
        throw new RelayConfigError(`${certPath} does not name ${missing.join(', ')} (--tls-name), and it is not a certificate this relay made: remove it to have one made, or use --tls-cert/--tls-key`);
      }
      const wanted = [...namesOf(certPem), ...names];
      cert = { ...generateSelfSigned(new Date(), wanted, createPrivateKey(keyPem)), keyPem };
      writeCert(dir, () => writeAtomic(certPath, cert.certPem, 0o644));
      options.log?.warn(`${certPath} did not name ${missing.join(', ')}: re-issued for ${namesOf(cert.certPem).join(', ')} (same key); proxies given a copy of the previous cert.pem need this one (those using -c ${dir} read it again)`);
    }
  } else {
    cert = generateSelfSigned(new Date(), names);
    writeCert(dir, () => {
      writeAtomic(keyPath, cert.keyPem, 0o600);
      writeAtomic(certPath, cert.certPem, 0o644);
    });
  }
  writeCert(dir, () => writeAtomic(join(dir, `${cert.subjectHash}.0`), cert.certPem, 0o644));
  return cert;
}

function writeCert(dir: string, write: () => void): void {
  try {
    write();
  } catch (err) {
    throw new RelayConfigError(`cannot write the certificate to ${dir}: ${fileProblem(err)}`);
  }
}

function readPem(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new RelayConfigError(`cannot read ${path}: ${fileProblem(err)}`);
  }
}

/**
 * Fails early, with the file named, rather than at the first TLS handshake: `certPem` must hold
 * a certificate, `keyPem` a private key, and the key must be the certificate's.
 */
export function checkKeyPair(certPem: string, keyPem: string, certName = 'the certificate', keyName = 'the private key'): void {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch {
    const hint = /PRIVATE KEY-----/.test(certPem) ? ' (it holds a private key, not a certificate)' : '';
    throw new RelayConfigError(`${certName} is not a PEM certificate${hint}`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch {
    const hint = /CERTIFICATE-----/.test(keyPem) ? ' (it holds a certificate)' : '';
    throw new RelayConfigError(`${keyName} is not a PEM private key${hint}`);
  }
  if (!cert.checkPrivateKey(key)) throw new RelayConfigError(`${keyName} does not belong to the certificate in ${certName}`);
}
