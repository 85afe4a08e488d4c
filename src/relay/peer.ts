/**
 * One WebSocket peer of a tunnel, connected to this relay: an end of its link (link.ts) with a
 * life of its own (open, closing, replaced, closed). Its parts:
 * - its input: decoded, checked and forwarded message by message (forwarding.ts), read at most
 *   a turn's worth at a time (src/transport/fair.ts);
 * - what is sent to it, with the senders paused by its backlog (outlet.ts), paced towards a
 *   peer of ours (paced.ts);
 * - why it is not read now: the backlog of the end it sends to, its bandwidth (reading.ts,
 *   bandwidth.ts);
 * - its pings, our pongs and the heartbeat while it is paused (pings.ts).
 */
import type { Socket } from 'node:net';
import type { WebSocket, RawData } from 'ws';
import { LogLevel, type Logger } from '../log';
import { printable } from '../printable';
import type { ProtocolVersion } from '../protocol/constants';
import { encodeFrame } from '../protocol/framing';
import { MessageType, type MessageInit } from '../protocol/message';
import { extensionOf } from '../protocol/extension';
import { isKnownType } from '../protocol/validate';
import { FairReader } from '../transport/fair';
import { BandwidthLimit, queueBoundBytes } from './bandwidth';
import { NO_FAULTS, type RelayFaults } from './faults';
import { Forwarder } from './forwarding';
import { CLOSE_POLICY, fitCloseReason, REPLACED_REASON, type LinkEnd, type PeerEvent, type TunnelLink } from './link';
import { HIGH_WATER_BYTES, Outlet } from './outlet';
import { PeerPings } from './pings';
import { ReadingPause } from './reading';
import type { PeerMode } from './store/record';

/** How long a socket may stay half-closed after our close frame before it is destroyed. */
const CLOSE_LINGER_MS = 2000;
/** What a ping costs of a peer's bandwidth besides its payload: the cloud counts the frame header too. */
const PING_FRAME_BYTES = 6;

export interface PeerInit {
  ws: WebSocket;
  socket: Socket;
  mode: PeerMode;
  version: ProtocolVersion;
  channelId: string;
  log: Logger;
  /** Extensions whose messages this peer takes (declared in its upgrade request; none for V1). */
  extensions?: readonly string[];
  onEvent?: (event: PeerEvent) => void;
  /** Bytes per second this peer may send (`--bandwidth`); undefined: unlimited. */
  bandwidth?: number;
  /** Pace what is sent to this peer (paced.ts) when it declared an extension. Default true. */
  pace?: boolean;
  /** Faults a test injects (faults.ts); none by default. */
  faults?: RelayFaults;
}

export class Peer extends Outlet implements LinkEnd {
  readonly link: TunnelLink;
  readonly ws: WebSocket;
  readonly socket: Socket;
  readonly mode: PeerMode;
  readonly version: ProtocolVersion;
  readonly channelId: string;
  readonly log: Logger;
  readonly extensions: ReadonlySet<string>;
  /** Above this many unsent bytes, senders to this peer are paused (outlet.ts). */
  readonly highWater: number;
  bytesIn = 0;
  private readonly onEvent?: (event: PeerEvent) => void;
  private readonly faults: RelayFaults;
  private readonly input: Forwarder;
  /** Bounds the work this peer's input gets per event-loop turn, so that other peers' work interleaves. */
  private readonly reader: FairReader;
  private readonly reading: ReadingPause;
  private readonly bandwidth?: BandwidthLimit;
  private readonly pings: PeerPings;
  private readonly shouldPace: boolean;
  private readonly startedAt = Date.now();

  constructor(link: TunnelLink, init: PeerInit) {
    super();
    this.link = link;
    this.ws = init.ws;
    this.socket = init.socket;
    this.mode = init.mode;
    this.version = init.version;
    this.channelId = init.channelId;
    this.log = init.log;
    this.extensions = new Set(init.extensions ?? []);
    this.onEvent = init.onEvent;
    this.faults = init.faults ?? NO_FAULTS;
    this.highWater = queueBoundBytes(init.bandwidth, HIGH_WATER_BYTES);
    this.reading = new ReadingPause(this.ws);
    if (init.bandwidth) this.bandwidth = new BandwidthLimit(init.bandwidth, this.reading);
    this.shouldPace = init.pace !== false && this.extensions.size > 0;
    this.input = new Forwarder(this);
    this.pings = new PeerPings(this.ws, () => this.life === 'open' && this.faults.answerPings());
    this.onWsMessage = this.onWsMessage.bind(this);
    this.onWsClose = this.onWsClose.bind(this);
    this.onWsPing = this.onWsPing.bind(this);
    this.onWsError = this.onWsError.bind(this);
    // Pings wait in order with the messages: one read after a message is answered after it.
    this.reader = new FairReader(this.ws, { message: this.onWsMessage, ping: this.onWsPing }, { socket: init.socket });
  }

  start(): void {
    this.reader.start();
    this.ws.on('close', this.onWsClose);
    this.ws.on('error', this.onWsError);
    if (this.shouldPace) this.startPacing();
    if (this.version >= 2) this.sendFrames([encodeFrame({ type: MessageType.SERVICE_IDS, availableServiceIds: this.link.tunnel.services })]);
  }

  /** Sends a close frame, then ends the socket instead of waiting for the peer's reply. */
  close(code: number, reason: string): void {
    if (this.life !== 'open') return;
    this.stopPacing(true);
    this.moveTo('closing');
    this.shut(code, reason);
  }

