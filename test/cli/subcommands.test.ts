/**
 * The relay and tunnel command lines of the built CLI share the proxy's syntax and its
 * "did you mean" for mistyped words: one child process each, for the real dispatch.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { startCli } from './live-cli';
import { runCli } from './run-cli';

const version = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version as string;

const sub = suite('subcommand command lines');

sub('tunnel: a mistyped command gets a suggestion, exit 2, one line', async () => {
  const r = await runCli(['tunnel', 'opne'], { env: { AWS_ACCESS_KEY_ID: 'A', AWS_SECRET_ACCESS_KEY: 'S' } });
  assert.is(r.code, 2);
  assert.is(r.stderr, "localproxy tunnel: unknown command 'opne' (did you mean 'open'?) (try 'localproxy tunnel --help')\n");
  assert.is(r.stdout, '');
});

sub('relay: a mistyped long option gets a suggestion; a prefix is read as the full name', async () => {
  const r = await runCli(['relay', '--lisen', '127.0.0.1:0']);
  assert.is(r.code, 2);
  assert.is(r.stderr, "localproxy relay: unrecognised option '--lisen' (did you mean '--listen'?) (try 'localproxy relay --help')\n");
  const prefix = await runCli(['relay', '--list', 'localhost']);
  assert.is(prefix.code, 2);
  assert.match(prefix.stderr, /^localproxy relay: invalid --listen 'localhost'/);
});

sub('relay, agent and tunnel answer --version and -V with the product and version, exit 0, whatever else is given', async () => {
  const expected = `localproxy ${version}\n`;
  for (const args of [['relay', '--version'], ['relay', '--listen', '127.0.0.1:0', '-V'], ['agent', '--version'], ['agent', '--thing-name', 'pi', '-V'], ['tunnel', '--version'], ['tunnel', 'open', '--version']]) {
    const r = await runCli(args);
    assert.is(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    assert.is(r.stdout, expected, args.join(' '));
    assert.is(r.stderr, '', args.join(' '));
  }
});

sub('relay: the first log line names the version, Node and the platform', async () => {
  const relay = startCli(['relay', '--listen', '127.0.0.1:0', '--plain']);
  try {
    await relay.waitFor(/listening on ws:\/\/127\.0\.0\.1:\d+/);
    const first = relay.stderr().split('\n')[0];
    assert.match(first, new RegExp(`\\[info\\] localproxy ${version.replace(/\./g, '\\.')} relay \\(Node ${process.versions.node}, ${process.platform} ${process.arch}\\)$`));
  } finally {
    relay.kill();
  }
});

sub.run();
