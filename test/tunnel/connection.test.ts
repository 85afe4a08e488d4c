/**
 * Connection's state machine on real local sockets, with its owner recording what it is told
 * (the owner is our own interface; the session's side of it is covered by the suites above it).
 */
import { once } from 'node:events';
import { createServer, connect, type Socket } from 'node:net';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { silentLogger } from '../../src/index';
import { Connection, type ConnectionOwner } from '../../src/tunnel/connection';
import { GATHER_BYTES, InboundBudget, WRITE_OVERHEAD_BYTES } from '../../src/tunnel/inbound';
import { within } from '../helpers/wait';

const machine = suite('connection state machine');

interface Recorder extends ConnectionOwner {
  calls: string[];
  sent: Buffer[];
  budget: InboundBudget;
  /** Memory the budget counts for the app. */
  readonly retained: number;
  /** Payload bytes the app took. */
  takenBytes: number;
  /** What sendRoom answers (the peer's credit); Infinity = none. */
  room: number;
}

function recorder(): Recorder {
  const r: Recorder = {
    calls: [],
    sent: [],
    budget: new InboundBudget(undefined, Infinity),
    get retained() { return r.budget.pendingBytes; },
    takenBytes: 0,
    room: Infinity,
    sendData: (_c, bytes) => { r.sent.push(Buffer.from(bytes)); r.calls.push('data'); r.room -= bytes.length; },
    sendReset: () => { r.calls.push('reset'); },
    discard: () => { r.calls.push('discard'); },
    reading: (_c, on) => { r.calls.push(on ? 'reading' : 'not-reading'); },
    budgetFor: () => r.budget,
    taken: (_c, n) => { r.takenBytes += n; },
    sendRoom: () => r.room,
    closed: () => { r.calls.push('closed'); },
  };
  return r;
}

/** A connected pair on 127.0.0.1: `local` is the proxy's socket, `app` the application's. */
async function pair(): Promise<{ local: Socket; app: Socket; close(): void }> {
  const server = createServer({ pauseOnConnect: true });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const accepted = once(server, 'connection');
  const app = connect((server.address() as { port: number }).port, '127.0.0.1');
  app.on('error', () => {});
  const [local] = (await accepted) as [Socket];
  return { local, app, close: () => { app.destroy(); local.destroy(); server.close(); } };
}

function onClosed(owner: Recorder): Promise<void> {
  return new Promise((resolve) => {
    const closed = owner.closed;
    owner.closed = (conn) => { closed(conn); resolve(); };
  });
}

machine('open → the app ends: its bytes, then the reset; closed once the socket is gone and the reset is on the wire', async () => {
  const { local, app, close } = await pair();
  try {
    const owner = recorder();
    const conn = new Connection(owner, 1, 1, silentLogger());
    conn.attach(local);
    assert.is(conn.state, 'open');
    app.end('hello');
    await within(once(local, 'close'), 5000, 'the local socket closes');
    assert.equal(owner.calls.filter((c) => c !== 'not-reading'), ['reading', 'data', 'reset']);
    assert.ok(owner.calls.includes('not-reading'), 'no longer read for the peer');
    assert.is(Buffer.concat(owner.sent).toString(), 'hello');
    assert.is(conn.state, 'closing', 'the reset is still queued');
    conn.onQueueEmpty();
    assert.is(conn.state, 'closed');
    assert.is(owner.calls.at(-1), 'closed');
  } finally {
    close();
  }
});

machine('open → the peer resets: what it sent before is written, then the app sees the end; nothing is sent back', async () => {
  const { local, app, close } = await pair();
  try {
    const owner = recorder();
    const conn = new Connection(owner, 1, 1, silentLogger());
    const closed = onClosed(owner);
    conn.attach(local);
    const received: Buffer[] = [];
    app.on('data', (d: Buffer) => received.push(d));
    const ended = once(app, 'end');
    conn.deliver(Buffer.from('bytes before the reset'));
    conn.closeFromPeer('reset by the peer');
    conn.deliver(Buffer.from('after'));
    assert.is(conn.state, 'closing');
    await within(ended, 5000, 'the app sees the end');
    assert.is(Buffer.concat(received).toString(), 'bytes before the reset');
    app.end();
    await within(closed, 5000, 'closed');
    assert.not.ok(owner.calls.includes('reset'), 'no reset back to the peer');
    assert.ok(owner.calls.includes('discard'));
    assert.is(owner.retained, 0, 'the inbound budget is released');
  } finally {
    close();
  }
});

