/**
 * The credit/1 extension against a scripted service (issue 14): when the proxy announces it,
 * what it sends, how it honours and enforces grants, and the fallback when a service closes
 * the connection in reply to the announcement. The scripted service plays the relay and the
 * peer proxy at once.
 */
import type { Socket } from 'node:net';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { ProxyOptions, Settings } from '../../src/index';
import { CREDIT_EXTENSION, decodeHello, decodeWindow, encodeHello, encodeWindow, ExtensionType } from '../../src/protocol/extension';
import { MessageType as T, type Message, type MessageInit } from '../../src/protocol/message';
import { startProxy, type LocalProxy } from '../../src/tunnel/proxy';
import { connectTo, pattern, patternSha256, sinkServer, writeAll, type SinkServer } from '../helpers/apps';
import { within } from '../helpers/wait';
import { fakeOptions, startFakeService, type FakePeer, type FakeService, type FakeServiceOptions, type LogCapture } from './fake-service';

const { CREDIT_HELLO: HELLO, CREDIT_WINDOW: WINDOW } = ExtensionType;
const credit = suite('credit/1 against a scripted service');

interface Setup {
  service: FakeService;
  proxy: LocalProxy;
  peer: FakePeer;
  log: LogCapture;
  options: ProxyOptions;
  close(): Promise<void>;
}

async function setup(mode: 'source' | 'destination', services: Record<string, number>, serviceOptions: FakeServiceOptions, settings: Partial<Settings> = {}): Promise<Setup> {
  const service = await startFakeService(serviceOptions);
  const options = fakeOptions(service, mode, services, {}, settings);
  const proxy = startProxy(options);
  const peer = await service.peer();
  peer.serviceIds(...Object.keys(services));
  await within(proxy.ready, 5000, `${mode} ready`);
  return {
    service, proxy, peer, log: options.capture, options,
    async close() {
      await within(proxy.close(), 3000, 'proxy close');
      await service.close();
    },
  };
}

const isCredit = (m: Message) => m.type === HELLO || m.type === WINDOW;
const hello = (serviceId: string, nonce: string): MessageInit => ({ type: HELLO, ignorable: true, serviceId, payload: encodeHello(nonce) });
const window = (serviceId: string, streamId: number, connectionId: number, limit: number, ack: boolean): MessageInit =>
  ({ type: WINDOW, ignorable: true, serviceId, streamId, connectionId, payload: encodeWindow({ limit, ack }) });

/** Sum of DATA payload bytes of a connection among `messages`. */
function dataBytes(messages: Message[], connectionId: number): number {
  return messages.filter((m) => m.type === T.DATA && m.connectionId === connectionId).reduce((n, m) => n + m.payload.length, 0);
}

credit('auto: the request declares credit/1; a service that does not answer with it gets no extension message, and a HELLO from it is ignored', async () => {
  const t = await setup('source', { SSH: 0 }, {});
  try {
    assert.is(t.peer.headers['localproxy-extensions'], CREDIT_EXTENSION, 'declared in the upgrade request');
    // A HELLO in the same WebSocket message as nothing else the proxy must answer; then a connection.
    t.peer.send(hello('SSH', '00000000000000a1'));
    const client = await connectTo(t.proxy.ports().get('SSH')!);
    client.write('hi');
    await t.peer.takeType(T.STREAM_START);
    assert.is((await t.peer.takeData(1, 1, 2)).toString(), 'hi');
    client.end();
    // The peer has not shown V3 framing, so the source ends the stream (issue 11).
    await t.peer.takeType(T.STREAM_RESET);
    assert.not.ok(t.peer.received.some(isCredit), `no extension message: ${t.peer.describe()}`);
  } finally {
    await t.close();
  }
});

credit('off: no request header, and no HELLO even from a service that says it forwards the extension', async () => {
  const t = await setup('source', { SSH: 0 }, { extensions: [CREDIT_EXTENSION] }, { creditExtension: 'off' });
  try {
    assert.is(t.peer.headers['localproxy-extensions'], undefined);
    const client = await connectTo(t.proxy.ports().get('SSH')!);
    client.write('hi');
    await t.peer.takeType(T.STREAM_START);
    await t.peer.takeData(1, 1, 2);
    assert.not.ok(t.peer.received.some(isCredit));
    client.destroy();
  } finally {
    await t.close();
  }
});

