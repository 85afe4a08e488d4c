// `npm run test:dist`: builds the executables (`node build.mjs --dist`) unless --no-build, then runs
// every test/dist/*.smoke.ts in its own process (uvu via tsx), two at a time, and ends with
// `N passed, N failed`. They are not *.test.ts because `npm test` must not need the executables,
// qemu or wine. A file that crashes, times out, skips or runs no test counts as failed.
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const args = process.argv.slice(2);
const filters = args.filter((a) => !a.startsWith('--'));
const jobs = Number(process.env.TEST_JOBS ?? 2);
const fileTimeoutMs = Number(process.env.TEST_FILE_TIMEOUT_S ?? 600) * 1000;

if (!args.includes('--no-build')) {
  const built = spawnSync(process.execPath, ['build.mjs', '--dist'], { cwd: root, stdio: 'inherit' });
  if (built.status !== 0) {
    process.stdout.write('\n0 passed, 1 failed (npm run dist failed)\n');
    process.exit(1);
  }
}

const dir = join(root, 'test', 'dist');
const files = readdirSync(dir).filter((f) => f.endsWith('.smoke.ts')).sort()
  .map((f) => join(dir, f))
  .filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)));
// Files named *.slow.smoke.ts start first so the run is not stretched by a late long file.
files.sort((a, b) => Number(b.includes('.slow.')) - Number(a.includes('.slow.')));

let passed = 0;
let failed = 0;

function runFile(file) {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(process.execPath, ['--import', 'tsx', file], {
      cwd: root,
      env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let output = '';
    child.stdout.on('data', (d) => { output += d; });
    child.stderr.on('data', (d) => { output += d; });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try { process.kill(-child.pid, 'SIGKILL'); } catch { child.kill('SIGKILL'); }
    }, fileTimeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const total = Number(/Total:\s+(\d+)/.exec(output)?.[1] ?? 0);
      const ok = Number(/Passed:\s+(\d+)/.exec(output)?.[1] ?? 0);
      const skipped = Number(/Skipped:\s+(\d+)/.exec(output)?.[1] ?? 0);
      let fileFailed = total - ok;
      const problems = [];
      if (timedOut) problems.push(`timed out after ${fileTimeoutMs / 1000} s`);
      if (skipped > 0) problems.push(`${skipped} skipped`);
      if (code !== 0 || signal) problems.push(`exit ${code ?? signal}`);
      if (total === 0) problems.push('ran no test');
      if (problems.length > 0 && fileFailed === 0) fileFailed = 1;
      passed += Math.min(ok, total);
      failed += fileFailed;
      const seconds = ((Date.now() - started) / 1000).toFixed(1);
      const name = relative(root, file);
      if (problems.length > 0 || fileFailed > 0) process.stdout.write(`\n--- FAIL ${name} (${seconds} s) ${problems.join(', ')}\n${output}\n`);
      else process.stdout.write(`ok   ${name}  ${ok} tests  ${seconds} s\n`);
      resolve();
    });
  });
}

const queue = [...files];
await Promise.all(Array.from({ length: Math.max(1, jobs) }, async () => {
  while (queue.length > 0) await runFile(queue.shift());
}));

if (files.length === 0) failed += 1;
process.stdout.write(`\n${passed} passed, ${failed} failed\n`);
process.exitCode = failed > 0 ? 1 : 0;
