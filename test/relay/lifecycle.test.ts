import { mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect } from 'node:tls';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Logger, LogLevel } from '../../src/log';
import { encodeFrame } from '../../src/protocol/framing';
import { MessageType } from '../../src/protocol/message';
import { startRelay, type Relay } from '../../src/relay/server';
import { within } from '../helpers/wait';
import { connectPeer, connectReady, type TestPeer } from './peer';

const { DATA, STREAM_START, STREAM_RESET, CONNECTION_START } = MessageType;
const CLIENT_TOKEN = 'c'.repeat(32);

interface Ctx { relay: Relay; peers: TestPeer[]; lines: string[]; onLine?: (line: string) => void }
const lifecycle = suite<Ctx>('relay data plane: lifecycle');

lifecycle.before.each(async (ctx) => {
  ctx.lines = [];
  ctx.onLine = undefined;
  const log = new Logger({ level: LogLevel.DEBUG, sink: (line) => { ctx.lines.push(line); ctx.onLine?.(line); } });
  ctx.relay = await startRelay({ port: 0, tls: 'self-signed', log });
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
  const t = ctx.relay.openTunnel({ services });
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
  ctx.relay.closeTunnel(t.tunnelId);
  const [a, b] = await Promise.all([src.waitClosed(), dst.waitClosed()]);
  assert.is(a.code, 1000);
  assert.is(b.code, 1000);
  assert.match(a.reason, /closed/);
});

