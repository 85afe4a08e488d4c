/**
 * An exposed relay against clients that misbehave on purpose (issue 16): every refusal and
 * timeout gives the descriptor back, every limit holds, and a real tunnel keeps working.
 */
import { once } from 'node:events';
import { request as httpsRequest } from 'node:https';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Logger, LogLevel } from '../../src/log';
import { encodeFrame } from '../../src/protocol/framing';
import { MessageType } from '../../src/protocol/message';
import { startRelay, type Relay, type RelayOptions } from '../../src/relay/server';
import { within } from '../helpers/wait';
import { connectReady, type TestPeer } from './peer';
import { badUpgrade, fdCount, idleConnection, startRelayChild, tlsConnection, until } from './hostile-peers';
import { signedPost } from './signed';

const { DATA, STREAM_START } = MessageType;
const CREDENTIALS = { accessKeyId: 'AKIDHOSTILE', secretAccessKey: 'hostile-secret' };

interface Ctx { relay?: Relay; sockets: Socket[]; peers: TestPeer[]; lines: string[]; log?: Logger }
const hostile = suite<Ctx>('relay under hostile clients');

hostile.before.each((ctx) => {
  ctx.relay = undefined;
  ctx.sockets = [];
  ctx.peers = [];
  ctx.lines = [];
});
hostile.after.each(async (ctx) => {
  for (const s of ctx.sockets) s.destroy();
  for (const p of ctx.peers) p.terminate();
  await ctx.relay?.close();
});

async function relayWith(ctx: Ctx, options: Partial<RelayOptions> = {}, logOptions: { limitWindowMs?: number } = {}): Promise<Relay> {
  const log = new Logger({ level: LogLevel.DEBUG, sink: (line) => ctx.lines.push(line), ...logOptions });
  ctx.log = log;
  ctx.relay = await startRelay({ port: 0, tls: 'self-signed', credentials: CREDENTIALS, log, ...options });
  return ctx.relay;
}

/** GET /health over TLS; resolves with the status or rejects with the socket error. */
function health(port: number, ca?: string): Promise<number> {
  return within(new Promise<number>((resolve, reject) => {
    httpsRequest({ host: '127.0.0.1', port, path: '/health', ca, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    }).on('error', reject).end();
  }), 5000, 'GET /health');
}

/** Bytes a raw socket receives until it closes (or `ms` pass). */
function collect(socket: Socket): { text: () => string; closed: Promise<void> } {
  let text = '';
  socket.on('data', (d: Buffer) => { text += d.toString('latin1'); });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return { text: () => text, closed };
}

hostile('idle TCP connections past `ulimit -n` that never finish TLS: every descriptor comes back at the handshake timeout and /health answers (issue 16: 1,003 stuck in CLOSE-WAIT)', async (ctx) => {
  // The pending limits are opened wide so that only the handshake timeout path is exercised.
  const relay = await startRelayChild({ port: 0, tls: 'self-signed', limits: { tlsHandshakeTimeoutMs: 1000, maxPendingPerAddress: 5000, maxPendingConnections: 5000 } }, { fdLimit: 256 });
  try {
    const baseline = fdCount(relay.pid);
    for (let i = 0; i < 300; i++) ctx.sockets.push(await idleConnection(relay.port));
    // The clients stay connected: the relay itself must let go.
    await until(() => fdCount(relay.pid) <= baseline, 15_000, `relay descriptors back to ${baseline}`);
    assert.is(await health(relay.port, relay.caPem), 200);
  } finally {
    await relay.stop();
  }
});

hostile('a refused upgrade whose client neither reads nor closes loses its socket after the linger time', async (ctx) => {
  const relay = await relayWith(ctx, { limits: { lingerMs: 200 } });
  const clients: Array<{ socket: Socket; got: ReturnType<typeof collect> }> = [];
  for (let i = 0; i < 20; i++) {
    const socket = await tlsConnection(relay.port, relay.caPem);
    socket.pause(); // never reads the refusal
    socket.write(badUpgrade());
    ctx.sockets.push(socket);
    clients.push({ socket, got: collect(socket) });
  }
  await until(() => relay.stats().connections === 0, 5000, 'the relay letting go of every refused socket');
  // The refusal was there to read all along.
  for (const { socket, got } of clients) {
    socket.resume();
    await within(got.closed, 5000, 'the refusal read');
    assert.match(got.text(), /^HTTP\/1\.1 403 Forbidden\r\n/);
  }
});

