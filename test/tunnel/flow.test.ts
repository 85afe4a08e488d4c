/**
 * Flow control (Decisions 4): fair interleaving and coalescing on a real `ws` pair, and the
 * inbound budget through a scripted service with applications that do not read.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { once } from 'node:events';
import { createServer, type Socket } from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';
import { encodeFrame, FrameDecoder } from '../../src/protocol/framing';
import { MessageType as T, type Message } from '../../src/protocol/message';
import { Outbound, type Producer } from '../../src/tunnel/outbound';
import { InboundBudget } from '../../src/tunnel/inbound';
import { Pacer } from '../../src/flow/pacer';
import { ServiceState } from '../../src/tunnel/service';
import type { ServiceTarget } from '../../src/options';
import { silentLogger } from '../../src/log';
import { startProxy } from '../../src/tunnel/proxy';
import { echoServer } from '../helpers/apps';
import { within } from '../helpers/wait';
import { startFakeService, fakeOptions } from './fake-service';

const flow = suite('flow control');

async function wsPair(): Promise<{ client: WebSocket; received: Message[]; messages: number[]; arrived(n: number): Promise<void>; close(): Promise<void> }> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await once(wss, 'listening');
  const received: Message[] = [];
  const messages: number[] = [];
  const decoder = new FrameDecoder();
  let waiters: Array<() => void> = [];
  wss.on('connection', (ws) => ws.on('message', (data: Buffer) => {
    messages.push(data.length);
    decoder.push(data, (m) => received.push(m), (err) => { throw err; });
    const w = waiters;
    waiters = [];
    for (const f of w) f();
  }));
  const client = new WebSocket(`ws://127.0.0.1:${(wss.address() as { port: number }).port}`);
  await once(client, 'open');
  return {
    client, received, messages,
    async arrived(n) {
      while (received.length < n) await within(new Promise<void>((r) => waiters.push(r)), 5000, `${n} frames`);
    },
    async close() {
      client.terminate();
      for (const c of wss.clients) c.terminate();
      await new Promise<void>((r) => wss.close(() => r()));
    },
  };
}

/** Resume happens in a send callback: re-check on each event-loop turn, failing after `ms`. */
async function turnsUntil(check: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${ms} ms`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

function producer(): Producer {
  return { onQueueEmpty() {} };
}

flow('small frames queued in one turn are coalesced into one WebSocket message (after a lone first one)', async () => {
  const pair = await wsPair();
  try {
    const out = new Outbound(pair.client, 1 << 20);
    const producers = Array.from({ length: 100 }, producer);
    producers.forEach((p, i) => out.push(p, encodeFrame({ type: T.DATA, streamId: 1, connectionId: i + 1, payload: Buffer.from('k') })));
    await pair.arrived(100);
    // The first found nothing queued and went at once; the 99 pushed after it in the same turn share one message.
    assert.equal(pair.messages.length, 2);
    assert.is(pair.messages[0], encodeFrame({ type: T.DATA, streamId: 1, connectionId: 1, payload: Buffer.from('k') }).length);
    assert.equal(pair.received.map((m) => m.connectionId), Array.from({ length: 100 }, (_, i) => i + 1));
  } finally {
    await pair.close();
  }
});

flow('a lone small frame is handed to the WebSocket at once, not on the next turn (issue 15)', async () => {
  const pair = await wsPair();
  try {
    const out = new Outbound(pair.client, 1 << 20);
    const handed: number[] = [];
    const send = pair.client.send.bind(pair.client);
    pair.client.send = ((data: Buffer, options: object, cb?: (err?: Error) => void) => {
      handed.push(data.length);
      send(data, options, cb);
    }) as typeof pair.client.send;
    const frame = encodeFrame({ type: T.DATA, streamId: 1, connectionId: 1, payload: Buffer.from('k') });
    out.push(producer(), frame);
    assert.equal(handed, [frame.length], 'handed to ws within push()');
    await pair.arrived(1);
    // Nothing was queued meanwhile: the turn scheduled after it sends nothing more.
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(handed, [frame.length]);
  } finally {
    await pair.close();
  }
});

flow('a 64 KiB read at full rate goes as one WebSocket message of two DATA frames; on a slow link as DATA of the pacer\'s size (issue 15)', async () => {
  const pair = await wsPair();
  try {
    const read = Buffer.alloc(65536, 7);
    // Pacing off: DATA at the full 64512 bytes; then a pacer whose DATA size is 16384 (a slow link).
    for (const maxMessageBytes of [64512, 16384]) {
      const outbound = new Outbound(pair.client, 1 << 20, new Pacer({ targetDelayMs: 0, maxMessageBytes }));
      const flowOf = { outbound, inbound: new InboundBudget(undefined, Infinity), granted: new InboundBudget(undefined, Infinity), maxPayloadBytes: 64512, source: true, log: silentLogger() };
      const svc = new ServiceState('SSH', { kind: 'tcp', port: 22 } as ServiceTarget, 3, flowOf);
      svc.sendData(svc.open(1, 1), read);
      await pair.arrived(maxMessageBytes === 64512 ? 2 : 6);
    }
    assert.equal(pair.received.map((m) => m.payload.length), [64512, 1024, 16384, 16384, 16384, 16384]);
    assert.ok(Buffer.concat(pair.received.slice(0, 2).map((m) => m.payload)).equals(read));
    assert.equal(pair.messages.length, 5, 'the first two DATA in one WebSocket message, the others one each');
  } finally {
    await pair.close();
  }
});

flow('round-robin: an interactive frame is not queued behind a bulk backlog', async () => {
  const pair = await wsPair();
  try {
    const out = new Outbound(pair.client, 64 << 20);
    const bulk = producer();
    const interactive = producer();
    for (let i = 0; i < 40; i++) out.push(bulk, encodeFrame({ type: T.DATA, streamId: 1, connectionId: 1, payload: Buffer.alloc(60000) }));
    out.push(interactive, encodeFrame({ type: T.DATA, streamId: 1, connectionId: 2, payload: Buffer.from('!') }));
    await pair.arrived(41);
    const at = pair.received.findIndex((m) => m.connectionId === 2);
    assert.ok(at <= 2, `interactive frame arrived at position ${at} of 41`);
    assert.ok(pair.messages.every((n) => n <= 131076), 'WebSocket messages within 131076 bytes');
  } finally {
    await pair.close();
  }
});

flow('sources are paused above the high-water mark and resumed below half of it', async () => {
  const pair = await wsPair();
  try {
    const out = new Outbound(pair.client, 256 * 1024);
    const states: boolean[] = [];
    out.register({ setOutboundPaused: (paused: boolean) => states.push(paused) });
    const p = producer();
    for (let i = 0; i < 10; i++) out.push(p, encodeFrame({ type: T.DATA, streamId: 1, connectionId: 1, payload: Buffer.alloc(60000) }));
    assert.equal(states, [true]);
    await pair.arrived(10);
    await turnsUntil(() => states.length >= 2, 2000, 'resume');
    assert.equal(states, [true, false]);
  } finally {
    await pair.close();
  }
});

flow('above the high-water mark a bulk connection is paused, an interactive one keeps flowing', async () => {
  const pair = await wsPair();
  try {
    const out = new Outbound(pair.client, 256 * 1024);
    const states = { bulk: [] as boolean[], interactive: [] as boolean[] };
    const bulk = { ...producer(), setOutboundPaused: (p: boolean) => states.bulk.push(p) };
    const interactive = { ...producer(), setOutboundPaused: (p: boolean) => states.interactive.push(p) };
    out.register(bulk);
    out.register(interactive);
    for (let i = 0; i < 6; i++) out.push(bulk, encodeFrame({ type: T.DATA, streamId: 1, connectionId: 1, payload: Buffer.alloc(60000) }));
    out.push(interactive, encodeFrame({ type: T.DATA, streamId: 1, connectionId: 2, payload: Buffer.from('k') }));
    assert.equal(states.bulk, [true]);
    assert.equal(states.interactive, [], 'the interactive connection was never paused');
    await pair.arrived(7);
    await turnsUntil(() => states.bulk.length >= 2, 2000, 'resume');
    assert.equal(states.bulk, [true, false]);
  } finally {
    await pair.close();
  }
});

flow('one application that does not read does not stall another connection (inbound budget not reached)', async () => {
  const stuckSockets: Socket[] = [];
  const stuck = createServer((s) => { s.pause(); stuckSockets.push(s); });
  stuck.listen(0, '127.0.0.1');
  await once(stuck, 'listening');
  const echo = await echoServer();
  const service = await startFakeService();
  const options = fakeOptions(service, 'destination', { SLOW: (stuck.address() as { port: number }).port, FAST: echo.port });
  const proxy = startProxy(options);
  try {
    const peer = await service.peer();
    peer.serviceIds('SLOW', 'FAST');
    peer.send({ type: T.STREAM_START, serviceId: 'SLOW', streamId: 1, connectionId: 1 }, { type: T.STREAM_START, serviceId: 'FAST', streamId: 1, connectionId: 1 });
    for (let i = 0; i < 100; i++) peer.send({ type: T.DATA, serviceId: 'SLOW', streamId: 1, connectionId: 1, payload: Buffer.alloc(60000, 1) });
    peer.send({ type: T.DATA, serviceId: 'FAST', streamId: 1, connectionId: 1, payload: Buffer.from('ping') });
    assert.is((await peer.takeData(1, 1, 4)).toString(), 'ping');
  } finally {
    for (const s of stuckSockets) s.destroy();
    await within(proxy.close(), 3000, 'close');
    await service.close();
    await echo.close();
    stuck.close();
  }
});

flow('above the inbound budget the WebSocket is paused, and every byte still arrives once the app reads', async () => {
  let total = 0;
  let app: Socket | undefined;
  let gotSocket!: (s: Socket) => void;
  const gotApp = new Promise<Socket>((resolve) => { gotSocket = resolve; });
  const stuckServer = createServer((s) => { s.pause(); app = s; gotSocket(s); });
  stuckServer.listen(0, '127.0.0.1');
  await once(stuckServer, 'listening');
  const service = await startFakeService();
  const options = fakeOptions(service, 'destination', { SSH1: (stuckServer.address() as { port: number }).port }, {}, { inboundBudgetBytes: 1 << 20 });
  const proxy = startProxy(options);
  try {
    const peer = await service.peer();
    peer.serviceIds('SSH1');
    peer.send({ type: T.STREAM_START, serviceId: 'SSH1', streamId: 1, connectionId: 1 });
    const n = 300;   // 18 MB, well past the kernel's socket buffers and the 1 MiB budget
    for (let i = 0; i < n; i++) peer.send({ type: T.DATA, serviceId: 'SSH1', streamId: 1, connectionId: 1, payload: Buffer.alloc(60000, i % 256) });
    peer.send({ type: T.CONNECTION_RESET, serviceId: 'SSH1', streamId: 1, connectionId: 1 });
    const socket = await within(gotApp, 5000, 'app connection');
    const ended = once(socket, 'end');
    socket.on('data', (d: Buffer) => { total += d.length; });
    socket.resume();
    await within(ended, 20_000, 'all data then EOF');
    assert.is(total, n * 60000);
  } finally {
    app?.destroy();
    await within(proxy.close(), 3000, 'close');
    await service.close();
    stuckServer.close();
  }
});

flow.run();
