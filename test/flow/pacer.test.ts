/**
 * The pacer on its own (issue 13), with a fake clock: a simulated service that reads our bytes
 * at a rate, answers each probe when it reaches it, and whose pong takes the base round trip
 * (plus whatever the test adds) to come back. Deterministic: no sockets, no timers, a seeded
 * random generator where there is randomness.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { defaultSettings, exportSettings, mergeSettingsJson } from '../../src/settings';
import { DEFAULT_TARGET_DELAY_MS, DRAIN_EVERY_MS, IDLE_PROBE_EVERY_MS, INITIAL_WINDOW_BYTES, MAX_PROBES, MIN_WINDOW_BYTES, Pacer, STALL_MS, TARGET_MESSAGES, WS_SEND_WINDOW_BYTES, type PacerSettings } from '../../src/flow/pacer';
import { pacerSettings } from '../../src/settings';

interface Link {
  /** Bytes per second the service reads. */
  rate: number;
  /** Round trip of a probe with nothing queued ahead of it (ms). */
  baseMs: number;
  /** The service reads in bursts: up to this many bytes at once (a token bucket's depth). */
  burstBytes?: number;
  /** Extra delay of a pong on its way back, e.g. behind the peer's data (ms). */
  returnDelayMs?: (now: number) => number;
}

interface App {
  /** Bytes per second the application offers; undefined: always more than the link takes. */
  rate?: number;
  /** The application stops offering at this time (ms). */
  stopAt?: number;
}

interface Result {
  /** Bytes per second the service read after the warm-up. */
  throughput: number;
  /** Queueing delay in front of the service after the warm-up (ms): mean and 99th percentile. */
  meanQueueMs: number;
  p99QueueMs: number;
  probes: number;
  probesAfterStop: number;
}

const STEP_MS = 0.25;

/** Runs `pacer` against `link` for `ms`; figures count from `warmupMs` on. */
function simulate(pacer: Pacer, link: Link, ms: number, app: App = {}, warmupMs = Math.min(5000, ms / 4)): Result {
  type Item = { bytes: number } | { probe: number };
  const queue: Item[] = [];
  let queuedBytes = 0;
  const pongs: Array<{ id: number; at: number }> = [];
  let lastPongAt = 0;
  let tokens = 0;
  let offered = 0;
  let sentByApp = 0;
  let delivered = 0;
  let probes = 0;
  let probesAfterStop = 0;
  const delays: number[] = [];
  const burst = link.burstBytes ?? Math.max(1, link.rate * STEP_MS / 1000);
  for (let now = 0; now < ms; now += STEP_MS) {
    while (pongs.length > 0 && pongs[0].at <= now) pacer.pong(pongs.shift()!.id, now);
    const stopped = app.stopAt !== undefined && now >= app.stopAt;
    if (!stopped) offered = app.rate === undefined ? Infinity : offered + (app.rate * STEP_MS) / 1000;
    let room = pacer.room(now, 0, false);
    while (room > 0 && offered - sentByApp >= 1) {
      const chunk = Math.floor(Math.min(pacer.messageBytes(), offered - sentByApp));
      queue.push({ bytes: chunk });
      queuedBytes += chunk;
      sentByApp += chunk;
      pacer.sent(chunk, now);
      room -= chunk;
    }
    if (pacer.probeDue(now)) {
      queue.push({ probe: pacer.probeSent(now) });
      probes++;
      if (stopped) probesAfterStop++;
    }
    // The service: reads at its rate; a probe is answered when it reaches the head.
    tokens = Math.min(burst, tokens + (link.rate * STEP_MS) / 1000);
    while (queue.length > 0) {
      const head = queue[0];
      if ('probe' in head) {
        queue.shift();
        lastPongAt = Math.max(lastPongAt, now + link.baseMs + (link.returnDelayMs?.(now) ?? 0));
        pongs.push({ id: head.probe, at: lastPongAt });
        continue;
      }
      if (tokens <= 0) break;
      const take = Math.min(tokens, head.bytes);
      head.bytes -= take;
      tokens -= take;
      queuedBytes -= take;
      if (now >= warmupMs) delivered += take;
      if (head.bytes <= 0) queue.shift();
    }
    if (now >= warmupMs) delays.push((queuedBytes / link.rate) * 1000);
  }
  delays.sort((a, b) => a - b);
  return {
    throughput: (delivered * 1000) / (ms - warmupMs),
    meanQueueMs: delays.reduce((a, b) => a + b, 0) / delays.length,
    p99QueueMs: delays[Math.floor(delays.length * 0.99)],
    probes,
    probesAfterStop,
  };
}

