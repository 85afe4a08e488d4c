/**
 * A cluster's Redis away (issue 19): a node started while Redis is down says so, answers
 * /health 503 and refuses handshakes and API calls with 503 until Redis is there; a Redis
 * restart under running nodes leaves connected tunnels moving bytes, and afterwards the nodes
 * are back with every tunnel and lease (Redis keeps its data in an append-only file here).
 */
import Redis from 'ioredis';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { ApiError } from '../../src/api/client';
import { MessageType } from '../../src/protocol/message';
import { within } from '../helpers/wait';
import { health, startNode, type TestNode } from './cluster-nodes';
import { connectPeer, connectReady, type TestPeer } from './peer';
import { startRedis, type RedisServer } from './redis';

const test = suite('relay cluster: Redis down and restarted');

let redis: RedisServer;
const nodes: TestNode[] = [];
const peers: TestPeer[] = [];

interface Opened { tunnelId: string; sourceAccessToken: string; destinationAccessToken: string }

test.before(async () => {
  redis = await startRedis({ persist: true });
});

test.after(async () => {
  for (const p of peers) p.terminate();
  await Promise.allSettled(nodes.map((n) => n.close()));
  await redis?.remove();
});

async function refusal(call: Promise<unknown>): Promise<string> {
  return call.then(() => 'accepted', (err: ApiError) => `${err.status} ${err.type ?? ''}`);
}

test('a node started while Redis is down retries, says so, and is not ready until Redis is there', async () => {
  await redis.stop();
  const a = await startNode(redis.url, 'node-a', { waitReady: false, leaseMs: 1500 });
  nodes.push(a);
  await a.lines.waitFor(/tunnel store redis:\/\/127\.0\.0\.1:\d+ unreachable: handshakes and API calls are refused/, 10_000, 'the unreachable line');
  await a.lines.waitFor(/tunnel store redis:\/\/127\.0\.0\.1:\d+: next attempt in \d+ ms/, 10_000, 'a retry line');
  assert.is(await health(a.relay), 503);
  assert.is(await refusal(a.api.call('ListTunnels', {})), '503 ServiceUnavailableException');
  const handshake = await connectPeer(a.relay, 'AQGsome-token', { mode: 'source' }).then(() => 'connected', (err: Error) => err.message);
  assert.match(handshake, /^HTTP 503: Service unavailable/);
  await redis.start();
  await a.lines.waitFor(/tunnel store redis:\/\/127\.0\.0\.1:\d+ connected/, 15_000, 'the connected line');
  assert.is(await health(a.relay), 200);
  await a.api.call('ListTunnels', {});
});

test('a Redis restart under running nodes: bridged peers go on, then every tunnel and lease is back', async () => {
  const a = nodes[0];
  const b = await startNode(redis.url, 'node-b', { leaseMs: 1500 });
  nodes.push(b);
  const t = await a.api.call<Opened>('OpenTunnel', { destinationConfig: { services: ['SSH'] } });
  const dest = await connectReady(a.relay, t.destinationAccessToken, { mode: 'destination' });
  const src = await connectReady(b.relay, t.sourceAccessToken, { mode: 'source' });
  peers.push(dest, src);
  await b.lines.waitFor(new RegExp(`tunnel ${t.tunnelId}: bridge to node node-a, which holds the destination, is up`), 10_000, 'bridge b → a');
  const marks = [a.lines.text.length, b.lines.text.length];

  await redis.stop();
  await a.lines.waitFor(/unreachable: handshakes and API calls are refused/, 10_000, 'node a noticed', marks[0]);
  await b.lines.waitFor(/unreachable: handshakes and API calls are refused/, 10_000, 'node b noticed', marks[1]);
  assert.is(await health(a.relay), 503);
  assert.is(await refusal(b.api.call('DescribeTunnel', { tunnelId: t.tunnelId })), '503 ServiceUnavailableException');
  // The data path needs no store: a stream starts and bytes cross the bridge both ways.
  src.send({ type: MessageType.STREAM_START, streamId: 1, serviceId: 'SSH', connectionId: 1 });
  assert.is((await dest.next(5000)).type, MessageType.STREAM_START);
  src.send({ type: MessageType.DATA, streamId: 1, serviceId: 'SSH', connectionId: 1, payload: Buffer.from('during the outage') });
  assert.is(Buffer.from((await dest.next(5000)).payload).toString(), 'during the outage');
  dest.send({ type: MessageType.DATA, streamId: 1, serviceId: 'SSH', connectionId: 1, payload: Buffer.from('and back') });
  assert.is(Buffer.from((await src.next(5000)).payload).toString(), 'and back');

  await redis.start();
  await a.lines.waitFor(/the tunnel store is back: the leases of 1 peer\(s\) held here are renewed/, 20_000, 'node a renewed its lease', marks[0]);
  await b.lines.waitFor(/the tunnel store is back: the leases of 1 peer\(s\) held here are renewed/, 20_000, 'node b renewed its lease', marks[1]);
  assert.is(await health(b.relay), 200);
  const { tunnel } = await b.api.call<{ tunnel: { status: string; sourceConnectionState: { status: string }; destinationConnectionState: { status: string } } }>('DescribeTunnel', { tunnelId: t.tunnelId });
  assert.is(tunnel.status, 'OPEN');
  assert.is(tunnel.sourceConnectionState.status, 'CONNECTED', 'the source lease, renewed');
  assert.is(tunnel.destinationConnectionState.status, 'CONNECTED', 'the destination lease, renewed');
  assert.is(dest.closeCode, undefined);
  assert.is(src.closeCode, undefined);
  // New handshakes and changes work again.
  const fresh = await b.api.call<Opened>('OpenTunnel', { destinationConfig: { services: ['SSH'] } });
  peers.push(await connectReady(a.relay, fresh.destinationAccessToken, { mode: 'destination' }));
  await a.api.call('CloseTunnel', { tunnelId: t.tunnelId });
  assert.equal(await src.waitClosed(10_000), { code: 1000, reason: 'tunnel closed' });
});

