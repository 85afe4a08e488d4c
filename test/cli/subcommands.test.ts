/**
 * The relay and tunnel command lines of the built CLI share the proxy's syntax and its
 * "did you mean" for mistyped words: one child process each, for the real dispatch.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { runCli } from './run-cli';

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

sub.run();
