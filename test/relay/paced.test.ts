/**
 * What the relay sends to a paced peer (src/relay/paced.ts, issue 13) on a real `ws` pair: the
 * relay's side holds a PacedSend, the peer's side answers the relay's probes only when the
 * test says so, so what waits where is visible. Order within a connection, barriers, the
 * interactive connection passing bulk, the pacer stepping aside, and the waiters behind the
 * queue (deferred pongs).
 */
import { once } from 'node:events';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import WebSocket, { WebSocketServer } from 'ws';
import { encodeFrame, FrameDecoder } from '../../src/protocol/framing';
import { MessageType as T, type Message, type MessageInit } from '../../src/protocol/message';
import { laneKey, PacedSend } from '../../src/relay/paced';
import { INITIAL_WINDOW_BYTES, STALL_MS } from '../../src/flow/pacer';
import { within } from '../helpers/wait';

interface Pair {
  /** The relay's side of the connection, with its PacedSend. */
  relaySide: WebSocket;
  paced: PacedSend;
  /** Messages the peer received, in order. */
  received: Message[];
  /** Probes received and not answered yet. */
  pings: Buffer[];
  answerAll(): void;
  until(check: () => boolean, ms: number, what: string): Promise<void>;
  close(): Promise<void>;
}

async function pair(): Promise<Pair> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', autoPong: false });
  await once(wss, 'listening');
  const accepted = once(wss, 'connection');
  const peer = new WebSocket(`ws://127.0.0.1:${(wss.address() as { port: number }).port}`, { autoPong: false });
  await once(peer, 'open');
  const [relaySide] = (await accepted) as [WebSocket];
  const received: Message[] = [];
  const pings: Buffer[] = [];
  const decoder = new FrameDecoder();
  let auto = false;
  let waiters: Array<() => void> = [];
  const wake = () => {
    const w = waiters;
    waiters = [];
    for (const f of w) f();
  };
  peer.on('message', (data: Buffer) => {
    decoder.push(data, (m) => received.push(m), (err) => { throw err; });
    wake();
  });
  peer.on('ping', (data: Buffer) => {
    if (auto) peer.pong(data);
    else pings.push(data);
    wake();
  });
  const paced = new PacedSend(relaySide, (payload) => relaySide.send(payload, { binary: true }, () => paced.written()));
  return {
    relaySide, paced, received, pings,
    answerAll() {
      auto = true;
      for (const p of pings.splice(0)) peer.pong(p);
    },
    async until(check, ms, what) {
      const deadline = Date.now() + ms;
      while (!check()) await within(new Promise<void>((r) => waiters.push(r)), Math.max(1, deadline - Date.now()), what);
    },
    async close() {
      paced.close();
      peer.terminate();
      for (const c of wss.clients) c.terminate();
      await new Promise<void>((r) => wss.close(() => r()));
    },
  };
}

/** Sends messages as a peer's forwarded frames would come: each with its lane. */
function push(p: Pair, ...msgs: MessageInit[]): void {
  p.paced.push(msgs.map((m) => encodeFrame(m)), msgs.map((m) => laneKey(m as Message)));
}

const bulk = (conn: number, i: number): MessageInit => ({ type: T.DATA, serviceId: 'A', streamId: 1, connectionId: conn, payload: Buffer.alloc(60_000, i) });
const key = (conn: number, i: number): MessageInit => ({ type: T.DATA, serviceId: 'A', streamId: 1, connectionId: conn, payload: Buffer.of(i) });
const summary = (msgs: Message[]) => msgs.map((m) => (m.type === T.DATA ? `${m.connectionId}:${m.payload[0]}` : `type${m.type}`)).join(' ');

const paced = suite('relay: paced sending to a peer');

paced('bulk waits in the relay until probes are answered; a connection that sends little passes it; each connection keeps its order', async () => {
  const p = await pair();
  try {
    for (let i = 0; i < 30; i++) push(p, bulk(1, i));
    await p.until(() => p.pings.length > 0, 5000, 'a probe');
    await p.until(() => p.received.length > 0, 5000, 'the first window');
    const first = p.received.length;
    assert.ok(first * 60_000 <= INITIAL_WINDOW_BYTES + 60_100, `${first} bulk messages before any pong`);
    assert.ok(p.paced.queuedBytes >= 25 * 60_000, `${p.paced.queuedBytes} bytes wait in the relay`);
    push(p, key(2, 1));
    await p.until(() => p.received.some((m) => m.connectionId === 2), 5000, 'the keystroke');
    assert.is(p.received.length, first + 1, `only the keystroke went: ${summary(p.received)} (${first} before)`);
    p.answerAll();
    await p.until(() => p.received.length === 31, 10_000, 'everything');
    assert.equal(p.received.filter((m) => m.connectionId === 1).map((m) => m.payload[0]), Array.from({ length: 30 }, (_, i) => i), 'connection 1 in order');
    assert.is(p.paced.queuedBytes, 0);
  } finally {
    await p.close();
  }
});

paced('a message about a whole stream is a barrier: it leaves after everything queued before it, and nothing queued after it passes it', async () => {
  const p = await pair();
  try {
    for (let i = 0; i < 10; i++) push(p, bulk(1, i));
    await p.until(() => p.pings.length > 0, 5000, 'a probe');
    push(p, { type: T.STREAM_RESET, serviceId: 'A', streamId: 1 }, key(2, 7));
    push(p, { type: T.STREAM_START, serviceId: 'A', streamId: 2 }, key(3, 8));
    p.answerAll();
    await p.until(() => p.received.length === 14, 10_000, 'everything');
    assert.is(summary(p.received), [...Array.from({ length: 10 }, (_, i) => `1:${i}`), `type${T.STREAM_RESET}`, '2:7', `type${T.STREAM_START}`, '3:8'].join(' '));
  } finally {
    await p.close();
  }
});