credit('on: the HELLO goes out without the service\'s header, before the first START, with the schema\'s fields only', async () => {
  const t = await setup('source', { SSH: 0, HTTP: 0 }, {}, { creditExtension: 'on' });
  try {
    const client = await connectTo(t.proxy.ports().get('HTTP')!);
    await t.peer.takeType(T.STREAM_START);
    const first = t.peer.received[0];
    assert.is(first.type, HELLO, 'the HELLO is the first message');
    assert.ok(first.ignorable);
    assert.equal([first.serviceId, first.streamId, first.connectionId, first.availableServiceIds], ['SSH', 0, 0, []], 'a service id of SERVICE_IDS, nothing else');
    const payload = decodeHello(first.payload);
    assert.is(payload?.version, 1);
    assert.match(payload!.nonce, /^[0-9a-f]{16}$/);
    client.destroy();
  } finally {
    await t.close();
  }
});

credit('source: a HELLO is answered once; a connection gets our grant after its START; the proxy sends no more than the service granted, resumes on the next grant, and its reset follows its last byte', async () => {
  const t = await setup('source', { SSH: 0 }, { extensions: [CREDIT_EXTENSION] });
  try {
    const ours = await t.peer.takeType(HELLO);
    t.peer.send(hello('SSH', '00000000000000b1'));
    const reply = await t.peer.takeType(HELLO);
    assert.equal(reply.payload, ours.payload, 'the same HELLO again, for the new peer');
    t.peer.send(hello('SSH', '00000000000000b1'));

    const client = await connectTo(t.proxy.ports().get('SSH')!);
    let toClient = 0;
    client.on('data', (d: Buffer) => { toClient += d.length; });
    await t.peer.takeType(T.STREAM_START);
    const firstGrant = await t.peer.takeType(WINDOW);
    assert.equal([firstGrant.serviceId, firstGrant.streamId, firstGrant.connectionId], ['SSH', 1, 1]);
    assert.equal(decodeWindow(firstGrant.payload), { limit: t.options.settings.creditWindowBytes, ack: false });
    assert.is(t.peer.received.filter((m) => m.type === HELLO).length, 2, 'the repeated HELLO of a known peer is not answered');

    const LIMIT = 100_000;
    t.peer.send(window('SSH', 1, 1, LIMIT, false));
    const ack = await t.peer.takeType(WINDOW);
    assert.equal(decodeWindow(ack.payload), { limit: t.options.settings.creditWindowBytes, ack: true }, 'the ACK: from here on its DATA is within our grants');

    const TOTAL = 1024 * 1024;
    const writing = writeAll(client, pattern(TOTAL, 5)).then(() => client.end());
    await t.peer.takeData(1, 1, LIMIT);
    // A barrier: 160 KiB for the client, which reads them; the proxy's next grant goes in the
    // connection's queue, after any DATA it sent before it.
    const back = Buffer.alloc(60 * 1024, 1);
    for (let i = 0; i < 3; i++) t.peer.send({ type: T.DATA, serviceId: 'SSH', streamId: 1, connectionId: 1, payload: back });
    const barrier = await t.peer.take((m) => m.type === WINDOW, 5000, 'the proxy\'s next grant');
    const upToBarrier = t.peer.received.slice(0, t.peer.received.indexOf(barrier));
    assert.is(dataBytes(upToBarrier, 1), LIMIT, 'exactly the grant, not a byte more');
    assert.is(toClient, 3 * back.length);

    t.peer.send(window('SSH', 1, 1, 2 * TOTAL, true));
    await t.peer.takeData(1, 1, TOTAL - LIMIT, 20_000);
    await within(writing, 10_000, 'the client wrote everything');
    const reset = await t.peer.takeType(T.CONNECTION_RESET);
    const at = t.peer.received.indexOf(reset);
    assert.is(dataBytes(t.peer.received.slice(0, at), 1), TOTAL, 'the reset after the last byte');
    const sent = Buffer.concat(t.peer.received.filter((m) => m.type === T.DATA && m.connectionId === 1).map((m) => Buffer.from(m.payload)));
    assert.is(patternSha256(sent.length, 5), patternSha256(TOTAL, 5));
    assert.ok(sent.equals(Buffer.concat([...pattern(TOTAL, 5)])), 'byte-exact');
  } finally {
    await t.close();
  }
});

