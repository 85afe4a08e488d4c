/**
 * A paced writer: frames wait in a queue of the owner's (its queue policy), and at most once
 * per event-loop turn the writer hands ws as many of them as the pacer allows, packed into
 * WebSocket messages, followed by the pacer's delay probe. It runs again when ws has written a
 * message (`written`), when a pong opens the window, or when the pacer asks to be woken (a
 * probe unanswered for long, pacing credit).
 *
 * Two owners extend it, each with its own queue policy:
 * - the proxies' Outbound (src/tunnel/outbound.ts): one queue per producer (a connection, or
 *   the session's control messages), served by the scheduler, and the local sockets paused
 *   above a high-water mark;
 * - the relay's PacedSend (src/relay/paced.ts): one lane per connection, with barriers for
 *   messages about a whole stream or session.
 * docs/DESIGN.md ("Flow control") lists every loop around it, with its bound.
 */
import { performance } from 'node:perf_hooks';
import type { Socket } from 'node:net';
import type WebSocket from 'ws';
import type { Logger } from '../log';
import { writeMessages } from '../protocol/framing';
import type { Pacer } from './pacer';
import { PacerProbes } from './probes';

/** Frames at least this big are sent in a WebSocket message of their own instead of packed. */
export const COALESCE_BELOW_BYTES = 16 * 1024;

/**
 * The socket under a ws WebSocket (a net or TLS socket), to cork while a flush hands it several
 * messages (one TLS record run and one system call instead of one per message), or to set
 * TCP_NODELAY on. ws offers no public accessor; `_socket` has been its name since ws 1.
 */
export function socketOf(ws: WebSocket): Socket | undefined {
  return (ws as unknown as { _socket?: Socket })._socket;
}

export abstract class PacedWriter {
  protected closed = false;
  /** A flush is planned for a later turn. */
  protected scheduled = false;
  private readonly probes: PacerProbes;
  private readonly socket?: Pick<Socket, 'cork' | 'uncork'>;
  private readonly out: Buffer[] = [];
  /** Milliseconds, sub-millisecond precision: loopback round trips are a fraction of one. */
  readonly clock: () => number;

  constructor(
    protected readonly ws: WebSocket,
    readonly pacer: Pacer,
    /** The pacer's debug line starts with this ("Pacing", "tunnel … destination: pacing"). */
    label: string,
    log?: Logger,
    clock: () => number = () => performance.now(),
  ) {
    this.clock = clock;
    this.socket = socketOf(ws);
    this.probes = new PacerProbes(ws, pacer, {
      readerPaused: () => this.ws.isPaused,
      turn: () => this.written(),
      describe: () => this.describe(),
    }, label, log, clock);
  }

  /** Bytes queued here, not yet handed to ws. */
  abstract get queuedBytes(): number;

  /**
   * The queue policy: moves the frames that go now into `out`, about `room` bytes of them.
   * With no room (≤ 0) only what may pass a full window goes (the scheduler's new flows).
   */
  protected abstract take(room: number, out: Buffer[]): void;

  /** Hands one WebSocket message to ws. */
  protected abstract writeMessage(message: Buffer): void;

  /** After each flush, before the next is planned: what the owner does with what left. */
  protected abstract flushed(now: number, handedBytes: number): void;

  /** The largest message, and the frame size from which a frame goes in a message of its own. */
  protected abstract packing(): { aloneBytes: number; maxBytes: number };

  /** A flush found the WebSocket closing or closed: nothing more will be handed over. */
  protected notOpen(): void {}

  /** Bytes that may go now (≤ 0: none). */
  protected room(now: number): number {
    return this.pacer.room(now, this.ws.bufferedAmount, this.ws.isPaused);
  }

  /** The end of the pacer's debug line. */
  protected describe(): string {
    return `${this.queuedBytes} bytes queued here`;
  }

  /** A message handed to ws was written, or a pong came: room may have opened. */
  written(): void {
    if (this.queuedBytes > 0) this.schedule();
  }

  protected schedule(): void {
    if (this.scheduled || this.closed) return;
    this.scheduled = true;
    setImmediate(onTurn, this);
  }

  /** Sends whatever is queued now, past the pacer, instead of on the next turn (right before a close). */
  flushNow(): void {
    this.flush(true);
  }

  /** @internal */
  flush(unpaced = false): void {
    this.scheduled = false;
    this.probes.cancelWake();
    if (this.closed) return;
    if (this.ws.readyState !== this.ws.OPEN) {
      this.notOpen();
      return;
    }
    const now = this.clock();
    const out = this.out;
    this.take(unpaced ? Infinity : this.room(now), out);
    let handed = 0;
    const socket = this.socket;
    socket?.cork();
    try {
      if (out.length > 0) {
        const { aloneBytes, maxBytes } = this.packing();
        handed = writeMessages(out, aloneBytes, maxBytes, this.writeOne);
        this.pacer.sent(handed, now);
      }
      this.probes.probe(now);
    } finally {
      socket?.uncork();
      out.length = 0;
    }
    this.flushed(now, handed);
    if (this.queuedBytes > 0) {
      // Else a write callback or a pong runs the next turn, or the pacer's wake-up time.
      if (this.room(now) > 0) this.schedule();
      else this.probes.armWake(now);
    }
  }

  /**
   * Hands one frame to ws now, ahead of everything queued; it counts towards the pacer's bytes
   * in flight.
   */
  sendFirst(frame: Buffer): void {
    if (this.closed || this.ws.readyState !== this.ws.OPEN) return;
    this.writeMessage(frame);
    this.pacer.sent(frame.length, this.clock());
  }

  /** Stops: nothing more is sent, the probes stop. The owner drops what it queued. */
  close(): void {
    this.closed = true;
    this.probes.close();
  }

  private readonly writeOne = (message: Buffer): void => {
    this.writeMessage(message);
  };
}

function onTurn(writer: PacedWriter): void {
  writer.flush();
}
