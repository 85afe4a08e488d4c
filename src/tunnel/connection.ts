/**
 * One tunneled TCP connection: a local socket on one side, DATA messages on the other, as one
 * explicit state machine (the shape of ws's readyState):
 *
 *   connecting ──attach(socket)──► open
 *       │                           │  local end / error / close, or reset() ─► closing, the peer is told
 *       │                           │  peer reset, or session ended ──────────► closing, the peer is not
 *       │                           ▼
 *       ├── reset(), connect failed ──► closing ──── local socket closed and ────► closed
 *       │                                 ▲           our frames handed to ws     (owner.closed)
 *       ├── peer reset with bytes waiting ┘ (the connect goes on; attach writes them, then closes)
 *       └── peer reset, session ended ──────────────────────────────────────────► closed
 *
 * Closing follows Decisions 5: a local FIN or error sends every byte read before it, then the
 * reset; a reset from the peer closes the local socket only after every byte received before
 * it has been written (`socket.end()` flushes Node's write queue before the FIN).
 *
 * The connection knows nothing of messages, versions or the session: it talks to its owner
 * (the service it belongs to) through ConnectionOwner.
 *
 * With per-connection credit (issue 14, credit.ts) the app's bytes go out only within the
 * peer's grants: at zero credit the local socket stops being read, and what was read beyond the
 * credit is held (at most one read) until the next grant.
 */
import type { Socket } from 'node:net';
import { LogLevel, type Logger } from '../log';
import { AppWriter, type InboundBudget } from './inbound';
import type { Producer, Throttled } from './outbound';

/**
 * A closing local socket is destroyed once nothing moved on it for this long: its app takes
 * none of the last bytes (Node's socket timeout counts the kernel taking queued bytes as
 * activity, so a slow reader is not a stuck one) and sends nothing.
 */
export const CLOSE_FLUSH_TIMEOUT_MS = 30_000;

export type ConnectionState = 'connecting' | 'open' | 'closing' | 'closed';

/** What a connection needs from its owner. */
export interface ConnectionOwner {
  /** Queues bytes read from the local socket as DATA, in order. */
  sendData(conn: Connection, bytes: Buffer): void;
  /** Queues the reset that ends the connection for the peer, after the DATA queued before it. */
  sendReset(conn: Connection): void;
  /** Forgets the connection's frames not yet handed to the WebSocket. */
  discard(conn: Connection): void;
  /** The local socket is read (true; backpressure may pause it) or no longer read for the peer (false). */
  reading(conn: Connection, reading: boolean): void;
  /** The budget that counts what a payload for the app retains until its socket takes it (inbound.ts). */
  budgetFor(conn: Connection): InboundBudget;
  /** The app's socket took `bytes` of payload: credit grants the peer more. */
  taken(conn: Connection, bytes: number): void;
  /** Payload bytes the connection may send now (the peer's credit); Infinity without credit. */
  sendRoom(conn: Connection): number;
  /** The connection is over: the owner forgets it. */
  closed(conn: Connection): void;
}

const kConnection = Symbol('connection');
type OwnedSocket = Socket & { [kConnection]?: Connection };

// Socket listeners are module functions reaching their connection through the socket, so no
// closure is allocated per connection and each can be removed by name.
function socketOnData(this: OwnedSocket, chunk: Buffer): void {
  this[kConnection]!.onSocketData(chunk);
}
function socketOnEnd(this: OwnedSocket): void {
  this[kConnection]!.onSocketEnd();
}
function socketOnError(this: OwnedSocket, err: Error): void {
  this[kConnection]!.onSocketError(err);
}
function socketOnClose(this: OwnedSocket): void {
  this[kConnection]!.onSocketClose();
}
function socketOnFlushTimeout(this: OwnedSocket): void {
  this[kConnection]!.onFlushTimeout();
}

export class Connection implements Producer, Throttled {
  state: ConnectionState = 'connecting';
  bytesIn = 0;
  bytesOut = 0;
  private socket?: Socket;
  /** The local socket emitted 'close' (or will never exist). */
  private socketClosed = false;
  /** Nothing of ours waits in the outbound queue. */
  private queueEmpty = true;
  /** Writes the peer's payloads to the app (held while connecting), counted in the inbound budget. */
  private readonly writer: AppWriter;
  /** Aborts the destination's connect in progress; undefined when none is. */
  private abortConnect?: () => void;
  private outboundPaused = false;
  /** Read from the app beyond the peer's credit: sent on the next grant. */
  private held?: Buffer;
  private creditPaused = false;
  /** The app ended while bytes were held: the reset follows them. */
  private resetAfterHeld = false;
  /** socket.end() was called. */
  private ending = false;
  private remote = '';

