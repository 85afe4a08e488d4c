/**
 * Relays sharing their tunnels in a real redis-server (issue 19), three nodes in this process:
 * every node serves the whole API, changes made at once on several nodes leave one consistent
 * state, a token's client-token rule holds across nodes, a lifetime ends once, peers on two
 * nodes are bridged with backpressure, and control events reach the node holding the peer.
 */
import Redis from 'ioredis';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ApiError } from '../../src/api/client';
import { socketOf } from '../../src/flow/writer';
import { MessageType } from '../../src/protocol/message';
import { ManualClock } from '../../src/relay/clock';
import { isRefusal } from '../../src/relay/store/directory';
import { within } from '../helpers/wait';
import { startNode, type TestNode } from './cluster-nodes';
import { connectPeer, connectReady, type TestPeer } from './peer';
import { startRedis, type RedisServer } from './redis';

const test = suite('relay cluster: shared store in Redis');

interface Opened { tunnelId: string; tunnelArn: string; sourceAccessToken: string; destinationAccessToken: string }

let redis: RedisServer;
let nodes: TestNode[] = [];
let inspect: Redis;
const clock = new ManualClock();
const peers: TestPeer[] = [];

const CLIENT_A = 'a'.repeat(40);
const CLIENT_B = 'b'.repeat(40);

async function open(node: TestNode, input: object = {}): Promise<Opened> {
  return node.api.call<Opened>('OpenTunnel', { destinationConfig: { services: ['SSH'] }, ...input });
}

async function status(node: TestNode, tunnelId: string): Promise<string> {
  return (await node.api.call<{ tunnel: { status: string } }>('DescribeTunnel', { tunnelId })).tunnel.status;
}

/** Whether a token would be let in now, through the same check a handshake makes. */
async function tokenWorks(node: TestNode, token: string, mode: 'source' | 'destination'): Promise<boolean> {
  return !isRefusal(await node.relay.tunnels.authorize(token, mode, undefined));
}

async function keep(peer: Promise<TestPeer>): Promise<TestPeer> {
  const p = await peer;
  peers.push(p);
  return p;
}

/** Every index in Redis agrees with the records: token keys, the open set, the expiry set. */
async function checkIndexes(): Promise<void> {
  const records = new Map<string, { status: string; source: { tokenHash: string }; destination: { tokenHash: string } }>();
  for (const key of await inspect.keys('localproxy:t:*')) {
    const json = await inspect.hget(key, 'r');
    if (json) records.set(key.slice('localproxy:t:'.length), JSON.parse(json));
  }
  const open = new Set(await inspect.smembers('localproxy:open'));
  for (const [id, r] of records) {
    assert.is(open.has(id), r.status === 'OPEN', `open set agrees with tunnel ${id} (${r.status})`);
    assert.is((await inspect.zscore('localproxy:expiry', id)) !== null, r.status === 'OPEN', `expiry set agrees with tunnel ${id}`);
  }
  for (const id of open) assert.ok(records.has(id), `open id ${id} has a record`);
  for (const key of await inspect.keys('localproxy:k:*')) {
    const [id, mode] = (await inspect.get(key))!.split(' ');
    const r = records.get(id);
    assert.ok(r && r.status === 'OPEN', `token key ${key} names an open tunnel`);
    assert.is(r![mode as 'source' | 'destination'].tokenHash, key.slice('localproxy:k:'.length), 'token key holds the current hash');
  }
}

test.before(async () => {
  redis = await startRedis();
  inspect = new Redis(redis.url, { lazyConnect: true });
  await inspect.connect();
  nodes = await Promise.all(['node-a', 'node-b', 'node-c'].map((name) => startNode(redis.url, name, { clock, limits: { maxOpenTunnels: 40 } })));
});

test.after(async () => {
  for (const p of peers) p.terminate();
  await Promise.allSettled(nodes.map((n) => n.close()));
  inspect?.disconnect();
  await redis?.remove();
});

