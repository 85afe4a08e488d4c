/**
 * One tunneled TCP connection: a local socket on one side, DATA messages on the other.
 *
 * Closing follows Decisions 5: a local FIN or error sends every byte read before it, then the
 * reset; a reset from the peer closes the local socket only after every byte received before
 * it has been written (`socket.end()` flushes Node's write queue before the FIN).
 */
import type { Socket } from 'node:net';
import type { Logger } from '../log';
import { encodeFrame } from '../protocol/framing';
import { MessageType } from '../protocol/message';
import { CLOSE_FLUSH_TIMEOUT_MS, type Producer, type Throttled } from './flow';
import type { Session, ServiceState } from './session';

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

export type ConnectionState = 'connecting' | 'open' | 'closing' | 'closed';

export class Connection implements Producer, Throttled {
  queue: Buffer[] = [];
  queuedBytes = 0;
  inRing = false;
  state: ConnectionState = 'connecting';
  socket?: Socket;
  bytesIn = 0;
  bytesOut = 0;
  readonly log: Logger;
  /** Payloads received before the local socket exists (destination connect in progress). */
  private early: Uint8Array[] = [];
  private outboundPaused = false;
  private endWhenConnected = false;
  private socketClosed = false;
  private flushTimer?: NodeJS.Timeout;
  private remote = '';
  /** Aborts a destination connect in progress. */
  abortConnect?: () => void;

  constructor(
    readonly session: Session,
    readonly service: ServiceState,
    readonly streamId: number,
    /** Allocated by the source or received by the destination; 0 in the V1/V2 form. */
    readonly id: number,
  ) {
    this.log = session.log.fork(`${service.id || 'v1'} stream#${streamId} conn#${id}`);
  }

  /** The connection id on the wire: none for V1/V2 peers. */
  get wireConnectionId(): number {
    return this.service.version >= 3 ? this.id : 0;
  }

  /** Attaches the local socket; reading starts at once (the start message is already queued). */
  attach(socket: Socket): void {
    this.socket = socket;
    // A peer reset that arrived while connecting leaves the state at 'closing'.
    if (!this.endWhenConnected) this.state = 'open';
    socket.setNoDelay(true);
    (socket as OwnedSocket)[kConnection] = this;
    this.remote = socket.remoteAddress ? `${socket.remoteAddress}:${socket.remotePort}` : 'unix socket';
    socket.on('data', socketOnData);
    socket.on('end', socketOnEnd);
    socket.on('error', socketOnError);
    socket.on('close', socketOnClose);
    if (this.state === 'open') this.session.outbound.register(this);
    for (const payload of this.early) this.writeToApp(payload);
    this.early = [];
    if (this.endWhenConnected) this.closeLocal();
    else if (!this.outboundPaused) socket.resume();
  }

  setOutboundPaused(paused: boolean): void {
    this.outboundPaused = paused;
    if (!this.socket || this.state !== 'open') return;
    if (paused) this.socket.pause();
    else this.socket.resume();
  }

  /** A DATA payload from the peer. */
  deliver(payload: Uint8Array): void {
    if (this.state === 'closing' || this.state === 'closed') return;
    if (!this.socket) {
      this.early.push(payload);
      this.session.inbound.add(payload.length);
      return;
    }
    this.session.inbound.add(payload.length);
    this.writeToApp(payload);
  }

  /** Writes a payload already counted in the inbound budget; the budget is released once the kernel has it. */
  private writeToApp(payload: Uint8Array): void {
    const budget = this.session.inbound;
    const n = payload.length;
    this.bytesIn += n;
    this.socket!.write(payload, () => budget.release(n));
  }

  /** @internal */
  onSocketData(chunk: Buffer): void {
    if (this.state !== 'open') return;
    this.bytesOut += chunk.length;
    const max = this.session.settings.maxPayloadSize;
    for (let at = 0; at < chunk.length; at += max) {
      this.send(MessageType.DATA, chunk.subarray(at, Math.min(at + max, chunk.length)));
    }
  }

  private send(type: number, payload?: Uint8Array): void {
    const frame = encodeFrame({
      type,
      streamId: this.streamId,
      serviceId: this.service.wireId,
      connectionId: type === MessageType.STREAM_RESET ? 0 : this.wireConnectionId,
      payload,
    });
    this.session.outbound.push(this, frame);
  }

  /** Queues this connection's start message (source). */
  sendStart(type: number): void {
    this.send(type);
  }

