import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect } from 'node:tls';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Logger, LogLevel } from '../../src/log';
import { encodeFrame } from '../../src/protocol/framing';
import { MessageType } from '../../src/protocol/message';
import { ManualClock } from '../../src/relay/clock';
import { startRelay, type Relay } from '../../src/relay/server';
import { TestFaults } from '../helpers/faults';
import { within } from '../helpers/wait';
import { EventLog } from './events';
import { connectPeer, connectReady, type TestPeer } from './peer';

const { DATA, STREAM_START, STREAM_RESET, CONNECTION_START } = MessageType;
const CLIENT_TOKEN = 'c'.repeat(32);

interface Ctx { relay: Relay; peers: TestPeer[]; lines: string[]; onLine?: (line: string) => void; events: EventLog; faults: TestFaults }
const lifecycle = suite<Ctx>('relay data plane: lifecycle');

lifecycle.before.each(async (ctx) => {
  ctx.lines = [];
  ctx.onLine = undefined;
  const log = new Logger({ level: LogLevel.DEBUG, sink: (line) => { ctx.lines.push(line); ctx.onLine?.(line); } });
  ctx.events = new EventLog();
  ctx.faults = new TestFaults();
  ctx.relay = await startRelay({ port: 0, tls: 'self-signed', log, onEvent: ctx.events.onEvent, faults: ctx.faults });
  ctx.peers = [];
});
lifecycle.after.each(async (ctx) => {
  for (const p of ctx.peers) p.terminate();
  await ctx.relay.close();
});

function waitLine(ctx: Ctx, pattern: RegExp, ms = 5000): Promise<string> {
  const seen = ctx.lines.find((l) => pattern.test(l));
  if (seen) return Promise.resolve(seen);
  return within(new Promise((resolve) => {
    ctx.onLine = (line) => { if (pattern.test(line)) resolve(line); };
  }), ms, `log line ${pattern}`);
}

async function readyPair(ctx: Ctx, services = ['SSH']) {
  const t = await ctx.relay.openTunnel({ services });
  const src = await connectReady(ctx.relay, t.sourceAccessToken, { clientToken: CLIENT_TOKEN });
  const dst = await connectReady(ctx.relay, t.destinationAccessToken, { mode: 'destination', clientToken: CLIENT_TOKEN });
  ctx.peers.push(src, dst);
  return { t, src, dst };
}

lifecycle('a new connection with the same token replaces the old (1008) and the other peer gets STREAM_RESET for its active streams', async (ctx) => {
  const { t, src, dst } = await readyPair(ctx, ['SSH', 'HTTP']);
  src.send({ type: STREAM_START, streamId: 1, serviceId: 'SSH', connectionId: 1 }, { type: STREAM_START, streamId: 7, serviceId: 'HTTP', connectionId: 1 }, { type: CONNECTION_START, streamId: 7, serviceId: 'HTTP', connectionId: 2 });
  await dst.until(() => dst.messages.length === 3, 5000, 'three starts');
  dst.messages.length = 0;
  // The SSH stream ends normally: it must not be reset again.
  dst.send({ type: STREAM_RESET, streamId: 1, serviceId: 'SSH' });
  await src.until(() => src.messages.some((m) => m.type === STREAM_RESET), 5000, 'the reset at the source');
  const replacement = await connectReady(ctx.relay, t.sourceAccessToken, { clientToken: CLIENT_TOKEN });
  ctx.peers.push(replacement);
  const closed = await src.waitClosed();
  assert.equal(closed, { code: 1008, reason: 'connection is replaced by another connection' });
  const reset = await dst.next();
  assert.equal([reset.type, reset.serviceId, reset.streamId], [STREAM_RESET, 'HTTP', 7]);
  // The tunnel works with the new source.
  replacement.send({ type: STREAM_START, streamId: 2, serviceId: 'SSH', connectionId: 1 });
  const start = await dst.next();
  assert.equal([start.type, start.streamId], [STREAM_START, 2]);
  assert.is(dst.messages.length, 0);
  await waitLine(ctx, /source: replaced by a new connection/);
});

lifecycle('when a peer disconnects the other gets STREAM_RESET for each active stream', async (ctx) => {
  const { src, dst } = await readyPair(ctx);
  src.send({ type: STREAM_START, streamId: 5, serviceId: 'SSH', connectionId: 1 });
  await dst.next();
  dst.terminate();
  const reset = await src.next();
  assert.equal([reset.type, reset.serviceId, reset.streamId], [STREAM_RESET, 'SSH', 5]);
  const line = await waitLine(ctx, /destination: disconnected/);
  assert.match(line, /received \d+ bytes, sent \d+ bytes/);
});

