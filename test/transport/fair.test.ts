/**
 * FairReader on a real WebSocket over loopback: a peer's input gets at most a turn's budget of
 * work per event-loop turn, and nothing is lost, reordered or left paused.
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import WebSocket, { WebSocketServer } from 'ws';
import { socketOf } from '../../src/flow/writer';
import { FairReader, MESSAGE_COST, WORK_PER_TURN } from '../../src/transport/fair';
import { within } from '../helpers/wait';

interface Ctx { server?: Server; wss?: WebSocketServer; client?: WebSocket }
const fair = suite<Ctx>('per-turn work bound on a WebSocket reader');

fair.before.each((ctx) => {
  ctx.server = undefined;
  ctx.wss = undefined;
  ctx.client = undefined;
});
fair.after.each(async (ctx) => {
  ctx.client?.terminate();
  for (const ws of ctx.wss?.clients ?? []) ws.terminate();
  ctx.wss?.close();
  if (ctx.server) await new Promise<void>((resolve) => ctx.server!.close(() => resolve()));
});

/** A connected pair: the server side (read through a FairReader by the test) and a client. */
async function pair(ctx: Ctx): Promise<{ server: WebSocket; client: WebSocket }> {
  const server = ctx.server = createServer();
  const wss = ctx.wss = new WebSocketServer({ server, autoPong: false, perMessageDeflate: false });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const accepted = once(wss, 'connection');
  const client = ctx.client = new WebSocket(`ws://127.0.0.1:${(server.address() as { port: number }).port}`, { perMessageDeflate: false });
  await within(once(client, 'open'), 5000, 'open');
  const [ws] = await within(accepted, 5000, 'accept') as [WebSocket];
  return { server: ws, client };
}

/** Counts event-loop turns: each delivery can be told which turn it happened in. */
function turnClock(): { now: () => number; stop: () => void } {
  let turn = 0;
  let running = true;
  const next = (): void => {
    turn++;
    if (running) setImmediate(next);
  };
  setImmediate(next);
  return { now: () => turn, stop: () => { running = false; } };
}

/** `count` messages of 1 to 1,500 bytes holding a counting byte stream, with a ping after every 500th. */
function sendStream(client: WebSocket, count: number): { bytes: Buffer; pingsAt: number[] } {
  const parts: Buffer[] = [];
  const pingsAt: number[] = [];
  let offset = 0;
  for (let i = 0; i < count; i++) {
    const size = i % 97 === 0 ? 1500 : 1 + (i % 3);
    const part = Buffer.alloc(size);
    for (let k = 0; k < size; k++) part[k] = (offset + k) & 0xff;
    client.send(part);
    parts.push(part);
    offset += size;
    if (i % 500 === 499) {
      client.ping(String(offset));
      pingsAt.push(offset);
    }
  }
  return { bytes: Buffer.concat(parts), pingsAt };
}

fair('a flood of small messages: no turn delivers more than its budget, and every byte and ping arrives in order', async (ctx) => {
  const { server, client } = await pair(ctx);
  const clock = turnClock();
  const received: Buffer[] = [];
  let bytes = 0;
  const pingsAt: number[] = [];
  const workByTurn = new Map<number, number>();
  const charge = (cost: number) => workByTurn.set(clock.now(), (workByTurn.get(clock.now()) ?? 0) + cost);
  let done: () => void;
  const all = new Promise<void>((resolve) => { done = resolve; });
  let expected = Infinity;
  const reader = new FairReader(server, {
    message: (data, isBinary) => {
      assert.ok(isBinary);
      received.push(Buffer.from(data));
      bytes += data.length;
      charge(data.length + MESSAGE_COST);
      if (bytes >= expected) done();
    },
    ping: (data) => {
      pingsAt.push(Number(data.toString()));
      assert.is(Number(data.toString()), bytes, 'a ping arrives after exactly the bytes sent before it');
      charge(data.length + MESSAGE_COST);
    },
  });
  reader.start();
  const sent = sendStream(client, 30_000);
  expected = sent.bytes.length;
  await within(all, 20_000, `all ${expected} bytes (got ${bytes})`);
  clock.stop();
  assert.ok(Buffer.concat(received).equals(sent.bytes), 'the byte stream arrived unchanged and in order');
  assert.equal(pingsAt, sent.pingsAt);
  // A turn may go over by the one message that crossed the budget, never more.
  const worst = Math.max(...workByTurn.values());
  assert.ok(worst <= WORK_PER_TURN + 1500 + MESSAGE_COST, `a turn delivered ${worst} of work (budget ${WORK_PER_TURN})`);
  assert.ok(reader.deferredTurns > 0, 'the flood was held back at least once');
  assert.is(reader.waiting, 0);
  assert.not.ok(socketOf(server)!.isPaused(), 'the socket is read again once nothing waits');
});

