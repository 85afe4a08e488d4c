/**
 * `-y V1` with a tunnel of several services, through the real relay over TLS. The V1 message
 * format has no service id: the service refuses such messages in a tunnel of several services,
 * and the reference sends them all to the first service (behaviour spec 4.3, 4.10), which
 * connects an application the user never asked for. We refuse at SERVICE_IDS instead.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { connectTo } from '../helpers/apps';
import { proxyOptions, startRelayForTests, startTunnel } from '../helpers/tunnel';
import { startProxy } from '../../src/index';
import { within } from '../helpers/wait';

const versions = suite('-y V1 with several services');

interface TagServer { port: number; accepted: number; close(): void }

/** Greets every connection with its name, so a test sees which application it reached. */
async function tagServer(name: string): Promise<TagServer> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket: Socket) => {
    tag.accepted++;
    sockets.add(socket);
    socket.on('error', () => {});
    socket.once('close', () => sockets.delete(socket));
    socket.write(name);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const tag: TagServer = {
    port: (server.address() as { port: number }).port,
    accepted: 0,
    close() {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
  return tag;
}

/** The first bytes the application behind `port` sends, or '' if the connection just closes. */
async function greeting(port: number): Promise<string> {
  const socket = await connectTo(port);
  socket.on('error', () => {});
  try {
    const first = await within(Promise.race([
      once(socket, 'data').then(([chunk]) => (chunk as Buffer).toString()),
      once(socket, 'close').then(() => ''),
    ]), 5000, 'a greeting or a close');
    return first;
  } finally {
    socket.destroy();
  }
}

for (const side of ['source', 'destination'] as const) {
  versions(`${side} -y V1 with a tunnel of two services ends at once as refused, naming -y V1 and the services (the reference misroutes to the first service)`, async () => {
    const a = await tagServer('A');
    const b = await tagServer('B');
    const relay = await startRelayForTests();
    const tunnel = await relay.openTunnel({ services: ['SSH1', 'HTTP1'] });
    const options = side === 'source'
      ? proxyOptions(relay, 'source', tunnel.sourceAccessToken, { SSH1: { kind: 'tcp', port: 0 }, HTTP1: { kind: 'tcp', port: 0 } })
      : proxyOptions(relay, 'destination', tunnel.destinationAccessToken, { SSH1: a.port, HTTP1: b.port });
    const proxy = startProxy({ ...options, clientType: 'V1' });
    try {
      const failed = await within(proxy.ready.then(() => undefined, (err: Error) => err), 10_000, 'ready settles');
      assert.ok(failed instanceof Error, 'ready rejects');
      const outcome = await within(proxy.done, 5000, 'done');
      assert.is(outcome.kind, 'refused');
      assert.match(outcome.message, '-y V1');
      assert.match(outcome.message, '[SSH1, HTTP1]');
      assert.is(proxy.ports().size, 0, 'nothing bound');
      assert.equal([a.accepted, b.accepted], [0, 0]);
    } finally {
      await proxy.close();
      await relay.close();
      a.close();
      b.close();
    }
  });
}

versions('source -y V1, one service: a connection opened right after the previous one closed is served, not refused as a second concurrent one', async () => {
  const a = await tagServer('A');
  const t = await startTunnel({ services: ['SSH1'], destinationMap: { SSH1: a.port }, sourceOptions: { clientType: 'V1' } });
  try {
    // Each greeting() closes its socket and the next connects at once, while the source is
    // still sending the previous connection's STREAM_RESET.
    for (let i = 1; i <= 5; i++) assert.is(await greeting(t.port('SSH1')), 'A', `connection ${i}`);
    assert.is(a.accepted, 5);
  } finally {
    await t.close();
    a.close();
  }
});

versions.run();