for (const tls of ['self-signed', 'plain'] as const) {
  hostile(`slowloris after a refusal (${tls}): a client that ignores the answer and its FIN and keeps sending is cut off after the linger time`, async (ctx) => {
    const relay = await relayWith(ctx, { tls, limits: { lingerMs: 200 } });
    // allowHalfOpen: the client does not close when the relay does, as a slowloris does not.
    const tcp = netConnect({ port: relay.port, host: '127.0.0.1', allowHalfOpen: true });
    tcp.on('error', () => tcp.destroy());
    await within(once(tcp, 'connect'), 5000, 'connect');
    const socket = tls === 'plain' ? tcp : tlsConnect({ socket: tcp, ca: relay.caPem, servername: 'localhost', allowHalfOpen: true } as ConnectionOptions);
    socket.on('error', () => socket.destroy());
    if (tls !== 'plain') await within(once(socket, 'secureConnect'), 5000, 'TLS');
    ctx.sockets.push(socket);
    const got = collect(socket);
    socket.write(badUpgrade());
    // One byte every 50 ms, never closing: only the relay can end this.
    const drip = setInterval(() => { if (!socket.destroyed) socket.write('x'); }, 50);
    try {
      await within(got.closed, 5000, 'the relay dropping the connection');
    } finally {
      clearInterval(drip);
    }
    assert.match(got.text(), /^HTTP\/1\.1 403 Forbidden\r\n/);
    await until(() => relay.stats().connections === 0, 5000, 'no connection left');
  });
}

hostile('a request body that times out is answered 408 and is not logged as an internal error (issue 16: an internal error and a 400)', async (ctx) => {
  const relay = await relayWith(ctx, { limits: { requestTimeoutMs: 500 } });
  const socket = await tlsConnection(relay.port, relay.caPem);
  ctx.sockets.push(socket);
  const got = collect(socket);
  socket.write('POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: IoTSecuredTunneling.ListTunnels\r\nContent-Length: 100\r\n\r\n{"maxRes');
  await within(got.closed, 10_000, 'the relay ending the request');
  assert.match(got.text(), /^HTTP\/1\.1 408 Request Timeout\r\n/);
  assert.not.ok(ctx.lines.some((l) => /\[error\]/.test(l)), ctx.lines.join(''));
  assert.not.match(got.text(), /HTTP\/1\.1 400/);
});

hostile('headers past maxHeaderBytes are answered 431 and the connection is closed', async (ctx) => {
  const relay = await relayWith(ctx, { limits: { maxHeaderBytes: 2048, lingerMs: 200 } });
  const socket = await tlsConnection(relay.port, relay.caPem);
  ctx.sockets.push(socket);
  const got = collect(socket);
  socket.write(`GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: ${'p'.repeat(4096)}\r\n\r\n`);
  await within(got.closed, 5000, 'close after 431');
  assert.match(got.text(), /^HTTP\/1\.1 431 /);
});

hostile('refused upgrades are logged at most 5 times per window, then counted (issue 16: a line per refusal)', async (ctx) => {
  // A window longer than the test: all 50 refusals fall in it; flushLimited() ends it.
  const relay = await relayWith(ctx, { limits: { lingerMs: 200 } }, { limitWindowMs: 600_000 });
  for (let i = 0; i < 50; i++) {
    const socket = await tlsConnection(relay.port, relay.caPem);
    ctx.sockets.push(socket);
    const got = collect(socket);
    socket.write(badUpgrade());
    await within(got.closed, 5000, `refusal ${i}`);
  }
  assert.is(ctx.lines.filter((l) => /refused upgrade from/.test(l)).length, 5);
  ctx.log!.flushLimited();
  assert.ok(ctx.lines.some((l) => /\[info\] 45 similar messages suppressed \(refused-upgrade\)/.test(l)), ctx.lines.join(''));
});

hostile('maxPendingPerAddress: a flood from one address is refused at once; other addresses and tunnel peers are not affected', async (ctx) => {
  const relay = await relayWith(ctx, { limits: { maxPendingPerAddress: 5, maxPendingConnections: 100 } });
  const t = await relay.openTunnel({ services: ['SSH'] });
  // Tunnel peers from the address: accepted, and they do not count against it.
  const src = await connectReady(relay, t.sourceAccessToken, { localAddress: '127.0.0.2' });
  const dst = await connectReady(relay, t.destinationAccessToken, { mode: 'destination', localAddress: '127.0.0.2' });
  ctx.peers.push(src, dst);
  for (let i = 0; i < 5; i++) ctx.sockets.push(await idleConnection(relay.port, '127.0.0.2'));
  await until(() => relay.stats().pending === 5, 5000, 'five pending');
  const sixth = await idleConnection(relay.port, '127.0.0.2');
  ctx.sockets.push(sixth);
  await within(sixth.destroyed ? Promise.resolve() : new Promise((resolve) => sixth.once('close', resolve)), 5000, 'the sixth connection from 127.0.0.2 refused');
  assert.is(relay.stats().pending, 5);
  // Another address is served; the peers from the flooding address carry on.
  assert.is(await health(relay.port, relay.caPem), 200);
  assert.is(relay.stats().peers, 2);
  src.send({ type: STREAM_START, streamId: 1, serviceId: 'SSH' });
  assert.is((await dst.next()).type, STREAM_START);
  assert.ok(ctx.lines.some((l) => /refused a connection from 127\.0\.0\.2: it already has 5 connections that are not tunnel peers/.test(l)), ctx.lines.join(''));
});

