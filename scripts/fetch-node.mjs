// Fetches an official Node binary from the npm registry (`npm pack <pkg>@<exact version>`) into the
// git-ignored .cache/node/, checks the tarball against the integrity pinned in targets/, and
// extracts the one executable. Nothing else touches the network. LOCALPROXY_CACHE_DIR moves the cache.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';

export const cacheRoot = process.env.LOCALPROXY_CACHE_DIR || new URL('../.cache/', import.meta.url).pathname;

export class IntegrityError extends Error {
  code = 'ERR_NODE_INTEGRITY';
}

export class FetchError extends Error {
  code = 'ERR_NODE_FETCH';
}

function integrityOf(file, algorithm) {
  return `${algorithm}-${createHash(algorithm).update(readFileSync(file)).digest('base64')}`;
}

/**
 * @param {{ package: string, version: string, integrity: string, bin: string }} spec
 * @returns {string} path of the extracted executable (read-only use: copy before modifying)
 */
export function fetchNode(spec) {
  const dir = join(cacheRoot, 'node', `${spec.package}-${spec.version}`);
  const exe = join(dir, spec.bin);
  const tarball = join(dir, `${spec.package}-${spec.version}.tgz`);
  const algorithm = spec.integrity.split('-')[0];
  // The extracted file is trusted only while the tarball beside it still has the pinned integrity.
  if (existsSync(exe) && existsSync(tarball) && integrityOf(tarball, algorithm) === spec.integrity) return exe;

  rmSync(dir, { recursive: true, force: true });
  // Per process, so two builds fetching at once cannot delete each other's download.
  const partial = `${dir}.partial-${process.pid}`;
  rmSync(partial, { recursive: true, force: true });
  mkdirSync(partial, { recursive: true });
  process.stderr.write(`dist: fetching ${spec.package}@${spec.version} from the npm registry\n`);
  let out;
  try {
    out = execFileSync('npm', ['pack', `${spec.package}@${spec.version}`, '--pack-destination', partial,
      '--ignore-scripts', '--prefer-offline', '--json', '--silent'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    rmSync(partial, { recursive: true, force: true });
    // With --json, npm reports the reason on stdout as {"error": {"summary": ...}}.
    let why;
    try {
      why = JSON.parse(err.stdout).error.summary;
    } catch {
      why = String(err.stderr || err.message).trim().split('\n').filter(Boolean).pop();
    }
    throw new FetchError(`npm pack ${spec.package}@${spec.version} failed: ${why}`);
  }
  const packed = join(partial, JSON.parse(out)[0].filename);
  const actual = integrityOf(packed, algorithm);
  if (actual !== spec.integrity) {
    rmSync(partial, { recursive: true, force: true });
    throw new IntegrityError(`${spec.package}@${spec.version}: tarball integrity ${actual} does not match the pinned ${spec.integrity}`);
  }
  execFileSync('tar', ['-xzf', packed, '-C', partial, spec.bin], { stdio: 'inherit' });
  renameSync(packed, join(partial, `${spec.package}-${spec.version}.tgz`));
  renameSync(partial, dir);
  if (!statSync(exe).isFile()) throw new Error(`${spec.package}@${spec.version}: ${spec.bin} missing from the tarball`);
  return exe;
}