lifecycle('CloseTunnel ends the socket even when the peer never answers the close frame', async (ctx) => {
  const t = ctx.relay.openTunnel();
  // A raw client that completes the upgrade and then never writes again (like the reference,
  // which never replies to a close frame).
  const socket = connect({ host: '127.0.0.1', port: ctx.relay.port, ca: ctx.relay.caPem });
  const chunks: Buffer[] = [];
  socket.on('data', (d: Buffer) => chunks.push(d));
  const ended = new Promise<void>((resolve) => socket.once('end', () => resolve()));
  await within(new Promise((resolve) => socket.once('secureConnect', resolve)), 5000, 'TLS');
  socket.write(`GET /tunnel?local-proxy-mode=source HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: aws.iot.securetunneling-3.0\r\naccess-token: ${t.sourceAccessToken}\r\n\r\n`);
  await waitLine(ctx, /source: connected/);
  ctx.relay.closeTunnel(t.tunnelId);
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
  const rotated = ctx.relay.rotateAccessToken(t.tunnelId, 'SOURCE');
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

lifecycle('answers pings with the same payload, never sends unsolicited pongs, and stops answering under setFaults', async (ctx) => {
  const t = ctx.relay.openTunnel({ services: ['SSH'] });
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
  ctx.relay.setFaults({ answerPings: false });
  src.ws.ping('42');
  src.send({ type: STREAM_START, streamId: 2, serviceId: 'SSH' });
  await src.next();
  assert.equal(pongs, ['1795607781717']);
  ctx.relay.setFaults({ answerPings: true });
  src.ws.ping('43');
  src.send({ type: STREAM_START, streamId: 3, serviceId: 'SSH' });
  await src.next();
  assert.equal(pongs, ['1795607781717', '43']);
});

lifecycle('a slow reader pauses the sender (bounded backlog) and everything arrives once it reads again', async (ctx) => {
  const { src, dst } = await readyPair(ctx);
  src.send({ type: STREAM_START, streamId: 1, serviceId: 'SSH', connectionId: 1 });
  await dst.next();
  const socket = (dst.ws as unknown as { _socket: import('node:net').Socket })._socket;
  socket.pause();
  const payload = Buffer.alloc(64512, 1);
  const total = 600; // ~38 MiB: far more than socket buffers plus the high-water mark
  let sent = 0;
  const pump = () => {
    while (sent < total && src.ws.bufferedAmount < 4 * 1024 * 1024) {
      src.send({ type: DATA, streamId: 1, serviceId: 'SSH', connectionId: 1, payload });
      sent++;
    }
    if (sent < total) setImmediate(pump);
  };
  pump();
  const paused = await waitLine(ctx, /source: paused reading: the destination has (\d+) bytes unsent/, 20000);
  const backlog = Number(/has (\d+) bytes/.exec(paused)![1]);
  assert.ok(backlog < 2 * 1024 * 1024, `backlog ${backlog}`);
  socket.resume();
  let received = 0;
  await dst.until(() => {
    while (dst.messages.length) {
      const m = dst.messages.shift()!;
      assert.is(m.payload.length, 64512);
      received++;
    }
    return received === total;
  }, 60000, 'all data at the destination');
  await waitLine(ctx, /source: resumed reading/);
});

lifecycle('a sender held back for a slow reader is pinged while paused, so its keepalive cannot take flow control for death; the pings stop on resume', async (ctx) => {
  const { src, dst } = await readyPair(ctx);
  src.send({ type: STREAM_START, streamId: 1, serviceId: 'SSH', connectionId: 1 });
  await dst.next();
  // The source pings at a steady rate, as our proxy does; the relay pings back at twice it.
  src.ws.ping('1');
  await waitLine(ctx, /source: connected/);
  const socket = (dst.ws as unknown as { _socket: import('node:net').Socket })._socket;
  socket.pause();
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
  await waitLine(ctx, /source: paused reading: the destination has \d+ bytes unsent/, 20000);
  // The source has stopped sending; what it sent last is in socket buffers, read by no one.
  pumping = false;
  const pings: number[] = [];
  src.ws.on('ping', () => pings.push(Date.now()));
  await within(new Promise<void>((resolve) => {
    const check = () => { if (pings.length >= 3) { src.ws.off('ping', check); resolve(); } };
    src.ws.on('ping', check);
  }), 5000, 'three pings from the relay to the paused source');
  socket.resume();
  let received = 0;
  await dst.until(() => {
    while (dst.messages.length) { dst.messages.shift(); received++; }
    return received === sent;
  }, 60000, 'all data at the destination');
  await waitLine(ctx, /source: resumed reading/);
  // Once resumed the source's own pings are answered again; a ping/pong round trip is a
  // barrier (a relay ping sent before it arrives before its pong), then no more relay pings.
  const roundTrip = async (payload: string) => {
    src.ws.ping(payload);
    await within(new Promise((resolve) => src.ws.once('pong', resolve)), 5000, `pong ${payload}`);
  };
  await roundTrip('2');
  const before = pings.length;
  for (let i = 3; i < 8; i++) await roundTrip(String(i));
  assert.is(pings.length, before, 'no relay pings once reading resumed');
});

lifecycle('a peer that floods starts but never reads its resets is paused, not queued for', async (ctx) => {
  const t = ctx.relay.openTunnel({ services: ['SSH'] });
  const src = await connectReady(ctx.relay, t.sourceAccessToken);
  ctx.peers.push(src);
  (src.ws as unknown as { _socket: import('node:net').Socket })._socket.pause();
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
  const line = await waitLine(ctx, /source: paused reading: the peer itself has (\d+) bytes unsent/, 30000);
  assert.ok(Number(/has (\d+) bytes/.exec(line)![1]) < 1024 * 1024, line);
  sent = 400;
});

lifecycle('log lines name connect, replace and close with byte counts, never tokens', async (ctx) => {
  const { t, src } = await readyPair(ctx);
  const again = await connectReady(ctx.relay, t.sourceAccessToken, { clientToken: CLIENT_TOKEN });
  ctx.peers.push(again);
  await src.waitClosed();
  ctx.relay.closeTunnel(t.tunnelId);
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
    const kept = first.openTunnel({ services: ['SSH'] });
    const expiring = first.openTunnel({ services: ['SSH'], lifetimeMinutes: 1 });
    const closed = first.openTunnel();
    first.closeTunnel(closed.tunnelId);
    // The source uses a client token, so its access token stays usable after the restart.
    const before = await connectReady(first, kept.sourceAccessToken, { clientToken: CLIENT_TOKEN });
    const rotated = first.rotateAccessToken(kept.tunnelId, 'DESTINATION');
    await first.close();
    await before.waitClosed();
    const text = readFileSync(statePath, 'utf8');
    for (const secret of [kept.sourceAccessToken, kept.destinationAccessToken, rotated.destinationAccessToken!, CLIENT_TOKEN]) assert.not.ok(text.includes(secret), 'a token in the state file');
    // Make the 1-minute tunnel due in 300 ms, as if the relay had been down for a while.
    const state = JSON.parse(text);
    const due = state.tunnels.find((x: { tunnelId: string }) => x.tunnelId === expiring.tunnelId);
    due.createdAt = Date.now() - 60_000 + 300;
    writeFileSync(statePath, JSON.stringify(state));

    const second = await startRelay({ port: 0, tls: 'plain', statePath, log: quiet });
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

lifecycle('--state: a failed write is one error line, never a crash; peers still connect and the next good write is logged', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'relay-state-'));
  const statePath = join(dir, 'state.json');
  const lines: string[] = [];
  const relay = await startRelay({ port: 0, tls: 'plain', statePath, log: new Logger({ level: LogLevel.INFO, sink: (line) => lines.push(line) }) });
  try {
    const t = relay.openTunnel({ services: ['SSH'] });
    // A directory where the temporary file goes makes every write fail, as a full disk would.
    const blocker = `${statePath}.${process.pid}.tmp`;
    mkdirSync(blocker);
    const src = await connectReady(relay, t.sourceAccessToken, { clientToken: CLIENT_TOKEN });
    const failed = lines.filter((l) => l.includes('cannot write state file'));
    assert.is(failed.length, 1, lines.join('\n'));
    assert.match(failed[0], /\[error\] cannot write state file .*state\.json: .*; open tunnels will not survive a restart/);
    const dst = await connectReady(relay, t.destinationAccessToken, { mode: 'destination', clientToken: CLIENT_TOKEN });
    assert.is(lines.filter((l) => l.includes('cannot write state file')).length, 1, 'logged once per failure streak');
    src.send({ type: STREAM_START, streamId: 1, serviceId: 'SSH' });
    assert.is((await dst.next()).type, STREAM_START);
    rmdirSync(blocker);
    relay.closeTunnel(t.tunnelId);
    await Promise.all([src.waitClosed(), dst.waitClosed()]);
    assert.ok(lines.some((l) => /\[info\] state file .* written again/.test(l)), lines.join('\n'));
    assert.is(JSON.parse(readFileSync(statePath, 'utf8')).tunnels[0].status, 'CLOSED');
  } finally {
    await relay.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

lifecycle('--state: a connect writes the file (the token is spent or bound), a disconnect does not (fsync per event is costly on SD cards)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'relay-state-'));
  const statePath = join(dir, 'state.json');
  const lines: string[] = [];
  let onLine: ((line: string) => void) | undefined;
  const relay = await startRelay({ port: 0, tls: 'plain', statePath, log: new Logger({ level: LogLevel.INFO, sink: (line) => { lines.push(line); onLine?.(line); } }) });
  try {
    const t = relay.openTunnel({ services: ['SSH'] });
    const opened = statSync(statePath).ino;
    const src = await connectReady(relay, t.sourceAccessToken);
    const connected = statSync(statePath).ino;
    assert.is.not(connected, opened, 'the consumed token was written');
    assert.is(JSON.parse(readFileSync(statePath, 'utf8')).tunnels[0].source.consumed, true);
    const gone = within(new Promise<void>((resolve) => { onLine = (l) => { if (l.includes('source: disconnected')) resolve(); }; }), 5000, 'disconnect logged');
    src.terminate();
    await gone;
    assert.is(statSync(statePath).ino, connected, 'a disconnect rewrote the state file');
  } finally {
    await relay.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

lifecycle('--state in a directory that does not exist: the relay does not start, and says why in one line', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'relay-state-'));
  try {
    const statePath = join(dir, 'missing', 'state.json');
    const err = await startRelay({ port: 0, tls: 'plain', statePath, log: new Logger({ level: 0 }) }).then(
      async (relay) => { await relay.close(); return undefined; },
      (e: Error) => e,
    );
    assert.ok(err, 'the relay started with a state file it cannot write');
    assert.match(err!.message, /^cannot write state file .*missing.state\.json: ENOENT/);
    assert.not.match(err!.message, /\n/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

lifecycle.run();
