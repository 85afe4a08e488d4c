/**
 * Outbound with the pacer (issue 13) on a real `ws` pair: the service's side answers our delay
 * probes only when the test says so, so what waits where is visible. Waits are bounded; the
 * only timer that matters is the pacer's STALL_MS fallback, which one test waits out.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { once } from 'node:events';
import WebSocket, { WebSocketServer } from 'ws';
import { encodeFrame, FrameDecoder } from '../../src/protocol/framing';
import { MessageType as T, type Message } from '../../src/protocol/message';
import { Outbound, type Producer } from '../../src/tunnel/outbound';
import { INITIAL_WINDOW_BYTES, Pacer, STALL_MS } from '../../src/flow/pacer';
import { within } from '../helpers/wait';

interface Service {
  client: WebSocket;
  received: Message[];
  /** Pings received and not answered yet (the test answers them). */
  pings: Buffer[];
  bytes(): number;
  answer(): void;
  /** From now on every ping is answered as it arrives. */
  answerAll(): void;
  until(check: () => boolean, ms: number, what: string): Promise<void>;
  close(): Promise<void>;
}

async function service(): Promise<Service> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', autoPong: false });
  await once(wss, 'listening');
  const received: Message[] = [];
  const pings: Buffer[] = [];
  const decoder = new FrameDecoder();
  let bytes = 0;
  let auto = false;
  let server: WebSocket | undefined;
  let waiters: Array<() => void> = [];
  const wake = () => {
    const w = waiters;
    waiters = [];
    for (const f of w) f();
  };
  wss.on('connection', (ws) => {
    server = ws;
    ws.on('message', (data: Buffer) => {
      bytes += data.length;
      decoder.push(data, (m) => received.push(m), (err) => { throw err; });
      wake();
    });
    ws.on('ping', (data: Buffer) => {
      if (auto) ws.pong(data);
      else pings.push(data);
      wake();
    });
  });
  const client = new WebSocket(`ws://127.0.0.1:${(wss.address() as { port: number }).port}`);
  await once(client, 'open');
  return {
    client, received, pings,
    bytes: () => bytes,
    answer() {
      for (const p of pings.splice(0)) server!.pong(p);
    },
    answerAll() {
      auto = true;
      for (const p of pings.splice(0)) server!.pong(p);
    },
    async until(check, ms, what) {
      const deadline = Date.now() + ms;
      while (!check()) await within(new Promise<void>((r) => waiters.push(r)), Math.max(1, deadline - Date.now()), what);
    },
    async close() {
      client.terminate();
      for (const c of wss.clients) c.terminate();
      await new Promise<void>((r) => wss.close(() => r()));
    },
  };
}

function producer(): Producer {
  return { onQueueEmpty() {} };
}

const bulkFrame = (i: number) => encodeFrame({ type: T.DATA, streamId: 1, connectionId: 1, payload: Buffer.alloc(60_000, i) });
const BULK_FRAME_BYTES = bulkFrame(0).length;

const pacing = suite('outbound with the pacer');

pacing('bulk data waits in our queue, not in ws or the kernel, until probes are answered; then all of it goes', async () => {
  const svc = await service();
  try {
    const out = new Outbound(svc.client, 64 << 20, new Pacer());
    const bulk = producer();
    for (let i = 0; i < 40; i++) out.push(bulk, bulkFrame(i));
    await svc.until(() => svc.pings.length > 0, 5000, 'a probe');
    await svc.until(() => svc.bytes() > 0, 5000, 'the first data');
    // One window (and the frame that crosses it) went; the rest waits for the probe's answer.
    assert.ok(svc.bytes() <= INITIAL_WINDOW_BYTES + BULK_FRAME_BYTES, `${svc.bytes()} bytes sent before any pong`);
    assert.ok(out.backlog() >= 38 * BULK_FRAME_BYTES, `backlog ${out.backlog()}`);
    svc.answerAll();
    await svc.until(() => svc.received.length === 40, 10_000, 'every frame');
    assert.equal(svc.received.map((m) => m.payload[0]), Array.from({ length: 40 }, (_, i) => i), 'in order');
  } finally {
    await svc.close();
  }
});

/** An Outbound with 40 bulk frames queued and its first probe out, unanswered: the window holds the rest. */
async function heldBack(svc: Service): Promise<Outbound> {
  const out = new Outbound(svc.client, 64 << 20, new Pacer());
  const bulk = producer();
  for (let i = 0; i < 40; i++) out.push(bulk, bulkFrame(i));
  await svc.until(() => svc.pings.length > 0, 5000, 'a probe');
  return out;
}

