/**
 * The relay never stores what it would refuse to load: every field that reaches the state file
 * is held, when it is written, to the rules the loader applies (record.ts). A value that breaks
 * them is refused with a 4xx (or a ValidationException in process) and nothing is written, so
 * the next start loads the file.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { silentLogger } from '../../src/log';
import { OperationError } from '../../src/relay/store/rules';
import { startRelay, type Relay } from '../../src/relay/server';
import { journalLines } from './journal-lines';
import { signedPost } from './signed';

const CREDENTIALS = { accessKeyId: 'AKIDBOUNDS', secretAccessKey: 'bounds-secret' };

interface Ctx { dir: string; statePath: string; relay: Relay }
const bounds = suite<Ctx>('relay: what is stored is what loads');

bounds.before.each(async (ctx) => {
  ctx.dir = mkdtempSync(join(tmpdir(), 'relay-bounds-'));
  ctx.statePath = join(ctx.dir, 'state.json');
  ctx.relay = await startRelay({ port: 0, tls: 'plain', statePath: ctx.statePath, credentials: CREDENTIALS, log: silentLogger() });
});
bounds.after.each(async (ctx) => {
  await ctx.relay.close();
  rmSync(ctx.dir, { recursive: true, force: true });
});

/** Restarts the relay on its state file: it must start and load every tunnel in it. */
async function restart(ctx: Ctx): Promise<void> {
  await ctx.relay.close();
  ctx.relay = await startRelay({ port: 0, tls: 'plain', statePath: ctx.statePath, credentials: CREDENTIALS, log: silentLogger() });
}

bounds('a SigV4 scope whose region is not a region (1,700 characters; 33; upper case) is refused with a 403 before anything is stored', async (ctx) => {
  for (const region of ['us-' + 'east'.repeat(424) + '-1', `us-${'east'.repeat(7)}-12`, 'EU-WEST-1', 'mars']) {
    const answer = await signedPost(ctx.relay, CREDENTIALS, 'OpenTunnel', '{}', { region });
    assert.is(answer.status, 403, `${region.length} characters: ${answer.body}`);
    assert.is(answer.json.__type, 'InvalidSignatureException');
    assert.match(answer.json.message!, /^Credential should be scoped to a valid region: a region such as eu-west-1 \(at most 32 characters\)\.$/);
  }
  for (const region of ['eu-west-1', 'us-gov-west-1', 'cn-north-1', 'my-lab-1', 'local']) {
    const answer = await signedPost(ctx.relay, CREDENTIALS, 'OpenTunnel', '{}', { region });
    assert.is(answer.status, 200, `${region}: ${answer.body}`);
  }
  await ctx.relay.flush();
  assert.equal(journalLines(ctx.statePath).puts.map((p) => (p.tunnelArn as string).split(':')[3]), ['eu-west-1', 'us-gov-west-1', 'cn-north-1', 'my-lab-1', 'local']);
  await restart(ctx);
  assert.is(ctx.relay.stats().openTunnels, 5);
});

bounds('in process, every field is held to the loader\'s rules: a ValidationException, and the file is not touched', async (ctx) => {
  await ctx.relay.openTunnel({ services: ['SSH'], description: 'kept' });
  await ctx.relay.flush();
  const before = readFileSync(ctx.statePath, 'utf8');
  for (const [what, request] of [
    ['a description with a control character', { description: 'line\nbreak' }],
    ['a description of 2,049 characters', { description: 'd'.repeat(2049) }],
    ['an empty description', { description: '' }],
    ['a thing name of 129 characters', { thingName: 't'.repeat(129) }],
    ['a service id with a space', { services: ['S SH'] }],
    ['a tag key of 129 characters', { tags: [{ key: 'k'.repeat(129), value: 'v' }] }],
    ['an empty tag key', { tags: [{ key: '', value: 'v' }] }],
    ['a tag value of 257 characters', { tags: [{ key: 'k', value: 'v'.repeat(257) }] }],
    ['a tag value with a control character', { tags: [{ key: 'k', value: 'a\u0007b' }] }],
    ['51 tags', { tags: Array.from({ length: 51 }, (_, i) => ({ key: `k${i}`, value: 'v' })) }],
  ] as Array<[string, Parameters<Relay['openTunnel']>[0]]>) {
    try {
      await ctx.relay.openTunnel(request);
      assert.unreachable(`${what} was accepted`);
    } catch (err) {
      assert.instance(err, OperationError, `${what}: ${err}`);
      assert.is((err as OperationError).type, 'ValidationException', what);
    }
  }
  const { tunnelArn, tunnelId } = await ctx.relay.openTunnel({ services: ['SSH'] });
  await ctx.relay.tunnels.tag(tunnelArn, [{ key: 'k', value: 'v'.repeat(257) }]).then(() => assert.unreachable('TagResource with a long value'), (err: OperationError) => assert.is(err.type, 'ValidationException'));
  await ctx.relay.tunnels.rotate(tunnelId, 'DESTINATION', { services: ['SSH'], thingName: 'x'.repeat(129) }).then(() => assert.unreachable('a rotation with a long thing name'), (err: OperationError) => assert.is(err.type, 'ValidationException'));
  await ctx.relay.flush();
  assert.is(journalLines(ctx.statePath).entries.length, 2, 'only the two good opens were written');
  assert.ok(readFileSync(ctx.statePath, 'utf8').startsWith(before));
  await restart(ctx);
  assert.is(ctx.relay.stats().openTunnels, 2);
});

bounds('a relay region or account that would not load is refused at OpenTunnel, not stored', async (ctx) => {
  await ctx.relay.close();
  for (const [options, pattern] of [
    [{ region: `us-${'east'.repeat(8)}-1` }, /^Invalid region "us-(east)+-1": expected a region such as eu-west-1/],
    [{ accountId: '12345' }, /^Invalid account id "12345": expected 12 digits$/],
  ] as Array<[{ region?: string; accountId?: string }, RegExp]>) {
    ctx.relay = await startRelay({ port: 0, tls: 'plain', statePath: ctx.statePath, credentials: CREDENTIALS, log: silentLogger(), ...options });
    try {
      await ctx.relay.openTunnel({ services: ['SSH'] });
      assert.unreachable('opened');
    } catch (err) {
      assert.instance(err, OperationError);
      assert.match((err as Error).message, pattern);
    }
    const answer = await signedPost(ctx.relay, CREDENTIALS, 'OpenTunnel', '{}');
    assert.is(answer.status, 400, answer.body);
    assert.is(answer.json.__type, 'ValidationException');
    await ctx.relay.close();
  }
  ctx.relay = await startRelay({ port: 0, tls: 'plain', statePath: ctx.statePath, credentials: CREDENTIALS, log: silentLogger() });
  assert.is(ctx.relay.stats().openTunnels, 0);
  assert.equal(journalLines(ctx.statePath).entries, []);
});

bounds.run();