fair('messages of 513 to 1023 bytes held back are merged without overflowing the first merge buffer', async (ctx) => {
  // The first message of a merge run used to be copied into a 512-byte buffer whatever its
  // size: a held-back 600-byte message threw a RangeError out of ws's message event.
  const { server, client } = await pair(ctx);
  const received: Buffer[] = [];
  let bytes = 0;
  let done: () => void;
  const all = new Promise<void>((resolve) => { done = resolve; });
  const parts: Buffer[] = [];
  for (let i = 0; i < 3000; i++) {
    const part = Buffer.alloc(513 + ((i * 37) % 511), i & 0xff);
    parts.push(part);
  }
  const expected = Buffer.concat(parts);
  const reader = new FairReader(server, {
    message: (data) => {
      received.push(Buffer.from(data));
      bytes += data.length;
      if (bytes >= expected.length) done();
    },
  });
  reader.start();
  for (const part of parts) client.send(part);
  await within(all, 20_000, `all ${expected.length} bytes (got ${bytes})`);
  assert.ok(reader.deferredTurns > 0, 'some of them were held back');
  assert.ok(Buffer.concat(received).equals(expected), 'every byte, in order');
});

fair('the owner\'s own pause outlasts a held-back read: nothing more is read until the owner resumes', async (ctx) => {
  const { server, client } = await pair(ctx);
  let bytes = 0;
  let paused = false;
  let bytesWhenDrained = -1;
  let resolveDrained: () => void;
  const drained = new Promise<void>((resolve) => { resolveDrained = resolve; });
  let resolveAll: () => void;
  const all = new Promise<void>((resolve) => { resolveAll = resolve; });
  const sentBytes = 20_000 * 2;
  const reader = new FairReader(server, {
    message: (data) => {
      bytes += data.length;
      // The owner stops reading (flow control) once the flood is being held back.
      if (!paused && reader.deferredTurns > 0) {
        paused = true;
        server.pause();
        // Once what was held back is delivered, the socket must stay paused: check after each turn.
        const check = (): void => {
          if (reader.waiting > 0) return void setImmediate(check);
          bytesWhenDrained = bytes;
          resolveDrained();
        };
        setImmediate(check);
      }
      if (bytes >= sentBytes) resolveAll();
    },
  });
  reader.start();
  for (let i = 0; i < 20_000; i++) client.send(Buffer.of(1, 2));
  await within(drained, 10_000, 'the held-back messages delivered');
  const socket = socketOf(server)!;
  assert.ok(server.isPaused && socket.isPaused(), 'the socket stays paused for the owner');
  assert.ok(bytesWhenDrained < sentBytes, 'not everything had arrived before the owner paused');
  server.resume();
  await within(all, 10_000, `all ${sentBytes} bytes after the owner resumed (got ${bytes})`);
  assert.is(bytes, sentBytes);
});

fair('what waits when the WebSocket closes is delivered by flush, in order', async (ctx) => {
  const { server, client } = await pair(ctx);
  let bytes = 0;
  let order = true;
  const reader = new FairReader(server, {
    message: (data) => {
      for (const b of data) {
        if (b !== (bytes & 0xff)) order = false;
        bytes++;
      }
    },
  });
  reader.start();
  const closed = new Promise<number>((resolve) => server.on('close', () => {
    const waiting = reader.waiting;
    reader.flush();
    reader.stop();
    resolve(waiting);
  }));
  const count = 20_000;
  for (let i = 0; i < count; i++) client.send(Buffer.of(i & 0xff));
  client.close();
  await within(closed, 10_000, 'close');
  assert.is(bytes, count);
  assert.ok(order, 'in order');
});

fair('text messages keep their kind; binary ones may be merged, text never', async (ctx) => {
  const { server, client } = await pair(ctx);
  const seen: string[] = [];
  let resolveAll: () => void;
  const all = new Promise<void>((resolve) => { resolveAll = resolve; });
  let binary = 0;
  const reader = new FairReader(server, {
    message: (data, isBinary) => {
      if (isBinary) binary += data.length;
      else seen.push(data.toString());
      if (seen.length === 3 && binary === 3 * 10_000) resolveAll();
    },
  }, { workPerTurn: 1 });
  reader.start();
  for (let k = 0; k < 3; k++) {
    for (let i = 0; i < 10_000; i++) client.send(Buffer.of(0));
    client.send(`text ${k}`);
  }
  await within(all, 10_000, 'every message');
  assert.equal(seen, ['text 0', 'text 1', 'text 2']);
});

fair.run();