machine('closing: an app that keeps taking its last bytes is not cut off by the flush timeout, one that stops is', async () => {
  const FLUSH_TIMEOUT_MS = 1000;
  const MiB = 1024 * 1024;
  const TOTAL = 32 * MiB;
  const chunk = Buffer.alloc(MiB, 7);
  // A slow reader: 1 MiB, then a 100 ms pause (the app's pace), about 3 s for all of it.
  const slow = await pair();
  try {
    const owner = recorder();
    const conn = new Connection(owner, 1, 1, silentLogger(), FLUSH_TIMEOUT_MS);
    conn.attach(slow.local);
    let received = 0;
    let sinceBreak = 0;
    slow.app.on('data', (d: Buffer) => {
      received += d.length;
      sinceBreak += d.length;
      if (sinceBreak < MiB) return;
      sinceBreak = 0;
      slow.app.pause();
      setTimeout(() => slow.app.resume(), 100);
    });
    const ended = once(slow.app, 'end');
    for (let i = 0; i < TOTAL / MiB; i++) conn.deliver(chunk);
    conn.closeFromPeer('the peer is done');
    await within(ended, 20_000, 'the slow app reads to the end');
    assert.is(received, TOTAL, 'every byte, though it took longer than the flush timeout');
  } finally {
    slow.close();
  }
  // An app that stops reading: destroyed once nothing moved for the flush timeout.
  const stuck = await pair();
  try {
    const owner = recorder();
    const conn = new Connection(owner, 1, 1, silentLogger(), FLUSH_TIMEOUT_MS);
    const closed = onClosed(owner);
    conn.attach(stuck.local);
    stuck.app.pause();
    for (let i = 0; i < TOTAL / MiB; i++) conn.deliver(chunk);
    conn.closeFromPeer('the peer is done');
    await within(closed, 10_000, 'the stuck connection is closed');
    assert.is(owner.retained, 0, 'its bytes leave the inbound budget');
  } finally {
    stuck.close();
  }
});

machine('connecting → the peer resets after sending bytes: the connect goes on, the bytes are written, then the socket closes', async () => {
  const { local, app, close } = await pair();
  try {
    const owner = recorder();
    const conn = new Connection(owner, 1, 1, silentLogger());
    let aborted = false;
    conn.connecting(() => { aborted = true; });
    conn.deliver(Buffer.from('early'));
    assert.is(owner.retained, GATHER_BYTES + WRITE_OVERHEAD_BYTES, 'early bytes count in the budget, gathered');
    conn.closeFromPeer('reset by the peer');
    assert.is(conn.state, 'closing');
    assert.not.ok(aborted, 'the connect goes on');
    const closed = onClosed(owner);
    const received: Buffer[] = [];
    app.on('data', (d: Buffer) => received.push(d));
    const ended = once(app, 'end');
    conn.attach(local);
    await within(ended, 5000, 'the app sees the end');
    assert.is(Buffer.concat(received).toString(), 'early');
    app.end();
    await within(closed, 5000, 'closed');
    assert.not.ok(owner.calls.includes('reading'), 'a closing connection is never read for the peer');
    assert.is(owner.retained, 0);
  } finally {
    close();
  }
});

machine('connecting → our reset: the connect is aborted, the reset sent; closed once it is on the wire', () => {
  const owner = recorder();
  const conn = new Connection(owner, 1, 1, silentLogger());
  let aborted = false;
  conn.connecting(() => { aborted = true; });
  conn.deliver(Buffer.from('early'));
  conn.reset('the proxy is closing');
  assert.ok(aborted);
  assert.equal(owner.calls, ['reset']);
  assert.is(owner.retained, 0, 'early bytes released');
  assert.is(conn.state, 'closing');
  conn.onQueueEmpty();
  assert.is(conn.state, 'closed');
  conn.reset('again');
  conn.closeFromPeer('late');
  assert.equal(owner.calls, ['reset', 'closed'], 'a closed connection ignores later events');
});

