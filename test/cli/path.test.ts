/**
 * README "Usage": how a checkout puts `localproxy` on the PATH, done as written (`npm link`,
 * here into a scratch npm prefix instead of the global one), after which the README's
 * commands run by that name from any directory.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { within } from '../helpers/wait';
import { cleanEnv } from './run-cli';

const root = new URL('../..', import.meta.url).pathname;
const readme = readFileSync(join(root, 'README.md'), 'utf8');
const version = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version as string;

interface Ran { code: number; stdout: string; stderr: string }

function sh(command: string, env: NodeJS.ProcessEnv, cwd: string): Promise<Ran> {
  return within(new Promise<Ran>((resolve) => {
    execFile('/bin/sh', ['-c', command], { env, cwd }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as NodeJS.ErrnoException & { code?: unknown }).code ?? 1) : 0, stdout, stderr });
    });
  }), 60_000, command);
}

const path = suite('localproxy on the PATH');

path('the README says how: npm link, or the executable from npm run dist', () => {
  const usage = readme.slice(readme.indexOf('## Usage'), readme.indexOf('## Exit codes'));
  assert.match(usage, 'npm ci && npm run build && npm link');
  assert.match(usage, 'npm run dist -- --target linux-x64');
  assert.match(usage, 'install -m 755 dist/bin/localproxy-linux-x64 /usr/local/bin/localproxy');
});

path('after npm link, `localproxy` runs by name from another directory, and a README example reaches the proxy', async () => {
  const prefix = mkdtempSync(join(tmpdir(), 'localproxy-npm-prefix-'));
  const elsewhere = mkdtempSync(join(tmpdir(), 'localproxy-elsewhere-'));
  try {
    const env = cleanEnv({ npm_config_prefix: prefix, PATH: `${join(prefix, 'bin')}:${process.env.PATH}` });
    const linked = await sh('npm link --offline --no-audit --no-fund --ignore-scripts', env, root);
    assert.is(linked.code, 0, linked.stderr);
    const which = await sh('command -v localproxy', env, elsewhere);
    assert.is(which.stdout.trim(), join(prefix, 'bin', 'localproxy'));
    const shown = await sh('localproxy --version', env, elsewhere);
    assert.is(shown.code, 0, shown.stderr);
    assert.is(shown.stdout, `localproxy ${version}\n`);
    // The README's first example, before the token is exported: the proxy's own answer.
    const example = await sh('localproxy -r us-east-1 -d SSH1=22', env, elsewhere);
    assert.is(example.code, 2);
    assert.match(example.stderr, "the option '--access-token' is required but missing: set AWSIOT_TUNNEL_ACCESS_TOKEN");
  } finally {
    rmSync(prefix, { recursive: true, force: true });
    rmSync(elsewhere, { recursive: true, force: true });
  }
});

path.run();