credit('source: a new peer\'s HELLO in the middle of an upload is answered ahead of the queue; the upload stays behind the pacer (it used to be flushed onto the wire at once)', async () => {
  // Pings unanswered: the pacer holds the upload after its first window, for STALL_MS (2 s).
  const t = await setup('source', { SSH: 0 }, { extensions: [CREDIT_EXTENSION], autoPong: false });
  try {
    await t.peer.takeType(HELLO);
    const bulk = await connectTo(t.proxy.ports().get('SSH')!);
    const TOTAL = 1024 * 1024;
    void writeAll(bulk, pattern(TOTAL, 7));
    await t.peer.take((m) => m.type === T.DATA && m.connectionId === 1, 5000, 'the first DATA');
    t.peer.send(hello('SSH', '00000000000000d1'));
    await t.peer.takeType(HELLO);
    // A marker: one byte on a second connection passes the window (it sends little); every DATA
    // the proxy put on the wire before it has arrived by then.
    const marker = await connectTo(t.proxy.ports().get('SSH')!);
    marker.write('m');
    const mark = await t.peer.take((m) => m.type === T.DATA && m.connectionId === 2, 5000, 'the marker');
    const before = dataBytes(t.peer.received.slice(0, t.peer.received.indexOf(mark)), 1);
    assert.ok(before < 128 * 1024, `${before} bytes of the upload went before the marker (the first window and a message are allowed)`);
    bulk.destroy();
    marker.destroy();
  } finally {
    await t.close();
  }
});

/** Destination: a connection from the scripted source to a sink application. */
async function destinationSetup(settings: Partial<Settings> = {}): Promise<{ t: Setup; sink: SinkServer }> {
  const sink = await sinkServer();
  const t = await setup('destination', { SSH: sink.port }, { extensions: [CREDIT_EXTENSION] }, settings);
  await t.peer.takeType(HELLO);
  t.peer.send(hello('SSH', '00000000000000c1'));
  await t.peer.takeType(HELLO);
  return { t, sink };
}

credit('destination: more than the grant after the ACK resets that connection only; without an ACK the peer is not bound (backstop: the shared budget)', async () => {
  // The smallest window, so that it and one byte more fit in one WebSocket message: the proxy
  // handles them in one go, before its app can take any byte and earn the peer more credit.
  const { t, sink } = await destinationSetup({ creditWindowBytes: 65536 });
  try {
    const W = t.options.settings.creditWindowBytes;
    t.peer.send({ type: T.STREAM_START, serviceId: 'SSH', streamId: 1, connectionId: 1 });
    const grant = decodeWindow((await t.peer.takeType(WINDOW)).payload)!;
    assert.equal(grant, { limit: W, ack: false }, 'our first grant, on the START');
    t.peer.send(window('SSH', 1, 1, 1 << 20, true));
    assert.ok(decodeWindow((await t.peer.takeType(WINDOW)).payload)!.ack, 'acknowledged');
    const chunk = Buffer.alloc(64_000, 7);
    const data = (n: number): MessageInit => ({ type: T.DATA, serviceId: 'SSH', streamId: 1, connectionId: 1, payload: chunk.subarray(0, n) });
    t.peer.send(data(chunk.length), data(W - chunk.length), data(1));
    const reset = await t.peer.takeType(T.CONNECTION_RESET);
    assert.equal([reset.streamId, reset.connectionId], [1, 1]);
    await t.log.waitFor('more than the', 2000);
    const [first] = await within(sink.waitFor(1), 5000, 'the app sees its connection end');
    assert.is(first.bytes, W, 'what was within the grant was delivered');

    // Another connection of the same session, never acknowledged: unbounded, as without credit.
    t.peer.send({ type: T.CONNECTION_START, serviceId: 'SSH', streamId: 1, connectionId: 2 });
    await t.peer.take((m) => m.type === WINDOW && m.connectionId === 2);
    const MORE = 2 * W;
    for (let n = 0; n < MORE; n += chunk.length) t.peer.send({ type: T.DATA, serviceId: 'SSH', streamId: 1, connectionId: 2, payload: chunk.subarray(0, Math.min(chunk.length, MORE - n)) });
    t.peer.send({ type: T.CONNECTION_RESET, serviceId: 'SSH', streamId: 1, connectionId: 2 });
    const [, second] = await within(sink.waitFor(2), 5000, 'the second connection delivers and ends');
    assert.is(second.bytes, MORE);
    assert.is(t.peer.received.filter((m) => m.type === T.CONNECTION_RESET && m.connectionId === 2).length, 0, 'not reset');
  } finally {
    await t.close();
    await sink.close();
  }
});

