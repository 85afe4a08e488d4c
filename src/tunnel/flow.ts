/**
 * Flow control (Decisions 4), in one place so the policy can be reviewed at once:
 *
 * - Outbound (apps → WebSocket): every connection queues its frames; `Outbound` hands them to
 *   the WebSocket round-robin, one frame per connection per turn, packed into WebSocket
 *   messages of ≤ 131076 bytes, at most once per event-loop turn (setImmediate). Only a small
 *   window is handed to `ws` at a time, so an interactive connection's frame waits behind at
 *   most one window of bulk data, not behind the whole backlog. While the backlog
 *   (ws.bufferedAmount + queued) is above the high-water mark, connections with a queue of
 *   their own stop being read (all of them above twice the mark); all resume below half of it.
 * - Inbound (WebSocket → apps): each DATA payload is written to its app socket at once;
 *   `InboundBudget` counts bytes not yet taken by the kernel for all apps together and pauses
 *   the WebSocket reader only when that total exceeds the budget (resumed below half). A slow
 *   app therefore delays nobody until the shared budget is used up.
 */
import type WebSocket from 'ws';
import { packFrames } from '../protocol/framing';
import { MAX_WS_MESSAGE_BYTES } from '../protocol/constants';

/** Bytes handed to `ws` before waiting for its send callbacks (two full WebSocket messages). */
export const WS_SEND_WINDOW_BYTES = 2 * MAX_WS_MESSAGE_BYTES;
/**
 * Above the high-water mark a connection stops being read once it has this much queued
 * itself; above twice the mark every connection stops (memory stays bounded either way).
 */
export const CONNECTION_QUEUE_BYTES = 128 * 1024;
/** Frames at least this big are sent in a WebSocket message of their own instead of packed. */
export const COALESCE_BELOW_BYTES = 16 * 1024;
/** A closing local socket whose app does not take the last bytes is destroyed after this. */
export const CLOSE_FLUSH_TIMEOUT_MS = 30_000;
/** Connections accepted while there is no session wait this long for the next one. */
export const PENDING_ACCEPT_TIMEOUT_MS = 30_000;
/** At most this many connections wait for the next session (all listeners together). */
export const PENDING_ACCEPT_LIMIT = 64;
/** A session that lived longer than this resets the reconnect backoff. */
export const STABLE_SESSION_MS = 30_000;
/** One destination connect attempt gives up after this. */
export const CONNECT_ATTEMPT_TIMEOUT_MS = 15_000;
/** `close()` forces the WebSocket down after this if the close handshake does not finish. */
export const CLOSE_HANDSHAKE_TIMEOUT_MS = 1_500;

/** Something with an outbound frame queue: a tunneled connection, or the session itself. */
export interface Producer {
  queue: Buffer[];
  queuedBytes: number;
  inRing: boolean;
  /** Called when the last queued frame was handed to the WebSocket. */
  onQueueEmpty?(): void;
  /** Present when the producer is a local socket the policy may pause. */
  setOutboundPaused?(paused: boolean): void;
}

/** A local socket that the outbound policy may pause. */
export interface Throttled {
  setOutboundPaused(paused: boolean): void;
}

export class Outbound {
  private readonly ring: Producer[] = [];
  private readonly throttled = new Set<Throttled>();
  private readonly pausedSet = new Set<Throttled>();
  private allPaused = false;
  private queuedBytes = 0;
  private scheduled = false;
  private closed = false;

  constructor(private readonly ws: WebSocket, private readonly highWaterBytes: number) {}

  /** Bytes not yet on the wire: ours plus what `ws` has not written to its socket. */
  backlog(): number {
    return this.queuedBytes + this.ws.bufferedAmount;
  }

  push(producer: Producer, frame: Buffer): void {
    if (this.closed) return;
    producer.queue.push(frame);
    producer.queuedBytes += frame.length;
    this.queuedBytes += frame.length;
    if (!producer.inRing) {
      producer.inRing = true;
      this.ring.push(producer);
    }
    const backlog = this.backlog();
    if (backlog > this.highWaterBytes) {
      if (backlog > 2 * this.highWaterBytes) this.pauseAll();
      // Only connections with a queue of their own stop: an interactive one (a few bytes now
      // and then) keeps flowing past a bulk transfer.
      else if (producer.queuedBytes >= CONNECTION_QUEUE_BYTES && this.throttled.has(producer as Throttled)) this.pauseOne(producer as Throttled);
    }
    this.schedule();
  }

  /** Forgets a producer's queued frames (its connection was reset by the peer). */
  drop(producer: Producer): void {
    this.queuedBytes -= producer.queuedBytes;
    producer.queue = [];
    producer.queuedBytes = 0;
    if (producer.inRing) {
      producer.inRing = false;
      const at = this.ring.indexOf(producer);
      if (at >= 0) this.ring.splice(at, 1);
    }
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
    this.ring.length = 0;
    this.queuedBytes = 0;
    this.throttled.clear();
    this.pausedSet.clear();
  }

  /** Sends whatever is queued now instead of on the next turn (used right before closing). */
  flushNow(): void {
    this.flush(Infinity);
  }

  private schedule(): void {
    if (this.scheduled || this.closed) return;
    this.scheduled = true;
    setImmediate(onFlushTurn, this);
  }

  /** @internal */
  flush(windowBytes = WS_SEND_WINDOW_BYTES): void {
    this.scheduled = false;
    if (this.closed || this.ws.readyState !== this.ws.OPEN) return;
    const room = windowBytes - this.ws.bufferedAmount;
    if (room <= 0) return;   // a send callback schedules the next turn
    const frames: Buffer[] = [];
    let bytes = 0;
    const emptied: Producer[] = [];
    while (bytes < room && this.ring.length > 0) {
      const producer = this.ring.shift()!;
      const frame = producer.queue.shift()!;
      producer.queuedBytes -= frame.length;
      this.queuedBytes -= frame.length;
      frames.push(frame);
      bytes += frame.length;
      if (producer.queue.length > 0) this.ring.push(producer);
      else {
        producer.inRing = false;
        emptied.push(producer);
      }
    }
    if (frames.length === 0) return;
    this.send(frames);
    for (const producer of emptied) if (producer.queue.length === 0) producer.onQueueEmpty?.();
    if (this.ring.length > 0 && this.ws.bufferedAmount < windowBytes) this.schedule();
    this.checkResume();
  }

  /**
   * Small frames are packed together; a large one goes in a message of its own, which spares
   * copying it once more into a packed buffer (ws copies it anyway, to mask it).
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
    if (this.ring.length > 0) this.schedule();
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

/** Bytes received from the WebSocket and not yet taken by the apps' sockets. */
export class InboundBudget {
  private pending = 0;
  private paused = false;

  constructor(private readonly ws: WebSocket, private readonly budgetBytes: number) {}

  get pendingBytes(): number {
    return this.pending;
  }

  /** True while the WebSocket reader is paused for the apps (pongs are not read either). */
  get isPaused(): boolean {
    return this.paused;
  }

  add(n: number): void {
    this.pending += n;
    if (!this.paused && this.pending > this.budgetBytes) {
      this.paused = true;
      this.ws.pause();
    }
  }

  release(n: number): void {
    this.pending -= n;
    if (this.paused && this.pending < this.budgetBytes / 2) {
      this.paused = false;
      this.ws.resume();
    }
  }
}