machine('connecting → the connect fails: reset, early bytes released; after a peer reset, no reset back', () => {
  const failing = recorder();
  const conn = new Connection(failing, 1, 1, silentLogger());
  conn.connecting(() => {});
  conn.deliver(Buffer.from('early'));
  conn.connectFailed('nothing listens');
  assert.equal(failing.calls, ['reset']);
  assert.is(failing.retained, 0);
  conn.onQueueEmpty();
  assert.is(conn.state, 'closed');

  const afterPeer = recorder();
  const other = new Connection(afterPeer, 1, 2, silentLogger());
  other.connecting(() => {});
  other.deliver(Buffer.from('early'));
  other.closeFromPeer('reset by the peer');
  other.connectFailed('nothing listens');
  assert.equal(afterPeer.calls, ['discard', 'closed']);
  assert.is(afterPeer.retained, 0);
});

machine('connecting → the session ends: the connect is given up even with bytes waiting', () => {
  const owner = recorder();
  const conn = new Connection(owner, 1, 1, silentLogger());
  let aborted = false;
  conn.connecting(() => { aborted = true; });
  conn.deliver(Buffer.from('early'));
  conn.sessionEnded();
  assert.ok(aborted);
  assert.is(conn.state, 'closed');
  assert.equal(owner.calls, ['discard', 'closed']);
  assert.is(owner.retained, 0);
});

machine('credit: the app\'s bytes go out only within the peer\'s credit; the rest is held and the socket not read until the next grant', async () => {
  const { local, app, close } = await pair();
  try {
    const owner = recorder();
    owner.room = 1000;
    const conn = new Connection(owner, 1, 1, silentLogger());
    conn.attach(local);
    const bytes = Buffer.alloc(5000, 3);
    const paused = once(local, 'pause');
    app.write(bytes);
    await within(paused, 5000, 'the socket is no longer read');
    assert.is(Buffer.concat(owner.sent).length, 1000, 'exactly the credit');
    assert.is(conn.bytesOut, 1000);
    conn.onCredit();
    assert.is(Buffer.concat(owner.sent).length, 1000, 'no grant yet: nothing more');
    owner.room = 2500;
    conn.onCredit();
    assert.is(Buffer.concat(owner.sent).length, 3500, 'part of what is held');
    assert.ok(local.isPaused(), 'still held back');
    owner.room = Infinity;
    conn.onCredit();
    assert.ok(Buffer.concat(owner.sent).equals(bytes), 'every byte, in order');
    assert.not.ok(local.isPaused(), 'reading again');
  } finally {
    close();
  }
});

machine('credit: the app resets while bytes are held: they go first once credit comes, then the reset', async () => {
  const { local, app, close } = await pair();
  try {
    const owner = recorder();
    owner.room = 10;
    const conn = new Connection(owner, 1, 1, silentLogger());
    conn.attach(local);
    const closed = new Promise((resolve) => local.once('close', resolve));
    const paused = once(local, 'pause');
    app.write(Buffer.alloc(100, 1));
    await within(paused, 5000, 'the socket is no longer read');
    app.resetAndDestroy();
    await within(closed, 5000, 'the local socket closes');
    assert.is(conn.state, 'closing');
    assert.not.ok(owner.calls.includes('reset'), 'the reset waits for the held bytes');
    conn.onQueueEmpty();
    assert.is(conn.state, 'closing', 'not closed while bytes are held');
    owner.room = Infinity;
    conn.onCredit();
    assert.is(Buffer.concat(owner.sent).length, 100);
    assert.equal(owner.calls.filter((c) => c === 'data' || c === 'reset').slice(-2), ['data', 'reset'], 'the held bytes, then the reset');
    conn.onQueueEmpty();
    assert.is(conn.state, 'closed');
  } finally {
    close();
  }
});

machine.run();