credit('destination: malformed extension messages are dropped with a warning, the session goes on', async () => {
  const { t, sink } = await destinationSetup();
  try {
    t.peer.send({ type: HELLO, ignorable: true, serviceId: 'SSH', payload: Buffer.from([1, 2]) });
    t.peer.send({ type: WINDOW, ignorable: true, serviceId: 'SSH', streamId: 1, connectionId: 1, payload: Buffer.from([1]) });
    t.peer.send({ type: WINDOW, ignorable: true, serviceId: 'SSH', streamId: 9, connectionId: 9, payload: encodeWindow({ limit: 5, ack: true }) });
    t.peer.send({ type: T.STREAM_START, serviceId: 'SSH', streamId: 1, connectionId: 1 }, { type: T.DATA, serviceId: 'SSH', streamId: 1, connectionId: 1, payload: Buffer.from('ok') }, { type: T.CONNECTION_RESET, serviceId: 'SSH', streamId: 1, connectionId: 1 });
    const [got] = await within(sink.waitFor(1), 5000, 'the connection still works');
    assert.is(got.bytes, 2);
    assert.ok(t.log.has('Dropping a malformed CREDIT_HELLO'));
    assert.ok(t.log.has('Dropping a malformed CREDIT_WINDOW'));
  } finally {
    await t.close();
    await sink.close();
  }
});

credit('fallback: a service that closes with 1008 soon after our HELLO is reconnected to once, without the extension, and that is logged once', async () => {
  const service = await startFakeService();
  const options = fakeOptions(service, 'source', { SSH: 0 }, {}, { creditExtension: 'on' });
  const proxy = startProxy(options);
  try {
    const first = await service.peer(0);
    first.serviceIds('SSH');
    await first.takeType(HELLO);
    first.ws.close(1008, 'unknown message type 19536');
    const second = await service.peer(1, 10_000);
    assert.is(second.headers['localproxy-extensions'], undefined, 'the extension is off now');
    second.serviceIds('SSH');
    await within(proxy.ready, 5000, 'ready on the second connection');
    const client: Socket = await connectTo(proxy.ports().get('SSH')!);
    client.write('x');
    await second.takeType(T.STREAM_START);
    await second.takeData(1, 1, 1);
    assert.not.ok(second.received.some(isCredit), 'no HELLO on the second connection');
    assert.is(options.capture.count('reconnecting with tunneling.proxy.extensions.credit off'), 1);
    client.destroy();
  } finally {
    await within(proxy.close(), 3000, 'proxy close');
    await service.close();
  }
});

credit('a 1008 close after the peer answered our HELLO is the tunnel closing, not a refusal of the extension', async () => {
  const t = await setup('source', { SSH: 0 }, { extensions: [CREDIT_EXTENSION] });
  try {
    await t.peer.takeType(HELLO);
    t.peer.send(hello('SSH', '00000000000000d1'));
    await t.peer.takeType(HELLO);
    t.peer.ws.close(1008, 'policy');
    const outcome = await within(t.proxy.done, 5000, 'the proxy ends');
    assert.is(outcome.kind, 'tunnel-closed');
    assert.is(t.service.peers.length, 1, 'no reconnect');
  } finally {
    await t.service.close();
  }
});

credit.run();
