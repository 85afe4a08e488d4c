/**
 * A bound on the work one WebSocket peer's input gets per event-loop turn, for the relay's
 * peers and the proxies' service connection alike.
 *
 * ws parses everything one socket read brought (up to 64 KiB, a 16 KiB TLS record) and emits
 * its messages at once, and libuv reads a busy socket many times per turn: unchecked, a peer
 * that sends tiny messages as fast as we read them holds the event loop as long as it likes,
 * while every other peer and timer waits. Here each message costs its bytes plus MESSAGE_COST, and
 * once a peer's input has cost WORK_PER_TURN in one turn its socket is paused: what ws still
 * emits from the read at hand waits here, in order (pings too, when they are ours to answer),
 * and runs on later turns (setImmediate), a turn's worth at a time, after other peers had
 * theirs. The socket is resumed once nothing waits. Bytes are never dropped or reordered.
 *
 * The socket is paused, not the WebSocket: `ws.isPaused` is the owner's flow control, which its
 * pacer reads as "pongs are not being read"; a yield of one turn is no such thing.
 */
import type { Duplex } from 'node:stream';
import type WebSocket from 'ws';
import { socketOf } from '../flow/writer';

/**
 * What one peer's input may cost per event-loop turn, in bytes of bulk DATA: forwarding them
 * through the relay over TLS costs 1-2 ms of CPU on a busy 2-core machine, and a bulk sender
 * yields only every four 64 KiB messages.
 */
export const WORK_PER_TURN = 256 * 1024;
/**
 * What one message costs beyond its bytes, in bytes of bulk DATA that cost as much: a 1-byte
 * message took 0.6 µs of the relay's CPU end to end (TLS, ws, decoding, forwarding) where
 * 64 KiB messages took 7-9 ns per byte.
 */
export const MESSAGE_COST = 128;
/**
 * Binary messages below this size wait merged into one buffer (a copy), which starts small and
 * doubles up to MERGE_MAX_BYTES: a Buffer object per 1-byte message would cost ~100 bytes each.
 */
const MERGE_BELOW_BYTES = 1024;
const MERGE_FIRST_BYTES = 512;
const MERGE_MAX_BYTES = 16 * 1024;

const BINARY = 0;
const TEXT = 1;
const PING = 2;

export interface FairSink {
  /** A WebSocket message, in order. */
  message(data: Buffer, isBinary: boolean): void;
  /** A ping, in order with the messages. Without it pings are ws's or another listener's, at once. */
  ping?(data: Buffer): void;
}

export interface FairOptions {
  /** The socket ws reads (default: the WebSocket's own; without one, nothing is held back). */
  socket?: Duplex;
  workPerTurn?: number;
}

export class FairReader {
  /** Turns on which this peer's input was held back (for tests and benchmarks). */
  deferredTurns = 0;
  private readonly socket?: Duplex;
  private readonly workPerTurn: number;
  /** Work done for this peer in the current turn. */
  private spent = 0;
  /** A setImmediate is pending: it starts this peer's next turn. */
  private ticking = false;
  /** The socket was paused here. */
  private holding = false;
  private stopped = true;
  /** Waiting events, in order, from `head` on, each with its kind; while `merging`, the last is a merge buffer holding `mergeFill` bytes. */
  private queue: Buffer[] = [];
  private kinds: number[] = [];
  private head = 0;
  private merging = false;
  private mergeFill = 0;

  constructor(private readonly ws: WebSocket, private readonly sink: FairSink, options: FairOptions = {}) {
    this.socket = options.socket ?? socketOf(ws);
    this.workPerTurn = options.workPerTurn ?? WORK_PER_TURN;
  }

