// Runs every test file (test/**/*.test.ts) in its own Node process with the tsx loader,
// a few at a time, and ends with one plain line: `N passed, N failed`.
//
//   node test/run.mjs [substring ...]     only files whose path contains a substring
//   --dir test/dist --suffix .smoke.ts    another folder and file suffix (npm run test:dist)
//   --packages [test|dist]                print the Debian packages the tests need, and exit
//   TEST_JOBS=3 TEST_FILE_TIMEOUT_S=600   parallelism and per-file limit
//
// Before running anything it checks for the programs in test/prerequisites.txt; if any is
// missing it names the Debian packages in one line and exits 2.
// A file that crashes, times out or reports skipped tests counts as failed.
import { spawn } from 'node:child_process';
import { accessSync, constants, existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { delimiter, join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const jobs = Number(process.env.TEST_JOBS ?? 2);
const fileTimeoutMs = Number(process.env.TEST_FILE_TIMEOUT_S ?? 900) * 1000;
const args = process.argv.slice(2);
function option(name, fallback) {
  const at = args.indexOf(name);
  if (at < 0) return fallback;
  const [, value] = args.splice(at, 2);
  return value;
}
const testDir = option('--dir', 'test');
const suffix = option('--suffix', '.test.ts');
const suite = testDir.replace(/\/+$/, '') === 'test' ? 'test' : 'dist';

/** test/prerequisites.txt: `path-or-program  package  suite` lines. */
function prerequisites() {
  const text = readFileSync(join(root, 'test/prerequisites.txt'), 'utf8');
  return text.split('\n').filter((line) => line.trim() && !line.startsWith('#')).map((line) => {
    const [program, pkg, needs] = line.trim().split(/\s+/);
    return { program, pkg, needs };
  });
}

if (args[0] === '--packages') {
  const wanted = args[1];
  const pkgs = new Set(prerequisites().filter((p) => !wanted || p.needs === wanted).map((p) => p.pkg));
  process.stdout.write(`${[...pkgs].join(' ')}\n`);
  process.exit(0);
}

function found(program) {
  if (program.startsWith('/')) return existsSync(program);
  return (process.env.PATH ?? '').split(delimiter).some((dir) => {
    try {
      accessSync(join(dir, program), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

const missing = prerequisites().filter((p) => p.needs === suite && !found(p.program));
if (missing.length > 0) {
  const pkgs = [...new Set(missing.map((p) => p.pkg))].join(' ');
  process.stderr.write(`missing ${missing.map((p) => p.program).join(', ')}: install them with \`sudo apt-get install -y --no-install-recommends ${pkgs}\`\n`);
  process.exit(2);
}
const filters = args;

function findTests(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...findTests(path));
    else if (name.endsWith(suffix)) out.push(path);
  }
  return out;
}

const files = findTests(join(root, testDir)).filter((f) => filters.length === 0 || filters.some((s) => relative(root, f).includes(s)));
// Files named *.slow.* start first so the run is not stretched by a late long file.
files.sort((a, b) => Number(b.includes('.slow.')) - Number(a.includes('.slow.')));

let passed = 0;
let failed = 0;

function runFile(file) {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(process.execPath, ['--import', 'tsx', join(root, 'test/uvu-child.mjs'), file], {
      cwd: root,
      env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' },
      stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
      detached: true,
    });
    let output = '';
    let report = '';
    child.stdout.on('data', (d) => { output += d; });
    child.stderr.on('data', (d) => { output += d; });
    child.stdio[3].on('data', (d) => { report += d; });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try { process.kill(-child.pid, 'SIGKILL'); } catch { child.kill('SIGKILL'); }
    }, fileTimeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      // test/uvu-child.mjs writes the file's counts on fd 3 once every suite has run.
      let counts = { total: 0, passed: 0, skipped: 0 };
      try {
        if (report) counts = JSON.parse(report);
      } catch {
        output += `\n(unreadable counts from the test process: ${report.slice(0, 200)})`;
      }
      const { total, passed: ok, skipped } = counts;
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
      if (problems.length > 0 || fileFailed > 0) {
        process.stdout.write(`\n--- FAIL ${name} (${seconds} s) ${problems.join(', ')}\n${output}\n`);
      } else {
        process.stdout.write(`ok   ${name}  ${ok} tests  ${seconds} s\n`);
      }
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
