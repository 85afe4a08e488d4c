/**
 * How many bytes may be handed to the WebSocket now: a window of bytes in flight, kept where
 * the round trip of delay probes (pings the service answers only after reading every byte
 * before them) shows a queue of the target delay, sends spread over the round trip, and the
 * DATA size for the measured rate. docs/DESIGN.md ("The pacer") gives the rules and why.
 *
 * Pure: every call passes the time in milliseconds; no I/O, no timers (`wakeAt` tells the
 * owner when to look again).
 */
import { MAX_PAYLOAD_BYTES, MAX_WS_MESSAGE_BYTES } from '../protocol/constants';

/** Bytes handed to `ws` and not yet written to its socket, when nothing else limits (two full WebSocket messages). */
export const WS_SEND_WINDOW_BYTES = 2 * MAX_WS_MESSAGE_BYTES;

export interface PacerSettings {
  /** Queueing delay to keep in front of the service (ms); 0: no pacing, only the fixed window. */
  targetDelayMs: number;
  /** Smallest and largest DATA payload (bytes). */
  minMessageBytes: number;
  maxMessageBytes: number;
}

export const DEFAULT_TARGET_DELAY_MS = 20;
export const DEFAULT_MIN_MESSAGE_BYTES = 1024;

export function defaultPacerSettings(): PacerSettings {
  return { targetDelayMs: DEFAULT_TARGET_DELAY_MS, minMessageBytes: DEFAULT_MIN_MESSAGE_BYTES, maxMessageBytes: MAX_PAYLOAD_BYTES };
}

/** How long one DATA message may hold the link at the measured rate. */
export const MESSAGE_TIME_MS = 5;
/** The queue is never asked to hold more than this many full messages (see the target above). */
export const TARGET_MESSAGES = 8;
/** The window never goes below this: on a slow link it is tens of ms of data, enough to keep the service busy between our turns. */
export const MIN_WINDOW_BYTES = 16 * 1024;
/** The first window, before any round trip is measured. */
export const INITIAL_WINDOW_BYTES = 16 * 1024;
export const MAX_WINDOW_BYTES = 64 * 1024 * 1024;
/** Probes outstanding at most. */
export const MAX_PROBES = 4;
/** Less than a quarter window unprobed and no probe out: a probe at most this often (it keeps the base round trip fresh). */
export const IDLE_PROBE_EVERY_MS = 100;
/** A probe unanswered this long: the pacer steps aside until a pong comes. */
export const STALL_MS = 2000;
/** Sends go out at this many times window / round trip (2 in slow start): the window, not the pace, limits. */
export const PACING_GAIN = 1.25;
/** Pacing credit saved up at most: this long at the pace, or two messages (timers are coarse, event loops busy). */
const PACING_BURST_MS = 2;
/** Recent round trips kept for the current delay (their minimum). */
const RECENT_SAMPLES = 4;
/** The base round trip is the minimum over BASE_SLOTS slots of BASE_SLOT_MS. */
const BASE_SLOT_MS = 1000;
const BASE_SLOTS = 10;
/**
 * The delivery rate is the bytes acknowledged over the last RATE_WINDOW_MS, once they span
 * RATE_MIN_SPAN_MS: shorter spans see the service's bursts (it reads what has queued while it
 * held us back all at once), not its rate.
 */
const RATE_WINDOW_MS = 1000;
const RATE_MIN_SPAN_MS = 200;
const RATE_MARK_EVERY_MS = 20;
/** Each round trip the window moves this fraction of the way to the one that would hold the queue at the target, growing by MAX_GROWTH at most. */
const STEP = 0.5;
const MAX_GROWTH = 1.25;
/** How often the queue is drained to see the base round trip again (shorter than the base's 10 s memory). */
export const DRAIN_EVERY_MS = 8000;
/** A drain gives up after this long (the path may never empty, e.g. the service stopped reading us). */
const DRAIN_LIMIT_MS = 500;

interface Probe {
  id: number;
  /** `sent` when the probe was handed to ws: its pong acknowledges every byte up to here. */
  mark: number;
  at: number;
  /** The reader pause count when it was sent: a pause in between spoils its round trip. */
  pauses: number;
}

/** A running minimum over fixed time slots: the last `slots` slots, the current one included. */
class SlotMinimum {
  private readonly values: number[] = [];
  private slotStart = -Infinity;