lifecycle('CloseTunnel closes both peers with a close frame (1000) and ends the sockets', async (ctx) => {
  const { t, src, dst } = await readyPair(ctx);
  await ctx.relay.closeTunnel(t.tunnelId);
  const [a, b] = await Promise.all([src.waitClosed(), dst.waitClosed()]);
  assert.is(a.code, 1000);
  assert.is(b.code, 1000);
  assert.match(a.reason, /closed/);
});

lifecycle('CloseTunnel ends the socket even when the peer never answers the close frame', async (ctx) => {
  const t = await ctx.relay.openTunnel();
  // A raw client that completes the upgrade and then never writes again (like the reference,
  // which never replies to a close frame).
  const socket = connect({ host: '127.0.0.1', port: ctx.relay.port, ca: ctx.relay.caPem });
  const chunks: Buffer[] = [];
  socket.on('data', (d: Buffer) => chunks.push(d));
  const ended = new Promise<void>((resolve) => socket.once('end', () => resolve()));
  await within(new Promise((resolve) => socket.once('secureConnect', resolve)), 5000, 'TLS');
  socket.write(`GET /tunnel?local-proxy-mode=source HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: aws.iot.securetunneling-3.0\r\naccess-token: ${t.sourceAccessToken}\r\n\r\n`);
  await ctx.events.waitFor('connected', (e) => e.tunnelId === t.tunnelId);
  await ctx.relay.closeTunnel(t.tunnelId);
  await within(ended, 1500, 'FIN from the relay');
  socket.destroy();
  const bytes = Buffer.concat(chunks);
  const head = bytes.indexOf('\r\n\r\n') + 4;
  assert.match(bytes.subarray(0, head).toString(), /^HTTP\/1\.1 101 /);
  // SERVICE_IDS (binary, opcode 2), then the close frame (opcode 8) with code 1000.
  const close = bytes.indexOf(0x88, head);
  assert.ok(close > head, 'close frame received');
  assert.is(bytes.readUInt16BE(close + 2), 1000);
});

lifecycle('RotateTunnelAccessToken: the old token stops working and its connected peer is disconnected', async (ctx) => {
  const { t, src, dst } = await readyPair(ctx);
  const rotated = await ctx.relay.rotateAccessToken(t.tunnelId, 'SOURCE');
  assert.type(rotated.sourceAccessToken, 'string');
  assert.is(rotated.destinationAccessToken, undefined);
  const closed = await src.waitClosed();
  assert.is(closed.code, 1000);
  try {
    await connectPeer(ctx.relay, t.sourceAccessToken, { clientToken: CLIENT_TOKEN });
    assert.unreachable('old token accepted');
  } catch (err) {
    assert.match((err as Error).message, /^HTTP 403: Invalid access token/);
  }
  const fresh = await connectReady(ctx.relay, rotated.sourceAccessToken!);
  ctx.peers.push(fresh);
  fresh.send({ type: STREAM_START, streamId: 1, serviceId: 'SSH' });
  assert.is((await dst.next()).type, STREAM_START);
  assert.is(dst.closeCode, undefined);
});

lifecycle('answers pings with the same payload, never sends unsolicited pongs, and stops answering under injected faults', async (ctx) => {
  const t = await ctx.relay.openTunnel({ services: ['SSH'] });
  const src = await connectReady(ctx.relay, t.sourceAccessToken);
  ctx.peers.push(src);
  const pongs: string[] = [];
  src.ws.on('pong', (data: Buffer) => pongs.push(data.toString()));
  src.ws.ping('1795607781717');
  // With the destination absent the relay answers a STREAM_START with a reset; the pong to an
  // earlier ping is written to the same socket first, so the reset marks "after any pong".
  src.send({ type: STREAM_START, streamId: 1, serviceId: 'SSH' });
  await src.next();
  assert.equal(pongs, ['1795607781717']);
  ctx.faults.set({ answerPings: false });
  src.ws.ping('42');
  src.send({ type: STREAM_START, streamId: 2, serviceId: 'SSH' });
  await src.next();
  assert.equal(pongs, ['1795607781717']);
  ctx.faults.set({ answerPings: true });
  src.ws.ping('43');
  src.send({ type: STREAM_START, streamId: 3, serviceId: 'SSH' });
  await src.next();
  assert.equal(pongs, ['1795607781717', '43']);
});

