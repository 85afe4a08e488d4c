/**
 * Trusted certificates for the service (and an https:// web proxy): Node's default store,
 * the operating system's own store (Linux: the bundle file OpenSSL and the reference trust,
 * including corporate CAs added with update-ca-certificates; Windows and macOS: the
 * certificate stores and keychains, read by Node itself), plus `options.ca`, plus what `-c`
 * names: a PEM (or DER) file, or a directory of them. The directory may be an `openssl rehash`
 * directory (`<hash>.0` links) or hold plain `.pem`/`.crt`/`.cer` files; both are read the
 * same way, so a Windows path like `D:\certs` is just a directory.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { createSecureContext, rootCertificates, type SecureContext } from 'node:tls';
import type { Logger } from '../log';
import { MAX_PRINTED_PATH_CHARS, printable } from '../printable';

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;
/** Files bigger than this are not certificate bundles; skip instead of reading them whole. */
const MAX_CA_FILE_BYTES = 4 * 1024 * 1024;
/** Extensions that may hold a DER certificate (PEM is detected by content in any file). */
const DER_EXTENSIONS = /\.(cer|crt|der)$/i;

export interface CaLoadResult {
  /** PEM certificates found, in directory order, without duplicates. */
  certificates: string[];
  /** One line per file or directory that could not be used (logged by the caller). */
  problems: string[];
}

/** Every certificate in one file's bytes: all PEM blocks, or the file as one DER certificate. */
export function certificatesIn(bytes: Buffer, name: string): string[] {
  const text = bytes.toString('latin1');
  const pems = text.match(PEM_CERT);
  if (pems) return pems.map((p) => p.replace(/\r\n/g, '\n'));
  if (!DER_EXTENSIONS.test(name)) return [];
  try {
    return [new X509Certificate(bytes).toString()];
  } catch {
    return [];
  }
}

function shownPath(path: string): string {
  return printable(path, MAX_PRINTED_PATH_CHARS);
}

/** The line for a CA directory that cannot be listed; the same at start (CLI) and at each attempt. */
function unusableDirectory(dir: string, err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  const why = code === 'ENOENT' ? 'does not exist' : code === 'ENOTDIR' ? 'is not a directory' : printable((err as Error).message);
  return `CA directory ${shownPath(dir)} ${why}; only the system CAs are used`;
}

/** The line for a `-c` path that is neither a file nor a directory. */
function unusablePath(path: string, err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  const why = code === 'ENOENT' ? 'does not exist' : code === 'EACCES' || code === 'EPERM' ? 'cannot be read (permission denied)' : printable((err as Error).message);
  return `CA file or directory ${shownPath(path)} ${why}; only the system CAs are used`;
}

/** Why `path` cannot be used with `-c`, checked without reading it; undefined for a file or a directory. */
export function caPathProblem(path: string): string | undefined {
  try {
    const info = statSync(path);
    if (info.isDirectory() || info.isFile()) return undefined;
    return `CA file or directory ${shownPath(path)} is neither a file nor a directory; only the system CAs are used`;
  } catch (err) {
    return unusablePath(path, err);
  }
}

const reportedProblems = new WeakMap<Logger, Set<string>>();

/**
 * Logs each CA problem once per logger. The CA directory is read again at every connect
 * attempt (a CA installed while the proxy waits is picked up), but a problem that stays
 * is said once, not before every retry.
 */
export function warnCaProblems(log: Logger, problems: readonly string[]): void {
  let reported = reportedProblems.get(log);
  if (!reported) {
    reported = new Set();
    reportedProblems.set(log, reported);
  }
  for (const problem of problems) {
    if (reported.has(problem)) continue;
    reported.add(problem);
    log.warn(problem);
  }
}

/** Directory loads at once in this process: a burst of tunnels waits its turn instead of opening every CA file at once. */
const MAX_CONCURRENT_LOADS = 2;
let loadsRunning = 0;
const loadsWaiting = new Set<() => void>();

