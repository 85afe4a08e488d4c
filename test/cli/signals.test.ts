/**
 * Decisions 13 with the built CLI and a real session through our relay: SIGTERM (and
 * SIGINT) during an active transfer resets the local connections, ends the tunnel
 * connection at the destination application, and the process exits 0 within 2 s —
 * where the reference is killed by the signal without telling anyone (9.1#3).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { connectTo } from '../helpers/apps';
import { caDir } from '../helpers/child';
import { startRelayForTests, type Relay } from '../helpers/tunnel';
import { freePort, within } from '../helpers/wait';
import { startCli, type LiveCli } from './live-cli';

let relay: Relay;
let ca: ReturnType<typeof caDir>;
let work: string;
let app: Server;
let appPort: number;
/** Resolves when an application-side connection closes. */
let appClosed: Array<Promise<void>> = [];
const running = new Set<LiveCli>();

const signals = suite('signals');

signals.before(async () => {
  relay = await startRelayForTests();
  ca = caDir(relay);
  work = mkdtempSync(join(tmpdir(), 'localproxy-signals-'));
  // An echo application that records when each of its connections closes.
  app = createServer((socket: Socket) => {
    socket.on('error', () => socket.destroy());
    appClosed.push(once(socket, 'close').then(() => undefined));
    socket.pipe(socket);
  });
  app.listen(0, '127.0.0.1');
  await once(app, 'listening');
  appPort = (app.address() as { port: number }).port;
});

signals.after(async () => {
  for (const cli of running) cli.kill();
  await new Promise<void>((resolve) => app.close(() => resolve()));
  await relay.close();
  ca.remove();
  rmSync(work, { recursive: true, force: true });
});

async function tunnelWithTransfer(): Promise<{ source: LiveCli; destination: LiveCli; socket: Socket; clientClosed: Promise<void>; stopPump: () => void }> {
  appClosed = [];
  const tunnel = await relay.openTunnel({ services: ['SSH1'] });
  const common = ['-e', `127.0.0.1:${relay.port}`, '-c', ca.dir, '-v', '4'];
  const destination = startCli([...common, '-d', `SSH1=127.0.0.1:${appPort}`], { env: { AWSIOT_TUNNEL_ACCESS_TOKEN: tunnel.destinationAccessToken }, cwd: work });
  const source = startCli([...common, '-m', 'src'], { env: { AWSIOT_TUNNEL_ACCESS_TOKEN: tunnel.sourceAccessToken }, cwd: work });
  running.add(destination);
  running.add(source);
  await destination.waitFor(/Successfully established websocket connection/);
  const port = Number((await source.waitFor(/Listening for new connection on port (\d+)/))[1]);
  const socket = await connectTo(port);
  socket.on('error', () => socket.destroy());
  const clientClosed = once(socket, 'close').then(() => undefined);
  // Keep data flowing both ways: write a chunk whenever the previous echo came back.
  const chunk = Buffer.alloc(16 * 1024, 7);
  let received = 0;
  let pumping = true;
  const firstEcho = new Promise<void>((resolve) => {
    socket.on('data', (d: Buffer) => {
      received += d.length;
      if (received >= chunk.length) resolve();
      if (pumping && received % chunk.length === 0 && !socket.destroyed) socket.write(chunk);
    });
  });
  socket.write(chunk);
  await within(firstEcho, 10_000, 'first echo through the tunnel');
  return { source, destination, socket, clientClosed, stopPump: () => { pumping = false; } };
}

async function stopWith(signal: NodeJS.Signals, side: 'source' | 'destination'): Promise<void> {
  const t = await tunnelWithTransfer();
  const target = side === 'source' ? t.source : t.destination;
  const sentAt = Date.now();
  target.child.kill(signal);
  const exit = await within(target.exited, 5000, `${side} exits after ${signal}`);
  t.stopPump();
  const elapsed = exit.at - sentAt;
  assert.is(exit.signal, null, `${side} handled ${signal} instead of being killed by it`);
  assert.is(exit.code, 0, `exit code after ${signal}:\n${target.stderr()}`);
  assert.ok(elapsed < 2000, `${side} took ${elapsed} ms to exit`);
  // Both ends of the tunneled connection are told: the local client is closed, and the
  // peer proxy gets the reset and closes its application connection.
  await within(t.clientClosed, 5000, 'the local client connection closes');
  await within(Promise.all(appClosed), 5000, 'the application connection closes');
  t.socket.destroy();
  const other = side === 'source' ? t.destination : t.source;
  other.child.kill('SIGTERM');
  await within(other.exited, 5000, 'the other proxy exits');
  running.delete(t.source);
  running.delete(t.destination);
}

signals('fixes reference bug 9.1#3: SIGTERM on the source during a transfer resets and exits 0 within 2 s', async () => {
  await stopWith('SIGTERM', 'source');
});

signals('SIGINT on the destination during a transfer exits 0 within 2 s', async () => {
  await stopWith('SIGINT', 'destination');
});

signals('SIGTERM while waiting to retry the service connection exits 0 at once', async () => {
  const port = await freePort();
  const cli = startCli(['-e', `127.0.0.1:${port}`, '-m', 'src'], { env: { AWSIOT_TUNNEL_ACCESS_TOKEN: 'not-a-real-token-0123456789' }, cwd: work });
  running.add(cli);
  await cli.waitFor(/Retrying connection/);
  const sentAt = Date.now();
  cli.child.kill('SIGTERM');
  const exit = await within(cli.exited, 5000, 'exit after SIGTERM');
  running.delete(cli);
  assert.is(exit.code, 0, cli.stderr());
  assert.ok(exit.at - sentAt < 2000, `took ${exit.at - sentAt} ms`);
});

signals('Decisions 13: a second signal exits at once while the close handshake stalls', async () => {
  // A TCP forwarder in front of the relay that stops passing the proxy's bytes on demand,
  // so the close frame of the first signal is never answered.
  const fromProxy: Socket[] = [];
  const forwarder = createServer((client: Socket) => {
    const upstream = connect(relay.port, '127.0.0.1');
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
    fromProxy.push(client);
  });
  forwarder.listen(0, '127.0.0.1');
  await once(forwarder, 'listening');
  const port = (forwarder.address() as { port: number }).port;
  const tunnel = await relay.openTunnel({ services: ['SSH1'] });
  const cli = startCli(['-e', `127.0.0.1:${port}`, '-c', ca.dir, '-m', 'src'], { env: { AWSIOT_TUNNEL_ACCESS_TOKEN: tunnel.sourceAccessToken }, cwd: work });
  running.add(cli);
  try {
    await cli.waitFor(/Successfully established websocket connection/);
    for (const socket of fromProxy) {
      socket.unpipe();
      socket.pause();
    }
    cli.child.kill('SIGTERM');
    await cli.waitFor(/Received SIGTERM, closing the tunnel/);
    const sentAt = Date.now();
    cli.child.kill('SIGINT');
    const exit = await within(cli.exited, 5000, 'exit after the second signal');
    assert.is(exit.code, 0, cli.stderr());
    assert.match(cli.stderr(), /Received SIGINT again, exiting now/);
    // Without the second signal the proxy would wait for the close handshake (1.5 s).
    assert.ok(exit.at - sentAt < 1000, `took ${exit.at - sentAt} ms after the second signal`);
  } finally {
    cli.kill();
    running.delete(cli);
    for (const socket of fromProxy) socket.destroy();
    await new Promise<void>((resolve) => forwarder.close(() => resolve()));
  }
});

signals.run();