  constructor(private readonly slotMs: number, private readonly slots: number) {}

  add(value: number, now: number): void {
    if (now - this.slotStart >= this.slotMs || this.values.length === 0) {
      this.values.push(value);
      if (this.values.length > this.slots) this.values.shift();
      this.slotStart = now;
    } else {
      this.values[this.values.length - 1] = Math.min(this.values[this.values.length - 1], value);
    }
  }

  get value(): number | undefined {
    return this.values.length === 0 ? undefined : Math.min(...this.values);
  }
}

export type PacerState = 'off' | 'measuring' | 'paced' | 'stalled';

export class Pacer {
  readonly settings: PacerSettings;
  /** Bytes in flight allowed while paced. */
  window = INITIAL_WINDOW_BYTES;
  /** Bytes handed to ws, and the part of them that answered probes acknowledge (cumulative). */
  private sentBytes = 0;
  private ackedBytes = 0;
  private readonly probes: Probe[] = [];
  private nextId = 1;
  private lastProbeMark = 0;
  private lastProbeAt = -Infinity;
  private answered = 0;
  /** Some probe was given up (STALL_MS): unpaced until the next pong. */
  private stalled = false;
  private pauses = 0;
  private readerWasPaused = false;
  private readonly recent: number[] = [];
  private readonly base = new SlotMinimum(BASE_SLOT_MS, BASE_SLOTS);
  /** (time, bytes acknowledged) now and then over the last RATE_WINDOW_MS, oldest first. */
  private readonly rateMarks: Array<{ at: number; acked: number }> = [];
  private deliveryRate?: number;
  /** The window moves once per round trip: when the bytes sent at the last move are acknowledged. */
  private nextUpdate = 0;
  private slowStart = true;
  /** The window limited the sending since the last move (else the apps did: no growth). */
  private limited = false;
  /** Draining: since when, the window to restore, and the first probe sent with little in flight. */
  private drain?: { since: number; window: number; probeId?: number };
  private lastDrainAt?: number;
  /** Pacing credit (bytes; negative after a message larger than it) and when it was last brought up to date. */
  private credit = 0;
  private creditAt?: number;

  constructor(settings: Partial<PacerSettings> = {}) {
    this.settings = { ...defaultPacerSettings(), ...settings };
  }

  get state(): PacerState {
    if (this.settings.targetDelayMs <= 0) return 'off';
    if (this.stalled) return 'stalled';
    return this.answered > 0 ? 'paced' : 'measuring';
  }

  /** Bytes in flight: handed to ws and not yet acknowledged by a pong. */
  get inFlight(): number {
    return this.sentBytes - this.ackedBytes;
  }

  /** Queueing delay now (ms): the recent minimum round trip above the base one; undefined before any. */
  get queueDelayMs(): number | undefined {
    const base = this.base.value;
    if (base === undefined || this.recent.length === 0) return undefined;
    return Math.max(0, Math.min(...this.recent) - base);
  }

  get baseRttMs(): number | undefined {
    return this.base.value;
  }

  /** Delivery rate (bytes/s) over the last second; undefined before it is known. */
  get rate(): number | undefined {
    return this.deliveryRate;
  }

  /** The queueing delay aimed at (ms): the setting, or less on a fast link (TARGET_MESSAGES). */
  get targetMs(): number {
    const { targetDelayMs, maxMessageBytes } = this.settings;
    const rate = this.deliveryRate;
    if (!rate) return targetDelayMs;
    return Math.min(targetDelayMs, (TARGET_MESSAGES * maxMessageBytes * 1000) / rate);
  }

  /**
   * The DATA payload size: about MESSAGE_TIME_MS at the delivery rate, within the settings; at
   * least a sixteenth of the window, which follows a rising rate at once (the rate takes a
   * second), so a transfer speeding up is not cut into small messages meanwhile.
   */
  messageBytes(): number {
    const { minMessageBytes, maxMessageBytes } = this.settings;
    const state = this.state;
    if (state === 'off' || state === 'stalled') return maxMessageBytes;
    const rate = this.deliveryRate ?? 0;
    const bytes = Math.max((rate * MESSAGE_TIME_MS) / 1000, this.window / 16);
    return Math.round(Math.max(minMessageBytes, Math.min(maxMessageBytes, bytes)));
  }

