/**
 * `localproxy relay --store ...` on the command line (issue 19): the cluster options are checked
 * before anything starts (one line, exit 2), and the Redis password, from the URL or the
 * environment, never appears in what the relay prints.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { runRelayCli } from '../../src/relay/cli';
import { freePort, waitUntil } from '../helpers/wait';
import { inProcess, startRelayCli } from './cli-run';
import { startRedis } from './redis';

const test = suite('relay CLI: --store and the cluster options');

const SECRET_ENV = { LOCALPROXY_RELAY_CLUSTER_SECRET: 'sixteen or more bytes of secret' };

const usage: Array<[string, string[], Record<string, string>, RegExp]> = [
  ['--node-url without --store', ['--plain', '--node-url', 'ws://127.0.0.1:1'], {}, /--node-url needs --store/],
  ['--state with --store', ['--plain', '--state', '/tmp/x.json', '--store', 'redis://127.0.0.1:1'], {}, /--state and --store cannot be combined/],
  ['a scheme that is not redis', ['--plain', '--store', 'http://127.0.0.1:1', '--node-url', 'ws://127.0.0.1:1'], SECRET_ENV, /invalid --store 'http:\/\/127\.0\.0\.1:1': unsupported scheme http/],
  ['a path that is not a database', ['--plain', '--store', 'redis://127.0.0.1:1/x', '--node-url', 'ws://127.0.0.1:1'], SECRET_ENV, /the path must be a database number/],
  ['no --node-url', ['--plain', '--store', 'redis://127.0.0.1:1'], SECRET_ENV, /--store needs --node-url/],
  ['a node URL with TLS on a --plain relay', ['--plain', '--store', 'redis://127.0.0.1:1', '--node-url', 'wss://127.0.0.1:1'], SECRET_ENV, /--node-url wss:\/\/ does not match the relay: ws:\/\/ with --plain/],
  ['a node URL with a path', ['--plain', '--store', 'redis://127.0.0.1:1', '--node-url', 'ws://127.0.0.1:1/x'], SECRET_ENV, /invalid --node-url/],
  ['no cluster secret', ['--plain', '--store', 'redis://127.0.0.1:1', '--node-url', 'ws://127.0.0.1:1'], {}, /--store needs the cluster secret/],
  ['a lease out of range', ['--plain', '--store', 'redis://127.0.0.1:1', '--node-url', 'ws://127.0.0.1:1', '--lease-seconds', '1'], SECRET_ENV, /invalid --lease-seconds '1': expected 2 to 300/],
  ['a short secret', ['--plain', '--store', 'redis://127.0.0.1:1', '--node-url', 'ws://127.0.0.1:1'], { LOCALPROXY_RELAY_CLUSTER_SECRET: 'short' }, /at least 16 bytes/],
];

for (const [what, args, env, expected] of usage) {
  test(`usage error: ${what}`, async () => {
    const saved = process.env.LOCALPROXY_RELAY_CLUSTER_SECRET;
    if (!('LOCALPROXY_RELAY_CLUSTER_SECRET' in env)) delete process.env.LOCALPROXY_RELAY_CLUSTER_SECRET;
    try {
      const r = await inProcess(runRelayCli, args, env);
      assert.is(r.code, 2, r.stderr);
      assert.match(r.stderr, expected);
      assert.is(r.stderr.trim().split('\n').length, 1, 'one line');
    } finally {
      if (saved !== undefined) process.env.LOCALPROXY_RELAY_CLUSTER_SECRET = saved;
    }
  });
}

test('the Redis password, in the URL or the environment, is never printed', async () => {
  const redis = await startRedis({ password: 'hunter3-from-the-env' });
  const relays: Array<Awaited<ReturnType<typeof startRelayCli>>> = [];
  try {
    // A password Redis refuses: the relay says why and retries, without the password.
    const port = await freePort();
    const wrong = await startRelayCli(['--listen', `127.0.0.1:${port}`, '--plain', '--store', `redis://:hunter2-in-the-url@127.0.0.1:${redis.port}/3`, '--node-url', `ws://127.0.0.1:${port}`], SECRET_ENV);
    relays.push(wrong);
    await waitUntil(wrong.child.stderr!, 'data', () => /WRONGPASS/.test(wrong.stderr()), 15_000, 'the refused password reported');
    assert.match(wrong.stderr(), /tunnel store redis:\/\/127\.0\.0\.1:\d+\/3 \((commands|events) connection\): WRONGPASS/);
    assert.match(wrong.stderr(), /--store URL carries a password: it is visible in the process list/);
    assert.not.match(wrong.stderr(), /hunter2/);
    // The password in the environment.
    const port2 = await freePort();
    const right = await startRelayCli(['--listen', `127.0.0.1:${port2}`, '--plain', '--store', `redis://127.0.0.1:${redis.port}`, '--node-url', `ws://127.0.0.1:${port2}`, '-v', '6'], { ...SECRET_ENV, LOCALPROXY_RELAY_REDIS_PASSWORD: 'hunter3-from-the-env' });
    relays.push(right);
    await waitUntil(right.child.stderr!, 'data', () => /tunnel store \S+ connected/.test(right.stderr()), 15_000, 'connected with the password from the environment');
    assert.not.match(right.stderr(), /hunter3/);
  } finally {
    await Promise.allSettled(relays.map((r) => r.stop()));
    await redis.remove();
  }
});

test.run();
