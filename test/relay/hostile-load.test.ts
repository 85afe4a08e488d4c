/**
 * One peer's input must not freeze everyone else's. A peer that sends each byte of its DATA
 * frames as a WebSocket message of its own, as fast as it is read: against `localproxy relay`
 * over TLS in a process of its own while another tunnel's echo is timed, and as a relay against
 * a source proxy (the CLI) while the proxy's own upload is timed. Unloaded and loaded phases
 * alternate in one test, so a busy machine weighs on both alike.
 */
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { socketOf } from '../../src/flow/writer';
import { FrameDecoder, encodeFrame } from '../../src/protocol/framing';
import { MessageType, type MessageInit } from '../../src/protocol/message';
import type { Relay } from '../../src/relay/server';
import { spawnProxy, type ChildProxy } from '../helpers/child';
import { within } from '../helpers/wait';
import { startFakeService, type FakeService } from '../tunnel/fake-service';
import { Flood, oneBytePerMessage, startRelayChild, type RelayChild } from './hostile-peers';
import { connectPeer, connectReady, type TestPeer } from './peer';
import { signedPost } from './signed';

const { DATA, STREAM_START } = MessageType;
const CREDENTIALS = { accessKeyId: 'AKIDHOSTILELOAD', secretAccessKey: 'hostile-load-secret' };
/** Echo samples per phase, and phases of each kind (they alternate). */
const SAMPLES = 100;
const ROUNDS = 3;
/** A loaded phase that has not got its samples by then has failed anyway: it stops waiting. */
const PHASE_LIMIT_MS = 8000;

interface Ctx { relay?: RelayChild; sockets: WebSocket[]; service?: FakeService; proxy?: ChildProxy; client?: Socket; dir?: string }
const load = suite<Ctx>('a hostile peer against the others');

load.before.each((ctx) => {
  ctx.relay = undefined;
  ctx.sockets = [];
  ctx.service = undefined;
  ctx.proxy = undefined;
  ctx.client = undefined;
  ctx.dir = undefined;
});
load.after.each(async (ctx) => {
  for (const ws of ctx.sockets) ws.terminate();
  ctx.client?.destroy();
  await ctx.proxy?.stop();
  await ctx.service?.close();
  await ctx.relay?.stop();
  if (ctx.dir) rmSync(ctx.dir, { recursive: true, force: true });
});

