/**
 * Trusted certificates for the service (and an https:// web proxy): Node's default store,
 * plus `options.ca`, plus every certificate in the files of `-c DIR`. The directory may be
 * an `openssl rehash` directory (`<hash>.0` links) or hold plain `.pem`/`.crt`/`.cer` files;
 * both are read the same way, so a Windows path like `D:\certs` is just a directory.
 */
import { X509Certificate } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { rootCertificates } from 'node:tls';

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

/** Reads every certificate below `dir` (one level, following links). Never throws. */
export async function loadCaDirectory(dir: string): Promise<CaLoadResult> {
  const problems: string[] = [];
  let names: string[];
  try {
    names = (await readdir(dir)).sort();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'does not exist' : code === 'ENOTDIR' ? 'is not a directory' : (err as Error).message;
    return { certificates: [], problems: [`CA directory ${dir} ${why}`] };
  }
  const seen = new Set<string>();
  const certificates: string[] = [];
  for (const name of names) {
    const path = join(dir, name);
    try {
      const info = await stat(path);
      if (!info.isFile() || info.size > MAX_CA_FILE_BYTES) continue;
      for (const pem of certificatesIn(await readFile(path), name)) {
        if (seen.has(pem)) continue;
        seen.add(pem);
        certificates.push(pem);
      }
    } catch (err) {
      problems.push(`cannot read CA file ${path}: ${(err as Error).message}`);
    }
  }
  if (certificates.length === 0) problems.push(`no certificates found in CA directory ${dir}`);
  return { certificates, problems };
}

/**
 * The `ca` option for tls.connect, or undefined to keep Node's default store untouched.
 * Passing `ca` replaces the default store, so the defaults are added back explicitly.
 */
export async function trustedCertificates(options: { ca?: string[]; caPath?: string }): Promise<{ ca?: string[]; problems: string[] }> {
  const extra = [...(options.ca ?? [])];
  const problems: string[] = [];
  if (options.caPath) {
    const loaded = await loadCaDirectory(options.caPath);
    extra.push(...loaded.certificates);
    problems.push(...loaded.problems);
  }
  if (extra.length === 0) return { problems };
  return { ca: [...rootCertificates, ...extra], problems };
}
