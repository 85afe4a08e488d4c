/**
 * The I/O around a Pacer (pacer.ts) for a paced writer (writer.ts): delay probes after the
 * bytes handed to ws, their pongs handed back to the pacer, the wake-up the pacer asks for
 * when only time can open its room, and a debug line now and then. The owner's `turn` runs
 * when a pong or the wake-up may have opened room.
 *
 * A probe is a ping whose payload is 'q' and an id in base 36. The keepalive's pings
 * (src/transport/keepalive.ts) carry decimal digits, so neither mistakes the other's pongs.
 */
import { performance } from 'node:perf_hooks';
import type WebSocket from 'ws';
import { LogLevel, type Logger } from '../log';
import type { Pacer } from './pacer';

/** First byte of a probe ping's payload ('q'). */
const PROBE_MARK = 0x71;

/** The payload of probe ping `id` (a positive integer): 'q' and the id in base 36, a few bytes. */
export function probePayload(id: number): Buffer {
  return Buffer.from(`q${id.toString(36)}`, 'latin1');
}

/** The probe id a pong carries back, or undefined for any other payload. */
export function probeId(data: Buffer): number | undefined {
  if (data.length < 2 || data.length > 8 || data[0] !== PROBE_MARK) return undefined;
  const id = parseInt(data.toString('latin1', 1), 36);
  return Number.isSafeInteger(id) && id > 0 && probePayload(id).equals(data) ? id : undefined;
}

/**
 * Sends delay probe `id`: a ping queued behind every byte handed to ws before it, so the
 * service answers it only once it has read them. Returns false when the socket is not open.
 */
export function sendProbe(ws: WebSocket, id: number): boolean {
  if (ws.readyState !== ws.OPEN) return false;
  ws.ping(probePayload(id));
  return true;
}

/** While data flows, the pacer's state is logged at debug level at most this often. */
const LOG_EVERY_MS = 1000;

export interface ProbesOwner {
  /** True while the owner does not read the WebSocket: pongs then wait unread (the pacer steps aside). */
  readerPaused(): boolean;
  /** A pong or the wake-up may have opened room: send what waits, on a later turn. */
  turn(): void;
  /** The end of the debug line: what waits at the owner, say. */
  describe(): string;
}

export class PacerProbes {
  private wakeTimer?: NodeJS.Timeout;
  private loggedAt = -Infinity;
  private closed = false;

  constructor(
    private readonly ws: WebSocket,
    readonly pacer: Pacer,
    private readonly owner: ProbesOwner,
    /** The debug line's first words ("Pacing", "tunnel … destination: pacing"). */
    private readonly label: string,
    private readonly log?: Logger,
    /** Milliseconds, sub-millisecond precision: loopback round trips are a fraction of one. */
    readonly clock: () => number = () => performance.now(),
  ) {
    ws.on('pong', this.onPong);
  }

  /** A probe after the bytes just handed to ws, when the pacer wants one. */
  probe(now: number): void {
    if (this.closed || !this.pacer.probeDue(now)) return;
    sendProbe(this.ws, this.pacer.probeSent(now));
  }

  /** Runs the owner's turn when the pacer says time alone opens room (one timer at a time). */
  armWake(now: number): void {
    const at = this.pacer.wakeAt(now);
    if (at === undefined || this.wakeTimer || this.closed) return;
    this.wakeTimer = setTimeout(onWake, Math.max(1, Math.ceil(at - now)), this);
    this.wakeTimer.unref();
  }

  /** The owner is sending now: a pending wake-up is not needed. */
  cancelWake(): void {
    clearTimeout(this.wakeTimer);
    this.wakeTimer = undefined;
  }

  close(): void {
    this.closed = true;
    this.cancelWake();
    this.ws.off('pong', this.onPong);
  }

  /** @internal */
  wake(): void {
    this.wakeTimer = undefined;
    if (!this.closed) this.owner.turn();
  }

  private readonly onPong = (data: Buffer): void => {
    const id = probeId(data);
    if (id === undefined || this.closed) return;
    const now = this.clock();
    if (!this.pacer.pong(id, now, this.owner.readerPaused())) return;
    if (now - this.loggedAt >= LOG_EVERY_MS && this.log?.enabled(LogLevel.DEBUG)) this.logLine(now);
    this.probe(now);
    this.owner.turn();
  };

  /** One line on what the pacer sees, for `-v 5`: how much may be in flight, the queue it measures, the rate. */
  private logLine(now: number): void {
    this.loggedAt = now;
    const p = this.pacer;
    const ms = (x: number | undefined) => (x === undefined ? '?' : x.toFixed(1));
    const rate = p.rate === undefined ? '?' : `${Math.round(p.rate / 1000)} kB/s`;
    this.log!.debug(`${this.label}: ${p.state}, window ${p.window} bytes (${p.inFlight} in flight), queue ${ms(p.queueDelayMs)} ms over a base round trip of ${ms(p.baseRttMs)} ms (target ${ms(p.targetMs)} ms), rate ${rate}, ${this.owner.describe()}`);
  }
}

function onWake(probes: PacerProbes): void {
  probes.wake();
}