test('a tunnel opened on one node is described, listed, tagged and closed through the others', async () => {
  const [a, b, c] = nodes;
  const opened = await open(a, { description: 'shared', tags: [{ key: 'team', value: 'ops' }], destinationConfig: { services: ['SSH'], thingName: 'pump-7' } });
  assert.is(await status(b, opened.tunnelId), 'OPEN');
  const listed = await c.api.call<{ tunnelSummaries: Array<{ tunnelId: string }> }>('ListTunnels', { thingName: 'pump-7' });
  assert.equal(listed.tunnelSummaries.map((t) => t.tunnelId), [opened.tunnelId]);
  await b.api.call('TagResource', { resourceArn: opened.tunnelArn, tags: [{ key: 'site', value: 'north' }] });
  const tags = await c.api.call<{ tags: Array<{ key: string; value: string }> }>('ListTagsForResource', { resourceArn: opened.tunnelArn });
  assert.equal(tags.tags, [{ key: 'team', value: 'ops' }, { key: 'site', value: 'north' }]);
  await c.api.call('CloseTunnel', { tunnelId: opened.tunnelId });
  assert.is(await status(a, opened.tunnelId), 'CLOSED');
  assert.not.ok(await tokenWorks(b, opened.sourceAccessToken, 'source'), 'a closed tunnel lets nobody in');
  await checkIndexes();
});

test('in process, openTunnel, rotateAccessToken and closeTunnel work on a node as the API does, the change seen by every node', async () => {
  const [a, b] = nodes;
  const opened = await a.relay.openTunnel({ services: ['SSH'] });
  assert.is(await status(b, opened.tunnelId), 'OPEN');
  const rotated = await b.relay.rotateAccessToken(opened.tunnelId, 'DESTINATION');
  assert.ok(await tokenWorks(a, rotated.destinationAccessToken!, 'destination'), 'the new token works on another node');
  assert.not.ok(await tokenWorks(a, opened.destinationAccessToken, 'destination'), 'the old one does not');
  await a.relay.closeTunnel(opened.tunnelId);
  assert.is(await status(b, opened.tunnelId), 'CLOSED');
  await checkIndexes();
});

test('OpenTunnel on three nodes at once never goes past maxOpenTunnels', async () => {
  const before = Number(await inspect.scard('localproxy:open'));
  const room = 40 - before;
  const results = await Promise.allSettled(Array.from({ length: room + 12 }, (_, i) => open(nodes[i % 3])));
  const refused = results.filter((r) => r.status === 'rejected');
  assert.is(results.length - refused.length, room, 'exactly the room left was opened');
  for (const r of refused) assert.is(((r as PromiseRejectedResult).reason as ApiError).type, 'LimitExceededException');
  assert.is(Number(await inspect.scard('localproxy:open')), 40);
  // Make room again for the next tests.
  const ids = await inspect.smembers('localproxy:open');
  await Promise.all(ids.map((tunnelId, i) => nodes[i % 3].api.call('CloseTunnel', { tunnelId, delete: true })));
  await checkIndexes();
});

test('concurrent CloseTunnel and RotateTunnelAccessToken on two nodes leave one consistent state', async () => {
  const [a, b, c] = nodes;
  const tunnels = await Promise.all(Array.from({ length: 12 }, () => open(c)));
  const rotations = await Promise.all(tunnels.map(async (t) => {
    const [, rotated] = await Promise.allSettled([
      a.api.call('CloseTunnel', { tunnelId: t.tunnelId }),
      b.api.call<{ sourceAccessToken: string; destinationAccessToken: string }>('RotateTunnelAccessToken', { tunnelId: t.tunnelId, clientMode: 'ALL' }),
    ]);
    return rotated;
  }));
  for (const [i, t] of tunnels.entries()) {
    assert.is(await status(c, t.tunnelId), 'CLOSED', 'the close is never lost');
    for (const token of [t.sourceAccessToken, t.destinationAccessToken]) assert.not.ok(await tokenWorks(c, token, token === t.sourceAccessToken ? 'source' : 'destination'), 'old tokens are dead');
    const rotated = rotations[i];
    if (rotated.status === 'fulfilled') {
      // Rotated before the close: its tokens died with the tunnel, never brought it back.
      assert.not.ok(await tokenWorks(c, rotated.value.sourceAccessToken, 'source'), 'a rotated token does not reopen a closed tunnel');
      assert.not.ok(await tokenWorks(c, rotated.value.destinationAccessToken, 'destination'));
    } else {
      assert.is((rotated.reason as ApiError).type, 'ValidationException', 'rotation of a closed tunnel refused');
    }
  }
  await checkIndexes();
});

