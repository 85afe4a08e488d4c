/**
 * A cluster against whoever can write to its Redis (a real redis-server): a pub/sub message of
 * the wrong shape is logged and dropped on every node, none crashes; a holder record someone
 * wrote there (unsigned, or signed but for another scheme) makes no node dial it; a damaged
 * tunnel record costs only that tunnel; what the relay would not load is never stored.
 */
import { createServer, type Server, type Socket } from 'node:net';
import Redis from 'ioredis';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { LIMITED_BURST, silentLogger } from '../../src/log';
import { MessageType } from '../../src/protocol/message';
import { ManualClock } from '../../src/relay/clock';
import { signHolder } from '../../src/relay/cluster/auth';
import { RelayConfigError } from '../../src/relay/errors';
import { startRelay } from '../../src/relay/server';
import { CREDENTIALS, SECRET, startNode, type TestNode } from './cluster-nodes';
import { connectReady, type TestPeer } from './peer';
import { startRedis, type RedisServer } from './redis';
import { signedPost } from './signed';

const test = suite('relay cluster: what is in Redis is not trusted');

interface Opened { tunnelId: string; tunnelArn: string; sourceAccessToken: string; destinationAccessToken: string }

/** A listener that must never be dialed: counts connections and bytes. */
interface Trap { server: Server; port: number; connections: number; bytes: number }

let redis: RedisServer;
let inspect: Redis;
let a: TestNode;
let b: TestNode;
const nodes: TestNode[] = [];
const peers: TestPeer[] = [];
const sockets: Socket[] = [];
let trap: Trap;
const clock = new ManualClock();

async function keep(peer: Promise<TestPeer>): Promise<TestPeer> {
  const p = await peer;
  peers.push(p);
  return p;
}

/** `waiting`, failing at once if the trap is dialed meanwhile. */
async function undialed(waiting: Promise<void>): Promise<void> {
  let onConnection!: () => void;
  const dialed = new Promise<never>((_, reject) => {
    onConnection = () => reject(new Error(`the record's address (port ${trap.port}) was dialed`));
    trap.server.once('connection', onConnection);
  });
  try {
    await Promise.race([waiting, dialed]);
  } finally {
    trap.server.off('connection', onConnection);
  }
}

async function open(node: TestNode, input: object = {}): Promise<Opened> {
  return node.api.call<Opened>('OpenTunnel', { destinationConfig: { services: ['SSH'] }, ...input });
}

test.before(async () => {
  redis = await startRedis();
  inspect = new Redis(redis.url, { lazyConnect: true });
  await inspect.connect();
  [a, b] = await Promise.all(['node-a', 'node-b'].map((name) => startNode(redis.url, name, { clock })));
  nodes.push(a, b);
  const server = createServer((socket) => {
    trap.connections++;
    sockets.push(socket);
    socket.on('data', (d: Buffer) => { trap.bytes += d.length; });
    socket.on('error', () => {});
  });
  server.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  trap = { server, port: (server.address() as { port: number }).port, connections: 0, bytes: 0 };
});

test.after(async () => {
  for (const p of peers) p.terminate();
  for (const s of sockets) s.destroy();
  trap?.server.close();
  await Promise.allSettled(nodes.map((n) => n.close()));
  inspect?.disconnect();
  await redis?.remove();
});

