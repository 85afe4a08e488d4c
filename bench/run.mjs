// `npm run bench` (after `node build.mjs`): the tunnel benchmark, which prints its tables and
// rewrites the tunnel section of docs/BENCHMARKS.md. Arguments go through to bench/tunnel.ts
// (`--quick`, `--runs N`, `--only a,b` (`--only versus`: the side-by-side table with the C++
// reference, which it writes into docs/BENCHMARKS.md and README.md), `--no-write`, `--json FILE`,
// `--profile DIR`). `--codec` and `--relay` also run bench/codec.ts and bench/relay.ts first
// (they print their figures; their sections of docs/BENCHMARKS.md are kept by their owners).
import { spawnSync } from 'node:child_process';

const root = new URL('..', import.meta.url).pathname;
const args = process.argv.slice(2);

function run(script, scriptArgs) {
  const result = spawnSync(process.execPath, ['--import', 'tsx', script, ...scriptArgs], { cwd: root, stdio: 'inherit' });
  if (result.status !== 0) process.exit(result.status ?? 1);
}

if (args.includes('--codec')) run('bench/codec.ts', []);
if (args.includes('--relay')) run('bench/relay.ts', []);
run('bench/tunnel.ts', args.filter((a) => a !== '--codec' && a !== '--relay'));