lifecycle('a slow reader pauses the sender (bounded backlog) and everything arrives once it reads again', async (ctx) => {
  const { src, dst } = await readyPair(ctx);
  src.send({ type: STREAM_START, streamId: 1, serviceId: 'SSH', connectionId: 1 });
  await dst.next();
  // ws.pause() stops reading the TCP socket: the relay's writes to it back up.
  dst.ws.pause();
  const payload = Buffer.alloc(64512, 1);
  const total = 600; // ~38 MiB: far more than socket buffers plus the high-water mark
  let sent = 0;
  const pump = () => {
    while (sent < total && src.ws.bufferedAmount < 4 * 1024 * 1024) {
      payload.writeUInt32BE(sent, 0);
      src.send({ type: DATA, streamId: 1, serviceId: 'SSH', connectionId: 1, payload });
      sent++;
    }
    if (sent < total) setImmediate(pump);
  };
  pump();
  const paused = await ctx.events.waitFor('paused', (e) => e.mode === 'source' && e.receiver === 'destination', 20000);
  assert.ok(paused.unsentBytes < 2 * 1024 * 1024, `backlog ${paused.unsentBytes}`);
  dst.ws.resume();
  let received = 0;
  await dst.until(() => {
    while (dst.messages.length) {
      const m = dst.messages.shift()!;
      // Every message, in order, with its bytes intact.
      assert.is(m.payload.length, 64512);
      assert.is(Buffer.from(m.payload).readUInt32BE(0), received);
      assert.ok(Buffer.from(m.payload).subarray(4).every((b) => b === 1), `payload ${received} intact`);
      received++;
    }
    return received === total;
  }, 60000, 'all data at the destination');
  await ctx.events.waitFor('resumed', (e) => e.mode === 'source');
});

lifecycle('a sender held back for a slow reader gets a heartbeat while paused, so its keepalive cannot take flow control for death: unsolicited pongs with a decimal payload, never pings (a ping stops a Boost.Beast peer reading while its writes wait); it stops on resume', async (ctx) => {
  const { src, dst } = await readyPair(ctx);
  src.send({ type: STREAM_START, streamId: 1, serviceId: 'SSH', connectionId: 1 });
  await dst.next();
  // The source pings at a steady rate, as our proxy does; the relay's heartbeat runs at twice it.
  src.ws.ping('1');
  await within(new Promise((resolve) => src.ws.once('pong', resolve)), 5000, 'pong 1');
  const pings: Buffer[] = [];
  src.ws.on('ping', (data: Buffer) => pings.push(data));
  dst.ws.pause();
  const payload = Buffer.alloc(64512, 1);
  let sent = 0;
  let pumping = true;
  const pump = () => {
    while (pumping && src.ws.bufferedAmount < 4 * 1024 * 1024) {
      src.send({ type: DATA, streamId: 1, serviceId: 'SSH', connectionId: 1, payload });
      sent++;
    }
    if (pumping) setImmediate(pump);
  };
  pump();
  await ctx.events.waitFor('paused', (e) => e.mode === 'source' && e.receiver === 'destination', 20000);
  // The source keeps sending until the relay has stopped reading it for good: until the socket
  // buffers towards the destination are full, the relay's writes complete and it resumes and
  // pauses the source many times, and a heartbeat is due only after a pause longer than
  // its period (a busy tunnel's pauses send none).
  /** The relay's heartbeats: pongs that answer none of our pings (ours carry one digit). */
  const heartbeats: string[] = [];
  const onPong = (data: Buffer) => {
    if (data.length > 1) heartbeats.push(data.toString('latin1'));
  };
  src.ws.on('pong', onPong);
  await within(new Promise<void>((resolve) => {
    const check = () => { if (heartbeats.length >= 3) { src.ws.off('pong', check); resolve(); } };
    src.ws.on('pong', check);
  }), 20000, 'three heartbeats from the relay to the paused source');
  pumping = false;
  for (const beat of heartbeats) assert.match(beat, /^\d{13}$/, 'a heartbeat carries the time in decimal milliseconds (the C++ reference parses pong payloads as integers)');
  assert.equal(pings, [], 'no ping to a peer whose writes the relay does not read');
  dst.ws.resume();
  let received = 0;
  await dst.until(() => {
    while (dst.messages.length) { dst.messages.shift(); received++; }
    return received === sent;
  }, 60000, 'all data at the destination');
  await ctx.events.waitFor('resumed', (e) => e.mode === 'source');
  // Once resumed the source's own pings are answered again; a ping/pong round trip is a
  // barrier (a heartbeat sent before it arrives before its pong), then no more heartbeats.
  const roundTrip = async (payload: string) => {
    src.ws.ping(payload);
    await within(new Promise<void>((resolve) => {
      const answer = (data: Buffer) => { if (data.toString('latin1') === payload) { src.ws.off('pong', answer); resolve(); } };
      src.ws.on('pong', answer);
    }), 5000, `pong ${payload}`);
  };
  await roundTrip('2');
  const before = heartbeats.length;
  for (let i = 3; i < 8; i++) await roundTrip(String(i));
  assert.is(heartbeats.length, before, 'no heartbeat once reading resumed');
  assert.equal(pings, [], 'and never a ping');
});

