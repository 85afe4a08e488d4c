/**
 * Trusted certificates for the service (and an https:// web proxy): Node's default store,
 * the operating system's bundle where it is a file (Linux: what OpenSSL and the reference
 * trust, including corporate CAs added with update-ca-certificates), plus `options.ca`,
 * plus every certificate in the files of `-c DIR`. The directory may be
 * an `openssl rehash` directory (`<hash>.0` links) or hold plain `.pem`/`.crt`/`.cer` files;
 * both are read the same way, so a Windows path like `D:\certs` is just a directory.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
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

/** Why `dir` cannot be used as a CA directory, checked without reading it; undefined if it is a directory. */
export function caDirectoryProblem(dir: string): string | undefined {
  try {
    if (statSync(dir).isDirectory()) return undefined;
    return unusableDirectory(dir, Object.assign(new Error('not a directory'), { code: 'ENOTDIR' }));
  } catch (err) {
    return unusableDirectory(dir, err);
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

/**
 * The `ca` option for tls.connect. Passing `ca` replaces Node's default store, so the
 * defaults are added back explicitly, with the system bundle and the extra certificates.
 */
export async function trustedCertificates(options: { ca?: string[]; caPath?: string }, signal?: AbortSignal): Promise<{ ca?: string[]; problems: string[] }> {
  const extra = [...(options.ca ?? [])];
  const problems: string[] = [];
  if (options.caPath) {
    const loaded = await loadCaDirectory(options.caPath, signal);
    extra.push(...loaded.certificates);
    problems.push(...loaded.problems);
  }
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
