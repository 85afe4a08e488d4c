/**
 * Bytes on their way to the apps (Decisions 4, issue 14): the budget that counts them and the
 * writer that hands them to an app's socket.
 *
 * Each DATA payload is written to its app socket at once; the budget counts the memory kept for
 * bytes not yet taken by the kernel, for all apps of the session together, and pauses the
 * WebSocket reader only when that total exceeds the budget (resumed below half). A slow app
 * therefore delays nobody until the shared budget is used up. It is the backstop for peers
 * without per-connection credit (credit.ts): bytes a peer sends within its grants are counted
 * in a budget of their own that never pauses the reader, as the grants already bound them.
 *
 * What is counted is what is retained, not the payload's length (issue 14). A payload is a
 * view into the buffer it arrived in — a WebSocket message, or a TLS record holding several —
 * and keeps all of that buffer alive:
 * - a payload smaller than a quarter of its buffer is copied out (`detach`), so it keeps only
 *   itself. The cost is one memcpy of that payload, at most one per byte received when a buffer
 *   is all small payloads, and none on the bulk path: full 63 KiB payloads are at least half of
 *   any WebSocket message (≤ 131076 bytes) that carries them, and our proxies send each in a
 *   message of its own. Copying every payload instead would add a memcpy per byte to bulk
 *   transfers; counting buffers without copying would let 1-byte payloads pin 131 KB each;
 * - what remains a view is counted with its whole buffer, once however many views share it;
 * - every write queued in a socket also costs Node a request object and a queue entry
 *   (measured: about 650 bytes of RSS per queued write), counted as WRITE_OVERHEAD_BYTES;
 *   small payloads for an app that is not keeping up are therefore gathered into one buffer
 *   (AppWriter) instead of queued one by one, so 1-byte payloads cost a byte each.
 */
import type { Socket } from 'node:net';

/** What the budget pauses: the WebSocket (ws's pause()/resume()). */
export interface Reader {
  pause(): void;
  resume(): void;
}

/** A view smaller than buffer/RETAIN_RATIO is copied out instead of keeping its buffer. */
export const RETAIN_RATIO = 4;
/** Memory Node keeps per write queued in a socket, beyond the bytes (measured on Node 20: ~650 B). */
export const WRITE_OVERHEAD_BYTES = 640;
/** Payloads below this size are gathered while the app's socket is backed up. */
export const GATHER_BELOW_BYTES = 8 * 1024;
/** Writes of one tick that are corked together before small payloads are gathered instead. */
const CORKED_WRITES = 4;
/** Size of a gather buffer. */
export const GATHER_BYTES = 16 * 1024;

/** The payload itself, or a copy of it when it is small next to the buffer it is a view of. */
export function detach(payload: Uint8Array): Uint8Array {
  if (payload.length * RETAIN_RATIO >= payload.buffer.byteLength) return payload;
  return new Uint8Array(payload);
}

export class InboundBudget {
  private pending = 0;
  private paused = false;
  /** Retained views per backing buffer: a buffer is counted once, whole, while any view of it is held. */
  private readonly holders = new Map<ArrayBufferLike, number>();

  /** `reader` undefined: the budget only counts (bytes bounded by credit grants). */
  constructor(private readonly reader: Reader | undefined, private readonly budgetBytes: number) {}

  /** Memory retained for the apps, in bytes. */
  get pendingBytes(): number {
    return this.pending;
  }

  /** True while the reader is paused for the apps (pongs are not read either). */
  get isPaused(): boolean {
    return this.paused;
  }

  /** A view handed to a socket (or held for one): its buffer is kept until `release`. */
  retain(view: Uint8Array): void {
    const buffer = view.buffer;
    const holders = this.holders.get(buffer);
    this.holders.set(buffer, (holders ?? 0) + 1);
    this.add(WRITE_OVERHEAD_BYTES + (holders === undefined ? buffer.byteLength : 0));
  }

  /** The kernel took the view's bytes (or they were dropped). */
  release(view: Uint8Array): void {
    const buffer = view.buffer;
    const holders = this.holders.get(buffer);
    if (holders === undefined) return;
    if (holders > 1) this.holders.set(buffer, holders - 1);
    else this.holders.delete(buffer);
    this.add(-WRITE_OVERHEAD_BYTES - (holders > 1 ? 0 : buffer.byteLength));
  }

  private add(n: number): void {
    this.pending += n;
    if (!this.reader) return;
    if (!this.paused && this.pending > this.budgetBytes) {
      this.paused = true;
      this.reader.pause();
    } else if (this.paused && this.pending < this.budgetBytes / 2) {
      this.paused = false;
      this.reader.resume();
    }
  }
}

function uncorkWriter(writer: AppWriter): void {
  writer.uncork();
}

/** A view queued for the socket, already counted in `budget`; `bytes` of payload it carries. */
interface Held {
  view: Uint8Array;
  bytes: number;
  budget: InboundBudget;
}