hostile('maxPendingConnections: idle connections cannot keep a newcomer out; the oldest is dropped for it', async (ctx) => {
  const relay = await relayWith(ctx, { limits: { maxPendingConnections: 8, maxPendingPerAddress: 100 } });
  const idle: Socket[] = [];
  for (let i = 0; i < 8; i++) {
    const s = await idleConnection(relay.port, `127.0.1.${i + 1}`);
    idle.push(s);
    ctx.sockets.push(s);
  }
  await until(() => relay.stats().pending === 8, 5000, 'eight pending');
  const oldestClosed = new Promise((resolve) => idle[0].once('close', resolve));
  assert.is(await health(relay.port, relay.caPem), 200);
  await within(oldestClosed, 5000, 'the oldest idle connection dropped');
  assert.ok(idle.slice(1).every((s) => !s.destroyed), 'only the oldest was dropped');
});

hostile('maxConnections: connections past it are closed on accept; the relay keeps serving once they go', async (ctx) => {
  const relay = await relayWith(ctx, { limits: { maxConnections: 6, maxPendingPerAddress: 100, maxPendingConnections: 100 } });
  for (let i = 0; i < 6; i++) ctx.sockets.push(await idleConnection(relay.port));
  await until(() => relay.stats().pending === 6, 5000, 'six connections');
  const extra = await idleConnection(relay.port);
  await within(extra.destroyed ? Promise.resolve() : new Promise((resolve) => extra.once('close', resolve)), 5000, 'the seventh connection closed');
  assert.ok(ctx.lines.some((l) => /6 connections are open \(maxConnections\)/.test(l)), ctx.lines.join(''));
  for (const s of ctx.sockets) s.destroy();
  await until(() => relay.stats().connections === 0, 5000, 'all gone');
  assert.is(await health(relay.port, relay.caPem), 200);
});

hostile('idleTimeoutMs: a client that sends requests but never reads the answers is dropped once nothing moves', async (ctx) => {
  const relay = await relayWith(ctx, { limits: { idleTimeoutMs: 500 } });
  const socket = await tlsConnection(relay.port, relay.caPem);
  ctx.sockets.push(socket);
  socket.pause();
  const closed = new Promise((resolve) => socket.once('close', resolve));
  // Pipelined requests whose answers fill the socket buffers, then nothing moves either way.
  socket.write('GET /health HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(100_000));
  await until(() => relay.stats().pending === 0, 10_000, 'the stalled connection dropped');
  socket.resume();
  await within(closed, 5000, 'the client seeing the end');
});

hostile('maxClosedTunnels: the oldest closed tunnels are forgotten; open ones never', async (ctx) => {
  const relay = await relayWith(ctx, { limits: { maxClosedTunnels: 2 } });
  const ids: string[] = [];
  for (let i = 0; i < 4; i++) ids.push((await relay.openTunnel()).tunnelId);
  const open = (await relay.openTunnel()).tunnelId;
  for (const id of ids) await relay.closeTunnel(id);
  const describe = async (tunnelId: string) => (await signedPost(relay, CREDENTIALS, 'DescribeTunnel', JSON.stringify({ tunnelId }))).json;
  assert.is((await describe(ids[0])).__type, 'ResourceNotFoundException');
  assert.is((await describe(ids[1])).__type, 'ResourceNotFoundException');
  assert.is((await describe(ids[2]) as { tunnel: { status: string } }).tunnel.status, 'CLOSED');
  assert.is((await describe(ids[3]) as { tunnel: { status: string } }).tunnel.status, 'CLOSED');
  assert.is((await describe(open) as { tunnel: { status: string } }).tunnel.status, 'OPEN');
});

hostile('maxOpenTunnels: OpenTunnel past it is a LimitExceededException; closing one makes room', async (ctx) => {
  const relay = await relayWith(ctx, { limits: { maxOpenTunnels: 3 } });
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) ids.push(String((await signedPost(relay, CREDENTIALS, 'OpenTunnel', '{}')).json.tunnelId));
  const over = await signedPost(relay, CREDENTIALS, 'OpenTunnel', '{}');
  assert.is(over.status, 400);
  assert.equal(over.json, { __type: 'LimitExceededException', message: 'At most 3 tunnels may be open at once' });
  assert.is((await signedPost(relay, CREDENTIALS, 'CloseTunnel', JSON.stringify({ tunnelId: ids[0] }))).status, 200);
  assert.is((await signedPost(relay, CREDENTIALS, 'OpenTunnel', '{}')).status, 200);
});

