/**
 * The inbound side on its own: what the budget counts (retained memory, not payload lengths:
 * issue 14), what it pauses and resumes, and the writer that hands payloads to an app's socket
 * (on real sockets).
 */
import { EventEmitter, once } from 'node:events';
import { createServer, connect, type Socket } from 'node:net';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { AppWriter, detach, GATHER_BELOW_BYTES, GATHER_BYTES, InboundBudget, WRITE_OVERHEAD_BYTES, type Reader } from '../../src/tunnel/inbound';
import { waitUntil, within } from '../helpers/wait';

const inbound = suite('inbound budget and writer');

function reader(): Reader & { calls: string[] } {
  const calls: string[] = [];
  return { calls, pause: () => calls.push('pause'), resume: () => calls.push('resume') };
}

/** A view of `bytes` bytes that is a whole buffer of its own: the budget charges bytes + the write overhead. */
function own(bytes: number): Uint8Array {
  return new Uint8Array(bytes);
}

inbound('the reader pauses only above the budget, and resumes below half of it', () => {
  const r = reader();
  const unit = 1000 + WRITE_OVERHEAD_BYTES;
  const budget = new InboundBudget(r, 10 * unit);
  const views = Array.from({ length: 12 }, () => own(1000));
  for (const v of views.slice(0, 10)) budget.retain(v);
  assert.equal(r.calls, [], 'exactly the budget: still reading');
  budget.retain(views[10]);
  assert.equal(r.calls, ['pause']);
  assert.ok(budget.isPaused);
  budget.retain(views[11]);
  assert.equal(r.calls, ['pause'], 'paused once');
  for (const v of views.slice(0, 7)) budget.release(v);
  assert.is(budget.pendingBytes, 5 * unit);
  assert.equal(r.calls, ['pause'], 'half the budget: still paused');
  budget.release(views[7]);
  assert.equal(r.calls, ['pause', 'resume']);
  assert.not.ok(budget.isPaused);
  for (const v of views.slice(8)) budget.release(v);
  assert.is(budget.pendingBytes, 0);
});

inbound('releases without a pause never resume; a budget without a reader only counts', () => {
  const r = reader();
  const budget = new InboundBudget(r, 1_000_000);
  const v = own(900);
  budget.retain(v);
  budget.release(v);
  assert.equal(r.calls, []);
  const counting = new InboundBudget(undefined, 10);
  counting.retain(own(100));
  assert.is(counting.pendingBytes, 100 + WRITE_OVERHEAD_BYTES);
  assert.not.ok(counting.isPaused);
});

inbound('issue 14: a view keeps its whole buffer, counted once for all the views that share it', () => {
  const budget = new InboundBudget(undefined, Infinity);
  const message = Buffer.alloc(60_000);
  const a = message.subarray(0, 1);
  const b = message.subarray(1, 60_000);
  budget.retain(a);
  assert.is(budget.pendingBytes, 60_000 + WRITE_OVERHEAD_BYTES, 'one byte of it keeps 60 KB');
  budget.retain(b);
  assert.is(budget.pendingBytes, 60_000 + 2 * WRITE_OVERHEAD_BYTES, 'counted once');
  budget.release(b);
  assert.is(budget.pendingBytes, 60_000 + WRITE_OVERHEAD_BYTES, 'still held by the other view');
  budget.release(a);
  assert.is(budget.pendingBytes, 0);
  budget.release(a);
  assert.is(budget.pendingBytes, 0, 'a second release of the same view changes nothing');
});

inbound('issue 14: detach copies a payload smaller than a quarter of its buffer, and keeps larger ones as views', () => {
  const message = Buffer.alloc(131_076, 9);
  const small = message.subarray(100, 101);
  const copied = detach(small);
  assert.is.not(copied.buffer, message.buffer, 'copied out');
  assert.is(copied.buffer.byteLength, 1, 'into a buffer of its own size');
  assert.is(copied[0], 9);
  const quarter = message.subarray(0, Math.ceil(131_076 / 4));
  assert.is(detach(quarter), quarter, 'a quarter of its buffer stays a view');
  const bulk = message.subarray(0, 64_512);
  assert.is(detach(bulk), bulk, 'a full payload stays a view: no copy on the bulk path');
  assert.is(detach(message.subarray(0, 32_769)).buffer, message.buffer);
  assert.is.not(detach(message.subarray(0, 32_768)).buffer, message.buffer, 'just under a quarter: copied');
});

/** A connected pair on 127.0.0.1: `local` is the proxy's socket, `app` the application's (paused). */
async function pair(): Promise<{ local: Socket; app: Socket; close(): void }> {
  const server = createServer({ pauseOnConnect: true });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const accepted = once(server, 'connection');
  const local = connect((server.address() as { port: number }).port, '127.0.0.1');
  await once(local, 'connect');
  const [app] = (await accepted) as [Socket];
  app.on('error', () => {});
  local.on('error', () => {});
  return { local, app, close: () => { app.destroy(); local.destroy(); server.close(); } };
}

/** Reads `bytes` bytes from a paused socket, resuming it. */
function readAll(socket: Socket, bytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let got = 0;
  return new Promise((resolve) => {
    socket.on('data', (d: Buffer) => {
      chunks.push(d);
      got += d.length;
      if (got >= bytes) resolve(Buffer.concat(chunks));
    });
    socket.resume();
  });
}

