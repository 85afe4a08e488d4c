/**
 * Checks every runnable executable shares: it behaves like `node dist/localproxy.cjs` (same output,
 * same exit code) and a stray NODE_OPTIONS in the environment does not reach it.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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
 * A NODE_OPTIONS left in the environment does not reach localproxy: Node ignores it before any
 * JavaScript runs (the SEA blob's `execArgvExtension: "none"`). A preload that would tamper with
 * stdout and leave a mark never runs, and a preload of a file that does not exist - which stops a
 * plain node with a stack trace and exit 1 - changes nothing either.
 */
export async function strayNodeOptionsIgnored(platform: Platform, ms: number): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'localproxy-dist-nodeopts-'));
  try {
    const preload = join(dir, 'tamper.js');
    const mark = join(dir, 'preload-ran');
    writeFileSync(preload, [
      // Beside the preload itself, so the mark lands in `dir` under wine (Z:\...) as well.
      "require('fs').writeFileSync(require('path').join(__dirname, 'preload-ran'), 'ran');",
      'const write = process.stdout.write.bind(process.stdout);',
      "process.stdout.write = (chunk, ...rest) => write('[tampered] ' + chunk, ...rest);",
    ].join('\n'));
    const missing = join(dir, 'nonexistent.js');
    const clean = await runBundle(['--version']);
    const tampered = await runBundle(['--version'], { NODE_OPTIONS: `--require ${preload}` });
    assert.ok(tampered.stdout.startsWith('[tampered] ') && existsSync(mark), 'the preload does tamper with a plain node process (the test can fail)');
    rmSync(mark);
    const broken = await runBundle(['--version'], { NODE_OPTIONS: `--require ${missing}` });
    assert.is.not(broken.code, 0, 'a missing preload stops a plain node process (the test can fail)');

    const result = await run(platform, ['--version'], { NODE_OPTIONS: `--require ${platform.hostPath(preload)} --max-old-space-size=96` }, ms);
    assert.is(result.code, 0, result.stderr);
    assert.is(result.stdout.replace(/\r\n/g, '\n'), clean.stdout, 'the application output is not tampered with');
    assert.not.ok(existsSync(mark), 'the preload never ran');
    const withMissing = await run(platform, ['--version'], { NODE_OPTIONS: `--require ${platform.hostPath(missing)}` }, ms);
    assert.is(withMissing.code, 0, withMissing.stderr);
    assert.is(withMissing.stdout.replace(/\r\n/g, '\n'), clean.stdout);
    assert.is(withMissing.stderr, '', 'no stack trace');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
