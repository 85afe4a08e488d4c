/**
 * Checks every runnable executable shares: it behaves like `node dist/localproxy.cjs` (same output,
 * same exit code) and a stray NODE_OPTIONS in the environment does not reach the application.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { run, runBundle, type Platform } from './harness';

export async function sameAsBundle(platform: Platform, args: string[], ms: number): Promise<void> {
  const expected = await runBundle(args);
  const actual = await run(platform, args, {}, ms);
  assert.is(actual.code, expected.code, `exit code of ${args.join(' ')}`);
  assert.is(actual.stdout.replace(/\r\n/g, '\n'), expected.stdout, `stdout of ${args.join(' ')}`);
  assert.is(actual.stderr.replace(/\r\n/g, '\n'), expected.stderr, `stderr of ${args.join(' ')}`);
}

/**
 * A preload from NODE_OPTIONS that rewrites stdout: it still runs in the launcher process (Node
 * loads preloads before any of our code), but the application runs in a clean child, so its
 * output is untouched and the exit code is the child's.
 */
export async function strayNodeOptionsIgnored(platform: Platform, ms: number): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'localproxy-dist-nodeopts-'));
  try {
    const preload = join(dir, 'tamper.js');
    writeFileSync(preload, [
      'const write = process.stdout.write.bind(process.stdout);',
      "process.stdout.write = (chunk, ...rest) => write('[tampered] ' + chunk, ...rest);",
    ].join('\n'));
    const clean = await runBundle(['--version']);
    const tampered = await runBundle(['--version'], { NODE_OPTIONS: `--require ${preload}` });
    assert.ok(tampered.stdout.startsWith('[tampered] '), 'the preload does tamper with a plain node process (the test can fail)');
    const result = await run(platform, ['--version'], { NODE_OPTIONS: `--require ${platform.hostPath(preload)} --max-old-space-size=96` }, ms);
    assert.is(result.code, 0);
    assert.is(result.stdout.replace(/\r\n/g, '\n'), clean.stdout, 'the application output is not tampered with');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
