// `npm run test:dist`: builds the executables (`node build.mjs --dist`) unless --no-build, then runs
// every test/dist/*.smoke.ts with the same runner as `npm test` (test/run.mjs), which ends with
// `N passed, N failed`. They are not *.test.ts because `npm test` must not need the executables,
// qemu or wine.
import { spawnSync } from 'node:child_process';

const root = new URL('..', import.meta.url).pathname;
const args = process.argv.slice(2);
const filters = args.filter((a) => !a.startsWith('--'));

if (!args.includes('--no-build')) {
  const built = spawnSync(process.execPath, ['build.mjs', '--dist'], { cwd: root, stdio: 'inherit' });
  if (built.status !== 0) {
    process.stdout.write('\n0 passed, 1 failed (npm run dist failed)\n');
    process.exit(1);
  }
}

const env = { ...process.env, TEST_FILE_TIMEOUT_S: process.env.TEST_FILE_TIMEOUT_S ?? '600' };
const tests = spawnSync(process.execPath, ['test/run.mjs', '--dir', 'test/dist', '--suffix', '.smoke.ts', ...filters], { cwd: root, stdio: 'inherit', env });
process.exit(tests.status ?? 1);
