/**
 * Two relays of a cluster started with different cluster secrets: the node that would bridge
 * to the other names the cluster secret as the reason it cannot reach the destination (it finds
 * the other node's record in the store not signed with its own secret).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startNode, type TestNode } from './cluster-nodes';
import { connectReady, type TestPeer } from './peer';
import { startRedis, type RedisServer } from './redis';

const test = suite('relay cluster: a wrong cluster secret');

let redis: RedisServer;
let nodes: TestNode[] = [];
const peers: TestPeer[] = [];

test.before(async () => {
  redis = await startRedis();
  nodes = [
    await startNode(redis.url, 'node-a', { secret: Buffer.from('the secret node a was given') }),
    await startNode(redis.url, 'node-b', { secret: Buffer.from('another secret, given to node b') }),
  ];
});

test.after(async () => {
  for (const p of peers) p.terminate();
  await Promise.allSettled(nodes.map((n) => n.close()));
  await redis?.remove();
});

test('the node holding the source names the cluster secret as the reason it cannot reach the destination', async () => {
  const [a, b] = nodes;
  const t = await a.api.call<{ tunnelId: string; sourceAccessToken: string; destinationAccessToken: string }>('OpenTunnel', { destinationConfig: { services: ['SSH'] } });
  peers.push(await connectReady(b.relay, t.destinationAccessToken, { mode: 'destination' }));
  peers.push(await connectReady(a.relay, t.sourceAccessToken, { mode: 'source' }));
  const said = new RegExp(`\\[warning\\] [^\\n]*tunnel ${t.tunnelId}: [^\\n]*node-b[^\\n]*cluster secret`);
  await a.lines.waitFor(said, 15_000, 'node a names the cluster secret');
  assert.not.match(a.lines.text, `tunnel ${t.tunnelId}: bridge to node node-b, which holds the destination, is up`);
});

test.run();