  replace(): void {
    const open = this.life === 'open';
    if (open) this.stopPacing(true);
    if (this.moveTo('replaced') && open) this.shut(CLOSE_POLICY, REPLACED_REASON);
  }

  /**
   * Whether a message type is forwarded to this peer: every type of the protocol; an ignorable
   * one of another type only when it belongs to an extension this peer declared, so that no
   * extension message reaches a peer that did not ask for it (the C++ reference, V1).
   */
  takes(type: number): boolean {
    if (isKnownType(type, 3)) return true;
    const extension = extensionOf(type);
    return extension !== undefined && this.extensions.has(extension);
  }

  /** Encodes a message for this peer, in the form its protocol version expects. */
  frameFor(msg: MessageInit): Buffer {
    if (this.version === 1 && msg.serviceId) return encodeFrame({ ...msg, serviceId: '' });
    return encodeFrame(msg);
  }

  /** A V1 peer gets no service ids. */
  wireServiceId(serviceId: string): string {
    return this.version === 1 ? '' : serviceId;
  }

  /** The receiver's backlog no longer pauses this peer. */
  resumeReading(): void {
    this.pings.stopHeartbeat();
    if (!this.reading.resume('backlog')) return;
    this.log.debug('resumed reading');
    this.onEvent?.({ type: 'resumed', tunnelId: this.link.tunnel.tunnelId, mode: this.mode });
  }

  /** Past `close` or `replace`'s change of life: the close frame, then the socket ends. */
  private shut(code: number, reason: string): void {
    this.resumeReading();
    this.bandwidth?.stop();
    try {
      this.ws.close(code, reason);
    } catch {
      // Still CONNECTING or already closed: nothing to send.
    }
    this.socket.end();
    setTimeout(() => this.socket.destroy(), CLOSE_LINGER_MS).unref();
  }

  /** Stops reading this peer while `receiver` has more than its high-water mark unsent. */
  private pauseFor(receiver: LinkEnd): void {
    if (receiver.unsent > receiver.highWater && this.reading.pause('backlog')) {
      this.log.debug(`paused reading: the ${receiver === this ? 'peer itself' : receiver.mode} has ${receiver.unsent} bytes unsent`);
      this.pings.startHeartbeat();
      receiver.resumeWhenDrained(this);
      this.onEvent?.({ type: 'paused', tunnelId: this.link.tunnel.tunnelId, mode: this.mode, receiver: receiver.mode, unsentBytes: receiver.unsent });
    }
  }

  /** `--bandwidth`: what is read from this peer is charged to its bucket (bandwidth.ts). */
  private charge(bytes: number): void {
    if (this.life === 'open') this.bandwidth?.charge(bytes);
  }

  private onWsPing(data: Buffer): void {
    // The cloud counts pings towards the tunnel's bandwidth (V3 guide).
    this.charge(data.length + PING_FRAME_BYTES);
    // Only a peer of ours waits for its earlier messages to leave the relay's queue (pings.ts).
    this.pings.onPing(data, this.extensions.size === 0 ? undefined : this.link.other(this.mode));
  }

  private onWsError(err: Error): void {
    // ws closes the connection after a protocol error (bad frame, message too large).
    // A peer can provoke this at will (a message over the size limit, then reconnect): rate-limited.
    this.log.limited(LogLevel.WARNING, 'websocket-error', `WebSocket error, closing the connection: ${printable(err.message)}`);
  }

  private onWsMessage(data: RawData, isBinary: boolean): void {
    if (this.life !== 'open') return;
    if (!isBinary) return this.violation('text frames are not allowed');
    const chunk = data as Buffer;
    this.bytesIn += chunk.length;
    this.charge(chunk.length);
    const other = this.link.other(this.mode);
    const error = this.input.forward(chunk, other?.life === 'open' ? other : undefined);
    if (error) return this.violation(error);
    // Replies to this peer count too: a peer that sends starts but never reads must not grow
    // our queue. Only when there were replies, though: pausing a sender because of data
    // forwarded *to* it would couple the two directions of the tunnel, and an app that stops
    // reading while its writes are blocked (an echo server) then deadlocks the whole tunnel.
    if (other) this.pauseFor(other);
    if (this.input.replied) this.pauseFor(this);
  }

  private violation(reason: string): void {
    // A peer can provoke this at will (connect, violate, reconnect): rate-limited.
    this.log.limited(LogLevel.WARNING, 'protocol-violation', `protocol violation, closing with 1008: ${printable(reason)}`);
    this.close(CLOSE_POLICY, fitCloseReason(reason));
  }

  private onWsClose(code: number): void {
    // What the peer sent before it closed still goes to the other peer.
    this.reader.flush();
    this.reader.stop();
    this.ws.off('close', this.onWsClose);
    this.pings.stopHeartbeat();
    this.stopPacing(false);
    this.bandwidth?.stop();
    this.input.reset();
    this.moveTo('closed');
    const seconds = ((Date.now() - this.startedAt) / 1000).toFixed(1);
    this.log.info(`disconnected (code ${code}) after ${seconds} s: received ${this.bytesIn} bytes, sent ${this.bytesOut} bytes`);
    this.link.peerClosed(this);
    this.onEvent?.({ type: 'disconnected', tunnelId: this.link.tunnel.tunnelId, mode: this.mode, channelId: this.channelId, code, bytesIn: this.bytesIn, bytesOut: this.bytesOut });
  }
}