  /**
   * Bytes that may be handed to ws now (≤ 0: none), given the bytes it holds not yet written to
   * its socket and whether our WebSocket reader is paused.
   */
  room(now: number, unwrittenBytes: number, readerPaused: boolean): number {
    const fixed = WS_SEND_WINDOW_BYTES - unwrittenBytes;
    if (readerPaused) this.notePause();
    else this.readerWasPaused = false;
    this.checkStall(now);
    if (readerPaused || !this.windowed) {
      // Bytes sent while the pacer steps aside cost no pacing credit: charged, they left it
      // megabytes in debt, and the sending then waited seconds once pacing resumed.
      this.creditAt = undefined;
      return fixed;
    }
    if (this.drain && now - this.drain.since >= DRAIN_LIMIT_MS) this.endDrain(now);
    const windowRoom = this.currentWindow() - this.inFlight;
    const pace = this.pace();
    if (pace === undefined) return Math.min(fixed, windowRoom);
    this.refill(now, pace);
    return Math.min(fixed, windowRoom, this.credit);
  }

  /** The window applies: measuring (the first probes) or paced. */
  private get windowed(): boolean {
    const state = this.state;
    return state === 'paced' || state === 'measuring';
  }

  private currentWindow(): number {
    return this.drain ? this.messageBytes() : this.window;
  }

  /** Bytes per ms the sends are spread at; undefined before a round trip is known (the window alone limits). */
  private pace(): number | undefined {
    const rtt = this.recent.length > 0 ? Math.min(...this.recent) : this.base.value;
    if (rtt === undefined) return undefined;
    return ((this.slowStart ? 2 : PACING_GAIN) * this.currentWindow()) / Math.max(0.05, rtt);
  }

  private refill(now: number, pace: number): void {
    const cap = Math.max(this.messageBytes(), pace * PACING_BURST_MS);
    if (this.creditAt !== undefined && now > this.creditAt) this.credit = Math.min(cap, this.credit + (now - this.creditAt) * pace);
    else if (this.creditAt === undefined) this.credit = cap;
    this.creditAt = now;
  }

  /** When `room` may grow with no other event (pacing credit, a probe stalls, a drain ends); undefined: only events change it. */
  wakeAt(now: number): number | undefined {
    if (!this.windowed) return undefined;
    const times: number[] = [];
    if (this.probes.length > 0) times.push(this.probes[0].at + STALL_MS);
    if (this.drain) times.push(this.drain.since + DRAIN_LIMIT_MS);
    const pace = this.pace();
    if (pace !== undefined && this.credit <= 0 && this.currentWindow() > this.inFlight) times.push(now + (1 - this.credit) / pace);
    return times.length > 0 ? Math.min(...times) : undefined;
  }

  /** Bytes handed to ws (they cost pacing credit only when paced: see `room`). */
  sent(bytes: number, now: number): void {
    this.sentBytes += bytes;
    if (this.inFlight >= this.window - this.messageBytes()) this.limited = true;
    if (this.creditAt !== undefined) this.credit -= bytes;
    this.checkStall(now);
  }

  /** True when a probe should follow the bytes just handed to ws. */
  probeDue(now: number): boolean {
    if (this.settings.targetDelayMs <= 0) return false;
    this.checkStall(now);
    const unprobed = this.sentBytes - this.lastProbeMark;
    if (unprobed === 0 || this.probes.length >= MAX_PROBES) return false;
    // Never more than half the window unprobed: only a pong opens a full window, so bytes that
    // fill it with no probe behind them would hold the sending for good (a window cut below a
    // message by a delay spike, with the message size still at a fast link's 63 KiB).
    const window = this.currentWindow();
    if (unprobed >= Math.min(Math.max(window / MAX_PROBES, this.messageBytes()), window / 2)) return true;
    return this.probes.length === 0 && now - this.lastProbeAt >= IDLE_PROBE_EVERY_MS;
  }

  /** A probe was handed to ws after the bytes sent so far; returns its id (the ping carries it). */
  probeSent(now: number): number {
    const id = this.nextId;
    this.nextId = this.nextId >= 0x7fffffff ? 1 : this.nextId + 1;
    // Draining: the first probe with no more than one message in flight ahead of it shows the base.
    if (this.drain && this.drain.probeId === undefined && this.inFlight <= this.messageBytes()) this.drain.probeId = id;
    this.probes.push({ id, mark: this.sentBytes, at: now, pauses: this.pauses });
    this.lastProbeMark = this.sentBytes;
    this.lastProbeAt = now;
    return id;
  }