test('concurrent rotations on two nodes: no update is lost', async () => {
  const [a, b, c] = nodes;
  const tunnels = await Promise.all(Array.from({ length: 12 }, () => open(c)));
  for (const t of tunnels) {
    // SOURCE on one node, DESTINATION on the other: both new tokens work.
    const [src, dst] = await Promise.all([
      a.api.call<{ sourceAccessToken: string }>('RotateTunnelAccessToken', { tunnelId: t.tunnelId, clientMode: 'SOURCE' }),
      b.api.call<{ destinationAccessToken: string }>('RotateTunnelAccessToken', { tunnelId: t.tunnelId, clientMode: 'DESTINATION' }),
    ]);
    assert.ok(await tokenWorks(c, src.sourceAccessToken, 'source'), 'the source rotation stands');
    assert.ok(await tokenWorks(c, dst.destinationAccessToken, 'destination'), 'the destination rotation stands');
    // ALL on both nodes: exactly one of the two pairs works.
    const pairs = await Promise.all([a, b].map((n) => n.api.call<{ sourceAccessToken: string; destinationAccessToken: string }>('RotateTunnelAccessToken', { tunnelId: t.tunnelId, clientMode: 'ALL' })));
    const working = await Promise.all(pairs.map(async (p) => [await tokenWorks(c, p.sourceAccessToken, 'source'), await tokenWorks(c, p.destinationAccessToken, 'destination')]));
    assert.equal(working.map(([s, d]) => s && d).filter(Boolean).length, 1, 'one rotation wins, whole');
    assert.equal(working.map(([s, d]) => s || d).filter(Boolean).length, 1, 'the other leaves no token behind');
  }
  await checkIndexes();
});

test('a token is bound to one client token across nodes, and a reconnect on another node replaces the peer', async () => {
  const [a, b, c] = nodes;
  for (let i = 0; i < 6; i++) {
    const t = await open(c);
    const tries = await Promise.allSettled([
      keep(connectReady(a.relay, t.destinationAccessToken, { mode: 'destination', clientToken: CLIENT_A })),
      keep(connectReady(b.relay, t.destinationAccessToken, { mode: 'destination', clientToken: CLIENT_B })),
    ]);
    // The loser is refused at its handshake (HTTP 400), or, when both passed the check at once,
    // closed right after its upgrade (1008) before the relay said anything: never both connected.
    const winners = tries.filter((r): r is PromiseFulfilledResult<TestPeer> => r.status === 'fulfilled');
    assert.is(winners.length, 1, 'exactly one client token wins');
    const loser = tries.find((r): r is PromiseRejectedResult => r.status === 'rejected')!;
    assert.match(String(loser.reason), /HTTP 400: Invalid client token|1008 Invalid client token/);
    const winner = winners[0].value;
    const winnerToken = tries[0] === winners[0] ? CLIENT_A : CLIENT_B;
    const loserToken = winnerToken === CLIENT_A ? CLIENT_B : CLIENT_A;
    const late = await connectPeer(c.relay, t.destinationAccessToken, { mode: 'destination', clientToken: loserToken }).then(() => 'connected', (err: Error) => err.message);
    assert.match(late, /^HTTP 400: Invalid client token/);
    // The winner reconnects through the third node: the connection on the first is closed as replaced.
    const again = await keep(connectReady(c.relay, t.destinationAccessToken, { mode: 'destination', clientToken: winnerToken }));
    const { code, reason } = await winner.waitClosed(10_000);
    assert.is(code, 1008);
    assert.match(reason, /replaced/);
    assert.is(again.closeCode, undefined);
  }
});