  private resetType(): number {
    return this.service.version >= 3 ? MessageType.CONNECTION_RESET : MessageType.STREAM_RESET;
  }

  /** @internal */
  onSocketEnd(): void {
    if (this.state !== 'open') return;
    this.log.debug('local end of file; sending the reset after the bytes read before it');
    this.finishFromLocal();
  }

  /** @internal */
  onSocketError(err: Error): void {
    this.log.debug(`local socket error: ${err.message}`);
    if (this.state === 'open') this.finishFromLocal();
    this.socket?.destroy();
  }

  /** Local side ended: bytes already queued go first, then the reset; the socket closes. */
  private finishFromLocal(): void {
    this.send(this.resetType());
    this.state = 'closing';
    this.service.onLocalClose(this);
    this.closeLocal();
  }

  /**
   * Resets the connection from our side (proxy closing, connect failed, refused): the peer is
   * told with the matching reset, the local socket is closed after pending writes.
   */
  reset(reason: string): void {
    if (this.state === 'closing' || this.state === 'closed') return;
    this.log.debug(`resetting: ${reason}`);
    this.send(this.resetType());
    this.state = 'closing';
    if (!this.socket) {
      // Still connecting: there is no socket to wait for, only the reset to send.
      this.abortConnect?.();
      for (const payload of this.early) this.session.inbound.release(payload.length);
      this.early = [];
      this.socketClosed = true;
      return;
    }
    this.closeLocal();
  }

  /**
   * The peer reset the connection (or the session is gone): nothing more is sent; the local
   * socket closes once every byte received before the reset has been written.
   */
  closeFromPeer(reason: string): void {
    if (this.state === 'closed') return;
    this.log.debug(`closing: ${reason}`);
    this.session.outbound.drop(this);
    const wasConnecting = this.state === 'connecting';
    this.state = 'closing';
    if (wasConnecting && !this.socket) {
      if (this.early.length > 0 && this.abortConnect) {
        // Bytes already arrived for the app: connect, write them, then close.
        this.endWhenConnected = true;
        return;
      }
      this.abortConnect?.();
      this.release();
      return;
    }
    this.closeLocal();
  }

  /** The local socket could not be created (destination connect failed for good). */
  failed(reason: string): void {
    this.log.debug(reason);
    this.abortConnect = undefined;
    const closing = this.state === 'closing';
    if (!closing) this.send(this.resetType());
    this.state = 'closing';
    for (const payload of this.early) this.session.inbound.release(payload.length);
    this.early = [];
    this.socketClosed = true;
    this.service.onLocalClose(this);
    this.maybeRelease();
  }

  private closeLocal(): void {
    const socket = this.socket;
    if (!socket) return;
    // Keep reading (and discarding): an app blocked writing to us could otherwise never see
    // our FIN through, and neither side would close until the flush timeout.
    this.session.outbound.unregister(this);
    socket.resume();
    if (!this.socketClosed) {
      socket.end();
      this.flushTimer = setTimeout(() => socket.destroy(), CLOSE_FLUSH_TIMEOUT_MS);
      this.flushTimer.unref();
    }
  }

  /** @internal */
  onSocketClose(): void {
    this.socketClosed = true;
    clearTimeout(this.flushTimer);
    this.session.outbound.unregister(this);
    if (this.state === 'open') {
      this.send(this.resetType());
      this.state = 'closing';
      this.service.onLocalClose(this);
    }
    this.log.info(`Disconnected from: ${this.remote}`);
    this.log.debug(`closed (sent ${this.bytesOut} bytes, received ${this.bytesIn} bytes)`);
    this.maybeRelease();
  }

  onQueueEmpty(): void {
    this.maybeRelease();
  }

  /** The connection leaves its service once its socket is gone and its reset is on the wire. */
  private maybeRelease(): void {
    if (this.state === 'closing' && this.socketClosed && this.queue.length === 0) this.release();
  }

  private release(): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    for (const payload of this.early) this.session.inbound.release(payload.length);
    this.early = [];
    this.service.remove(this);
  }

  /** The session is over: drop the socket after writing what was received. */
  teardown(): void {
    if (this.state === 'closed') return;
    this.session.outbound.drop(this);
    this.state = 'closing';
    if (!this.socket) {
      this.abortConnect?.();
      this.release();
      return;
    }
    this.closeLocal();
  }
}