lifecycle('a peer that floods starts but never reads its resets is paused, not queued for', async (ctx) => {
  const t = await ctx.relay.openTunnel({ services: ['SSH'] });
  const src = await connectReady(ctx.relay, t.sourceAccessToken);
  ctx.peers.push(src);
  src.ws.pause();
  const one = encodeFrame({ type: STREAM_START, streamId: 1, serviceId: 'SSH' });
  const message = Buffer.concat(Array.from({ length: Math.floor(131076 / one.length) }, () => one));
  let sent = 0;
  const pump = () => {
    while (src.ws.bufferedAmount < 1024 * 1024 && sent < 400) {
      src.ws.send(message);
      sent++;
    }
    if (sent < 400) setImmediate(pump);
  };
  pump();
  const paused = await ctx.events.waitFor('paused', (e) => e.mode === 'source' && e.receiver === 'source', 30000);
  assert.ok(paused.unsentBytes < 1024 * 1024, `backlog ${paused.unsentBytes}`);
  sent = 400;
});

lifecycle('log lines name connect, replace and close with byte counts, never tokens', async (ctx) => {
  const { t, src } = await readyPair(ctx);
  const again = await connectReady(ctx.relay, t.sourceAccessToken, { clientToken: CLIENT_TOKEN });
  ctx.peers.push(again);
  await src.waitClosed();
  await ctx.relay.closeTunnel(t.tunnelId);
  await again.waitClosed();
  await waitLine(ctx, /source: disconnected .*received \d+ bytes, sent \d+ bytes/);
  const text = ctx.lines.join('');
  assert.match(text, /source: connected \(channel /);
  assert.match(text, /source: reconnected, replacing the previous connection/);
  assert.match(text, /closed: tunnel closed/);
  for (const secret of [t.sourceAccessToken, t.destinationAccessToken, CLIENT_TOKEN]) assert.not.ok(text.includes(secret), 'a token was logged');
});

lifecycle('--state: open tunnels survive a restart, tokens stored only as hashes, expiry still applies', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'relay-state-'));
  const statePath = join(dir, 'state.json');
  try {
    const quiet = new Logger({ level: 0 });
    const first = await startRelay({ port: 0, tls: 'plain', statePath, log: quiet });
    const kept = await first.openTunnel({ services: ['SSH'] });
    const expiring = await first.openTunnel({ services: ['SSH'], lifetimeMinutes: 1 });
    const closed = await first.openTunnel();
    await first.closeTunnel(closed.tunnelId);
    // The source uses a client token, so its access token stays usable after the restart.
    const before = await connectReady(first, kept.sourceAccessToken, { clientToken: CLIENT_TOKEN });
    const rotated = await first.rotateAccessToken(kept.tunnelId, 'DESTINATION');
    await first.close();
    await before.waitClosed();
    const text = readFileSync(statePath, 'utf8');
    for (const secret of [kept.sourceAccessToken, kept.destinationAccessToken, rotated.destinationAccessToken!, CLIENT_TOKEN]) assert.not.ok(text.includes(secret), 'a token in the state file');
    // The relay comes back 59 s later: the 1-minute tunnel is still open, for one more second.
    const clock = new ManualClock(Date.now() + 59_000);
    const second = await startRelay({ port: 0, tls: 'plain', statePath, log: quiet, clock });
    try {
      const src = await connectReady(second, kept.sourceAccessToken, { clientToken: CLIENT_TOKEN });
      try {
        await connectPeer(second, kept.destinationAccessToken, { mode: 'destination' });
        assert.unreachable('rotated-away token accepted after the restart');
      } catch (err) {
        assert.match((err as Error).message, /^HTTP 403/);
      }
      const dst = await connectReady(second, rotated.destinationAccessToken!, { mode: 'destination' });
      src.send({ type: STREAM_START, streamId: 1, serviceId: 'SSH' });
      assert.is((await dst.next()).type, STREAM_START);
      try {
        await connectPeer(second, closed.sourceAccessToken);
        assert.unreachable('closed tunnel accepted');
      } catch (err) {
        assert.match((err as Error).message, /^HTTP 403/);
      }
      const exp = await connectReady(second, expiring.sourceAccessToken);
      clock.advance(1000);
      const end = await exp.waitClosed(5000);
      assert.equal(end, { code: 1000, reason: 'tunnel lifetime expired' });
      src.terminate();
      dst.terminate();
    } finally {
      await second.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

lifecycle.run();
