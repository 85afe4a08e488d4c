import { readFileSync } from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { agentTunnelThrough } from './agent';
import { sameAsBundle, strayNodeOptionsIgnored } from './behaviour';
import { executable, platforms, run, start, tunnelThrough } from './harness';

const linux = platforms['linux-x64']!;
const test = suite('dist: linux-x64 executable, run natively');

test('--version prints the product and version like node dist/localproxy.cjs', async () => {
  const result = await run(linux, ['--version'], {}, 20_000);
  assert.is(result.code, 0);
  assert.match(result.stdout, /^localproxy \d+\.\d+\.\d+/);
  await sameAsBundle(linux, ['--version'], 20_000);
});

test('--help: same output and exit code as node dist/localproxy.cjs', async () => {
  await sameAsBundle(linux, ['--help'], 20_000);
});

test('an unknown flag: same one-line error and exit code as node dist/localproxy.cjs', async () => {
  await sameAsBundle(linux, ['--no-such-flag-xyz'], 20_000);
});

test('is a stripped ELF executable carrying the SEA blob and no Node warning at start-up', async () => {
  const image = readFileSync(executable(linux));
  assert.is(image.subarray(0, 4).toString('latin1'), '\x7fELF');
  assert.ok(image.includes(Buffer.from('NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2:1')), 'the SEA fuse is flipped');
  const result = await run(linux, ['--version'], {}, 20_000);
  assert.not.match(result.stderr, /ExperimentalWarning|single executable/i);
});

test('a stray NODE_OPTIONS (a --require preload, or one of a file that is gone) does not reach the application', async () => {
  await strayNodeOptionsIgnored(linux, 20_000);
});

test('with NODE_OPTIONS set, the executable is still one process (Node ignores it; nothing restarts) and SIGTERM ends it as without', async () => {
  const expected = start(linux, ['relay', '--listen', '127.0.0.1:0', '--plain']);
  const relay = start(linux, ['relay', '--listen', '127.0.0.1:0', '--plain'], { NODE_OPTIONS: '--max-old-space-size=96' });
  try {
    await expected.waitFor(/listening on wss?:\/\/127\.0\.0\.1:\d+/, 20_000, 'relay listening (no NODE_OPTIONS)');
    await relay.waitFor(/listening on wss?:\/\/127\.0\.0\.1:\d+/, 20_000, 'relay listening (NODE_OPTIONS)');
    const pid = relay.child.pid!;
    assert.ok(readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').some((v) => v.startsWith('NODE_OPTIONS=')), 'the process got NODE_OPTIONS');
    const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
    assert.is(children.length, 0, 'no second process');
    const plain = await expected.stop('SIGTERM');
    const guarded = await relay.stop('SIGTERM');
    assert.equal(guarded, plain, 'exit after SIGTERM is the same with and without NODE_OPTIONS');
  } finally {
    await expected.stop('SIGKILL');
    await relay.stop('SIGKILL');
  }
});

test('a real tunnel on loopback: relay, tunnel open, destination and source all from the executable carry 4 MiB byte-exactly', async () => {
  const result = await tunnelThrough(linux, 4 << 20, 30_000);
  assert.is(result.length, 4 << 20);
  assert.is(result.received, result.sent);
});

test('the device agent from the executable starts the destination of a tunnel notified over MQTT (mosquitto, TLS client certificates) and exits 0 on SIGTERM', async () => {
  const result = await agentTunnelThrough(linux, 1 << 20, 30_000);
  assert.is(result.length, 1 << 20);
  assert.is(result.received, result.sent);
  assert.is(result.agentExit, 0);
});

test.run();
