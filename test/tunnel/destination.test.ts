/**
 * Destination side against a scripted service: exact frames in, exact frames out.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createServer } from 'node:net';
import { once } from 'node:events';
import { createHash } from 'node:crypto';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { echoServer, sinkServer } from '../helpers/apps';
import { freePort, within } from '../helpers/wait';
import { MessageType as T } from '../../src/protocol/message';
import { startProxy } from '../../src/tunnel/proxy';
import type { ProxyOptions } from '../../src/index';
import { startFakeService, fakeOptions } from './fake-service';

const dest = suite('destination');

async function setup(services: Record<string, number>, settings = {}, extra: Partial<ProxyOptions> = {}) {
  const service = await startFakeService();
  const options = fakeOptions(service, 'destination', services, extra, settings);
  const proxy = startProxy(options);
  const peer = await service.peer();
  return { service, proxy, peer, log: options.capture, async close() {
    await within(proxy.close(), 3000, 'proxy close');
    await service.close();
  } };
}

const text = (s: string) => Buffer.from(s);

dest('fixes reference bug 9.3#18: frames coalesced after SERVICE_IDS in one WebSocket message are processed', async () => {
  const app = await echoServer();
  const t = await setup({ SSH1: app.port });
  try {
    t.peer.send(
      { type: T.SERVICE_IDS, availableServiceIds: ['SSH1'] },
      { type: T.STREAM_START, serviceId: 'SSH1', streamId: 1, connectionId: 1 },
      { type: T.DATA, serviceId: 'SSH1', streamId: 1, connectionId: 1, payload: text('hello') },
    );
    const echoed = await t.peer.takeData(1, 1, 5);
    assert.is(echoed.toString(), 'hello');
    assert.ok(t.log.has('Connected to 127.0.0.1, port: '), 'logs the reference line');
    await t.proxy.ready;
  } finally {
    await t.close();
    await app.close();
  }
});

dest('SERVICE_IDS that do not match the mapping end the run as refused (exit 3), naming the ids on each side', async () => {
  const t = await setup({ SSH1: 22, HTTP1: 80 });
  try {
    t.peer.serviceIds('SSH1', 'RDP');
    const outcome = await within(t.proxy.done, 5000, 'done');
    assert.is(outcome.kind, 'refused');
    assert.match(outcome.message, /SSH1, RDP/);
    assert.match(outcome.message, /SSH1, HTTP1/);
    let rejected = false;
    await t.proxy.ready.catch(() => { rejected = true; });
    assert.ok(rejected, 'ready rejects');
  } finally {
    await t.close();
  }
});

dest('simultaneous connections: DATA is routed by connection id and a CONNECTION_RESET closes only its connection', async () => {
  const app = await echoServer();
  const t = await setup({ SSH1: app.port });
  try {
    t.peer.serviceIds('SSH1');
    t.peer.send({ type: T.STREAM_START, serviceId: 'SSH1', streamId: 1, connectionId: 1 });
    t.peer.send({ type: T.CONNECTION_START, serviceId: 'SSH1', streamId: 1, connectionId: 2 });
    t.peer.send(
      { type: T.DATA, serviceId: 'SSH1', streamId: 1, connectionId: 1, payload: text('one') },
      { type: T.DATA, serviceId: 'SSH1', streamId: 1, connectionId: 2, payload: text('two') },
    );
    assert.is((await t.peer.takeData(1, 1, 3)).toString(), 'one');
    assert.is((await t.peer.takeData(1, 2, 3)).toString(), 'two');
    t.peer.send({ type: T.CONNECTION_RESET, serviceId: 'SSH1', streamId: 1, connectionId: 1 });
    t.peer.send({ type: T.DATA, serviceId: 'SSH1', streamId: 1, connectionId: 2, payload: text('still') });
    assert.is((await t.peer.takeData(1, 2, 5)).toString(), 'still');
    // DATA for the reset connection and for a stale stream is dropped, nothing comes back.
    t.peer.send(
      { type: T.DATA, serviceId: 'SSH1', streamId: 1, connectionId: 1, payload: text('gone') },
      { type: T.DATA, serviceId: 'SSH1', streamId: 7, connectionId: 2, payload: text('stale') },
      { type: T.DATA, serviceId: 'SSH1', streamId: 1, connectionId: 2, payload: text('last') },
    );
    assert.is((await t.peer.takeData(1, 2, 4)).toString(), 'last');
    assert.not.ok(t.peer.messages.some((m) => m.type === T.DATA), `no other DATA: ${t.peer.describe()}`);
  } finally {
    await t.close();
    await app.close();
  }
});

dest('fixes reference bug 9.3#20: STREAM_START with a new stream id resets the old stream and starts the new one at once', async () => {
  const app = await echoServer();
  const t = await setup({ SSH1: app.port });
  try {
    t.peer.serviceIds('SSH1');
    t.peer.send({ type: T.STREAM_START, serviceId: 'SSH1', streamId: 1, connectionId: 1 }, { type: T.DATA, serviceId: 'SSH1', streamId: 1, connectionId: 1, payload: text('a') });
    await t.peer.takeData(1, 1, 1);
    const firstClosed = new Promise<void>((resolve) => app.server.once('connection', () => resolve()));
    t.peer.send({ type: T.STREAM_START, serviceId: 'SSH1', streamId: 2, connectionId: 1 }, { type: T.DATA, serviceId: 'SSH1', streamId: 2, connectionId: 1, payload: text('new') });
    assert.is((await t.peer.takeData(2, 1, 3)).toString(), 'new');
    await within(firstClosed, 3000, 'second app connection');
    assert.is(app.accepted, 2);
  } finally {
    await t.close();
    await app.close();
  }
});

dest('fixes reference bug 9.3#23: CONNECTION_START for an existing id answers CONNECTION_RESET for that id only', async () => {
  const app = await echoServer();
  const t = await setup({ SSH1: app.port });
  try {
    t.peer.serviceIds('SSH1');
    t.peer.send({ type: T.STREAM_START, serviceId: 'SSH1', streamId: 1, connectionId: 1 });
    t.peer.send({ type: T.CONNECTION_START, serviceId: 'SSH1', streamId: 1, connectionId: 2 });
    t.peer.send({ type: T.DATA, serviceId: 'SSH1', streamId: 1, connectionId: 2, payload: text('x') });
    await t.peer.takeData(1, 2, 1);
    t.peer.send({ type: T.CONNECTION_START, serviceId: 'SSH1', streamId: 1, connectionId: 2 });
    const reset = await t.peer.takeType(T.CONNECTION_RESET);
    assert.is(reset.connectionId, 2);
    assert.is(reset.serviceId, 'SSH1');
    t.peer.send({ type: T.DATA, serviceId: 'SSH1', streamId: 1, connectionId: 1, payload: text('ok') });
    assert.is((await t.peer.takeData(1, 1, 2)).toString(), 'ok');
    assert.not.ok(t.peer.messages.some((m) => m.type === T.STREAM_RESET), 'no STREAM_RESET');
  } finally {
    await t.close();
    await app.close();
  }
});

dest('fixes reference bugs 9.3#22/#24: a failing connect resets only that connection, others flow while it retries', async () => {
  const app = await echoServer();
  const deadPort = await freePort();
  const service = await startFakeService();
  const options = fakeOptions(service, 'destination', { SSH1: app.port, DEAD: deadPort }, {}, { tcpConnectionRetryCount: 3, tcpConnectionRetryDelayMs: 200 });
  const proxy = startProxy(options);
  const peer = await service.peer();
  try {
    peer.serviceIds('SSH1', 'DEAD');
    peer.send({ type: T.STREAM_START, serviceId: 'DEAD', streamId: 1, connectionId: 1 });
    peer.send({ type: T.STREAM_START, serviceId: 'SSH1', streamId: 1, connectionId: 1 }, { type: T.DATA, serviceId: 'SSH1', streamId: 1, connectionId: 1, payload: text('meanwhile') });
    assert.is((await peer.takeData(1, 1, 9)).toString(), 'meanwhile');
    assert.not.ok(peer.messages.some((m) => m.type === T.CONNECTION_RESET), 'the failing connect is still retrying');
    const reset = await peer.takeType(T.CONNECTION_RESET, 5000);
    assert.is(reset.serviceId, 'DEAD');
    assert.is(reset.connectionId, 1);
    assert.is(options.capture.count('Could not connect to destination'), 4, '1 + 3 retries');
  } finally {
    await within(proxy.close(), 3000, 'close');
    await service.close();
    await app.close();
  }
});

dest('a reset that arrives while the destination is still connecting: the app still gets the bytes sent before it, then EOF', async () => {
  const port = await freePort();
  const service = await startFakeService();
  const options = fakeOptions(service, 'destination', { SSH1: port }, {}, { tcpConnectionRetryCount: 20, tcpConnectionRetryDelayMs: 50 });
  const proxy = startProxy(options);
  const late = createServer();
  try {
    const peer = await service.peer();
    peer.serviceIds('SSH1');
    peer.send(
      { type: T.STREAM_START, serviceId: 'SSH1', streamId: 1, connectionId: 1 },
      { type: T.DATA, serviceId: 'SSH1', streamId: 1, connectionId: 1, payload: text('request') },
      { type: T.CONNECTION_RESET, serviceId: 'SSH1', streamId: 1, connectionId: 1 },
    );
    await options.capture.waitFor('Could not connect to destination', 3000);
    const received = new Promise<string>((resolve) => late.on('connection', (s) => {
      let got = '';
      s.on('data', (d: Buffer) => { got += d.toString(); });
      s.on('end', () => { resolve(got); s.end(); });
    }));
    late.listen(port, '127.0.0.1');
    assert.is(await within(received, 5000, 'late app gets the bytes and EOF'), 'request');
    // The peer already reset the connection: nothing is sent back for it.
    assert.not.ok(peer.messages.some((m) => m.type === T.CONNECTION_RESET), `no reset echoed: ${peer.describe()}`);
  } finally {
    await within(proxy.close(), 3000, 'close');
    await service.close();
    late.close();
  }
});

dest('a start for an unknown service id, or beyond max_active_connections, is answered with a reset; the rest goes on', async () => {
  const app = await echoServer();
  const t = await setup({ SSH1: app.port }, { maxActiveConnections: 1 });
  try {
    t.peer.serviceIds('SSH1');
    t.peer.send({ type: T.STREAM_START, serviceId: 'NOPE', streamId: 1, connectionId: 1 });
    const unknown = await t.peer.takeType(T.CONNECTION_RESET);
    assert.equal([unknown.serviceId, unknown.connectionId], ['NOPE', 1]);
    t.peer.send({ type: T.STREAM_START, serviceId: 'SSH1', streamId: 1, connectionId: 1 });
    t.peer.send({ type: T.CONNECTION_START, serviceId: 'SSH1', streamId: 1, connectionId: 2 });
    const refused = await t.peer.takeType(T.CONNECTION_RESET);
    assert.equal([refused.serviceId, refused.connectionId], ['SSH1', 2]);
    assert.ok(t.log.has('max_active_connections (1) reached'));
    t.peer.send({ type: T.DATA, serviceId: 'SSH1', streamId: 1, connectionId: 1, payload: text('fine') });
    assert.is((await t.peer.takeData(1, 1, 4)).toString(), 'fine');
  } finally {
    await t.close();
    await app.close();
  }
});

dest('targets: a Unix socket path and an IPv6 literal', async () => {
  const path = join(tmpdir(), `localproxy-test-${process.pid}.sock`);
  rmSync(path, { force: true });
  const unixApp = createServer((s) => s.pipe(s));
  unixApp.listen(path);
  await once(unixApp, 'listening');
  const v6App = createServer((s) => s.pipe(s));
  v6App.listen(0, '::1');
  await once(v6App, 'listening');
  const service = await startFakeService();
  const options = fakeOptions(service, 'destination', {
    UNIX: { kind: 'unix', path },
    V6: { kind: 'tcp', host: '::1', port: (v6App.address() as { port: number }).port },
  });
  const proxy = startProxy(options);
  try {
    const peer = await service.peer();
    peer.serviceIds('UNIX', 'V6');
    peer.send(
      { type: T.STREAM_START, serviceId: 'UNIX', streamId: 1, connectionId: 1 },
      { type: T.DATA, serviceId: 'UNIX', streamId: 1, connectionId: 1, payload: text('unix') },
      { type: T.STREAM_START, serviceId: 'V6', streamId: 1, connectionId: 1 },
      { type: T.DATA, serviceId: 'V6', streamId: 1, connectionId: 1, payload: text('six') },
    );
    const a = await peer.take((m) => m.type === T.DATA && m.serviceId === 'UNIX');
    const b = await peer.take((m) => m.type === T.DATA && m.serviceId === 'V6');
    assert.is(Buffer.from(a.payload).toString(), 'unix');
    assert.is(Buffer.from(b.payload).toString(), 'six');
    assert.ok(options.capture.has(`Connected to Unix socket: ${path}`));
    assert.ok(options.capture.has('Connected to ::1, port: '));
  } finally {
    await within(proxy.close(), 3000, 'close');
    await service.close();
    unixApp.close();
    v6App.close();
    rmSync(path, { force: true });
  }
});

dest('SESSION_RESET closes every connection of every service and the session goes on', async () => {
  const a = await echoServer();
  const b = await echoServer();
  const t = await setup({ A: a.port, B: b.port });
  try {
    t.peer.serviceIds('A', 'B');
    t.peer.send({ type: T.STREAM_START, serviceId: 'A', streamId: 1, connectionId: 1 }, { type: T.STREAM_START, serviceId: 'B', streamId: 1, connectionId: 1 });
    t.peer.send({ type: T.DATA, serviceId: 'A', streamId: 1, connectionId: 1, payload: text('a') }, { type: T.DATA, serviceId: 'B', streamId: 1, connectionId: 1, payload: text('b') });
    await t.peer.takeData(1, 1, 1);
    await t.peer.takeData(1, 1, 1);
    t.peer.send({ type: T.SESSION_RESET });
    t.peer.send({ type: T.STREAM_START, serviceId: 'A', streamId: 2, connectionId: 1 }, { type: T.DATA, serviceId: 'A', streamId: 2, connectionId: 1, payload: text('again') });
    assert.is((await t.peer.takeData(2, 1, 5)).toString(), 'again');
    t.peer.send({ type: T.DATA, serviceId: 'B', streamId: 1, connectionId: 1, payload: text('dropped') });
    t.peer.send({ type: T.STREAM_START, serviceId: 'B', streamId: 2, connectionId: 1 }, { type: T.DATA, serviceId: 'B', streamId: 2, connectionId: 1, payload: text('b2') });
    assert.is((await t.peer.takeData(2, 1, 2)).toString(), 'b2');
    assert.is(a.accepted, 2);
    assert.is(b.accepted, 2);
  } finally {
    await t.close();
    await a.close();
    await b.close();
  }
});

dest('flush before close: 30 × 60000-byte DATA then CONNECTION_RESET → the app gets all 1,800,000 bytes, then EOF', async () => {
  const app = await sinkServer();
  const t = await setup({ SSH1: app.port });
  try {
    t.peer.serviceIds('SSH1');
    const expected = createHash('sha256');
    // One frame per WebSocket message, back to back, the reset right behind the last DATA.
    t.peer.send({ type: T.STREAM_START, serviceId: 'SSH1', streamId: 1, connectionId: 1 });
    for (let i = 0; i < 30; i++) {
      const payload = Buffer.alloc(60000, i + 1);
      expected.update(payload);
      t.peer.send({ type: T.DATA, serviceId: 'SSH1', streamId: 1, connectionId: 1, payload });
    }
    t.peer.send({ type: T.CONNECTION_RESET, serviceId: 'SSH1', streamId: 1, connectionId: 1 });
    const [received] = await within(app.waitFor(1), 10_000, 'app connection closed');
    assert.is(received.bytes, 1_800_000);
    assert.is(received.sha256, expected.digest('hex'));
    assert.not.ok(received.reset, 'closed with a FIN, not a reset');
  } finally {
    await t.close();
    await app.close();
  }
});

dest('flush before close: an app that writes 1.8 MB and closes → every byte is sent, then CONNECTION_RESET', async () => {
  const total = 1_800_000;
  const app = createServer((socket) => socket.end(Buffer.alloc(total, 7)));
  app.listen(0, '127.0.0.1');
  await once(app, 'listening');
  const t = await setup({ SSH1: (app.address() as { port: number }).port });
  try {
    t.peer.serviceIds('SSH1');
    t.peer.send({ type: T.STREAM_START, serviceId: 'SSH1', streamId: 1, connectionId: 1 });
    await t.peer.takeType(T.CONNECTION_RESET, 10_000);
    const data = t.peer.messages.filter((m) => m.type === T.DATA);
    assert.is(data.reduce((n, m) => n + m.payload.length, 0), total, 'all bytes arrived before the reset');
    assert.ok(data.every((m) => m.payload.length <= 64512), 'payloads within max_payload_size');
  } finally {
    await t.close();
    app.close();
  }
});

dest('a 1.0 subprotocol has no SERVICE_IDS: the destination starts at once and speaks the V1 form', async () => {
  const app = await echoServer();
  const service = await startFakeService();
  const options = fakeOptions(service, 'destination', { '': app.port }, {}, { subprotocol: 'aws.iot.securetunneling-1.0' });
  const proxy = startProxy(options);
  const peer = await service.peer();
  try {
    await within(proxy.ready, 3000, 'ready without SERVICE_IDS');
    peer.send({ type: T.STREAM_START, streamId: 4 }, { type: T.DATA, streamId: 4, payload: text('v1') });
    const m = await peer.takeType(T.DATA);
    assert.is(Buffer.from(m.payload).toString(), 'v1');
    assert.is(m.serviceId, '');
    assert.is(m.connectionId, 0);
    assert.is(m.streamId, 4);
  } finally {
    await within(proxy.close(), 3000, 'close');
    await service.close();
    await app.close();
  }
});

dest('V2 peer (no connection ids): replies carry none, and a local close sends STREAM_RESET', async () => {
  const app = createServer((socket) => socket.end('bye'));
  app.listen(0, '127.0.0.1');
  await once(app, 'listening');
  const t = await setup({ SSH1: (app.address() as { port: number }).port });
  try {
    t.peer.serviceIds('SSH1');
    t.peer.send({ type: T.STREAM_START, serviceId: 'SSH1', streamId: 3 });
    const data = await t.peer.takeType(T.DATA);
    assert.is(Buffer.from(data.payload).toString(), 'bye');
    assert.is(data.connectionId, 0);
    assert.is(data.serviceId, 'SSH1');
    const reset = await t.peer.takeType(T.STREAM_RESET);
    assert.is(reset.streamId, 3);
    assert.is(reset.connectionId, 0);
    assert.not.ok(t.peer.messages.some((m) => m.type === T.CONNECTION_RESET));
    assert.is(t.log.count('V2 message format'), 1, 'detection logged once');
  } finally {
    await t.close();
    app.close();
  }
});

dest('-y V2: a CONNECTION_START is answered with CONNECTION_RESET, not opened (replies without connection ids would mix two applications into one stream)', async () => {
  let accepted = 0;
  const app = createServer((socket) => {
    accepted++;
    socket.on('error', () => {});
    socket.pipe(socket);
  });
  app.listen(0, '127.0.0.1');
  await once(app, 'listening');
  const t = await setup({ SSH1: (app.address() as { port: number }).port }, {}, { clientType: 'V2' });
  try {
    t.peer.serviceIds('SSH1');
    t.peer.send({ type: T.STREAM_START, serviceId: 'SSH1', streamId: 1, connectionId: 1 });
    t.peer.send({ type: T.DATA, serviceId: 'SSH1', streamId: 1, connectionId: 1, payload: text('one') });
    const echo = await t.peer.takeType(T.DATA);
    assert.equal([Buffer.from(echo.payload).toString(), echo.connectionId], ['one', 0]);
    t.peer.send({ type: T.CONNECTION_START, serviceId: 'SSH1', streamId: 1, connectionId: 2 });
    const reset = await t.peer.takeType(T.CONNECTION_RESET);
    assert.equal([reset.serviceId, reset.streamId, reset.connectionId], ['SSH1', 1, 2]);
    t.peer.send({ type: T.DATA, serviceId: 'SSH1', streamId: 1, connectionId: 1, payload: text('still') });
    const more = await t.peer.takeType(T.DATA);
    assert.is(Buffer.from(more.payload).toString(), 'still');
    assert.is(accepted, 1, 'the application saw one connection');
  } finally {
    await t.close();
    app.close();
  }
});

dest('a target port no connect can use (library caller, 70000) answers the start with a reset instead of leaving the connection pending', async () => {
  const app = await echoServer();
  const t = await setup({ BAD: 70000, SSH1: app.port });
  try {
    t.peer.serviceIds('BAD', 'SSH1');
    t.peer.send({ type: T.STREAM_START, serviceId: 'BAD', streamId: 1, connectionId: 1 });
    const reset = await t.peer.takeType(T.CONNECTION_RESET);
    assert.equal([reset.serviceId, reset.streamId, reset.connectionId], ['BAD', 1, 1]);
    assert.ok(t.log.has('Could not connect to destination 127.0.0.1:70000'));
    assert.not.ok(t.log.has('Internal error'));
    t.peer.send({ type: T.STREAM_START, serviceId: 'SSH1', streamId: 1, connectionId: 1 }, { type: T.DATA, serviceId: 'SSH1', streamId: 1, connectionId: 1, payload: text('ok') });
    assert.is((await t.peer.takeData(1, 1, 2)).toString(), 'ok');
  } finally {
    await t.close();
    await app.close();
  }
});

dest.run();
