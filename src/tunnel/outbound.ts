/**
 * Outbound flow (Decisions 4, issue 13): apps → WebSocket. Every producer queues its frames;
 * the scheduler (scheduler.ts) picks which go next, the pacer (pacer.ts) how many bytes may be
 * in flight, and this file does the I/O: at most once per event-loop turn (setImmediate) it
 * packs the chosen frames into WebSocket messages and hands them to ws, follows them with the
 * pacer's delay probes (pings, transport/keepalive.ts) and hands the probes' pongs back to it.
 * It runs again when ws has written a message, when a pong opens the window, or when the
 * pacer asks to be woken (a probe unanswered for long).
 *
 * While the pacer holds bulk data back, a producer that sends little (the scheduler's new
 * list: a keystroke, an echo) still passes, one quantum each: its bytes are few, and it would
 * otherwise wait for the next pong.
 *
 * Messages are no bigger than the pacer's message size (one DATA payload at the measured rate):
 * on a slow link a packed 128 KiB message would hold the link, and the relay, for as long as a
 * big DATA message.
 *
 * Backpressure towards the apps: while the backlog (ws.bufferedAmount + queued) is above the
 * high-water mark, connections with a queue of their own stop being read (all of them above
 * twice the mark); all resume below half of it.
 */
import { performance } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';
import type WebSocket from 'ws';
import type { Logger } from '../log';
import { MAX_WS_MESSAGE_BYTES } from '../protocol/constants';
import { writeMessages } from '../protocol/framing';
import type { Reader } from './inbound';
import { Pacer } from './pacer';
import { PacerProbes } from './probes';
import { Scheduler } from './scheduler';

/**
 * Above the high-water mark a connection stops being read once it has this much queued
 * itself; above twice the mark every connection stops (memory stays bounded either way).
 */
export const CONNECTION_QUEUE_BYTES = 128 * 1024;
/** Frames at least this big are sent in a WebSocket message of their own instead of packed. */
export const COALESCE_BELOW_BYTES = 16 * 1024;

/** Something that queues frames: a tunneled connection, or the session for its control messages. */
export interface Producer {
  /** Called when the producer's last queued frame was handed to the WebSocket. */
  onQueueEmpty(): void;
}

/** A local socket that the outbound policy may pause. */
export interface Throttled {
  setOutboundPaused(paused: boolean): void;
}

/** Room for the framing of a message's frames beyond its DATA payload size, when packing. */
const PACK_SLACK_BYTES = 256;

export class Outbound {
  private readonly scheduler = new Scheduler<Producer>();
  private readonly throttled = new Set<Throttled>();
  private readonly pausedSet = new Set<Throttled>();
  private allPaused = false;
  private scheduled = false;
  private closed = false;
  private readonly probes: PacerProbes;
  /** The WebSocket's own socket (ws's `_socket`), corked while a flush hands it several messages. */
  private readonly socket?: Pick<Duplex, 'cork' | 'uncork'>;

  constructor(
    private readonly ws: WebSocket,
    private readonly highWaterBytes: number,
    readonly pacer: Pacer = new Pacer(),
    log?: Logger,
    /** Milliseconds, sub-millisecond precision: loopback round trips are a fraction of one. */
    private readonly clock: () => number = () => performance.now(),
  ) {
    this.probes = new PacerProbes(ws, pacer, {
      readerPaused: () => this.ws.isPaused,
      turn: () => {
        if (this.scheduler.queuedBytes > 0) this.schedule();
      },
      describe: () => `DATA ${this.pacer.messageBytes()} bytes, ${this.scheduler.queuedBytes} bytes queued here`,
    }, 'Pacing', log, clock);
    this.socket = (ws as unknown as { _socket?: Duplex })._socket;
  }

  /**
   * The WebSocket's reader, for the inbound budget to pause (inbound.ts): while it is paused
   * the pacer steps aside (pongs wait unread, and holding our sends back could deadlock an
   * application that echoes), which must take effect at once. Nothing else would run the
   * next turn: no pong can be read, and the pacer's wake-up may be far off.
   */
  readonly reader: Reader = {
    pause: () => {
      this.ws.pause();
      if (this.scheduler.queuedBytes > 0) this.schedule();
    },
    resume: () => {
      this.ws.resume();
      if (this.scheduler.queuedBytes > 0) this.schedule();
    },
  };

  /** The DATA payload size for the measured rate (bytes read from a local socket are cut to it). */
  dataPayloadBytes(): number {
    return this.pacer.messageBytes();
  }

  /** Bytes not yet on the wire: ours plus what `ws` has not written to its socket. */
  backlog(): number {
    return this.scheduler.queuedBytes + this.ws.bufferedAmount;
  }

  push(producer: Producer, frame: Buffer): void {
    if (this.closed) return;
    const lone = !this.scheduled && this.scheduler.queuedBytes === 0 && frame.length < COALESCE_BELOW_BYTES;
    // A producer new to the scheduler gets one quantum ahead of the others: one message.
    this.scheduler.quantum = this.pacer.messageBytes();
    this.scheduler.push(producer, frame);
    const backlog = this.backlog();
    if (backlog > this.highWaterBytes) {
      if (backlog > 2 * this.highWaterBytes) this.pauseAll();
      // Only connections with a queue of their own stop: an interactive one (a few bytes now
      // and then) keeps flowing past a bulk transfer.
      else if (this.scheduler.queued(producer) >= CONNECTION_QUEUE_BYTES && this.isThrottled(producer)) this.pauseOne(producer);
    }
    if (lone) {
      // A small frame with nothing queued before it (a keystroke, an echo) has nothing to be
      // packed with: it goes now, as far as the pacer allows, instead of a turn later. Frames
      // pushed later in this turn wait for the turn scheduled here and are packed as before.
      this.flush();
    }
    this.schedule();
  }

