import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { connectToService, startKeepalive, type ServiceConnection } from '../../src/transport/index';
import { waitUntil, within } from '../helpers/wait';
import { captureLog, makePki, optionsFor, startFakeService, type FakeService, type Pki } from './fixtures';

const test = suite('startKeepalive');
let pki: Pki;
let service: FakeService;

test.before(async () => {
  pki = makePki();
  service = await startFakeService(pki);
});
test.after(async () => {
  await service.close();
  pki.remove();
});
test.before.each(() => {
  service.behaviour = {};
});

async function open(): Promise<{ conn: ServiceConnection; peer: import('ws').WebSocket }> {
  const { log } = captureLog(0);
  const peer = service.nextConnection();
  const conn = await within(connectToService(optionsFor(service.port, log, { ca: [pki.caPem] })), 10_000, 'connect');
  return { conn, peer: await within(peer, 5000, 'server side') };
}

test('pings at once and then every period, with decimal epoch milliseconds; pongs logged at debug', async () => {
  const { conn, peer } = await open();
  const { log, waitFor } = captureLog(5);
  const payloads: string[] = [];
  const third = new Promise<void>((resolve) => {
    peer.on('ping', (data: Buffer) => {
      payloads.push(data.toString());
      if (payloads.length === 3) resolve();
    });
  });
  const before = Date.now();
  let dead = false;
  const stop = startKeepalive(conn.ws, { periodMs: 40, maxMissed: 3, log, onDead: () => { dead = true; } });
  await within(third, 5000, 'three pings');
  await waitFor('Pong reply latency: ');
  stop();
  conn.ws.terminate();
  for (const p of payloads) {
    assert.match(p, /^\d{13}$/);
    assert.ok(Number(p) >= before - 1 && Number(p) <= Date.now(), p);
  }
  assert.is(dead, false, 'answered pings keep the connection alive');
});

test('a peer that never answers pings is declared dead within maxMissed periods', async () => {
  service.behaviour.silent = true;
  const { conn, peer } = await open();
  let pings = 0;
  peer.on('ping', () => pings++);
  const { log, text } = captureLog(5);
  const started = Date.now();
  const periodMs = 50;
  const dead = new Promise<number>((resolve) => startKeepalive(conn.ws, { periodMs, maxMissed: 3, log, onDead: () => resolve(Date.now() - started) }));
  const elapsed = await within(dead, 3000, 'dead peer detection');
  conn.ws.terminate();
  assert.ok(elapsed >= 3 * periodMs - 5, `declared dead after ${elapsed} ms, before 3 periods`);
  assert.ok(elapsed < 3 * periodMs + 1000, `declared dead after ${elapsed} ms`);
  assert.match(text(), 'No pong for 3 pings');
});

test('fixes reference bug 3.8: a non-numeric or unsolicited pong is accepted, not fatal', async () => {
  const { conn, peer } = await open();
  const { log, waitFor } = captureLog(6);
  // An unsolicited empty pong (the reference died on it with a bad lexical cast).
  peer.pong('');
  let dead = false;
  const stop = startKeepalive(conn.ws, { periodMs: 30, maxMissed: 2, log, onDead: () => { dead = true; } });
  await waitFor('Pong received with a non-numeric payload');
  stop();
  conn.ws.terminate();
  assert.is(dead, false);
});

test('silence while our reader is paused (slow local apps) is not a miss; counting resumes with reading', async () => {
  service.behaviour.silent = true;
  const { conn, peer } = await open();
  const { log, text } = captureLog(5);
  let paused = true;
  let pings = 0;
  let dead = false;
  const sixPings = new Promise<void>((resolve) => peer.on('ping', () => { if (++pings === 6) resolve(); }));
  const declared = new Promise<void>((resolve) => {
    startKeepalive(conn.ws, { periodMs: 30, maxMissed: 3, log, readerPaused: () => paused, onDead: () => { dead = true; resolve(); } });
  });
  await within(sixPings, 5000, 'six pings while paused');
  assert.is(dead, false, 'six unanswered pings while paused did not kill the session');
  paused = false;
  await within(declared, 5000, 'dead once reading again');
  conn.ws.terminate();
  assert.match(text(), 'No pong for 3 pings');
});

test('any frame from the service counts as an answer', async () => {
  service.behaviour.silent = true;
  const { conn, peer } = await open();
  const { log } = captureLog(0);
  let pings = 0;
  let dead = false;
  const sixPings = new Promise<void>((resolve) => peer.on('ping', () => {
    peer.send(Buffer.from([0, 2, 8, 4]));
    if (++pings === 6) resolve();
  }));
  const stop = startKeepalive(conn.ws, { periodMs: 30, maxMissed: 2, log, onDead: () => { dead = true; } });
  await within(sixPings, 5000, 'six pings answered by data');
  stop();
  conn.ws.terminate();
  assert.is(dead, false);
});

test('issue 21: a service that pings us while it does not read us is answered, never disconnected', async () => {
  // Our relay pings a peer whose data it holds back (flow control), and reads nothing from it
  // meanwhile. Each pong then waits in our socket. ws, answering pings by itself, gave up after
  // 60 unwritten pongs and terminated the connection without a word (about 30 s of the relay's
  // heartbeat): a paused tunnel was lost. One pong at a time answers the most recent ping (RFC
  // 6455 5.5.3), however long the service holds us back.
  const { conn, peer } = await open();
  const PINGS = 100;
  peer.pause();
  const ws = conn.ws;
  // Fill both socket buffers, so that nothing more we write reaches the service.
  const chunk = Buffer.alloc(1024 * 1024);
  for (let i = 0; i < 64 && ws.bufferedAmount < 8 * chunk.length; i++) {
    ws.send(chunk);
    await new Promise((resolve) => setImmediate(resolve));
  }
  assert.ok(ws.bufferedAmount > 0, 'our writes are held back');
  let seen = 0;
  ws.on('ping', () => seen++);
  for (let i = 1; i <= PINGS; i++) peer.ping(String(i));
  await waitUntil(ws, 'ping', () => seen === PINGS, 10_000, `${PINGS} pings read`);
  assert.is(ws.readyState, ws.OPEN, 'still open after every ping');
  const pongs: string[] = [];
  const lastPong = new Promise<void>((resolve) => peer.on('pong', (data: Buffer) => {
    pongs.push(data.toString());
    if (data.toString() === String(PINGS)) resolve();
  }));
  peer.resume();
  await within(lastPong, 20_000, 'the pong to the last ping');
  assert.ok(pongs.length <= 2, `one pong in flight, then the latest (got ${pongs.length})`);
  assert.is(ws.readyState, ws.OPEN);
  ws.terminate();
});

test('stops by itself when the socket closes, and onDead is not called', async () => {
  const { conn } = await open();
  const { log } = captureLog(0);
  let dead = false;
  startKeepalive(conn.ws, { periodMs: 10, maxMissed: 1, log, onDead: () => { dead = true; } });
  conn.ws.terminate();
  await within(new Promise((resolve) => conn.ws.once('close', resolve)), 5000, 'close');
  assert.is(dead, false);
});

test.run();