  constructor(
    private readonly owner: ConnectionOwner,
    readonly streamId: number,
    /** Allocated by the source or received by the destination; 0 in the V1/V2 form. */
    readonly id: number,
    readonly log: Logger,
    private readonly flushTimeoutMs: number = CLOSE_FLUSH_TIMEOUT_MS,
  ) {
    this.writer = new AppWriter((bytes) => this.owner.taken(this, bytes));
  }

  /** Destination: a connect to the local app is under way; `abort` gives it up. */
  connecting(abort: () => void): void {
    this.abortConnect = abort;
  }

  /** The local socket exists (accepted, or connected): reading starts at once. */
  attach(socket: Socket): void {
    this.abortConnect = undefined;
    this.socket = socket;
    socket.setNoDelay(true);
    (socket as OwnedSocket)[kConnection] = this;
    this.remote = !socket.remoteAddress ? 'unix socket' : socket.remotePort === undefined ? socket.remoteAddress : `${socket.remoteAddress}:${socket.remotePort}`;
    socket.on('data', socketOnData);
    socket.on('end', socketOnEnd);
    socket.on('error', socketOnError);
    socket.on('close', socketOnClose);
    const closing = this.state === 'closing';   // the peer reset it while we connected
    if (!closing) {
      this.state = 'open';
      this.owner.reading(this, true);
    }
    this.writer.attach(socket);
    if (closing) this.closeSocket();
    else this.applyReading();
  }

  /** Backpressure towards the app (outbound.ts). */
  setOutboundPaused(paused: boolean): void {
    this.outboundPaused = paused;
    this.applyReading();
  }

  /** The local socket is read unless backpressure or the peer's credit holds it. */
  private applyReading(): void {
    if (!this.socket || this.state !== 'open') return;
    if (this.outboundPaused || this.creditPaused) this.socket.pause();
    else this.socket.resume();
  }

  /** A DATA payload from the peer. */
  deliver(payload: Uint8Array): void {
    if (this.state === 'closing' || this.state === 'closed') return;
    this.bytesIn += payload.length;
    this.writer.write(payload, this.owner.budgetFor(this));
  }

  onQueueEmpty(): void {
    this.queueEmpty = true;
    this.maybeClosed();
  }

  // ── the ways a connection ends ────────────────────────────────────────────────

  /** @internal The app closed its side: the bytes read before go first, then the reset. */
  onSocketEnd(): void {
    if (this.state !== 'open') return;
    this.log.debug('local end of file; sending the reset after the bytes read before it');
    this.close({ tellPeer: true, keepHeld: true });
  }

  /** @internal */
  onSocketError(err: Error): void {
    this.log.debug(`local socket error: ${err.message}`);
    if (this.state === 'open') this.close({ tellPeer: true, keepHeld: true });
    this.socket?.destroy();
  }

  /** @internal */
  onSocketClose(): void {
    this.socketClosed = true;
    this.owner.reading(this, false);
    if (this.state === 'open') this.close({ tellPeer: true, keepHeld: true });
    this.log.info(`Disconnected from: ${this.remote}`);
    this.log.debug(`closed (sent ${this.bytesOut} bytes, received ${this.bytesIn} bytes)`);
    this.maybeClosed();
  }

  /**
   * Ours ends it (proxy closing, duplicate id, payload too large): the peer gets the reset,
   * the local socket closes after pending writes.
   */
  reset(reason: string): void {
    if (this.state === 'closing' || this.state === 'closed') return;
    this.log.debug(`resetting: ${reason}`);
    this.close({ tellPeer: true });
  }

  /** The local app cannot be reached (destination connect failed for good). */
  connectFailed(reason: string): void {
    this.log.debug(reason);
    this.abortConnect = undefined;
    this.socketClosed = true;
    this.writer.dispose();
    // A peer reset that came while connecting left it closing: the peer needs no reset then.
    if (this.state === 'connecting') this.close({ tellPeer: true });
    else this.maybeClosed();
  }

  /**
   * The peer reset the connection: nothing more is sent; the local socket closes once every
   * byte received before the reset has been written.
   */
  closeFromPeer(reason: string): void {
    if (this.state === 'closed') return;
    this.log.debug(`closing: ${reason}`);
    this.close({ tellPeer: false, deliverEarly: true });
  }