test('peers on two nodes are bridged: data both ways, and a slow reader pauses the far sender', async () => {
  const [a, b, c] = nodes;
  const t = await open(c);
  const dest = await keep(connectReady(b.relay, t.destinationAccessToken, { mode: 'destination' }));
  const src = await keep(connectReady(a.relay, t.sourceAccessToken, { mode: 'source' }));
  await a.lines.waitFor(new RegExp(`tunnel ${t.tunnelId}: bridge to node node-b, which holds the destination, is up`), 10_000, 'bridge a → b');
  src.send({ type: MessageType.STREAM_START, streamId: 1, serviceId: 'SSH', connectionId: 1 });
  const start = await dest.next(5000);
  assert.is(start.type, MessageType.STREAM_START);
  dest.send({ type: MessageType.DATA, streamId: 1, serviceId: 'SSH', connectionId: 1, payload: Buffer.from('hello from b') });
  const back = await src.next(5000);
  assert.is(back.type, MessageType.DATA);
  assert.is(Buffer.from(back.payload).toString(), 'hello from b');
  // The destination stops reading: node b stops reading the bridge, node a's bridge backlog grows, the source is paused.
  socketOf(dest.ws)!.pause();
  const chunk = Buffer.alloc(60_000, 7);
  let sent = 0;
  const paused = a.events.waitFor('paused', (e) => e.tunnelId === t.tunnelId && e.mode === 'source', 30_000);
  let pausedSeen = false;
  void paused.then(() => { pausedSeen = true; }, () => {});
  while (!pausedSeen && sent < 256 * 1024 * 1024) {
    // Writes until the relay stops reading us: our own socket buffer filling up holds us back too.
    if (src.ws.bufferedAmount > 4 * 1024 * 1024) await within(new Promise((resolve) => setTimeout(resolve, 20)), 1000, 'drain tick');
    else {
      src.send({ type: MessageType.DATA, streamId: 1, serviceId: 'SSH', connectionId: 1, payload: chunk });
      sent += chunk.length;
    }
  }
  const event = await paused;
  assert.is(event.receiver, 'destination');
  assert.ok(sent < 256 * 1024 * 1024, 'the source was paused before 256 MiB were sent');
  const resumed = a.events.waitFor('resumed', (e) => e.tunnelId === t.tunnelId && e.mode === 'source', 60_000);
  socketOf(dest.ws)!.resume();
  await resumed;
  const expected = Math.floor(sent / chunk.length);
  await dest.until(() => dest.messages.filter((m) => m.type === MessageType.DATA).length >= expected, 60_000, 'every DATA frame at the destination');
});

test('CloseTunnel and a rotation on a third node close the peers where they are held', async () => {
  const [a, b, c] = nodes;
  const t = await open(a);
  const dest = await keep(connectReady(b.relay, t.destinationAccessToken, { mode: 'destination' }));
  const src = await keep(connectReady(a.relay, t.sourceAccessToken, { mode: 'source' }));
  await c.api.call('RotateTunnelAccessToken', { tunnelId: t.tunnelId, clientMode: 'DESTINATION' });
  const rotated = await dest.waitClosed(10_000);
  assert.equal(rotated, { code: 1000, reason: 'access token rotated' });
  await c.api.call('CloseTunnel', { tunnelId: t.tunnelId });
  const closed = await src.waitClosed(10_000);
  assert.equal(closed, { code: 1000, reason: 'tunnel closed' });
});

test('a lifetime ends once for the whole cluster, and closes the peers on every node', async () => {
  const [a, b, c] = nodes;
  const sub = new Redis(redis.url, { lazyConnect: true });
  await sub.connect();
  const closedEvents: string[] = [];
  await sub.subscribe('localproxy:events');
  sub.on('message', (_channel: string, message: string) => {
    const e = JSON.parse(message) as { t: string; id: string };
    if (e.t === 'closed') closedEvents.push(e.id);
  });
  try {
    const t = await open(c, { timeoutConfig: { maxLifetimeTimeoutMinutes: 1 } });
    const dest = await keep(connectReady(b.relay, t.destinationAccessToken, { mode: 'destination' }));
    const src = await keep(connectReady(a.relay, t.sourceAccessToken, { mode: 'source' }));
    clock.advance(61_000);
    const [d, s] = await Promise.all([dest.waitClosed(10_000), src.waitClosed(10_000)]);
    assert.equal(d, { code: 1000, reason: 'tunnel lifetime expired' });
    assert.equal(s, { code: 1000, reason: 'tunnel lifetime expired' });
    assert.is(await status(a, t.tunnelId), 'CLOSED');
    // The close and the removal from the expiry set were one step: no node can sweep it again.
    assert.is(await inspect.zscore('localproxy:expiry', t.tunnelId), null);
    assert.equal(closedEvents.filter((id) => id === t.tunnelId), [t.tunnelId], 'one close event');
  } finally {
    sub.disconnect();
  }
});

test.run();