test('pub/sub messages of the wrong shape are logged (rate-limited) and dropped on every node; none crashes, and events still work', async () => {
  const t = await open(a);
  const src = await keep(connectReady(a.relay, t.sourceAccessToken, { mode: 'source' }));
  const marks = [a.lines.text.length, b.lines.text.length];
  const bad = [
    'null',
    '{"t":"revoked","id":"x","tokens":5}',
    'not JSON at all',
    `"${'x'.repeat(1 << 20)}"`,
    '[]',
    '{"t":"closed","id":5}',
    `{"t":"closed","id":"${t.tunnelId}","reason":{"toString":1}}`,
    '{"t":"revoked","id":"x","tokens":[null]}',
    '{"t":"attached","id":"x","mode":"source"}',
    `{"t":"attached","id":"${t.tunnelId}","mode":"destination","node":"evil","url":"ws://127.0.0.1:29999","channel":"c","gen":9}`,
    '{"t":"frobnicated","id":"x"}',
  ];
  for (const message of bad) await inspect.publish('localproxy:events', message);
  // Events after them still arrive and are applied: a close made on node b reaches node a's peer.
  await b.api.call('CloseTunnel', { tunnelId: t.tunnelId });
  assert.equal(await src.waitClosed(10_000), { code: 1000, reason: 'tunnel closed' });
  for (const [i, node] of [a, b].entries()) {
    const dropped = node.lines.text.slice(marks[i]).split('\n').filter((l) => l.includes('dropped a message on localproxy:events that is not an event of ours'));
    assert.is(dropped.length, LIMITED_BURST, node.lines.text.slice(marks[i]));
    assert.match(dropped.join('\n'), /\(not JSON\)/);
    assert.match(dropped.join('\n'), /\(1048578 bytes, more than 8192\)/);
    assert.not.match(node.lines.text.slice(marks[i]), /TypeError|Cannot read/);
  }
});

test('a holder record written into Redis (unsigned, pointing at ws://127.0.0.1:PORT) with an attached event: no node dials it or sends it anything', async () => {
  const t = await open(a);
  const src = await keep(connectReady(a.relay, t.sourceAccessToken, { mode: 'source' }));
  const mark = a.lines.text.length;
  const spoof = { node: 'evil', url: `ws://127.0.0.1:${trap.port}`, channel: 'c', gen: 1000, sig: 'ab'.repeat(32) };
  await inspect.set(`localproxy:h:${t.tunnelId}:destination`, JSON.stringify(spoof), 'PX', 60_000);
  await inspect.publish('localproxy:events', JSON.stringify({ t: 'attached', id: t.tunnelId, mode: 'destination', ...spoof }));
  await undialed(a.lines.waitFor(new RegExp(`tunnel ${t.tunnelId}: ignored a record in the tunnel store naming node evil at ws://127\\.0\\.0\\.1:${trap.port} as the holder of its destination: it is not signed with the cluster secret`), 10_000, 'the record ignored', mark));
  // The real destination connects to node b: node a bridges to b, not to the record's address.
  const dest = await keep(connectReady(b.relay, t.destinationAccessToken, { mode: 'destination' }));
  await undialed(a.lines.waitFor(new RegExp(`tunnel ${t.tunnelId}: bridge to node node-b, which holds the destination, is up`), 10_000, 'bridge a → b', mark));
  src.send({ type: MessageType.STREAM_START, streamId: 1, serviceId: 'SSH', connectionId: 1 });
  assert.is((await dest.next(5000)).type, MessageType.STREAM_START);
  assert.is(trap.connections, 0, 'the record\'s address was dialed');
  assert.is(trap.bytes, 0);
});

test('a wss:// cluster never dials ws://, even a record signed with the cluster secret', async () => {
  const c = await startNode(redis.url, 'node-c', { clock, tls: true });
  nodes.push(c);
  const t = await open(c);
  await keep(connectReady(c.relay, t.sourceAccessToken, { mode: 'source' }));
  const mark = c.lines.text.length;
  const claim = { tunnelId: t.tunnelId, mode: 'destination' as const, node: 'node-plain', url: `ws://127.0.0.1:${trap.port}`, channel: 'c' };
  const record = { node: claim.node, url: claim.url, channel: claim.channel, gen: 1000, sig: signHolder(SECRET, claim) };
  await inspect.set(`localproxy:h:${t.tunnelId}:destination`, JSON.stringify(record), 'PX', 60_000);
  await inspect.publish('localproxy:events', JSON.stringify({ t: 'attached', id: t.tunnelId, mode: 'destination', ...record }));
  await undialed(c.lines.waitFor(new RegExp(`tunnel ${t.tunnelId}: ignored a record in the tunnel store naming node node-plain at ws://127\\.0\\.0\\.1:${trap.port} as the holder of its destination: the cluster's nodes are reached over wss:// only`), 10_000, 'the record ignored', mark));
  // The lease renewal reads the same record from Redis: still not dialed.
  await undialed(c.lines.waitFor(/ignored a record/, 10_000, 'the renewal', c.lines.text.indexOf('ignored a record', mark) + 1));
  assert.is(trap.connections, 0, 'a ws:// address was dialed from a wss:// cluster');
});