  /**
   * A pong carrying probe `id` arrived. Returns false when it is no probe outstanding (late,
   * given up, or not ours). Pongs come in order: probes sent before it that are still
   * outstanding were not answered (a service may skip pings) and are forgotten.
   */
  pong(id: number, now: number, readerPaused = false): boolean {
    const at = this.probes.findIndex((p) => p.id === id);
    if (at < 0) return false;
    const probe = this.probes[at];
    this.probes.splice(0, at + 1);
    this.answered++;
    this.stalled = false;
    this.ackedBytes = Math.max(this.ackedBytes, probe.mark);
    if (readerPaused) this.notePause();
    if (probe.pauses === this.pauses && !readerPaused) {
      const rtt = now - probe.at;
      this.recent.push(rtt);
      if (this.recent.length > RECENT_SAMPLES) this.recent.shift();
      this.base.add(rtt, now);
    }
    this.sampleRate(now);
    if (this.drain) {
      if (this.drain.probeId !== undefined && this.probes.every((p) => p.id !== this.drain!.probeId)) this.endDrain(now);
    } else if (this.ackedBytes >= this.nextUpdate && this.recent.length > 0) {
      const limited = this.limited;
      this.update();
      this.lastDrainAt ??= now;
      if (limited && now - this.lastDrainAt >= DRAIN_EVERY_MS) this.drain = { since: now, window: this.window };
    }
    return true;
  }

  private endDrain(now: number): void {
    this.window = this.drain!.window;
    this.drain = undefined;
    this.lastDrainAt = now;
    // The next move waits for round trips measured after the drain.
    this.recent.length = 0;
    this.nextUpdate = this.sentBytes;
  }

  private notePause(): void {
    if (this.readerWasPaused) return;
    this.readerWasPaused = true;
    this.pauses++;
  }

  private sampleRate(now: number): void {
    const marks = this.rateMarks;
    const last = marks[marks.length - 1];
    if (last && now - last.at < RATE_MARK_EVERY_MS) return;
    marks.push({ at: now, acked: this.ackedBytes });
    while (marks.length > 2 && now - marks[1].at >= RATE_WINDOW_MS) marks.shift();
    const first = marks[0];
    // After an idle spell the oldest mark is older than the window: the rate restarts from here.
    if (now - first.at > 2 * RATE_WINDOW_MS) marks.splice(0, marks.length - 1);
    else if (now - first.at >= RATE_MIN_SPAN_MS) this.deliveryRate = ((this.ackedBytes - first.acked) * 1000) / (now - first.at);
  }

  /** Once per round trip: the window follows the queueing delay. */
  private update(): void {
    const base = this.base.value!;
    const delay = Math.max(0, Math.min(...this.recent) - base);
    const target = this.targetMs;
    // Slow start ends on the latest round trip: the filtered one lags a doubling window by a round.
    if (this.slowStart && this.recent[this.recent.length - 1] - base >= target / 2) this.slowStart = false;
    if (delay <= target && this.slowStart) {
      if (this.limited) this.window *= 2;
    } else if (delay <= target && !this.limited) {
      // The applications, not the window, limited the sending: no growth.
    } else {
      this.slowStart = false;
      // FAST TCP's step: halfway to the window that would hold the queue at the target at
      // this round trip's rate; growing by a quarter at most (the delay shows a larger window
      // a round late), shrinking by half at most.
      const goal = (this.window * (base + target)) / (base + delay);
      this.window = Math.min(MAX_GROWTH * this.window, Math.max(this.window / 2, this.window + STEP * (goal - this.window)));
    }
    this.window = Math.round(Math.max(MIN_WINDOW_BYTES, Math.min(MAX_WINDOW_BYTES, this.window)));
    this.nextUpdate = this.sentBytes;
    this.limited = false;
  }

  /** Probes unanswered for STALL_MS are given up: until the next pong the pacer steps aside. */
  private checkStall(now: number): void {
    if (this.probes.length === 0 || now - this.probes[0].at < STALL_MS) return;
    while (this.probes.length > 0 && now - this.probes[0].at >= STALL_MS) this.probes.shift();
    this.stalled = true;
    // Bytes behind a lost probe are counted as delivered: the next probe covers what follows.
    this.ackedBytes = this.sentBytes;
    this.lastProbeMark = this.sentBytes;
  }
}
