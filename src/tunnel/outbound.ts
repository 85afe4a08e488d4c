/**
 * What a proxy sends to the service (apps → WebSocket), on the paced writer
 * (src/flow/writer.ts). Its queue policy: every producer (a tunneled connection, or the
 * session for its control messages) queues its frames, and the scheduler
 * (src/flow/scheduler.ts) picks which go next. While the pacer holds bulk data back, a
 * producer that sends little (the scheduler's new list: a keystroke, an echo) still passes, one
 * quantum each: its bytes are few, and it would otherwise wait for the next pong.
 *
 * Messages are no bigger than the pacer's message size (one DATA payload at the measured rate):
 * on a slow link a packed 128 KiB message would hold the link, and the relay, for as long as a
 * big DATA message.
 *
 * Backpressure towards the apps: while the backlog (ws.bufferedAmount + queued) is above the
 * high-water mark, connections with a queue of their own stop being read (all of them above
 * twice the mark); all resume below half of it.
 */
import type WebSocket from 'ws';
import type { Logger } from '../log';
import { MAX_WS_MESSAGE_BYTES } from '../protocol/constants';
import { Pacer } from '../flow/pacer';
import { Scheduler } from '../flow/scheduler';
import { COALESCE_BELOW_BYTES, PacedWriter } from '../flow/writer';
import type { Reader } from './inbound';

/**
 * Above the high-water mark a connection stops being read once it has this much queued
 * itself; above twice the mark every connection stops (memory stays bounded either way).
 */
export const CONNECTION_QUEUE_BYTES = 128 * 1024;
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

export class Outbound extends PacedWriter {
  private readonly scheduler = new Scheduler<Producer>();
  private readonly throttled = new Set<Throttled>();
  private readonly pausedSet = new Set<Throttled>();
  private allPaused = false;
  private readonly emptied: Producer[] = [];

  constructor(
    ws: WebSocket,
    private readonly highWaterBytes: number,
    pacer: Pacer = new Pacer(),
    log?: Logger,
    clock?: () => number,
  ) {
    super(ws, pacer, 'Pacing', log, clock);
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
      this.written();
    },
    resume: () => {
      this.ws.resume();
      this.written();
    },
  };

  get queuedBytes(): number {
    return this.scheduler.queuedBytes;
  }

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
      // pushed later in this turn wait for the turn scheduled here and are packed together.
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
  override close(): void {
    super.close();
    this.scheduler.clear();
    this.throttled.clear();
    this.pausedSet.clear();
  }

  protected take(room: number, out: Buffer[]): void {
    const scheduler = this.scheduler;
    scheduler.quantum = this.pacer.messageBytes();
    if (room > 0) scheduler.take(room, out, this.emptied);
    else if (scheduler.hasNewFlow) scheduler.take(scheduler.quantum, out, this.emptied, true);
  }

  /**
   * Small frames are packed together, up to the pacer's message size; a large one goes in a
   * message of its own, which spares copying it into a packed buffer: with the all-zero mask ws
   * writes it as it is.
   */
  protected packing(): { aloneBytes: number; maxBytes: number } {
    const payload = this.pacer.messageBytes();
    const maxBytes = Math.min(MAX_WS_MESSAGE_BYTES, payload >= this.pacer.settings.maxMessageBytes ? MAX_WS_MESSAGE_BYTES : payload + PACK_SLACK_BYTES);
    return { aloneBytes: Math.min(COALESCE_BELOW_BYTES, maxBytes), maxBytes };
  }

  protected flushed(): void {
    const emptied = this.emptied;
    for (const producer of emptied) if (this.scheduler.queued(producer) === 0) producer.onQueueEmpty();
    emptied.length = 0;
    this.checkResume();
  }

  protected override describe(): string {
    return `DATA ${this.pacer.messageBytes()} bytes, ${this.scheduler.queuedBytes} bytes queued here`;
  }

  protected writeMessage(message: Buffer): void {
    this.ws.send(message, { binary: true }, this.onSent);
  }

  private readonly onSent = (err?: Error): void => {
    if (err || this.closed) return;   // the WebSocket's close event ends the session
    this.written();
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