test('a SigV4 region that is not a region is refused (403) and nothing reaches Redis', async () => {
  const before = (await inspect.keys('localproxy:t:*')).length;
  const answer = await signedPost(a.relay, CREDENTIALS, 'OpenTunnel', '{}', { region: 'us-' + 'east'.repeat(424) + '-1' });
  assert.is(answer.status, 403, answer.body);
  assert.is(answer.json.__type, 'InvalidSignatureException');
  assert.is((await inspect.keys('localproxy:t:*')).length, before);
});

test('a damaged tunnel record in Redis costs only that tunnel: ListTunnels lists the others, lifetimes around it end on time', async () => {
  // The damaged one's lifetime ends first, so the sweep meets it first in its batch.
  const damaged = await open(a, { timeoutConfig: { maxLifetimeTimeoutMinutes: 1 } });
  const good = await open(a, { timeoutConfig: { maxLifetimeTimeoutMinutes: 2 } });
  const key = `localproxy:t:${damaged.tunnelId}`;
  await inspect.hset(key, 'r', (await inspect.hget(key, 'r'))!.replace('"status":"OPEN"', '"status":"MAYBE"'));
  const mark = a.lines.text.length;
  const listed = await b.api.call<{ tunnelSummaries: Array<{ tunnelId: string }> }>('ListTunnels', {});
  const ids = listed.tunnelSummaries.map((s) => s.tunnelId);
  assert.ok(ids.includes(good.tunnelId));
  assert.not.ok(ids.includes(damaged.tunnelId));
  await b.lines.waitFor(new RegExp(`tunnel ${damaged.tunnelId} \\(tunnel ${damaged.tunnelId}\\): status must be OPEN or CLOSED; left out of ListTunnels`), 5000, 'the damaged record named');
  const src = await keep(connectReady(a.relay, good.sourceAccessToken, { mode: 'source' }));
  clock.advance(121_000);
  assert.equal(await src.waitClosed(10_000), { code: 1000, reason: 'tunnel lifetime expired' });
  await Promise.race([a, b].map((n) => n.lines.waitFor(/status must be OPEN or CLOSED; its lifetime cannot be enforced/, 10_000, 'the sweep names the damaged record', n === a ? mark : 0)));
});

test('a node id the other nodes would not read back is refused at start', async () => {
  const err = await startRelay({ port: 0, tls: 'plain', store: { url: redis.url }, cluster: { nodeUrl: 'ws://127.0.0.1:1', secret: SECRET, nodeId: 'n'.repeat(1025) }, log: silentLogger() })
    .then(async (relay) => { await relay.close(); return undefined; }, (e: Error) => e);
  assert.instance(err, RelayConfigError);
  assert.is(err!.message, "a cluster node's id and URL must be 1-1024 characters");
});

test('503 bodies, /health and refused handshakes never show the Redis URL or its password', async () => {
  const password = 'redis-pass-word-123';
  const guarded = await startRedis({ password });
  try {
    const url = `redis://:${password}@127.0.0.1:${guarded.port}/0`;
    const d = await startNode(url, 'node-d');
    nodes.push(d);
    await guarded.stop();
    await d.lines.waitFor(/unreachable: handshakes and API calls are refused/, 10_000, 'node d noticed');
    const shown: string[] = [];
    const err = await d.api.call('ListTunnels', {}).then(() => undefined, (e: { status: number; message: string }) => e);
    assert.is(err?.status, 503);
    assert.is(err?.message, 'the tunnel store is unreachable; try again');
    shown.push(err!.message);
    const res = await fetch(`${d.relay.url.replace('ws:', 'http:')}/health`);
    assert.is(res.status, 503);
    shown.push(await res.text());
    shown.push(await connectReady(d.relay, 'AQGsome-token', { mode: 'source' }).then(() => 'connected', (e: Error) => e.message));
    assert.match(shown[2], /^HTTP 503: /);
    for (const text of shown) {
      assert.not.match(text, new RegExp(`${password}|redis:|127\\.0\\.0\\.1|:${guarded.port}`), text);
    }
    assert.not.match(d.lines.text, new RegExp(password), 'the password is in the log');
  } finally {
    await guarded.remove();
  }
});

test.run();
