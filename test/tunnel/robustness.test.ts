/**
 * Decisions 3: whatever the service sends, the proxy neither crashes nor stops reading.
 * A seeded random storm of messages (every type, odd ids, unknown services, garbage frames),
 * then a well-formed exchange that must still work.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { once } from 'node:events';
import { connectTo, echoServer } from '../helpers/apps';
import { within } from '../helpers/wait';
import { MessageType as T, type MessageInit } from '../../src/protocol/message';
import { startProxy } from '../../src/tunnel/proxy';
import { startFakeService, fakeOptions } from './fake-service';

const storm = suite('message storm');

function rng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    return x % n;
  };
}

function randomMessages(seed: number, count: number): MessageInit[] {
  const r = rng(seed);
  const services = ['SSH1', 'SSH1', 'NOPE', ''];
  const out: MessageInit[] = [];
  for (let i = 0; i < count; i++) {
    out.push({
      type: r(10),
      streamId: r(4),
      connectionId: r(4),
      serviceId: services[r(services.length)],
      ignorable: r(2) === 1,
      payload: r(3) === 0 ? Buffer.alloc(r(2000), i) : undefined,
      availableServiceIds: r(8) === 0 ? ['SSH1'] : undefined,
    });
  }
  return out;
}

for (const mode of ['destination', 'source'] as const) {
  storm(`${mode}: 3000 random messages and garbage frames, then a normal exchange still works`, async () => {
    const app = await echoServer();
    const service = await startFakeService();
    const options = fakeOptions(service, mode, { SSH1: mode === 'destination' ? app.port : { kind: 'tcp', port: 0 } }, {}, { tcpConnectionRetryCount: 0 });
    const proxy = startProxy(options);
    try {
      const peer = await service.peer();
      peer.serviceIds('SSH1');
      await within(proxy.ready, 3000, 'ready');
      const held = mode === 'source' ? await Promise.all([connectTo(proxy.ports().get('SSH1')!), connectTo(proxy.ports().get('SSH1')!)]) : [];
      for (const s of held) s.on('error', () => {});
      for (const _ of held) await peer.take((m) => m.type === T.STREAM_START || m.type === T.CONNECTION_START);
      const msgs = randomMessages(mode === 'source' ? 7 : 11, 3000);
      for (let i = 0; i < msgs.length; i += 50) peer.send(...msgs.slice(i, i + 50));
      peer.ws.send(Buffer.from([0x00, 0x03, 0xff, 0xff, 0xff, 0x00, 0x00]));   // undecodable frame, then an empty one
      // A fresh, well-formed exchange on a stream id the storm never used. (The storm's
      // messages without a service id may have switched the service to the V1 form.)
      if (mode === 'destination') {
        peer.send({ type: T.STREAM_START, serviceId: 'SSH1', streamId: 100, connectionId: 50 }, { type: T.DATA, serviceId: 'SSH1', streamId: 100, connectionId: 50, payload: Buffer.from('alive') });
        const reply = await peer.take((m) => m.type === T.DATA && m.streamId === 100, 5000, 'DATA on stream 100');
        assert.is(Buffer.from(reply.payload).toString(), 'alive');
      } else {
        // Barrier: a source answers CONNECTION_START with CONNECTION_RESET, so once that answer
        // is back every message of the storm has been handled.
        peer.send({ type: T.CONNECTION_START, serviceId: 'SSH1', streamId: 1, connectionId: 777 });
        await peer.take((m) => m.type === T.CONNECTION_RESET && m.connectionId === 777, 5000, 'the barrier reply');
        const heldClosed = held.map((s) => (s.destroyed ? Promise.resolve() : once(s, 'close')));
        peer.send({ type: T.SESSION_RESET });
        await within(Promise.all(heldClosed), 3000, 'held connections reset');
        const fresh = await connectTo(proxy.ports().get('SSH1')!);
        const start = await peer.take((m) => m.type === T.STREAM_START || m.type === T.CONNECTION_START, 3000, 'start of a fresh stream');
        peer.send({ type: T.DATA, serviceId: 'SSH1', streamId: start.streamId, connectionId: start.connectionId, payload: Buffer.from('alive') });
        const [chunk] = await within(once(fresh, 'data'), 3000, 'data after the storm');
        assert.is(chunk.toString(), 'alive');
        fresh.destroy();
      }
      for (const s of held) s.destroy();
      const warnings = options.capture.lines.filter((l) => l.includes('[warning]'));
      assert.ok(warnings.length < 40, `warnings are not repeated per message (${warnings.length}):\n${[...new Set(warnings.map((l) => l.replace(/^.*\[warning\] /, '').replace(/\d+/g, 'N')))].join('\n')}`);
    } finally {
      await within(proxy.close(), 3000, 'close');
      await service.close();
      await app.close();
    }
  });
}

storm.run();
