/**
 * Outbound flow (Decisions 4): apps → WebSocket. Every producer queues its frames; the
 * scheduler (scheduler.ts) picks which go next, the pacer (pacer.ts) how many bytes ws may
 * hold unwritten, and this file does the I/O: at most once per event-loop turn
 * (setImmediate) it packs the chosen frames into WebSocket messages of ≤ 131076 bytes and
 * hands them to ws.
 *
 * Backpressure towards the apps: while the backlog (ws.bufferedAmount + queued) is above the
 * high-water mark, connections with a queue of their own stop being read (all of them above
 * twice the mark); all resume below half of it.
 */
import type WebSocket from 'ws';
import { packFrames } from '../protocol/framing';
import { Pacer } from './pacer';
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

export class Outbound {
  private readonly scheduler = new Scheduler<Producer>();
  private readonly throttled = new Set<Throttled>();
  private readonly pausedSet = new Set<Throttled>();
  private allPaused = false;
  private scheduled = false;
  private closed = false;

  constructor(
    private readonly ws: WebSocket,
    private readonly highWaterBytes: number,
    private readonly pacer: Pacer = new Pacer(),
  ) {}

  /** Bytes not yet on the wire: ours plus what `ws` has not written to its socket. */
  backlog(): number {
    return this.scheduler.queuedBytes + this.ws.bufferedAmount;
  }

  push(producer: Producer, frame: Buffer): void {
    if (this.closed) return;
    this.scheduler.push(producer, frame);
    const backlog = this.backlog();
    if (backlog > this.highWaterBytes) {
      if (backlog > 2 * this.highWaterBytes) this.pauseAll();
      // Only connections with a queue of their own stop: an interactive one (a few bytes now
      // and then) keeps flowing past a bulk transfer.
      else if (this.scheduler.queued(producer) >= CONNECTION_QUEUE_BYTES && this.isThrottled(producer)) this.pauseOne(producer);
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
    this.scheduler.clear();
    this.throttled.clear();
    this.pausedSet.clear();
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
    if (this.closed || this.ws.readyState !== this.ws.OPEN) return;
    const room = unpaced ? Infinity : this.pacer.room(this.ws.bufferedAmount);
    if (room <= 0) return;   // a send callback schedules the next turn
    const frames: Buffer[] = [];
    const emptied: Producer[] = [];
    this.scheduler.take(room, frames, emptied);
    if (frames.length === 0) return;
    this.send(frames);
    for (const producer of emptied) if (this.scheduler.queued(producer) === 0) producer.onQueueEmpty();
    if (this.scheduler.queuedBytes > 0 && this.pacer.room(this.ws.bufferedAmount) > 0) this.schedule();
    this.checkResume();
  }

  /**
   * Small frames are packed together; a large one goes in a message of its own, which spares
   * copying it into a packed buffer: with the all-zero mask ws writes it as it is.
   */
  private send(frames: Buffer[]): void {
    let small: Buffer[] = [];
    for (const frame of frames) {
      if (frame.length < COALESCE_BELOW_BYTES) {
        small.push(frame);
        continue;
      }
      if (small.length > 0) {
        for (const message of packFrames(small)) this.ws.send(message, { binary: true }, this.onSent);
        small = [];
      }
      this.ws.send(frame, { binary: true }, this.onSent);
    }
    for (const message of packFrames(small)) this.ws.send(message, { binary: true }, this.onSent);
  }

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