/** Waits for a turn to read CA files; resolves with the function that ends it, or rejects once `signal` aborts. */
function loadTurn(signal?: AbortSignal): Promise<() => void> {
  const end = (): void => {
    loadsRunning--;
    const next = loadsWaiting.values().next().value;
    if (next) next();
  };
  return new Promise((resolve, reject) => {
    signal?.throwIfAborted();
    const start = (): void => {
      loadsWaiting.delete(start);
      signal?.removeEventListener('abort', onAbort);
      loadsRunning++;
      resolve(end);
    };
    const onAbort = (): void => {
      loadsWaiting.delete(start);
      reject(signal!.reason);
    };
    if (loadsRunning < MAX_CONCURRENT_LOADS) return start();
    loadsWaiting.add(start);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Reads every certificate below `dir` (one level, following links). Never throws, except
 * `signal`'s reason once it aborts (a closed tunnel stops reading at the next file).
 */
export async function loadCaDirectory(dir: string, signal?: AbortSignal): Promise<CaLoadResult> {
  const endTurn = await loadTurn(signal);
  try {
    return await readCaDirectory(dir, signal);
  } finally {
    endTurn();
  }
}

async function readCaDirectory(dir: string, signal?: AbortSignal): Promise<CaLoadResult> {
  const problems: string[] = [];
  let names: string[];
  try {
    names = (await readdir(dir)).sort();
  } catch (err) {
    return { certificates: [], problems: [unusableDirectory(dir, err)] };
  }
  const seen = new Set<string>();
  const certificates: string[] = [];
  for (const name of names) {
    signal?.throwIfAborted();
    const path = join(dir, name);
    try {
      const info = await stat(path);
      if (!info.isFile() || info.size > MAX_CA_FILE_BYTES) continue;
      for (const pem of certificatesIn(await readFile(path, { signal }), name)) {
        if (seen.has(pem)) continue;
        seen.add(pem);
        certificates.push(pem);
      }
    } catch (err) {
      signal?.throwIfAborted();
      problems.push(`cannot read CA file ${shownPath(path)}: ${printable((err as Error).message)}`);
    }
  }
  if (certificates.length === 0) problems.push(`no certificates found in CA directory ${shownPath(dir)}`);
  return { certificates, problems };
}

/**
 * `-c PATH`: every certificate of a file (a bundle such as a relay's cert.pem, PEM or DER), or
 * of the files of a directory. Never throws, except `signal`'s reason once it aborts.
 */
export async function loadCaPath(path: string, signal?: AbortSignal): Promise<CaLoadResult> {
  let info;
  try {
    info = await stat(path);
  } catch (err) {
    return { certificates: [], problems: [unusablePath(path, err)] };
  }
  if (info.isDirectory()) return loadCaDirectory(path, signal);
  if (!info.isFile() || info.size > MAX_CA_FILE_BYTES) {
    return { certificates: [], problems: [`CA file ${shownPath(path)} is ${info.isFile() ? 'too large for a certificate bundle' : 'neither a file nor a directory'}; only the system CAs are used`] };
  }
  const endTurn = await loadTurn(signal);
  try {
    const certificates = [...new Set(certificatesIn(await readFile(path, { signal }), path))];
    return { certificates, problems: certificates.length === 0 ? [`no certificates found in CA file ${shownPath(path)}`] : [] };
  } catch (err) {
    signal?.throwIfAborted();
    return { certificates: [], problems: [`cannot read CA file ${shownPath(path)}: ${printable((err as Error).message)}`] };
  } finally {
    endTurn();
  }
}

/** Where Linux distributions keep the system bundle (OpenSSL's default file), in lookup order. */
const SYSTEM_BUNDLES = [
  '/etc/ssl/certs/ca-certificates.crt', // Debian, Ubuntu, Raspberry Pi OS, Arch
  '/etc/pki/tls/certs/ca-bundle.crt', // Fedora, RHEL, Amazon Linux
  '/etc/ssl/ca-bundle.pem', // openSUSE
  '/etc/pki/tls/cacert.pem', // OpenELEC
  '/etc/ssl/cert.pem', // Alpine, macOS, BSDs
];

let systemStore: { key: string; certificates: string[]; source?: string } | undefined;

/**
 * The system's CA bundle: `SSL_CERT_FILE` if set, else the first bundle file that exists.
 * Read once per process (again if SSL_CERT_FILE changes). Empty where the store is not a
 * file (Windows, macOS keychain).
 */
export function systemCertificates(env: NodeJS.ProcessEnv = process.env): { certificates: string[]; source?: string } {
  const key = env.SSL_CERT_FILE ?? '';
  if (systemStore?.key === key) return systemStore;
  const candidates = key ? [key] : process.platform === 'win32' ? [] : SYSTEM_BUNDLES;
  systemStore = { key, certificates: [] };
  for (const path of candidates) {
    try {
      const certificates = certificatesIn(readFileSync(path), path);
      if (certificates.length > 0) {
        systemStore = { key, certificates, source: path };
        break;
      }
    } catch {
      // Not on this system; try the next place.
    }
  }
  return systemStore;
}

/** The part of the `tls` module that reads the operating system's own store (Node >= 22.15). */
export interface SystemStoreReader {
  getCACertificates?: (type: 'system') => string[];
}

let nativeStore: { certificates: string[]; unavailable?: string } | undefined;

/**
 * Windows' certificate stores or macOS' keychains, where a company's CA is installed (there is
 * no bundle file to read there): Node reads them itself from 22.15 on, which the Windows and
 * macOS executables embed. Elsewhere the bundle file is the store (systemCertificates), so
 * nothing is read. Read once per process; `unavailable` says why it could not be.
 */
export function nativeStoreCertificates(platform: NodeJS.Platform = process.platform, reader: SystemStoreReader = tls as SystemStoreReader): { certificates: string[]; unavailable?: string } {
  if (platform !== 'win32' && platform !== 'darwin') return { certificates: [] };
  const cache = reader === (tls as SystemStoreReader) && platform === process.platform;
  if (cache && nativeStore) return nativeStore;
  let result: { certificates: string[]; unavailable?: string };
  if (typeof reader.getCACertificates !== 'function') {
    result = { certificates: [], unavailable: `Node ${process.versions.node} cannot read the ${platform === 'win32' ? 'Windows certificate store' : 'macOS keychain'} (Node 22.15 or later can): give the CA with -c FILE` };
  } else {
    try {
      result = { certificates: reader.getCACertificates('system') };
    } catch (err) {
      result = { certificates: [], unavailable: `cannot read the system certificate store: ${printable((err as Error).message)}` };
    }
  }
  if (cache) nativeStore = result;
  return result;
}

/**
 * The `ca` option for tls.connect. Passing `ca` replaces Node's default store, so the
 * defaults are added back explicitly, with the system's certificates and the extra ones.
 */
export async function trustedCertificates(options: { ca?: string[]; caPath?: string }, signal?: AbortSignal): Promise<{ ca?: string[]; problems: string[] }> {
  const extra = [...(options.ca ?? [])];
  const problems: string[] = [];
  if (options.caPath) {
    const loaded = await loadCaPath(options.caPath, signal);
    extra.push(...loaded.certificates);
    problems.push(...loaded.problems);
  }
  // Why the native store could not be read is said with a certificate error (connect.ts), not at every start.
  extra.push(...nativeStoreCertificates().certificates);
  if (process.env.SSL_CERT_DIR) {
    for (const dir of process.env.SSL_CERT_DIR.split(process.platform === 'win32' ? ';' : ':')) {
      if (dir) extra.push(...(await loadCaDirectory(dir, signal)).certificates);
    }
  }
  const system = systemCertificates().certificates;
  if (extra.length === 0 && system.length === 0) return { problems };
  return { ca: [...rootCertificates, ...system, ...extra], problems };
}

/** Secure contexts by trusted set: building one from ~300 certificates costs 50-500 ms. */
const contexts = new Map<string, SecureContext>();
const MAX_CACHED_CONTEXTS = 8;

/**
 * A TLS 1.2+ client context trusting exactly `ca`, reused while the set is unchanged
 * (reconnects every few seconds would otherwise rebuild it each time).
 */
export function secureContextFor(ca: string[]): SecureContext {
  const hash = createHash('sha256');
  for (const pem of ca) hash.update(pem).update('\0');
  const key = hash.digest('hex');
  let context = contexts.get(key);
  if (!context) {
    context = createSecureContext({ ca, minVersion: 'TLSv1.2' });
    if (contexts.size >= MAX_CACHED_CONTEXTS) contexts.delete(contexts.keys().next().value as string);
    contexts.set(key, context);
  }
  return context;
}

/**
 * The names a certificate is valid for, from its subjectAltName as Node prints it
 * ("DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1"), IPv6 in its short form.
 */
export function namesInSubjectAltName(san: string | undefined): string[] {
  const names: string[] = [];
  for (const part of (san ?? '').split(/,\s*/)) {
    const m = /^(DNS|IP Address):(.+)$/.exec(part.trim());
    if (!m) continue;
    let name = m[2];
    if (m[1] === 'IP Address' && name.includes(':')) {
      try {
        name = new URL(`http://[${name}]/`).hostname.slice(1, -1);
      } catch {
        // Not an address URL can hold: shown as Node printed it.
      }
    }
    names.push(printable(name, 253));
  }
  return names;
}
