/**
 * The runner: reconnect after an abrupt loss, the service's close frame, close(), bind failure.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import { connectTo, echoServer } from '../helpers/apps';
import { within } from '../helpers/wait';
import { MessageType as T } from '../../src/protocol/message';
import { startProxy } from '../../src/tunnel/proxy';
import { startFakeService, fakeOptions } from './fake-service';

const proxy = suite('proxy runner');

proxy('an abrupt loss resets local connections, keeps the listener bound and reconnects; ids restart', async () => {
  const service = await startFakeService();
  const options = fakeOptions(service, 'source', { SSH1: { kind: 'tcp', port: 0 } });
  const p = startProxy(options);
  try {
    const first = await service.peer(0);
    first.serviceIds('SSH1');
    await within(p.ready, 3000, 'ready');
    const port = p.ports().get('SSH1')!;
    const a = await connectTo(port);
    a.on('error', () => {});
    await first.takeType(T.STREAM_START);
    const aClosed = once(a, 'close');
    first.ws.terminate();
    await within(aClosed, 3000, 'local connection reset after the loss');
    const second = await service.peer(1, 5000);
    // A connection made before SERVICE_IDS of the new session waits for it.
    const b = await connectTo(port);
    b.on('error', () => {});
    second.serviceIds('SSH1');
    const start = await second.takeType(T.STREAM_START);
    assert.equal([start.streamId, start.connectionId], [1, 1]);
    assert.is(p.ports().get('SSH1'), port, 'same port across the reconnect');
    b.write('again');
    assert.is((await second.takeData(1, 1, 5)).toString(), 'again');
    b.destroy();
  } finally {
    await within(p.close(), 3000, 'close');
    await service.close();
  }
});

proxy('a service that stops answering pings is declared dead: connections are reset and the proxy reconnects, saying why', async () => {
  const app = await echoServer();
  const service = await startFakeService({ autoPong: false });
  const options = fakeOptions(service, 'destination', { SSH1: app.port }, {}, { pingPeriodMs: 50, maxMissedPings: 2 });
  const p = startProxy(options);
  try {
    const first = await service.peer(0);
    const appClosed = new Promise<void>((resolve) => app.server.once('connection', (s: Socket) => s.once('close', () => resolve())));
    first.serviceIds('SSH1');
    first.send({ type: T.STREAM_START, serviceId: 'SSH1', streamId: 1, connectionId: 1 });
    await within(appClosed, 5000, 'app connection reset after the keepalive gave up');
    const second = await service.peer(1, 5000);
    second.serviceIds('SSH1');
    await within(p.ready, 1000, 'ready');
    assert.ok(options.capture.has('No pong'));
    // Issue 21: a service connection closed by our side says who closed it and why.
    assert.ok(options.capture.has('Dropping the service connection: no pong for 2 pings'));
    assert.ok(options.capture.has('the service connection was lost: no pong for 2 pings'));
  } finally {
    await within(p.close(), 3000, 'close');
    await service.close();
    await app.close();
  }
});

proxy('a 4xx on reconnect ends the run as refused', async () => {
  let refuseWith: number | undefined;
  const service = await startFakeService({ refuse: () => refuseWith });
  const options = fakeOptions(service, 'destination', { SSH1: 22 });
  const p = startProxy(options);
  try {
    const first = await service.peer(0);
    first.serviceIds('SSH1');
    await within(p.ready, 3000, 'ready');
    refuseWith = 403;
    first.ws.terminate();
    const outcome = await within(p.done, 5000, 'done');
    assert.is(outcome.kind, 'refused');
    assert.match(outcome.message, /403/);
    assert.not.ok(options.capture.lines.some((l) => l.includes(options.accessToken)), 'the access token never appears in logs');
  } finally {
    await p.close();
    await service.close();
  }
});

proxy('a close frame from the service resets connections and ends the run as tunnel-closed, logging code and reason', async () => {
  const app = await echoServer();
  const service = await startFakeService();
  const options = fakeOptions(service, 'destination', { SSH1: app.port });
  const p = startProxy(options);
  try {
    const peer = await service.peer();
    peer.serviceIds('SSH1');
    const appClosed = new Promise<void>((resolve) => app.server.once('connection', (s: Socket) => s.once('close', () => resolve())));
    peer.send({ type: T.STREAM_START, serviceId: 'SSH1', streamId: 1, connectionId: 1 }, { type: T.DATA, serviceId: 'SSH1', streamId: 1, connectionId: 1, payload: Buffer.from('x') });
    await peer.takeData(1, 1, 1);
    peer.ws.close(4000, 'tunnel closed');
    const outcome = await within(p.done, 3000, 'done');
    assert.is(outcome.kind, 'tunnel-closed');
    assert.ok(options.capture.has('Web socket close received. Code: 4000; Reason: tunnel closed'));
    assert.is(service.peers.length, 1, 'no reconnect');
    await within(appClosed, 3000, 'the app connection is closed');
  } finally {
    await p.close();
    await service.close();
    await app.close();
  }
});

proxy('close() sends resets for active connections, closes with 1000 (saying why) and ends as closed within 2 s', async () => {
  const service = await startFakeService();
  const options = fakeOptions(service, 'source', { SSH1: { kind: 'tcp', port: 0 } });
  const p = startProxy(options);
  const peer = await service.peer();
  peer.serviceIds('SSH1');
  await within(p.ready, 3000, 'ready');
  const port = p.ports().get('SSH1')!;
  const a = await connectTo(port);
  await connectTo(port).then((s) => s.on('error', () => {}));
  a.on('error', () => {});
  await peer.takeType(T.STREAM_START);
  await peer.takeType(T.CONNECTION_START);
  // The peer speaks V3 (a connection id): every connection is reset on its own.
  const greeted = once(a, 'data');
  peer.send({ type: T.DATA, serviceId: 'SSH1', streamId: 1, connectionId: 1, payload: Buffer.from('hi') });
  await within(greeted, 3000, 'data reaches the app');
  const started = Date.now();
  await within(p.close(), 2000, 'close()');
  const outcome = await p.done;
  assert.is(outcome.kind, 'closed');
  assert.ok(options.capture.has('Closing the service connection: the proxy is closing'), 'the reason is logged');
  assert.ok(Date.now() - started < 2000);
  assert.is(await within(peer.closed, 2000, 'service sees the close'), 1000);
  const resets = peer.messages.filter((m) => m.type === T.CONNECTION_RESET).map((m) => m.connectionId).sort();
  assert.equal(resets, [1, 2]);
  const refused = await new Promise<boolean>((resolve) => {
    const s = connectTo(port);
    s.then(() => resolve(false), () => resolve(true));
  });
  assert.ok(refused, 'listener unbound');
  await service.close();
});

proxy('close() does not wait for an app that keeps its half of the connection open', async () => {
  const service = await startFakeService();
  const options = fakeOptions(service, 'source', { SSH1: { kind: 'tcp', port: 0 } });
  const p = startProxy(options);
  const peer = await service.peer();
  peer.serviceIds('SSH1');
  await within(p.ready, 3000, 'ready');
  const app = connect({ port: p.ports().get('SSH1')!, host: '127.0.0.1', allowHalfOpen: true });
  app.on('error', () => {});
  await once(app, 'connect');
  await peer.takeType(T.STREAM_START);
  const ended = once(app, 'end');
  await within(p.close(), 2000, 'close() with a half-open app');
  await within(ended, 2000, 'the app sees our FIN');
  assert.is((await p.done).kind, 'closed');
  app.destroy();
  await service.close();
});

proxy('a port that cannot be bound is retried, then the source ends as failed', async () => {
  const blocker = createServer();
  blocker.listen(0, '127.0.0.1');
  await once(blocker, 'listening');
  const taken = (blocker.address() as { port: number }).port;
  const service = await startFakeService();
  const options = fakeOptions(service, 'source', { SSH1: { kind: 'tcp', host: '127.0.0.1', port: taken } }, {}, { tcpConnectionRetryCount: 2, tcpConnectionRetryDelayMs: 10 });
  const p = startProxy(options);
  try {
    (await service.peer()).serviceIds('SSH1');
    const outcome = await within(p.done, 5000, 'done');
    assert.is(outcome.kind, 'failed');
    assert.match(outcome.message, /bind/);
    assert.is(options.capture.count('[error] Could not bind to address'), 3);
  } finally {
    await p.close();
    await service.close();
    blocker.close();
  }
});

proxy('reconnect_on_data_error false: an abrupt loss ends the run as failed', async () => {
  const service = await startFakeService();
  const options = fakeOptions(service, 'destination', { SSH1: 22 }, {}, { reconnectOnDataError: false });
  const p = startProxy(options);
  try {
    const peer = await service.peer();
    peer.serviceIds('SSH1');
    await within(p.ready, 3000, 'ready');
    peer.ws.terminate();
    const outcome = await within(p.done, 3000, 'done');
    assert.is(outcome.kind, 'failed');
  } finally {
    await p.close();
    await service.close();
  }
});

proxy.run();