/** A seeded generator (mulberry32): the same numbers on every run. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const settings = (over: Partial<PacerSettings> = {}): Partial<PacerSettings> => ({ ...over });
const pct = (x: number) => `${(x * 100).toFixed(1)} %`;

const control = suite('pacer: the control law on a simulated service');

control('800 kB/s, loopback round trip: ≥ 90 % of the rate, and the queue stays at tens of ms, not seconds', () => {
  const link = { rate: 800_000, baseMs: 0.5 };
  const r = simulate(new Pacer(settings()), link, 20_000);
  assert.ok(r.throughput >= 0.9 * link.rate, `throughput ${pct(r.throughput / link.rate)} of the rate`);
  // The fixed window alone would keep 256 kB (320 ms) queued; the floor of the window is 20 ms here.
  assert.ok(r.p99QueueMs <= 60, `queue p99 ${r.p99QueueMs.toFixed(1)} ms`);
  assert.ok(r.meanQueueMs <= 35, `queue mean ${r.meanQueueMs.toFixed(1)} ms`);
});

control(`800 kB/s behind a 100 ms round trip: ≥ 90 % of the rate, queue near the target (${DEFAULT_TARGET_DELAY_MS} ms)`, () => {
  const link = { rate: 800_000, baseMs: 100 };
  const r = simulate(new Pacer(settings()), link, 30_000);
  assert.ok(r.throughput >= 0.9 * link.rate, `throughput ${pct(r.throughput / link.rate)} of the rate`);
  assert.ok(r.meanQueueMs <= 2 * DEFAULT_TARGET_DELAY_MS, `queue mean ${r.meanQueueMs.toFixed(1)} ms`);
  assert.ok(r.p99QueueMs <= 100, `queue p99 ${r.p99QueueMs.toFixed(1)} ms`);
});

control('100 MB/s at a 0.3 ms round trip: ≥ 90 % of the rate, and only a few full messages queued', () => {
  const link = { rate: 100_000_000, baseMs: 0.3 };
  const r = simulate(new Pacer(settings()), link, 4000, {}, 1000);
  assert.ok(r.throughput >= 0.9 * link.rate, `throughput ${pct(r.throughput / link.rate)} of the rate`);
  const messagesMs = (TARGET_MESSAGES * 64512 * 1000) / link.rate;
  assert.ok(r.meanQueueMs <= 1.5 * messagesMs, `queue mean ${r.meanQueueMs.toFixed(2)} ms (${TARGET_MESSAGES} messages: ${messagesMs.toFixed(2)} ms)`);
});

control('a target of 2 ms keeps a fast link full with a 2 ms queue', () => {
  const link = { rate: 100_000_000, baseMs: 0.3 };
  const r = simulate(new Pacer(settings({ targetDelayMs: 2 })), link, 4000, {}, 1000);
  assert.ok(r.throughput >= 0.9 * link.rate, `throughput ${pct(r.throughput / link.rate)} of the rate`);
  assert.ok(r.meanQueueMs <= 4, `queue mean ${r.meanQueueMs.toFixed(2)} ms`);
});

control('a service that reads in 64 kB bursts (a token bucket) still gets ≥ 90 % of its rate', () => {
  const link = { rate: 800_000, baseMs: 0.5, burstBytes: 64 * 1024 };
  const r = simulate(new Pacer(settings()), link, 20_000);
  assert.ok(r.throughput >= 0.9 * link.rate, `throughput ${pct(r.throughput / link.rate)} of the rate`);
  assert.ok(r.p99QueueMs <= 150, `queue p99 ${r.p99QueueMs.toFixed(1)} ms`);
});

control('pongs delayed on their way back by up to 30 ms (the peer sending too) cost < 10 % of the rate', () => {
  const next = random(7);
  const link = { rate: 800_000, baseMs: 20, returnDelayMs: () => next() * 30 };
  const r = simulate(new Pacer(settings()), link, 30_000);
  assert.ok(r.throughput >= 0.9 * link.rate, `throughput ${pct(r.throughput / link.rate)} of the rate`);
});

control('without pacing (target 0) the fixed window alone fills the queue: what the tests above are measured against', () => {
  const link = { rate: 800_000, baseMs: 0.5 };
  const r = simulate(new Pacer(settings({ targetDelayMs: 0 })), link, 5000);
  assert.is(r.probes, 0);
  assert.ok(r.meanQueueMs > 200, `queue mean ${r.meanQueueMs.toFixed(1)} ms`);
});

control('an application that sends less than the link takes does not grow the window, and probes stop when it stops', () => {
  const pacer = new Pacer(settings());
  const r = simulate(pacer, { rate: 800_000, baseMs: 0.5 }, 10_000, { rate: 20_000, stopAt: 6000 });
  assert.ok(pacer.window <= INITIAL_WINDOW_BYTES, `window ${pacer.window}`);
  assert.ok(r.probes > 0);
  assert.ok(r.probesAfterStop <= 1, `${r.probesAfterStop} probes after the application stopped`);
});

control('a few probes per round trip while data flows, and a message holds the link for about 5 ms', () => {
  const link = { rate: 800_000, baseMs: 100 };
  const pacer = new Pacer(settings());
  const r = simulate(pacer, link, 20_000);
  const perRoundTrip = r.probes / (20_000 / (link.baseMs + 10));
  assert.ok(perRoundTrip <= MAX_PROBES + 1 && perRoundTrip >= 1, `${perRoundTrip.toFixed(1)} probes per round trip`);
  const message = pacer.messageBytes();
  assert.ok(message >= 3000 && message <= 8000, `message ${message} bytes at 800 kB/s`);
  const fast = new Pacer(settings());
  simulate(fast, { rate: 100_000_000, baseMs: 0.3 }, 2000);
  assert.is(fast.messageBytes(), 64512, 'full messages on a fast link');
});

control.run();

const events = suite('pacer: events and fallbacks');

events('off (target 0): the fixed window of unwritten bytes, no probes', () => {
  const p = new Pacer({ targetDelayMs: 0 });
  assert.is(p.state, 'off');
  assert.is(p.room(0, 0, false), WS_SEND_WINDOW_BYTES);
  assert.is(p.room(0, WS_SEND_WINDOW_BYTES - 1, false), 1);
  p.sent(1000, 0);
  assert.not.ok(p.probeDue(0));
});

events('the first window, a probe after the first bytes, and the window opening when its pong acknowledges them', () => {
  const p = new Pacer(settings());
  assert.is(p.room(0, 0, false), INITIAL_WINDOW_BYTES);
  assert.not.ok(p.probeDue(0), 'nothing sent: no probe');
  p.sent(INITIAL_WINDOW_BYTES, 0);
  assert.ok(p.room(0, 0, false) <= 0, 'the window is full');
  assert.ok(p.probeDue(0));
  const id = p.probeSent(0);
  assert.not.ok(p.probeDue(1), 'no new bytes: no second probe');
  assert.ok(p.pong(id, 5));
  assert.is(p.inFlight, 0);
  assert.ok(p.room(5, 0, false) > 0);
  assert.not.ok(p.pong(id, 6), 'a pong answered twice counts once');
});

events('a few bytes on an idle path (an echo) get a probe at most every IDLE_PROBE_EVERY_MS; a message\'s worth gets one at once', () => {
  const p = new Pacer(settings());
  p.sent(1, 0);
  assert.ok(p.probeDue(0), 'the first bytes of the session: a probe (the base round trip)');
  p.pong(p.probeSent(0), 0.3);
  // 1-byte echoes every 0.5 ms: the next probe only once IDLE_PROBE_EVERY_MS has passed.
  let probes = 0;
  for (let t = 0.5; t < 10 * IDLE_PROBE_EVERY_MS; t += 0.5) {
    assert.ok(p.room(t, 0, false) > 0, `the echo at ${t} ms may go`);
    p.sent(1, t);
    if (p.probeDue(t)) {
      p.pong(p.probeSent(t), t + 0.3);
      probes++;
    }
  }
  assert.ok(probes >= 9 && probes <= 10, `${probes} probes in ${10 * IDLE_PROBE_EVERY_MS} ms`);
  assert.ok(p.inFlight < 1000, `unprobed bytes stay few (${p.inFlight})`);
  // Bulk starts: its first quarter window gets a probe at once, however recent the last one.
  const t = 10 * IDLE_PROBE_EVERY_MS + 1;
  p.pong(p.probeSent(t - 1), t - 0.5);
  p.sent(p.window / MAX_PROBES, t);
  assert.ok(p.probeDue(t));
});

events('bulk on a fast link (each pong back within a message): a probe per quarter window, not one per flush', () => {
  const p = new Pacer(settings());
  p.sent(1000, 0);
  p.pong(p.probeSent(0), 0.2);
  p.window = 1024 * 1024;
  let probes = 0;
  let flushes = 0;
  for (let t = 1; t < 200; t += 0.5) {
    p.sent(64 * 1024, t);
    flushes++;
    if (p.probeDue(t)) {
      probes++;
      p.pong(p.probeSent(t), t + 0.2);
    }
  }
  assert.ok(probes <= flushes / 3, `${probes} probes for ${flushes} flushes of 64 KiB with a window of ${p.window}`);
  assert.ok(probes >= flushes / 20, `${probes} probes for ${flushes} flushes: the window still gets its samples`);
});

events('a window cut below a message by a delay spike on a fast link still gets the probe that reopens it (no probe out, window full: the sending held for good)', () => {
  const p = new Pacer(settings());
  // Bulk at ~128 MB/s for a second: the message size is a fast link's 63 KiB.
  let t = 0;
  for (; t < 1000; t += 1) {
    p.sent(128 * 1024, t);
    if (p.probeDue(t)) p.pong(p.probeSent(t), t + 0.3);
  }
  assert.ok(p.messageBytes() > 32 * 1024, `message size ${p.messageBytes()}`);
  // Everything acknowledged; then the window falls to a fraction of a message (a spike of delay).
  p.pong(p.probeSent(t), t + 0.3);
  p.window = 20 * 1024;
  t += 1;
  p.sent(29 * 1024, t);
  assert.ok(p.room(t, 0, false) <= 0, 'the window is full');
  assert.ok(p.probeDue(t), 'a probe follows the bytes that filled it');
  const id = p.probeSent(t);
  assert.ok(p.pong(id, t + 0.5));
  assert.ok(p.room(t + 0.5, 0, false) > 0, 'its pong opens the window again');
});

events('pongs come in order: the answer to a later probe acknowledges the earlier ones too', () => {
  const p = new Pacer(settings());
  const ids: number[] = [];
  for (let i = 0; i < 3; i++) {
    p.sent(1000, i);
    ids.push(p.probeSent(i));
  }
  assert.ok(p.pong(ids[2], 10));
  assert.is(p.inFlight, 0);
  assert.not.ok(p.pong(ids[0], 11), 'the skipped probe is forgotten');
});

events('at most MAX_PROBES outstanding', () => {
  const p = new Pacer(settings());
  let sent = 0;
  for (let i = 0; i < 20; i++) {
    p.sent(8000, 0);
    if (p.probeDue(0)) {
      p.probeSent(0);
      sent++;
    }
  }
  assert.is(sent, MAX_PROBES);
});

events('while our reader is paused the fixed window applies (pongs wait unread) and round trips spanning the pause are not used', () => {
  const p = new Pacer(settings());
  p.sent(INITIAL_WINDOW_BYTES, 0);
  const id = p.probeSent(0);
  assert.ok(p.room(1, 0, false) <= 0);
  assert.is(p.room(2, 1000, true), WS_SEND_WINDOW_BYTES - 1000);
  p.pong(id, 500);
  assert.is(p.baseRttMs, undefined, 'the 500 ms round trip includes the pause');
  assert.is(p.inFlight, 0, 'but it still acknowledges');
});

events('bytes sent while the pacer steps aside (reader paused) cost no pacing credit: once they are acknowledged, sending goes on at once', () => {
  const p = new Pacer(settings());
  p.sent(1000, 0);
  p.pong(p.probeSent(0), 5);
  assert.is(p.state, 'paced');
  assert.ok(p.room(5, 0, false) > 0, 'paced, with a round trip known: the pace applies');
  // Our reader is paused (an application behind us does not read): the fixed window, for
  // as long as it lasts; 16 MB go that way.
  for (let t = 6; t < 6 + 256; t++) {
    assert.ok(p.room(t, 0, true) > 0);
    p.sent(64 * 1024, t);
  }
  const id = p.probeSent(262);
  // Reading again: the pong acknowledges everything, and the window and the pace allow sending.
  assert.ok(p.pong(id, 300));
  assert.is(p.inFlight, 0);
  assert.ok(p.room(300, 0, false) > 0, `room ${p.room(300, 0, false)}: nothing owed for the bytes sent unpaced`);
  const wake = p.wakeAt(300);
  assert.ok(wake === undefined || wake <= 300 + STALL_MS, `no wake-up far off (${wake})`);
});

events('a probe unanswered for STALL_MS: the pacer steps aside until a pong comes', () => {
  const p = new Pacer(settings());
  p.sent(1000, 0);
  const first = p.probeSent(0);
  p.pong(first, 1);
  p.sent(INITIAL_WINDOW_BYTES, 2);
  const lost = p.probeSent(2);
  assert.ok(p.room(3, 0, false) <= 0, 'the window is full');
  assert.is(p.wakeAt(3), 2 + STALL_MS, 'the owner is told when to look again');
  assert.is(p.room(2 + STALL_MS, 0, false), WS_SEND_WINDOW_BYTES, 'stalled: the fixed window');
  assert.is(p.state, 'stalled');
  assert.not.ok(p.pong(lost, 2 + STALL_MS + 1), 'the given-up probe no longer counts');
  p.sent(1000, 2 + STALL_MS + 2);
  assert.ok(p.probeDue(2 + STALL_MS + 2), 'probing goes on');
  const next = p.probeSent(2 + STALL_MS + 2);
  p.pong(next, 2 + STALL_MS + 3);
  assert.is(p.state, 'paced');
  assert.ok(p.room(2 + STALL_MS + 3, 0, false) <= p.window);
});

events('a service that never answers: the fixed window after STALL_MS, so nothing is held back for long', () => {
  const p = new Pacer(settings());
  p.sent(INITIAL_WINDOW_BYTES, 0);
  p.probeSent(0);
  assert.ok(p.room(STALL_MS - 1, 0, false) <= 0);
  assert.is(p.room(STALL_MS, 0, false), WS_SEND_WINDOW_BYTES);
});

events('every DRAIN_EVERY_MS of paced sending, the window drops to one message for a round trip, then comes back', () => {
  const pacer = new Pacer(settings());
  const link = { rate: 800_000, baseMs: 0.5 };
  simulate(pacer, link, DRAIN_EVERY_MS + 2000);
  // The simulation ran past one drain; the window is back above one message.
  assert.ok(pacer.window >= MIN_WINDOW_BYTES);
  assert.ok(pacer.baseRttMs !== undefined && pacer.baseRttMs <= 10, `base ${pacer.baseRttMs} ms`);
});

events.run();

const config = suite('pacer: settings');

config('flow.target_delay_ms, flow.min_message_bytes and flow.max_message_bytes: exported, merged, checked, bounded by message.max_payload_size', () => {
  const exported = JSON.parse(exportSettings(defaultSettings())).tunneling.proxy.flow;
  assert.equal([exported.target_delay_ms, exported.min_message_bytes, exported.max_message_bytes], [String(DEFAULT_TARGET_DELAY_MS), '1024', '64512']);
  const { settings } = mergeSettingsJson('{"tunneling":{"proxy":{"flow":{"target_delay_ms":"0","min_message_bytes":"4096","max_message_bytes":"2048"},"message":{"max_payload_size":"1500"}}}}');
  assert.equal(pacerSettings(settings), { targetDelayMs: 0, minMessageBytes: 1500, maxMessageBytes: 1500 });
  assert.throws(() => mergeSettingsJson('{"tunneling":{"proxy":{"flow":{"target_delay_ms":"-1"}}}}'), /flow\.target_delay_ms must be between 0 and 1000/);
  assert.throws(() => mergeSettingsJson('{"tunneling":{"proxy":{"flow":{"min_message_bytes":"10"}}}}'), /flow\.min_message_bytes must be between 256 and 64512/);
});

config.run();