test('leases lost from Redis are taken again by the nodes holding the peers, as new holders', async () => {
  const [a, b] = nodes;
  const t = await a.api.call<Opened>('OpenTunnel', { destinationConfig: { services: ['SSH'] } });
  const dest = await connectReady(b.relay, t.destinationAccessToken, { mode: 'destination' });
  const src = await connectReady(a.relay, t.sourceAccessToken, { mode: 'source' });
  peers.push(dest, src);
  await a.lines.waitFor(new RegExp(`tunnel ${t.tunnelId}: bridge to node node-b, which holds the destination, is up`), 10_000, 'bridge a → b');
  const inspect = new Redis(redis.url, { lazyConnect: true });
  const sub = new Redis(redis.url, { lazyConnect: true });
  await Promise.all([inspect.connect(), sub.connect()]);
  try {
    const gens = await inspect.hmget(`localproxy:t:${t.tunnelId}`, 'gs', 'gd');
    const attached: Array<{ mode: string; node: string; gen: number }> = [];
    const both = new Promise<void>((resolve) => sub.on('message', (_c: string, message: string) => {
      const e = JSON.parse(message) as { t: string; id: string; mode: string; node: string; gen: number };
      if (e.t === 'attached' && e.id === t.tunnelId) attached.push(e);
      if (new Set(attached.map((x) => x.mode)).size === 2) resolve();
    }));
    await sub.subscribe('localproxy:events');
    // What a Redis that lost its keys (or an outage longer than the lease) leaves behind.
    await inspect.del(`localproxy:h:${t.tunnelId}:source`, `localproxy:h:${t.tunnelId}:destination`);
    await within(both, 10_000, 'both leases taken again');
    assert.equal(attached.map((e) => `${e.mode}@${e.node}`).sort(), ['destination@node-b', 'source@node-a']);
    const byMode = Object.fromEntries(attached.map((e) => [e.mode, e.gen]));
    assert.ok(byMode.source > Number(gens[0]) && byMode.destination > Number(gens[1]), 'new holder generations');
    const { tunnel } = await b.api.call<{ tunnel: { sourceConnectionState: { status: string }; destinationConnectionState: { status: string } } }>('DescribeTunnel', { tunnelId: t.tunnelId });
    assert.is(tunnel.sourceConnectionState.status, 'CONNECTED');
    assert.is(tunnel.destinationConnectionState.status, 'CONNECTED');
  } finally {
    inspect.disconnect();
    sub.disconnect();
  }
  // The bridge was never disturbed.
  src.send({ type: MessageType.STREAM_START, streamId: 1, serviceId: 'SSH', connectionId: 1 });
  assert.is((await dest.next(5000)).type, MessageType.STREAM_START);
});

test.run();