pacing('an interactive frame passes while the window holds bulk data back', async () => {
  const svc = await service();
  try {
    const out = await heldBack(svc);
    const before = svc.received.length;
    out.push(producer(), encodeFrame({ type: T.DATA, streamId: 1, connectionId: 2, payload: Buffer.from('k') }));
    await svc.until(() => svc.received.some((m) => m.connectionId === 2), 5000, 'the interactive frame');
    assert.is(svc.received.length, before + 1, `only the interactive frame went, no bulk with it: ${svc.received.map((m) => m.connectionId).join(',')} (${before} before)`);
  } finally {
    await svc.close();
  }
});

pacing('sendFirst (a credit HELLO answering a new peer) goes ahead of the queue and leaves the bulk data behind the window, not flushed', async () => {
  const svc = await service();
  try {
    const out = await heldBack(svc);
    const before = svc.received.length;
    out.sendFirst(encodeFrame({ type: T.SERVICE_IDS, availableServiceIds: ['HELLO'] }));
    await svc.until(() => svc.received.some((m) => m.type === T.SERVICE_IDS), 5000, 'the frame sent first');
    // The session used to flush every queue past the pacer here: a megabyte of an upload at once.
    assert.is(svc.received.length, before + 1, `only that frame went: ${svc.received.length - before} messages`);
    assert.ok(out.backlog() >= 38 * BULK_FRAME_BYTES, `backlog ${out.backlog()}`);
    svc.answerAll();
    await svc.until(() => svc.received.length === 41, 10_000, 'every frame');
  } finally {
    await svc.close();
  }
});

pacing(`a service that never answers probes: after STALL_MS (${STALL_MS} ms) the pacer steps aside and everything arrives`, async () => {
  const svc = await service();
  try {
    const out = new Outbound(svc.client, 64 << 20, new Pacer());
    const bulk = producer();
    for (let i = 0; i < 20; i++) out.push(bulk, bulkFrame(i));
    await svc.until(() => svc.received.length === 20, STALL_MS + 10_000, 'every frame without a pong');
  } finally {
    await svc.close();
  }
});

pacing('while our reader is paused (pongs unread) the pacer does not hold data back', async () => {
  const svc = await service();
  try {
    svc.answerAll();
    const out = new Outbound(svc.client, 64 << 20, new Pacer());
    svc.client.pause();
    const bulk = producer();
    for (let i = 0; i < 20; i++) out.push(bulk, bulkFrame(i));
    await svc.until(() => svc.received.length === 20, 5000, 'every frame with the reader paused');
  } finally {
    await svc.close();
  }
});

pacing('the inbound budget pausing our reader while the window holds data back: the pacer steps aside at once, not when a pong or a timer comes', async () => {
  const svc = await service();
  try {
    // A clock that does not move (the STALL_MS fallback never comes) and a pacer that never
    // asks to be woken (its wake-up, up to STALL_MS away, would also release the data, late;
    // with a pacing debt it was seconds away): only the pause can run the next turn.
    class NoWake extends Pacer {
      override wakeAt(): undefined {
        return undefined;
      }
    }
    const out = new Outbound(svc.client, 64 << 20, new NoWake(), undefined, () => 0);
    const bulk = producer();
    for (let i = 0; i < 20; i++) out.push(bulk, bulkFrame(i));
    await svc.until(() => svc.pings.length > 0 && svc.bytes() > 0, 5000, 'a probe after the first window');
    // ws has written the window and run its callbacks (each runs a turn of ours): from here on
    // nothing but the pause can run one.
    for (let turns = 0; svc.client.bufferedAmount > 0 || turns < 2; turns++) {
      assert.ok(turns < 10_000, 'ws writes the first window');
      await new Promise((resolve) => setImmediate(resolve));
    }
    const held = svc.bytes();
    assert.ok(svc.received.length < 20, 'the window holds the rest back');
    out.reader.pause();
    assert.ok(svc.client.isPaused, 'the reader is the WebSocket\'s');
    await svc.until(() => svc.received.length === 20, 5000, `every frame once the reader is paused (${held} bytes before)`);
    out.reader.resume();
    assert.not.ok(svc.client.isPaused);
  } finally {
    await svc.close();
  }
});

pacing('flow.target_delay_ms 0: no probes, the fixed window as before', async () => {
  const svc = await service();
  try {
    const out = new Outbound(svc.client, 64 << 20, new Pacer({ targetDelayMs: 0 }));
    const bulk = producer();
    for (let i = 0; i < 20; i++) out.push(bulk, bulkFrame(i));
    await svc.until(() => svc.received.length === 20, 5000, 'every frame');
    assert.is(svc.pings.length, 0);
  } finally {
    await svc.close();
  }
});

pacing.run();