  /** Starts taking the WebSocket's messages (and pings, when the sink answers them). */
  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.ws.on('message', this.onMessage);
    if (this.sink.ping) this.ws.on('ping', this.onPing);
  }

  /** Stops: nothing more is delivered, and what waits is dropped. */
  stop(): void {
    this.stopped = true;
    this.ws.off('message', this.onMessage);
    this.ws.off('ping', this.onPing);
    this.clear();
    this.release();
  }

  /** Delivers everything that waits, now (the WebSocket closed: nothing is left behind). */
  flush(): void {
    while (!this.stopped && this.head < this.queue.length) this.deliverNext();
    if (!this.stopped) this.clear();
  }

  /** Events waiting for a later turn. */
  get waiting(): number {
    return this.queue.length - this.head;
  }

  private readonly onMessage = (data: Buffer, isBinary: boolean): void => {
    this.take(data, isBinary ? BINARY : TEXT);
  };

  private readonly onPing = (data: Buffer): void => {
    this.take(data, PING);
  };

  private take(data: Buffer, kind: number): void {
    if (this.socket && (this.head < this.queue.length || this.spent >= this.workPerTurn)) {
      this.enqueue(data, kind);
      // ws resumes the socket for a resume of its own (the owner's flow control): hold it again.
      this.hold();
      this.tick();
      return;
    }
    this.spent += data.length + MESSAGE_COST;
    this.tick();
    this.deliver(data, kind);
  }

  private deliver(data: Buffer, kind: number): void {
    if (kind === PING) this.sink.ping!(data);
    else this.sink.message(data, kind === BINARY);
  }

  private deliverNext(): void {
    if (this.head === this.queue.length - 1) this.endMerge();
    const i = this.head++;
    const data = this.queue[i];
    const kind = this.kinds[i];
    this.queue[i] = EMPTY;
    this.spent += data.length + MESSAGE_COST;
    this.deliver(data, kind);
  }

  private enqueue(data: Buffer, kind: number): void {
    if (kind === BINARY && data.length < MERGE_BELOW_BYTES) {
      const last = this.queue.length - 1;
      const fill = this.mergeFill + data.length;
      if (this.merging && fill <= MERGE_MAX_BYTES) {
        let merged = this.queue[last];
        if (fill > merged.length) {
          const grown = Buffer.allocUnsafe(Math.min(MERGE_MAX_BYTES, Math.max(fill, 2 * merged.length)));
          merged.copy(grown, 0, 0, this.mergeFill);
          merged = this.queue[last] = grown;
        }
        merged.set(data, this.mergeFill);
        this.mergeFill = fill;
        return;
      }
      this.endMerge();
      const merged = Buffer.allocUnsafe(Math.max(MERGE_FIRST_BYTES, data.length));
      merged.set(data, 0);
      this.queue.push(merged);
      this.kinds.push(BINARY);
      this.merging = true;
      this.mergeFill = data.length;
      return;
    }
    this.endMerge();
    this.queue.push(data);
    this.kinds.push(kind);
  }

  /** The merge buffer at the end of the queue takes no more: cut it to what it holds. */
  private endMerge(): void {
    if (!this.merging) return;
    const last = this.queue.length - 1;
    this.queue[last] = this.queue[last].subarray(0, this.mergeFill);
    this.merging = false;
  }

  private clear(): void {
    this.queue = [];
    this.kinds = [];
    this.head = 0;
    this.merging = false;
  }

  private hold(): void {
    if (!this.holding) {
      this.holding = true;
      this.deferredTurns++;
    }
    this.socket!.pause();
  }

  private release(): void {
    if (!this.holding) return;
    this.holding = false;
    // The owner's own pause (flow control) stays.
    if (!this.ws.isPaused) this.socket?.resume();
  }

  /** The next turn starts with a fresh budget (one setImmediate per turn, while there is input). */
  private tick(): void {
    if (this.ticking) return;
    this.ticking = true;
    setImmediate(this.onTurn);
  }

  private readonly onTurn = (): void => {
    this.ticking = false;
    this.spent = 0;
    if (this.stopped) return;
    while (this.head < this.queue.length && this.spent < this.workPerTurn && !this.stopped) this.deliverNext();
    if (this.stopped) return;
    if (this.head < this.queue.length) {
      this.deferredTurns++;
      this.tick();
      return;
    }
    this.clear();
    this.release();
  };
}

const EMPTY = Buffer.alloc(0);