paced('a frame without a connection id (V2 format, which a V3 source may switch a connection to) passes nothing queued before it', async () => {
  const p = await pair();
  try {
    for (let i = 0; i < 10; i++) push(p, bulk(1, i));
    await p.until(() => p.pings.length > 0, 5000, 'a probe');
    push(p, { type: T.DATA, serviceId: 'A', streamId: 1, connectionId: 0, payload: Buffer.of(99) }, key(2, 1));
    p.answerAll();
    await p.until(() => p.received.length === 12, 10_000, 'everything');
    assert.is(summary(p.received), [...Array.from({ length: 10 }, (_, i) => `1:${i}`), '0:99', '2:1'].join(' '));
  } finally {
    await p.close();
  }
});

paced('connections beyond 1024 lanes wait in arrival order: a sender naming a new connection in every frame cannot grow the relay\'s lanes or pass the window without bound', async () => {
  const p = await pair();
  try {
    push(p, bulk(1, 0), bulk(1, 1), bulk(1, 2));
    await p.until(() => p.pings.length > 0, 5000, 'a probe');
    for (let conn = 2; conn < 3002; conn++) push(p, key(conn, conn & 0xff));
    // New connections pass the window one message each, up to the lanes' bound; the rest wait.
    await p.until(() => p.received.some((m) => m.connectionId === 2), 5000, 'the first new connection');
    const passed = p.received.filter((m) => m.connectionId >= 2).length;
    assert.ok(passed <= 1024, `${passed} frames of new connections passed the window`);
    p.answerAll();
    await p.until(() => p.received.length === 3003, 20_000, 'everything');
    const late = p.received.filter((m) => m.connectionId >= 1024).map((m) => m.connectionId);
    assert.equal(late, [...late].sort((a, b) => a - b), 'those beyond the bound in arrival order');
  } finally {
    await p.close();
  }
});

paced('frames of several connections in one received message are queued each in its lane; one connection\'s message goes whole', async () => {
  const p = await pair();
  try {
    for (let i = 0; i < 10; i++) push(p, bulk(1, i));
    await p.until(() => p.pings.length > 0, 5000, 'a probe');
    const before = p.received.length;
    // One message from the sender with a bulk frame and a keystroke of another connection: the
    // keystroke does not wait behind the bulk frame it came with.
    const mixed = [bulk(1, 10), key(2, 1)];
    p.paced.push(mixed.map((m) => encodeFrame(m)), mixed.map((m) => laneKey(m as Message)), Buffer.concat(mixed.map((m) => encodeFrame(m))));
    await p.until(() => p.received.some((m) => m.connectionId === 2), 5000, 'the keystroke');
    assert.is(p.received.length, before + 1, summary(p.received));
    p.answerAll();
    await p.until(() => p.received.length === 12, 10_000, 'everything');
    assert.equal(p.received.filter((m) => m.connectionId === 1).map((m) => m.payload[0]), Array.from({ length: 11 }, (_, i) => i));
  } finally {
    await p.close();
  }
});

paced('while the relay does not read the peer (its pongs wait unread) the pacer steps aside: everything goes', async () => {
  const p = await pair();
  try {
    for (let i = 0; i < 10; i++) push(p, bulk(1, i));
    await p.until(() => p.pings.length > 0, 5000, 'a probe');
    assert.ok(p.paced.queuedBytes > 0);
    p.relaySide.pause();
    push(p, bulk(1, 10));
    // Well before the pacer would give up on its probe (STALL_MS) and step aside for that reason.
    await p.until(() => p.received.length === 11, STALL_MS / 2, 'everything, no pong');
    assert.is(p.paced.queuedBytes, 0);
  } finally {
    await p.close();
  }
});

paced('whenHanded: false when nothing waits; else it runs once the bytes queued before it have gone, not before', async () => {
  const p = await pair();
  try {
    assert.is(p.paced.whenHanded(() => assert.unreachable('nothing was queued')), false);
    for (let i = 0; i < 10; i++) push(p, bulk(1, i));
    await p.until(() => p.pings.length > 0, 5000, 'a probe');
    let ran = 0;
    let queuedThen = -1;
    assert.is(p.paced.whenHanded(() => { ran++; queuedThen = p.paced.queuedBytes; }), true);
    push(p, bulk(1, 10));
    await p.until(() => p.received.length > 0, 5000, 'the first window');
    assert.is(ran, 0, 'bytes queued before it still wait');
    p.answerAll();
    await p.until(() => ran === 1, 10_000, 'the waiter');
    assert.ok(queuedThen <= 60_100, `${queuedThen} bytes still queued when it ran: only the message pushed after it may be`);
  } finally {
    await p.close();
  }
});

paced('flushNow (before a close frame): everything queued goes at once, in order, and waiters run', async () => {
  const p = await pair();
  try {
    for (let i = 0; i < 10; i++) push(p, bulk(1, i));
    await p.until(() => p.pings.length > 0, 5000, 'a probe');
    let ran = false;
    p.paced.whenHanded(() => { ran = true; });
    push(p, { type: T.STREAM_RESET, serviceId: 'A', streamId: 1 });
    p.paced.flushNow();
    assert.is(p.paced.queuedBytes, 0);
    assert.ok(ran, 'the waiter ran');
    await p.until(() => p.received.length === 11, 10_000, 'everything, no pong');
    assert.is(p.received[10].type, T.STREAM_RESET);
  } finally {
    await p.close();
  }
});

paced.run();
