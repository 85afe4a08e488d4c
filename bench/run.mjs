// `npm run bench` (after `node build.mjs`): the tunnel benchmark, which prints its tables and
// rewrites the tunnel section of docs/BENCHMARKS.md. Arguments go through to bench/tunnel.ts
// (`--quick`, `--runs N`, `--children cli|lib|auto`, `--no-write`, `--json FILE`).
// `--codec` runs the codec benchmark first (bench/codec.ts; it prints, the table is kept by hand).
import { spawnSync } from 'node:child_process';

const root = new URL('..', import.meta.url).pathname;
const args = process.argv.slice(2);

function run(script, scriptArgs) {
  const result = spawnSync(process.execPath, ['--import', 'tsx', script, ...scriptArgs], { cwd: root, stdio: 'inherit' });
  if (result.status !== 0) process.exit(result.status ?? 1);
}

if (args.includes('--codec')) run('bench/codec.ts', []);
run('bench/tunnel.ts', args.filter((a) => a !== '--codec'));
