import { once } from 'node:events';
import type { Socket } from 'node:net';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { connectTo, echoServer, sendPattern, type AppServer } from '../helpers/apps';
import { startChildTunnel, type ChildTunnel } from '../helpers/child';
import { within } from '../helpers/wait';

const killed = suite('e2e: the peer proxy is killed (SIGKILL) and restarted');

let echo: AppServer;
let tunnel: ChildTunnel;

killed.before(async () => {
  echo = await echoServer();
  tunnel = await startChildTunnel({ ECHO: echo.port });
});

killed.after(async () => {
  await tunnel?.close();
  await echo?.close();
});

/** An open connection through the tunnel that has echoed once, so both ends are established. */
async function openEchoing(): Promise<{ client: Socket; server: Socket }> {
  const serverSide = once(echo.server, 'connection') as Promise<[Socket]>;
  const client = await connectTo(tunnel.source.ports.ECHO);
  client.on('error', () => {});
  client.write('ping');
  await within(once(client, 'data'), 10_000, 'first echo');
  const [server] = await serverSide;
  server.on('error', () => {});
  return { client, server };
}

async function assertWorks(label: string): Promise<void> {
  const result = await within(sendPattern(tunnel.source.ports.ECHO, 256 * 1024, { seed: 5, expectEcho: true }), 20_000, label);
  assert.is(result.echo?.sha256, result.sha256, label);
}

killed('destination killed: the source app sees its connection closed; after a restart new connections work', async () => {
  await assertWorks('before the kill');
  const { client } = await openEchoing();
  const clientClosed = once(client, 'close');
  await tunnel.destination.stop('SIGKILL');
  await within(clientClosed, 30_000, 'source app sees the close');
  assert.ok(tunnel.source.process.exitCode === null, 'the source keeps running');
  await tunnel.restart('destination');
  await assertWorks('after the destination restarted');
});

killed('source killed: the destination app sees its connection closed; after a restart new connections work', async () => {
  const { server } = await openEchoing();
  const serverClosed = once(server, 'close');
  await tunnel.source.stop('SIGKILL');
  await within(serverClosed, 30_000, 'destination app sees the close');
  assert.ok(tunnel.destination.process.exitCode === null, 'the destination keeps running');
  await tunnel.restart('source');
  await assertWorks('after the source restarted');
});

killed.run();
