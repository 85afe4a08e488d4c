import { EventEmitter, once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { blastServer, connectTo, echoServer, hashUntilClose, sendPattern, type AppServer, type Received } from '../helpers/apps';
import { startTunnel, type Tunnel } from '../helpers/tunnel';
import { freePort, waitUntil, within } from '../helpers/wait';

const MiB = 1024 * 1024;
const resets = suite('e2e: reset paths');

let echo: AppServer;
let blast: AppServer;
let closer: Server;
let closerSockets: Set<Socket>;
const closerResults: Received[] = [];
const closerEvents = new EventEmitter();
let refusedPort: number;
let tunnel: Tunnel;

/** Destination app that hashes what it receives and destroys the connection after 1 MiB. */
async function startCloser(): Promise<Server> {
  closerSockets = new Set();
  const server = createServer((socket) => {
    closerSockets.add(socket);
    socket.once('close', () => closerSockets.delete(socket));
    let seen = 0;
    void hashUntilClose(socket, (chunk) => {
      seen += chunk.length;
      if (seen >= MiB) socket.destroy();
    }).then((received) => {
      closerResults.push(received);
      closerEvents.emit('result');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return server;
}

/** Resolves when the socket closes, however (FIN or reset). */
function closed(socket: Socket): Promise<void> {
  socket.on('error', () => {});
  return once(socket, 'close').then(() => {});
}

resets.before(async () => {
  echo = await echoServer();
  blast = await blastServer(256 * MiB, 5);
  closer = await startCloser();
  refusedPort = await freePort();
  tunnel = await startTunnel({
    destinationMap: { ECHO: echo.port, BLAST: blast.port, CLOSER: (closer.address() as { port: number }).port, REFUSED: refusedPort },
    settings: { tcpConnectionRetryCount: 1, tcpConnectionRetryDelayMs: 100, maxActiveConnections: 256 },
  });
});

resets.after(async () => {
  await tunnel?.close();
  for (const socket of closerSockets ?? []) socket.destroy();
  closer?.close();
  await echo?.close();
  await blast?.close();
});

resets('fixes reference bug 9.3#24: the application refuses a connection: that source app sees it closed, a connection already open on the same service is unaffected', async () => {
  const first = await listenEcho(refusedPort);
  const bystander = await connectTo(tunnel.port('REFUSED'));
  let echoed = '';
  const echoedUpTo = (text: string) => new Promise<void>((resolve) => {
    const check = () => {
      if (echoed === text) {
        bystander.off('data', onData);
        resolve();
      }
    };
    const onData = (chunk: Buffer) => {
      echoed += chunk.toString();
      check();
    };
    bystander.on('data', onData);
  });
  const bystanderData = hashUntilClose(bystander);
  const before = echoedUpTo('before ');
  bystander.write('before ');
  await within(before, 10_000, 'bystander echo before the refusal');

  // The application stops accepting; its open connection stays.
  first.server.close();
  const refused = await connectTo(tunnel.port('REFUSED'));
  await within(closed(refused), 10_000, 'refused connection closed at the source');

  const after = echoedUpTo('before after');
  bystander.write('after');
  await within(after, 10_000, 'bystander echo after the refusal');
  bystander.end();
  assert.is((await within(bystanderData, 10_000, 'bystander close')).bytes, 'before after'.length);
  await first.close();

  // Once the application listens again, the same service works: the refusal left no stuck state.
  const second = await listenEcho(refusedPort);
  try {
    const result = await within(sendPattern(tunnel.port('REFUSED'), 64 * 1024, { seed: 9, expectEcho: true }), 15_000, 'echo after the app came back');
    assert.is(result.echo?.sha256, result.sha256);
  } finally {
    await second.close();
  }
});

/** An echo application on a given port (the REFUSED service's target). */
async function listenEcho(port: number): Promise<AppServer> {
  const server = createServer((socket) => {
    socket.on('error', () => socket.destroy());
    socket.pipe(socket);
  });
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => { sockets.add(s); s.once('close', () => sockets.delete(s)); });
  server.listen(port, '127.0.0.1');
  await once(server, 'listening');
  return {
    server, port, accepted: 0,
    close: async () => {
      for (const s of sockets) s.destroy();
      if (server.listening) await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

resets('destination app closes mid-transfer: the source app sees the close, a parallel connection on the same service delivers every byte', async () => {
  const big = await connectTo(tunnel.port('CLOSER'));
  const bigClosed = closed(big);
  const small = sendPattern(tunnel.port('CLOSER'), 512 * 1024, { seed: 4 });
  // Keep writing until the far end's close arrives; a writer that never learns would hang here.
  const filler = Buffer.alloc(64 * 1024, 1);
  let sent = 0;
  const writer = (async () => {
    while (!big.destroyed && sent < 512 * MiB) {
      sent += filler.length;
      if (!big.write(filler)) await Promise.race([once(big, 'drain'), bigClosed]);
    }
  })();
  await within(Promise.all([bigClosed, writer]), 20_000, 'source app sees the destination app close');
  assert.ok(sent < 512 * MiB, `the writer learned about the close after ${sent} bytes`);
  const result = await within(small, 20_000, 'parallel transfer');
  await waitUntil(closerEvents, 'result', () => closerResults.length >= 2, 10_000, 'both closer connections closed');
  assert.ok(closerResults.some((r) => r.sha256 === result.sha256 && r.bytes === 512 * 1024), 'the 512 KiB connection arrived byte-exact');
});

resets('source app closes mid-download: the destination app sees its connection closed', async () => {
  const acceptedBefore = blast.accepted;
  const blastClosed = new Promise<void>((resolve) => {
    blast.server.once('connection', (socket: Socket) => socket.once('close', () => resolve()));
  });
  const socket = await connectTo(tunnel.port('BLAST'));
  let seen = 0;
  socket.on('data', (chunk: Buffer) => {
    seen += chunk.length;
    if (seen >= MiB) socket.destroy();
  });
  await within(blastClosed, 20_000, 'destination app sees the close');
  assert.is(blast.accepted, acceptedBefore + 1);
  assert.ok(seen >= MiB);
});

resets('fixes reference bug 9.4#40: a burst of 200 connections opened at the same instant are all served (max_active_connections 256)', async () => {
  const port = tunnel.port('ECHO');
  const runs = Array.from({ length: 200 }, (_, i) => sendPattern(port, 4096, { seed: 1000 + i, expectEcho: true }));
  const results = await within(Promise.all(runs), 60_000, '200 echoed connections');
  for (const [i, result] of results.entries()) assert.is(result.echo?.sha256, result.sha256, `connection ${i}`);
});

resets.run();
