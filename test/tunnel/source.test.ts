/**
 * Source side against a scripted service: listeners, id allocation, start messages, the
 * V1/V2 wire shapes and the detection of older destinations.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { once } from 'node:events';
import type { Socket } from 'node:net';
import { connectTo } from '../helpers/apps';
import { within } from '../helpers/wait';
import { MessageType as T, typeName } from '../../src/protocol/message';
import { startProxy, type LocalProxy } from '../../src/tunnel/proxy';
import type { ProxyOptions, Settings } from '../../src/index';
import { startFakeService, fakeOptions, type FakePeer, type FakeService, type LogCapture } from './fake-service';

const source = suite('source');

interface Setup { service: FakeService; proxy: LocalProxy; peer: FakePeer; log: LogCapture; sockets: Socket[]; connect(id?: string): Promise<Socket>; close(): Promise<void> }

async function setup(services: Record<string, number>, ids: string[], extra: Partial<ProxyOptions> = {}, settings: Partial<Settings> = {}): Promise<Setup> {
  const service = await startFakeService();
  const options = fakeOptions(service, 'source', Object.fromEntries(Object.entries(services).map(([k, p]) => [k, { kind: 'tcp', port: p }])), extra, settings);
  const proxy = startProxy(options);
  const peer = await service.peer();
  peer.serviceIds(...ids);
  await within(proxy.ready, 5000, 'source ready');
  const sockets: Socket[] = [];
  return {
    service, proxy, peer, log: options.capture, sockets,
    async connect(id?: string) {
      const ports = proxy.ports();
      const socket = await connectTo(id === undefined ? [...ports.values()][0] : ports.get(id)!);
      socket.on('error', () => {});
      sockets.push(socket);
      return socket;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await within(proxy.close(), 3000, 'proxy close');
      await service.close();
    },
  };
}

source('binds one listener per service, logs Listening, sends STREAM_START then CONNECTION_START with fresh ids', async () => {
  const t = await setup({ SSH1: 0, HTTP1: 0 }, ['SSH1', 'HTTP1']);
  try {
    const ports = t.proxy.ports();
    assert.equal([...ports.keys()].sort(), ['HTTP1', 'SSH1']);
    assert.ok(t.log.has(`Listening for new connection on port ${ports.get('SSH1')}`));
    assert.ok(t.log.has(`Listen port assigned for service id SSH1. New port mapping: SSH1 = ${ports.get('SSH1')}`));
    const a = await t.connect('SSH1');
    const first = await t.peer.takeType(T.STREAM_START);
    assert.equal([first.serviceId, first.streamId, first.connectionId], ['SSH1', 1, 1]);
    await t.connect('SSH1');
    const second = await t.peer.takeType(T.CONNECTION_START);
    assert.equal([second.serviceId, second.streamId, second.connectionId], ['SSH1', 1, 2]);
    await t.connect('HTTP1');
    const other = await t.peer.takeType(T.STREAM_START);
    assert.equal([other.serviceId, other.streamId, other.connectionId], ['HTTP1', 1, 1]);
    a.write('hi');
    const data = await t.peer.takeData(1, 1, 2);
    assert.is(data.toString(), 'hi');
    // DATA from the service reaches the right socket.
    t.peer.send({ type: T.DATA, serviceId: 'SSH1', streamId: 1, connectionId: 1, payload: Buffer.from('back') });
    const [chunk] = await within(once(a, 'data'), 3000, 'data on the app socket');
    assert.is(chunk.toString(), 'back');
    a.end();
    const reset = await t.peer.takeType(T.CONNECTION_RESET);
    assert.equal([reset.serviceId, reset.streamId, reset.connectionId], ['SSH1', 1, 1]);
  } finally {
    await t.close();
  }
});

source('stream and connection ids never repeat: after a STREAM_RESET the next connection starts stream 2', async () => {
  const t = await setup({ SSH1: 0 }, ['SSH1']);
  try {
    const a = await t.connect();
    await t.peer.takeType(T.STREAM_START);
    const aClosed = once(a, 'close');
    t.peer.send({ type: T.STREAM_RESET, serviceId: 'SSH1', streamId: 1 });
    await within(aClosed, 3000, 'app socket closed by STREAM_RESET');
    await t.connect();
    const next = await t.peer.takeType(T.STREAM_START);
    assert.equal([next.streamId, next.connectionId], [2, 2]);
    // The WebSocket is still read after the STREAM_RESET (fixes reference bug 9.3#21).
    await t.connect();
    const third = await t.peer.takeType(T.CONNECTION_START);
    assert.equal([third.streamId, third.connectionId], [2, 3]);
  } finally {
    await t.close();
  }
});

source('issue 11: while the destination has not shown it speaks V3, the only connection closing before it sent anything ends the stream (STREAM_RESET); the next starts stream 2', async () => {
  const t = await setup({ SSH1: 0 }, ['SSH1']);
  try {
    const a = await t.connect();
    await t.peer.takeType(T.STREAM_START);
    // A port check that writes a little: a C++ destination with -y V1/V2 wedges on a CONNECTION_RESET.
    a.end('last');
    assert.is((await t.peer.takeData(1, 1, 4)).toString(), 'last');
    const end = await t.peer.take((m) => m.type === T.STREAM_RESET || m.type === T.CONNECTION_RESET, 5000, 'the end of the first connection');
    assert.equal([typeName(end.type), end.serviceId, end.streamId], ['STREAM_RESET', 'SSH1', 1]);
    await t.connect();
    const next = await t.peer.take((m) => m.type === T.STREAM_START || m.type === T.CONNECTION_START, 5000, 'the second start');
    assert.equal([typeName(next.type), next.streamId, next.connectionId], ['STREAM_START', 2, 2]);
  } finally {
    await t.close();
  }
});

source('once the destination has sent with a connection id (V3), a closing connection sends CONNECTION_RESET and the next joins the stream (a C++ V3 destination drops a new STREAM_START during data transfer, reference bug 9.3#20)', async () => {
  const t = await setup({ SSH1: 0 }, ['SSH1']);
  try {
    const a = await t.connect();
    await t.peer.takeType(T.STREAM_START);
    const greeted = once(a, 'data');
    t.peer.send({ type: T.DATA, serviceId: 'SSH1', streamId: 1, connectionId: 1, payload: Buffer.from('hello') });
    await within(greeted, 3000, 'the greeting reaches the app');
    a.end();
    const end = await t.peer.take((m) => m.type === T.STREAM_RESET || m.type === T.CONNECTION_RESET, 5000, 'the end of the first connection');
    assert.equal([typeName(end.type), end.streamId, end.connectionId], ['CONNECTION_RESET', 1, 1]);
    const b = await t.connect();
    const next = await t.peer.take((m) => m.type === T.STREAM_START || m.type === T.CONNECTION_START, 5000, 'the second start');
    assert.equal([typeName(next.type), next.streamId, next.connectionId], ['CONNECTION_START', 1, 2]);
    // Once the peer ends the stream, the next connection starts a new one.
    const bClosed = once(b, 'close');
    t.peer.send({ type: T.STREAM_RESET, serviceId: 'SSH1', streamId: 1 });
    await within(bClosed, 3000, 'the stream reset closes the second connection');
    await t.connect();
    const third = await t.peer.takeType(T.STREAM_START);
    assert.equal([third.streamId, third.connectionId], [2, 3]);
  } finally {
    await t.close();
  }
});

source('fixes reference bug 9.4#35: beyond max_active_connections the extra connection is refused with a log line', async () => {
  const t = await setup({ SSH1: 0 }, ['SSH1'], {}, { maxActiveConnections: 2 });
  try {
    await t.connect();
    await t.connect();
    await t.peer.takeType(T.STREAM_START);
    await t.peer.takeType(T.CONNECTION_START);
    const extra = await t.connect();
    await within(once(extra, 'close'), 3000, 'extra connection closed');
    assert.ok(t.log.has('max_active_connections (2) reached'));
    const first = t.sockets[0];
    first.write('alive');
    assert.is((await t.peer.takeData(1, 1, 5)).toString(), 'alive');
  } finally {
    await t.close();
  }
});

source('fixes reference bug 9.3#44a: CONNECTION_START sent to a source is answered with CONNECTION_RESET; STREAM_START is ignored', async () => {
  const t = await setup({ SSH1: 0 }, ['SSH1']);
  try {
    const a = await t.connect();
    await t.peer.takeType(T.STREAM_START);
    t.peer.send({ type: T.CONNECTION_START, serviceId: 'SSH1', streamId: 1, connectionId: 9 });
    const reset = await t.peer.takeType(T.CONNECTION_RESET);
    assert.is(reset.connectionId, 9);
    t.peer.send({ type: T.STREAM_START, serviceId: 'SSH1', streamId: 5, connectionId: 1 });
    a.write('ok');
    assert.is((await t.peer.takeData(1, 1, 2)).toString(), 'ok');
    assert.ok(t.log.has('Ignoring STREAM_START received in source mode'));
  } finally {
    await t.close();
  }
});

source('unknown message types: ignorable dropped silently, not ignorable warned once; UNKNOWN (0) and unknown service ids never stall', async () => {
  const t = await setup({ SSH1: 0 }, ['SSH1']);
  try {
    const a = await t.connect();
    await t.peer.takeType(T.STREAM_START);
    t.peer.send({ type: 42, ignorable: true, streamId: 1 });
    t.peer.send({ type: 43, streamId: 1 });
    t.peer.send({ type: 43, streamId: 1 });
    t.peer.send({ type: T.UNKNOWN, streamId: 1 });
    t.peer.send({ type: T.DATA, serviceId: 'NOPE', streamId: 1, connectionId: 1, payload: Buffer.from('x') });
    t.peer.send({ type: T.DATA, serviceId: 'SSH1', streamId: 1, connectionId: 99, payload: Buffer.from('x') });
    t.peer.send({ type: T.DATA, serviceId: 'SSH1', streamId: 1, connectionId: 1, payload: Buffer.from('through') });
    const [chunk] = await within(once(a, 'data'), 3000, 'DATA after the odd messages');
    assert.is(chunk.toString(), 'through');
    assert.is(t.log.lines.filter((l) => l.includes('[warning]') && l.includes('TYPE_43')).length, 1, 'warned once for type 43');
    assert.not.ok(t.log.has('TYPE_42'), 'ignorable type not warned');
    assert.ok(t.log.has('UNKNOWN'));
    assert.ok(t.log.has('unknown service id NOPE'));
  } finally {
    await t.close();
  }
});

source('warnings about peer-chosen ids are bounded: 1000 unknown service ids and 1000 unknown types log at most 100 warnings; data still flows', async () => {
  const t = await setup({ SSH1: 0 }, ['SSH1']);
  try {
    const a = await t.connect();
    await t.peer.takeType(T.STREAM_START);
    for (let i = 0; i < 1000; i += 100) {
      const burst = [];
      for (let j = i; j < i + 100; j++) {
        burst.push({ type: T.DATA, serviceId: `NOPE${j}`, streamId: 1, connectionId: 1, payload: Buffer.from('x') });
        burst.push({ type: 1000 + j, streamId: 1 });
      }
      t.peer.send(...burst);
    }
    t.peer.send({ type: T.DATA, serviceId: 'SSH1', streamId: 1, connectionId: 1, payload: Buffer.from('through') });
    const [chunk] = await within(once(a, 'data'), 3000, 'DATA after the odd messages');
    assert.is(chunk.toString(), 'through');
    const warnings = t.log.lines.filter((l) => l.includes('[warning]')).length;
    assert.ok(warnings <= 100, `${warnings} warnings`);
    assert.ok(t.log.has('unknown service id NOPE999'), 'the rest is still logged at debug level');
  } finally {
    await t.close();
  }
});

source('-y V1: no service id and no connection id on the wire, one connection at a time, STREAM_RESET on close', async () => {
  const t = await setup({ '': 0 }, ['SSH1'], { clientType: 'V1' });
  try {
    assert.equal([...t.proxy.ports().keys()], ['SSH1'], 'the V1 form is renamed after the only service id');
    const a = await t.connect();
    const start = await t.peer.takeType(T.STREAM_START);
    assert.equal([start.serviceId, start.streamId, start.connectionId], ['', 1, 0]);
    // Fixes reference bug 9.4#36: a second concurrent connection is refused, the first goes on.
    const b = await t.connect();
    await within(once(b, 'close'), 3000, 'second connection refused');
    assert.ok(t.log.has('allows one connection at a time'));
    t.peer.send({ type: T.DATA, streamId: 1, payload: Buffer.from('v1') });
    const [chunk] = await within(once(a, 'data'), 3000, 'data');
    assert.is(chunk.toString(), 'v1');
    a.write('up');
    const up = await t.peer.takeType(T.DATA);
    assert.equal([up.serviceId, up.connectionId, Buffer.from(up.payload).toString()], ['', 0, 'up']);
    a.end();
    const reset = await t.peer.takeType(T.STREAM_RESET);
    assert.equal([reset.serviceId, reset.streamId, reset.connectionId], ['', 1, 0]);
    await within(once(a, 'close'), 3000, 'closed');
    await t.connect();
    const again = await t.peer.takeType(T.STREAM_START);
    assert.is(again.streamId, 2);
  } finally {
    await t.close();
  }
});

source('-y V2: service ids but no connection ids; every connection gets its own STREAM_START', async () => {
  const t = await setup({ SSH1: 0 }, ['SSH1'], { clientType: 'V2' });
  try {
    const a = await t.connect();
    const start = await t.peer.takeType(T.STREAM_START);
    assert.equal([start.serviceId, start.streamId, start.connectionId], ['SSH1', 1, 0]);
    a.end();
    const reset = await t.peer.takeType(T.STREAM_RESET);
    assert.equal([reset.serviceId, reset.streamId, reset.connectionId], ['SSH1', 1, 0]);
    await within(once(a, 'close'), 3000, 'closed');
    await t.connect();
    const next = await t.peer.takeType(T.STREAM_START);
    assert.equal([next.serviceId, next.streamId, next.connectionId], ['SSH1', 2, 0]);
  } finally {
    await t.close();
  }
});

source('without -y: a V2 destination (DATA without connection id) is detected once, and later connections get STREAM_START', async () => {
  const t = await setup({ SSH1: 0 }, ['SSH1']);
  try {
    const a = await t.connect();
    await t.peer.takeType(T.STREAM_START);
    t.peer.send({ type: T.DATA, serviceId: 'SSH1', streamId: 1, payload: Buffer.from('hi') });
    t.peer.send({ type: T.DATA, serviceId: 'SSH1', streamId: 1, payload: Buffer.from('!!') });
    let got = '';
    while (got.length < 4) got += (await within(once(a, 'data'), 3000, 'data'))[0].toString();
    assert.is(got, 'hi!!');
    assert.is(t.log.count('V2 message format'), 1, 'detection logged once');
    a.write('x');
    const up = await t.peer.takeType(T.DATA);
    assert.is(up.connectionId, 0);
    a.end();
    const reset = await t.peer.takeType(T.STREAM_RESET);
    assert.is(reset.streamId, 1);
    await within(once(a, 'close'), 3000, 'closed');
    await t.connect();
    const next = await t.peer.takeType(T.STREAM_START);
    assert.equal([next.streamId, next.connectionId], [2, 0]);
  } finally {
    await t.close();
  }
});

source('without -y: a V1 destination (no service id) is detected by stream id', async () => {
  const t = await setup({ SSH1: 0 }, ['SSH1']);
  try {
    const a = await t.connect();
    await t.peer.takeType(T.STREAM_START);
    t.peer.send({ type: T.DATA, streamId: 1, payload: Buffer.from('old') });
    const [chunk] = await within(once(a, 'data'), 3000, 'data');
    assert.is(chunk.toString(), 'old');
    assert.is(t.log.count('V1 message format'), 1);
    a.write('y');
    const up = await t.peer.takeType(T.DATA);
    assert.equal([up.serviceId, up.connectionId], ['', 0]);
  } finally {
    await t.close();
  }
});

source('flush before close: 30 × 60000-byte DATA then CONNECTION_RESET → the app reads all 1,800,000 bytes, then EOF', async () => {
  const t = await setup({ SSH1: 0 }, ['SSH1']);
  try {
    const a = await t.connect();
    await t.peer.takeType(T.STREAM_START);
    let bytes = 0;
    a.on('data', (d: Buffer) => { bytes += d.length; });
    const ended = once(a, 'end');
    for (let i = 0; i < 30; i++) t.peer.send({ type: T.DATA, serviceId: 'SSH1', streamId: 1, connectionId: 1, payload: Buffer.alloc(60000, i) });
    t.peer.send({ type: T.CONNECTION_RESET, serviceId: 'SSH1', streamId: 1, connectionId: 1 });
    await within(ended, 10_000, 'EOF');
    assert.is(bytes, 1_800_000);
  } finally {
    await t.close();
  }
});

source('a 1.0 subprotocol has no SERVICE_IDS: the source binds at once and speaks the V1 form', async () => {
  const service = await startFakeService();
  const options = fakeOptions(service, 'source', { '': { kind: 'tcp', port: 0 } }, {}, { subprotocol: 'aws.iot.securetunneling-1.0' });
  const proxy = startProxy(options);
  try {
    const peer = await service.peer();
    await within(proxy.ready, 3000, 'ready without SERVICE_IDS');
    const a = await connectTo(proxy.ports().get('')!);
    const start = await peer.takeType(T.STREAM_START);
    assert.equal([start.serviceId, start.streamId, start.connectionId], ['', 1, 0]);
    a.destroy();
  } finally {
    await within(proxy.close(), 3000, 'close');
    await service.close();
  }
});

source('SERVICE_IDS mismatch ends the source as refused and nothing is bound', async () => {
  const service = await startFakeService();
  const options = fakeOptions(service, 'source', { SSH1: { kind: 'tcp', port: 0 } });
  const proxy = startProxy(options);
  try {
    const peer = await service.peer();
    peer.serviceIds('RDP');
    const outcome = await within(proxy.done, 5000, 'done');
    assert.is(outcome.kind, 'refused');
    assert.match(outcome.message, /\[RDP\].*\[SSH1\]/);
    assert.is(proxy.ports().size, 0);
  } finally {
    await proxy.close();
    await service.close();
  }
});

source.run();