hostile('a tunnel keeps moving data, byte for byte, while idle, slowloris and refused clients come and go', async (ctx) => {
  const relay = await relayWith(ctx, { limits: { tlsHandshakeTimeoutMs: 1000, headersTimeoutMs: 1000, lingerMs: 200 } });
  const t = await relay.openTunnel({ services: ['SSH'] });
  const src = await connectReady(relay, t.sourceAccessToken);
  const dst = await connectReady(relay, t.destinationAccessToken, { mode: 'destination' });
  ctx.peers.push(src, dst);
  src.send({ type: STREAM_START, streamId: 1, serviceId: 'SSH', connectionId: 1 });
  assert.is((await dst.next()).type, STREAM_START);
  const baseline = fdCount();
  const hostileSockets: Socket[] = [];
  const drips: NodeJS.Timeout[] = [];
  // 60 idle, 20 slowloris and 60 refused-and-unread, from 20 addresses; none of them closes.
  for (let i = 0; i < 140; i++) {
    const from = `127.0.2.${(i % 20) + 1}`;
    if (i % 7 < 3) {
      hostileSockets.push(await idleConnection(relay.port, from));
    } else if (i % 7 === 3) {
      const s = await tlsConnection(relay.port, relay.caPem, from);
      s.write('GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ');
      drips.push(setInterval(() => { if (!s.destroyed) s.write('a'); }, 100));
      hostileSockets.push(s);
    } else {
      const s = await tlsConnection(relay.port, relay.caPem, from);
      s.pause();
      s.write(badUpgrade());
      hostileSockets.push(s);
    }
  }
  ctx.sockets.push(...hostileSockets);
  for (let i = 0; i < 64; i++) {
    const payload = Buffer.alloc(16384, i);
    src.send({ type: DATA, streamId: 1, serviceId: 'SSH', connectionId: 1, payload });
    const m = await dst.next();
    assert.ok(Buffer.from(m.payload).equals(payload), `message ${i} intact`);
  }
  // Every hostile connection is gone by the relay's own timeouts (the clients never close).
  await until(() => relay.stats().pending === 0, 10_000, 'hostile connections dropped by the relay');
  for (const d of drips) clearInterval(d);
  for (const s of hostileSockets) s.destroy();
  await until(() => fdCount() <= baseline, 5000, `this process's descriptors back to ${baseline}`);
  assert.is(relay.stats().peers, 2);
});

hostile('a peer that cuts its frames anywhere, even right after a length prefix: the other peer gets every frame intact', async (ctx) => {
  const relay = await relayWith(ctx);
  const t = await relay.openTunnel({ services: ['SSH'] });
  const src = await connectReady(relay, t.sourceAccessToken);
  const dst = await connectReady(relay, t.destinationAccessToken, { mode: 'destination' });
  ctx.peers.push(src, dst);
  src.send({ type: STREAM_START, streamId: 1, serviceId: 'SSH', connectionId: 1 });
  assert.is((await dst.next()).type, STREAM_START);
  // From here the destination's bytes are compared raw: a stray length prefix must show.
  dst.ws.removeAllListeners('message');
  let raw = Buffer.alloc(0);
  let wake: (() => void) | undefined;
  dst.ws.on('message', (d: Buffer) => { raw = Buffer.concat([raw, d]); wake?.(); });
  const frame = (i: number) => encodeFrame({ type: DATA, streamId: 1, serviceId: 'SSH', connectionId: 1, payload: Buffer.alloc(100 + i, i) });
  const expected: Buffer[] = [];
  for (const cut of [1, 2, 3, 50]) {
    const a = frame(cut);
    const b = frame(cut + 1);
    // One message ends `cut` bytes into frame b (2: right after its length prefix); the next one has the rest.
    src.ws.send(Buffer.concat([a, b.subarray(0, cut)]));
    src.ws.send(b.subarray(cut));
    expected.push(a, b);
  }
  const want = Buffer.concat(expected);
  await within(new Promise<void>((resolve) => {
    wake = () => { if (raw.length >= want.length) resolve(); };
    wake();
  }), 5000, `${want.length} bytes at the destination (got ${raw.length})`);
  const differsAt = [...want].findIndex((b, i) => raw[i] !== b);
  assert.ok(raw.equals(want), `the destination's bytes differ from offset ${differsAt}: ${raw.subarray(differsAt, differsAt + 8).toString('hex')} for ${want.subarray(differsAt, differsAt + 8).toString('hex')}`);
});

hostile.run();