  /** Forgets a producer's queued frames (its connection was reset by the peer). */
  drop(producer: Producer): void {
    this.scheduler.drop(producer);
    this.checkResume();
  }

  register(t: Throttled): void {
    this.throttled.add(t);
    if (this.allPaused) this.pauseOne(t);
  }

  unregister(t: Throttled): void {
    this.throttled.delete(t);
    this.pausedSet.delete(t);
  }

  /** A producer that is a registered local socket (connections are both). */
  private isThrottled(producer: Producer): producer is Producer & Throttled {
    return (this.throttled as Set<unknown>).has(producer);
  }

  /** True while any local socket is held back. */
  get paused(): boolean {
    return this.pausedSet.size > 0;
  }

  private pauseOne(t: Throttled): void {
    if (this.pausedSet.has(t)) return;
    this.pausedSet.add(t);
    t.setOutboundPaused(true);
  }

  private pauseAll(): void {
    this.allPaused = true;
    for (const t of this.throttled) this.pauseOne(t);
  }

  /** Stops sending; queued frames are dropped (the session is over). */
  close(): void {
    this.closed = true;
    this.probes.close();
    this.scheduler.clear();
    this.throttled.clear();
    this.pausedSet.clear();
  }

  /**
   * Hands one frame to ws now, ahead of everything queued (a credit HELLO, which must precede
   * the WINDOWs queued after it); it counts towards the pacer's bytes in flight.
   */
  sendFirst(frame: Buffer): void {
    if (this.closed || this.ws.readyState !== this.ws.OPEN) return;
    this.writeMessage(frame);
    this.pacer.sent(frame.length, this.clock());
  }

  /** Sends whatever is queued now, past the pacer, instead of on the next turn (used right before closing). */
  flushNow(): void {
    this.flush(true);
  }

  private schedule(): void {
    if (this.scheduled || this.closed) return;
    this.scheduled = true;
    setImmediate(onFlushTurn, this);
  }

  /** @internal */
  flush(unpaced = false): void {
    this.scheduled = false;
    this.probes.cancelWake();
    if (this.closed || this.ws.readyState !== this.ws.OPEN) return;
    const now = this.clock();
    const room = unpaced ? Infinity : this.room(now);
    const frames: Buffer[] = [];
    const emptied: Producer[] = [];
    this.scheduler.quantum = this.pacer.messageBytes();
    if (room > 0) this.scheduler.take(room, frames, emptied);
    else if (this.scheduler.hasNewFlow) this.scheduler.take(this.scheduler.quantum, frames, emptied, true);
    // The frames and the probe after them leave in one write to the TLS socket: one TLS record
    // run and one system call instead of one per WebSocket message.
    const socket = this.socket;
    socket?.cork();
    try {
      if (frames.length > 0) this.pacer.sent(this.send(frames), now);
      this.probes.probe(now);
    } finally {
      socket?.uncork();
    }
    for (const producer of emptied) if (this.scheduler.queued(producer) === 0) producer.onQueueEmpty();
    if (this.scheduler.queuedBytes > 0) {
      // Else a send callback or a pong runs the next turn, or the pacer's wake-up time.
      if (this.room(now) > 0) this.schedule();
      else this.probes.armWake(now);
    }
    this.checkResume();
  }

  private room(now: number): number {
    return this.pacer.room(now, this.ws.bufferedAmount, this.ws.isPaused);
  }

  /**
   * Small frames are packed together, up to the pacer's message size; a large one goes in a
   * message of its own, which spares copying it into a packed buffer: with the all-zero mask ws
   * writes it as it is. Returns the bytes handed to ws.
   */
  private send(frames: Buffer[]): number {
    const payload = this.pacer.messageBytes();
    const limit = Math.min(MAX_WS_MESSAGE_BYTES, payload >= this.pacer.settings.maxMessageBytes ? MAX_WS_MESSAGE_BYTES : payload + PACK_SLACK_BYTES);
    return writeMessages(frames, Math.min(COALESCE_BELOW_BYTES, limit), limit, this.writeMessage);
  }

  private readonly writeMessage = (message: Buffer): void => {
    this.ws.send(message, { binary: true }, this.onSent);
  };

  private readonly onSent = (err?: Error): void => {
    if (err || this.closed) return;   // the WebSocket's close event ends the session
    if (this.scheduler.queuedBytes > 0) this.schedule();
    this.checkResume();
  };

  private checkResume(): void {
    if (this.pausedSet.size > 0 && this.backlog() < this.highWaterBytes / 2) {
      this.allPaused = false;
      const paused = [...this.pausedSet];
      this.pausedSet.clear();
      for (const t of paused) t.setOutboundPaused(false);
    }
  }
}

function onFlushTurn(outbound: Outbound): void {
  outbound.flush();
}