/**
 * Writes one connection's payloads to its app socket, in order, keeping what it retains counted.
 * Before the socket exists (a destination still connecting) everything is held. While the
 * socket has bytes the kernel has not taken, payloads below GATHER_BELOW_BYTES are copied into
 * a gather buffer, written when the writes before it are done or when it is full. An app that
 * keeps up never waits for a gather: its writes are taken at once and nothing is gathered.
 */
export class AppWriter {
  private socket?: Socket;
  /** Before attach: what will be written first, in order. */
  private early: Held[] = [];
  private gather?: { buffer: Uint8Array; used: number; budget: InboundBudget };
  /** Writes handed to the socket whose callback has not run. */
  private inFlight = 0;

  /** `taken(bytes)`: payload bytes the kernel took (or that were dropped with the socket). */
  constructor(private readonly taken: (bytes: number) => void) {}

  /** True while payloads wait for a socket. */
  get holding(): boolean {
    return this.early.length > 0 || this.gather !== undefined;
  }

  write(payload: Uint8Array, budget: InboundBudget): void {
    if (payload.length === 0) return;
    // Bytes corked in this tick are no backlog (the kernel has not had a chance to take them
    // yet), but only a few writes of a tick go unGathered: each costs a request when queued.
    const backedUp = !this.socket || this.socket.writableLength > this.corkedBytes || this.corkedWrites >= CORKED_WRITES;
    if (payload.length < GATHER_BELOW_BYTES && (this.gather !== undefined || backedUp)) {
      this.addToGather(payload, budget);
      return;
    }
    this.flushGather();
    const view = detach(payload);
    budget.retain(view);
    this.emit({ view, bytes: payload.length, budget });
  }

  /** The socket exists: what was held is written, in order. */
  attach(socket: Socket): void {
    this.socket = socket;
    const early = this.early;
    this.early = [];
    for (const held of early) this.emit(held);
    this.flushGather();
  }

  /** Before the socket ends: what was gathered is written first. */
  flush(): void {
    this.flushGather();
  }

  /** No socket will take what is held (the connect failed, or the connection ended first). */
  dispose(): void {
    const dropped = this.early;
    this.early = [];
    if (this.gather) dropped.push({ view: this.gather.buffer, bytes: this.gather.used, budget: this.gather.budget });
    this.gather = undefined;
    for (const held of dropped) this.done(held);
  }

  private addToGather(payload: Uint8Array, budget: InboundBudget): void {
    let gather = this.gather;
    if (gather && (gather.used + payload.length > gather.buffer.length || gather.budget !== budget)) {
      this.flushGather();
      gather = undefined;
    }
    if (!gather) {
      gather = { buffer: new Uint8Array(GATHER_BYTES), used: 0, budget };
      budget.retain(gather.buffer);
      this.gather = gather;
    }
    gather.buffer.set(payload, gather.used);
    gather.used += payload.length;
  }

  private flushGather(): void {
    const gather = this.gather;
    if (!gather) return;
    this.gather = undefined;
    // The subarray shares the gather buffer, which the budget counts by buffer.
    this.emit({ view: gather.buffer.subarray(0, gather.used), bytes: gather.used, budget: gather.budget });
  }

  private emit(held: Held): void {
    const socket = this.socket;
    if (!socket) {
      this.early.push(held);
      return;
    }
    // The payloads of one read of the WebSocket (a 64512-byte DATA and the rest of its 64 KiB
    // read, say) leave in one writev: corked until the end of the tick (issue 15).
    if (this.corkedWrites === 0) {
      socket.cork();
      process.nextTick(uncorkWriter, this);
    }
    this.corkedBytes += held.view.length;
    this.corkedWrites++;
    this.inFlight++;
    // Write callbacks run in the order of the writes: the queue says which write each one is for.
    this.written.push(held);
    socket.write(held.view, this.onWritten);
  }

  /** Payloads handed to the socket, in order, whose write callback has not run. */
  private readonly written: Held[] = [];
  private writtenHead = 0;
  /** Bytes and writes handed to the socket while corked in this tick (0: not corked). */
  private corkedBytes = 0;
  private corkedWrites = 0;

  /** @internal The end of the tick that corked the socket. */
  uncork(): void {
    this.corkedBytes = 0;
    this.corkedWrites = 0;
    this.socket?.uncork();
  }

  private readonly onWritten = (): void => {
    const held = this.written[this.writtenHead++];
    if (this.writtenHead === this.written.length) {
      this.written.length = 0;
      this.writtenHead = 0;
    } else if (this.writtenHead >= 1024) {
      this.written.splice(0, this.writtenHead);
      this.writtenHead = 0;
    }
    this.inFlight--;
    this.done(held);
    if (this.inFlight === 0) this.flushGather();
  };

  private done(held: Held): void {
    held.budget.release(held.view);
    this.taken(held.bytes);
  }
}