inbound('issue 14: 1-byte payloads for an app that does not read cost about a byte each, and arrive in order once it reads', async () => {
  const { local, app, close } = await pair();
  try {
    const budget = new InboundBudget(undefined, Infinity);
    let taken = 0;
    const events = new EventEmitter();
    const writer = new AppWriter((n) => { taken += n; events.emit('taken'); });
    writer.attach(local);
    // Fill the kernel's buffers first, so that the socket backs up.
    const fill = Buffer.alloc(1 << 20, 0);
    let filled = 0;
    while (local.writableLength === 0) {
      writer.write(fill, budget);
      filled += fill.length;
    }
    const N = 100_000;
    const expected = Buffer.alloc(N);
    for (let i = 0; i < N; i++) {
      expected[i] = i & 0xff;
      const message = Buffer.alloc(2048);
      message[7] = i & 0xff;
      writer.write(message.subarray(7, 8), budget);
    }
    const gathers = Math.ceil(N / GATHER_BYTES);
    assert.ok(budget.pendingBytes <= 2 * (1 << 20) + gathers * (GATHER_BYTES + WRITE_OVERHEAD_BYTES),
      `100,000 1-byte payloads retain ${budget.pendingBytes} bytes, not 100,000 × (2048 + ${WRITE_OVERHEAD_BYTES})`);
    const received = await within(readAll(app, filled + N), 10_000, 'the app reads everything');
    assert.is(received.length, filled + N);
    assert.ok(received.subarray(filled).equals(expected), 'the small payloads arrive in order, after the large ones');
    await waitUntil(events, 'taken', () => taken === filled + N, 5000, 'every byte reported taken');
    assert.is(budget.pendingBytes, 0, 'nothing retained once the app has everything');
  } finally {
    close();
  }
});

inbound('an app that keeps up is written to at once: nothing is gathered', async () => {
  const { local, app, close } = await pair();
  try {
    const budget = new InboundBudget(undefined, Infinity);
    const writer = new AppWriter(() => {});
    writer.attach(local);
    const got = readAll(app, 3);
    writer.write(Buffer.from('a'), budget);
    writer.write(Buffer.from('b'), budget);
    writer.write(Buffer.from('c'), budget);
    assert.not.ok(writer.holding, 'no gather while the kernel takes every write');
    assert.is((await within(got, 5000, 'three bytes')).toString(), 'abc');
  } finally {
    close();
  }
});

inbound('the payloads of one tick leave in one write (a 63 KiB DATA and the 1 KiB after it: issue 15), and are all reported taken', async () => {
  const { local, app, close } = await pair();
  try {
    const budget = new InboundBudget(undefined, Infinity);
    let taken = 0;
    const events = new EventEmitter();
    const writer = new AppWriter((n) => { taken += n; events.emit('taken'); });
    writer.attach(local);
    const big = Buffer.alloc(64512, 1);
    const tail = Buffer.alloc(1024, 2);
    const got = readAll(app, big.length + tail.length);
    writer.write(big, budget);
    writer.write(tail, budget);
    // Both wait, corked, for the end of the tick; the tail was not gathered behind the first.
    assert.is(local.writableCorked, 1);
    assert.is(local.writableLength, big.length + tail.length);
    assert.not.ok(writer.holding);
    assert.ok((await within(got, 5000, 'both payloads')).equals(Buffer.concat([big, tail])));
    await waitUntil(events, 'taken', () => taken === big.length + tail.length, 5000, 'both reported taken');
    assert.is(budget.pendingBytes, 0);
  } finally {
    close();
  }
});

inbound('before the socket exists everything is held, in order (small ones gathered, large ones as views); dispose releases it', async () => {
  const { local, app, close } = await pair();
  try {
    const budget = new InboundBudget(undefined, Infinity);
    let taken = 0;
    const events = new EventEmitter();
    const writer = new AppWriter((n) => { taken += n; events.emit('taken'); });
    const large = Buffer.alloc(GATHER_BELOW_BYTES, 2);
    writer.write(Buffer.from('x'), budget);
    writer.write(large, budget);
    writer.write(Buffer.from('y'), budget);
    assert.ok(writer.holding);
    assert.is(budget.pendingBytes, 2 * (GATHER_BYTES + WRITE_OVERHEAD_BYTES) + large.length + WRITE_OVERHEAD_BYTES);
    const got = readAll(app, large.length + 2);
    writer.attach(local);
    const data = await within(got, 5000, 'the held bytes');
    assert.ok(data.equals(Buffer.concat([Buffer.from('x'), large, Buffer.from('y')])), 'in order');

    const dropped = new AppWriter((n) => { taken += n; events.emit('taken'); });
    const before = budget.pendingBytes;
    dropped.write(Buffer.from('z'), budget);
    dropped.write(large, budget);
    assert.ok(budget.pendingBytes > before);
    dropped.dispose();
    assert.not.ok(dropped.holding);
    await waitUntil(events, 'taken', () => budget.pendingBytes === 0, 5000, 'the budget is released');
    assert.is(taken, (large.length + 2) + (large.length + 1), 'dropped bytes count as taken (the connection is over)');
  } finally {
    close();
  }
});

inbound.run();