  /**
   * Source, before the peer's reset is applied: a reset before the peer sent a byte is how the
   * service refuses a connection while no destination is connected (or the destination's
   * application refused it). Said at the default level: the app only sees its connection close.
   */
  noteResetBeforeReply(): void {
    if (this.bytesIn > 0 || this.state === 'closing' || this.state === 'closed') return;
    this.log.limited(LogLevel.INFO, 'reset-before-reply', 'reset by the service before any reply — is the destination connected? (or did its application refuse the connection?)');
  }

  /** The session is over (its WebSocket is gone): nothing more is sent, a connect in progress is given up. */
  sessionEnded(): void {
    if (this.state === 'closed') return;
    this.close({ tellPeer: false });
  }

  /**
   * The one transition into closing (or closed). `tellPeer`: queue the reset (after our DATA),
   * else forget what is queued. `keepHeld`: bytes read from the app and held for the peer's
   * credit go first, the reset after them (the app ended); else they are dropped.
   * `deliverEarly`: a connect in progress goes on when bytes already wait for the app.
   */
  private close(how: { tellPeer: boolean; keepHeld?: boolean; deliverEarly?: boolean }): void {
    const from = this.state;
    if (!how.keepHeld || !how.tellPeer) this.held = undefined;
    if (how.tellPeer) {
      if (from !== 'closing') {
        this.queueEmpty = false;
        if (this.held) this.resetAfterHeld = true;
        else this.owner.sendReset(this);
      }
    } else {
      this.owner.discard(this);
      this.queueEmpty = true;
      this.resetAfterHeld = false;
    }
    this.state = 'closing';
    if (this.socket) {
      this.closeSocket();
    } else if (how.deliverEarly && this.abortConnect && this.writer.holding) {
      // Bytes already arrived for the app: the connect goes on, attach() writes them, then closes.
      return;
    } else {
      this.abortConnect?.();
      this.abortConnect = undefined;
      this.socketClosed = true;
      this.writer.dispose();
    }
    this.maybeClosed();
  }

  /** Ends the local socket after its pending writes; destroyed if the app stops taking them. */
  private closeSocket(): void {
    const socket = this.socket!;
    // Keep reading (and discarding): an app blocked writing to us could otherwise never see
    // our FIN through, and neither side would close until the flush timeout.
    this.owner.reading(this, false);
    socket.resume();
    if (this.socketClosed || this.ending) return;
    this.ending = true;
    this.writer.flush();
    socket.end();
    socket.setTimeout(this.flushTimeoutMs);
    socket.once('timeout', socketOnFlushTimeout);
  }

  /** @internal Nothing moved on the closing socket for the flush timeout. */
  onFlushTimeout(): void {
    const socket = this.socket!;
    this.log.info(`Closing the local connection: its app took none of the last ${socket.writableLength} bytes for ${this.flushTimeoutMs / 1000} s`);
    socket.destroy();
  }

  /** Closing ends once the local socket is gone and our frames (the reset among them) are on the wire. */
  private maybeClosed(): void {
    if (this.state !== 'closing' || !this.socketClosed || !this.queueEmpty || this.held) return;
    this.state = 'closed';
    this.writer.dispose();
    this.owner.closed(this);
  }

  /** @internal Bytes read from the app go to the peer while open. */
  onSocketData(chunk: Buffer): void {
    if (this.state !== 'open') return;
    this.sendWithinCredit(chunk);
  }

  private send(bytes: Buffer): void {
    this.bytesOut += bytes.length;
    this.queueEmpty = false;
    this.owner.sendData(this, bytes);
  }

  // ── credit (issue 14): the app's bytes go out only within the peer's grants ───────

  /** Sends what the credit allows; the rest is held and the socket no longer read until the next grant. */
  private sendWithinCredit(chunk: Buffer): void {
    if (this.held) {
      // A read that was already under way when reading stopped: it waits behind the held bytes.
      this.held = Buffer.concat([this.held, chunk]);
      return;
    }
    const room = this.owner.sendRoom(this);
    if (chunk.length <= room) {
      this.send(chunk);
      return;
    }
    if (room > 0) this.send(chunk.subarray(0, room));
    this.held = chunk.subarray(room);
    this.creditPaused = true;
    this.applyReading();
  }

  /** The peer granted more, or credit no longer applies: held bytes go out, then reading resumes (or the reset follows). */
  onCredit(): void {
    const held = this.held;
    if (!held) return;
    const room = this.owner.sendRoom(this);
    if (room <= 0) return;
    if (held.length > room) {
      this.send(held.subarray(0, room));
      this.held = held.subarray(room);
      return;
    }
    this.held = undefined;
    this.send(held);
    this.creditPaused = false;
    if (this.resetAfterHeld) {
      this.resetAfterHeld = false;
      this.owner.sendReset(this);
      return;
    }
    this.applyReading();
  }
}