/** Nearest-rank percentile. */
function percentile(samples: number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

/** What the tests' helpers need of a relay, for one in another process. */
function relayAt(child: RelayChild): Relay {
  return { url: `wss://127.0.0.1:${child.port}`, port: child.port, caPem: child.caPem } as unknown as Relay;
}

async function openTunnel(relay: Relay): Promise<{ sourceAccessToken: string; destinationAccessToken: string }> {
  const answer = await signedPost(relay, CREDENTIALS, 'OpenTunnel', JSON.stringify({ destinationConfig: { services: ['SSH'] } }));
  assert.is(answer.status, 200, answer.body);
  return answer.json as unknown as { sourceAccessToken: string; destinationAccessToken: string };
}

const data = (payload: Buffer): MessageInit => ({ type: DATA, streamId: 1, serviceId: 'SSH', connectionId: 1, payload });

/**
 * 1-byte echoes from `src` through the relay to `dst` and back, one after another, in ms:
 * `count` of them, or fewer when `limitMs` runs out first.
 */
async function echoes(src: TestPeer, dst: TestPeer, count: number, limitMs: number): Promise<number[]> {
  const samples: number[] = [];
  const started = performance.now();
  for (let i = 0; i < count && performance.now() - started < limitMs; i++) {
    const t0 = performance.now();
    src.send(data(Buffer.of(i & 0xff)));
    const there = await dst.next(30_000);
    dst.send(data(Buffer.from(there.payload)));
    const back = await src.next(30_000);
    samples.push(performance.now() - t0);
    assert.is(back.payload[0], i & 0xff);
  }
  return samples;
}

/** The attacker's destination: counts the DATA frames that come through and checks each one. */
function sink(ws: WebSocket, expected: Buffer): { frames: () => number; wait: (n: number, ms: number) => Promise<void> } {
  const decoder = new FrameDecoder();
  let frames = 0;
  let waiter: (() => void) | undefined;
  ws.on('message', (chunk: Buffer) => decoder.push(chunk, (msg) => {
    if (msg.type !== DATA) return;
    if (!Buffer.from(msg.payload).equals(expected)) throw new Error(`frame ${frames} arrived changed`);
    frames++;
    waiter?.();
  }, (err) => { throw err; }));
  return {
    frames: () => frames,
    wait: (n, ms) => within(new Promise<void>((resolve) => {
      waiter = () => { if (frames >= n) resolve(); };
      waiter();
    }), ms, `${n} attack frames through the relay`),
  };
}

load('a peer that sends each byte as its own WebSocket message: another tunnel\'s echo p99 stays within 2× its unloaded value or 50 ms, and every attack byte arrives', async (ctx) => {
  const child = ctx.relay = await startRelayChild({ port: 0, tls: 'self-signed', credentials: CREDENTIALS });
  const relay = relayAt(child);

  const victim = await openTunnel(relay);
  const src = await connectReady(relay, victim.sourceAccessToken);
  const dst = await connectReady(relay, victim.destinationAccessToken, { mode: 'destination' });
  ctx.sockets.push(src.ws, dst.ws);
  src.send({ type: STREAM_START, streamId: 1, serviceId: 'SSH', connectionId: 1 });
  assert.is((await dst.next()).type, STREAM_START);

  const attack = await openTunnel(relay);
  const attacker = await connectReady(relay, attack.sourceAccessToken);
  const attackerDst = await connectPeer(relay, attack.destinationAccessToken, { mode: 'destination' });
  ctx.sockets.push(attacker.ws, attackerDst.ws);
  const payload = Buffer.alloc(64_000, 0x5a);
  const received = sink(attackerDst.ws, payload);
  attacker.send({ type: STREAM_START, streamId: 1, serviceId: 'SSH', connectionId: 1 });
  // 64,014 one-byte messages, 448,098 bytes on the wire, per 64 KB DATA frame.
  const flood = new Flood(socketOf(attacker.ws)!, oneBytePerMessage(encodeFrame(data(payload)), true));

  await echoes(src, dst, 20, PHASE_LIMIT_MS); // warm-up
  const unloaded: number[] = [];
  const loaded: number[] = [];
  let framesDuringLoad = 0;
  for (let round = 0; round < ROUNDS; round++) {
    // Unloaded: the relay has read everything the attacker sent.
    await received.wait(flood.rounds, 60_000);
    unloaded.push(...await echoes(src, dst, SAMPLES, 60_000));
    const before = received.frames();
    flood.start();
    // The attack is on once the relay is reading it.
    await received.wait(before + 1, 30_000);
    loaded.push(...await echoes(src, dst, SAMPLES, PHASE_LIMIT_MS));
    flood.stop();
    framesDuringLoad += received.frames() - before;
    // A ping behind the flood is still answered, in its turn.
    const pongs = attacker.pongs.length;
    attacker.ws.ping(`round ${round}`);
    await attacker.until(() => attacker.pongs.length > pongs, 60_000, `the relay's pong in round ${round}`);
    assert.is(attacker.pongs[pongs].toString(), `round ${round}`);
  }
  await received.wait(flood.rounds, 60_000);

  const unloadedP99 = percentile(unloaded, 99);
  const loadedP99 = percentile(loaded, 99);
  const bound = Math.max(2 * unloadedP99, 50);
  const figures = `echo p99 unloaded ${unloadedP99.toFixed(2)} ms, under attack ${loadedP99.toFixed(2)} ms over ${loaded.length} samples (bound ${bound.toFixed(2)} ms); attack frames through the relay meanwhile: ${framesDuringLoad}`;
  assert.is(loaded.length, SAMPLES * ROUNDS, figures);
  assert.ok(loadedP99 <= bound, figures);
  // The attacker is slowed, not starved (each phase waited for its frames), and loses nothing.
  assert.is(received.frames(), flood.rounds, figures);
  console.log(`  ${figures}`);
});

load('a relay that sends each byte as its own WebSocket message: the source proxy\'s upload latency p99 stays within 2× its unloaded value or 50 ms, every byte arrives in order, and the proxy keeps pinging', async (ctx) => {
  const service = ctx.service = await startFakeService();
  ctx.dir = mkdtempSync(join(tmpdir(), 'hostile-relay-'));
  writeFileSync(join(ctx.dir, 'relay.pem'), service.caPem);
  const proxy = ctx.proxy = await spawnProxy({
    relay: { port: service.port } as unknown as Relay, ca: { dir: ctx.dir, file: join(ctx.dir, 'relay.pem') },
    mode: 'source', accessToken: 'hostile-relay-token', services: { SSH: 0 }, settings: { pingPeriodMs: 100 },
  });
  const relay = await service.peer(0, 15_000);
  let pings = 0;
  let onPing: (() => void) | undefined;
  relay.ws.on('ping', () => {
    pings++;
    onPing?.();
  });
  /** The proxy's keepalive pinged again: its timers run while the flood is read. */
  const pinged = (after: number, ms: number) => within(new Promise<void>((resolve) => {
    onPing = () => { if (pings > after) resolve(); };
    onPing();
  }), ms, `a ping from the proxy (${pings} so far)`);
  relay.serviceIds('SSH');
  await proxy.ready;
  const client = ctx.client = netConnect({ port: proxy.ports.SSH, host: '127.0.0.1' });
  client.setNoDelay(true);
  await within(once(client, 'connect'), 5000, 'connect to the source proxy');
  const start = await relay.takeType(STREAM_START, 10_000);

  // The flood: DATA for the client's own connection, one byte per message (3 bytes on the wire:
  // a server does not mask). Its payload counts up, so order and completeness can be checked.
  const payload = Buffer.alloc(64_000);
  for (let i = 0; i < payload.length; i++) payload[i] = i % 251;
  const frame = encodeFrame({ type: DATA, streamId: start.streamId, serviceId: 'SSH', connectionId: start.connectionId, payload });
  const flood = new Flood(socketOf(relay.ws)!, oneBytePerMessage(frame, false));
  let received = 0;
  let corrupt = -1;
  let waiter: (() => void) | undefined;
  client.on('data', (chunk: Buffer) => {
    for (let i = 0; i < chunk.length && corrupt < 0; i++) if (chunk[i] !== (received + i) % payload.length % 251) corrupt = received + i;
    received += chunk.length;
    waiter?.();
  });
  const receivedAll = (bytes: number, ms: number) => within(new Promise<void>((resolve) => {
    waiter = () => { if (received >= bytes) resolve(); };
    waiter();
  }), ms, `${bytes} flood bytes at the client (got ${received})`);

  /** 1-byte writes by the client, each timed until the relay has it as DATA, in ms. */
  const uploads = async (count: number, limitMs: number): Promise<number[]> => {
    const samples: number[] = [];
    const started = performance.now();
    for (let i = 0; i < count && performance.now() - started < limitMs; i++) {
      const t0 = performance.now();
      client.write(Buffer.of(i & 0xff));
      const m = await relay.takeType(DATA, 30_000);
      samples.push(performance.now() - t0);
      assert.equal([...m.payload], [i & 0xff]);
    }
    return samples;
  };

  await uploads(20, PHASE_LIMIT_MS); // warm-up
  const unloaded: number[] = [];
  const loaded: number[] = [];
  let pingsDuringLoad = 0;
  for (let round = 0; round < ROUNDS; round++) {
    await receivedAll(flood.rounds * payload.length, 60_000);
    unloaded.push(...await uploads(SAMPLES, 60_000));
    const before = received;
    const pingsBefore = pings;
    flood.start();
    await receivedAll(before + payload.length, 30_000);
    loaded.push(...await uploads(SAMPLES, PHASE_LIMIT_MS));
    await pinged(pingsBefore, 10_000);
    flood.stop();
    pingsDuringLoad += pings - pingsBefore;
  }
  await receivedAll(flood.rounds * payload.length, 60_000);

  const unloadedP99 = percentile(unloaded, 99);
  const loadedP99 = percentile(loaded, 99);
  const bound = Math.max(2 * unloadedP99, 50);
  const figures = `upload p99 unloaded ${unloadedP99.toFixed(2)} ms, under attack ${loadedP99.toFixed(2)} ms over ${loaded.length} samples (bound ${bound.toFixed(2)} ms); flood frames ${flood.rounds}, proxy pings during the attack ${pingsDuringLoad}`;
  assert.is(loaded.length, SAMPLES * ROUNDS, figures);
  assert.ok(loadedP99 <= bound, figures);
  assert.is(corrupt, -1, `flood byte ${corrupt} arrived changed or out of order`);
  assert.is(received, flood.rounds * payload.length, figures);
  // The proxy never gave up on its connection.
  assert.is(service.peers.length, 1, proxy.output());
  console.log(`  ${figures}`);
});

load.run();
