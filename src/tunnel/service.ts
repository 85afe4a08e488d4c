/**
 * One service of a session: its current stream, its connections and the message format the
 * peer speaks for it. It owns its connections (ConnectionOwner): their bytes become messages
 * here, in the form the peer's version expects, and go to the session's outbound queue.
 */
import type { Logger } from '../log';
import type { ServiceTarget } from '../options';
import { printable } from '../printable';
import { MAX_CONNECTION_ID, MAX_STREAM_ID, MAX_WS_MESSAGE_BYTES, type ProtocolVersion } from '../protocol/constants';
import { encodeWindow, ExtensionType } from '../protocol/extension';
import { encodeFrame, encodeFrames } from '../protocol/framing';
import { MessageType, type Message, type MessageInit } from '../protocol/message';

import { Connection, type ConnectionOwner } from './connection';
import type { Credit, Grant } from './credit';
import type { InboundBudget } from './inbound';
import type { Outbound } from './outbound';

/** A DATA frame's bytes beyond its payload, at most: length prefix, keys, varints, a service id of up to 128 bytes. */
const DATA_FRAME_OVERHEAD_BYTES = 2 + 2 + 10 + 3 + 2 + 128 + 2 + 5 + 1 + 5;

/** What a service uses of its session. */
export interface ServiceFlow {
  outbound: Outbound;
  /** The shared budget for bytes the peer sends without credit: it pauses the WebSocket reader. */
  inbound: InboundBudget;
  /** Counts bytes the peer sent within our grants; never pauses (the grants bound them). */
  granted: InboundBudget;
  /** Per-connection credit with the peer, when the session uses the extension. */
  credit?: Credit<Connection>;
  /** Largest DATA payload sent (`message.max_payload_size`). */
  maxPayloadBytes: number;
  /** Source side: a stream may be ended with STREAM_RESET while the peer's format is unsure. */
  source: boolean;
  log: Logger;
  /** A connection of the service is over (its socket closed, its last frames on the wire). */
  closed?: (conn: Connection) => void;
}

export class ServiceState implements ConnectionOwner {
  /** Current stream id; 0 = none (source: the next connection sends STREAM_START). */
  streamId = 0;
  private lastStreamId = 0;
  private lastConnectionId = 0;
  readonly connections = new Map<number, Connection>();
  /** The peer sent a message with a connection id for this service: it speaks V3. */
  v3Confirmed = false;

  constructor(
    readonly id: string,
    readonly target: ServiceTarget,
    /** Message format spoken with the peer for this service: 3, or 2/1 for older peers (decided by Session.observeFormat). */
    public version: ProtocolVersion,
    private readonly flow: ServiceFlow,
  ) {
    this.label = printable(id);
  }

  /** The id as log lines show it: a source may take ids from the peer's SERVICE_IDS, so escaped. */
  readonly label: string;

  /** The service id on the wire: none in the V1 form. */
  get wireId(): string {
    return this.version === 1 ? '' : this.id;
  }

  /** Stream ids never repeat within a session (MAX_STREAM_ID wraps to 1, as in the reference). */
  nextStreamId(): number {
    this.lastStreamId = this.lastStreamId >= MAX_STREAM_ID ? 1 : this.lastStreamId + 1;
    return this.lastStreamId;
  }

  nextConnectionId(): number {
    this.lastConnectionId = this.lastConnectionId >= MAX_CONNECTION_ID ? 1 : this.lastConnectionId + 1;
    return this.lastConnectionId;
  }

  /** A new connection of this service, known under its id until it is closed. */
  open(streamId: number, connectionId: number): Connection {
    const conn = new Connection(this, streamId, connectionId, this.flow.log.fork(`${this.label || 'v1'} stream#${streamId} conn#${connectionId}`));
    this.connections.set(connectionId, conn);
    this.flow.credit?.open(conn);
    return conn;
  }

  /** The connection a received message is for, or undefined (unknown or stale). */
  find(msg: Message): Connection | undefined {
    if (msg.connectionId !== 0) {
      const conn = this.connections.get(msg.connectionId);
      return conn && conn.streamId === msg.streamId ? conn : undefined;
    }
    // V1/V2 form: one connection per stream, found by stream id.
    for (const conn of this.connections.values()) if (conn.streamId === msg.streamId) return conn;
    return undefined;
  }

  /** True while a connection of the service is open or still connecting (not only closing). */
  hasLiveConnection(): boolean {
    for (const conn of this.connections.values()) if (conn.state === 'open' || conn.state === 'connecting') return true;
    return false;
  }

  /** Closes every connection of the stream (after writing what was received). */
  closeAll(reason: string): void {
    for (const conn of [...this.connections.values()]) conn.closeFromPeer(reason);
    this.streamId = 0;
  }

  /** Source: the STREAM_START or CONNECTION_START of a new connection, ahead of its data. */
  sendStart(conn: Connection, type: typeof MessageType.STREAM_START | typeof MessageType.CONNECTION_START): void {
    this.push(conn, { type, streamId: conn.streamId, serviceId: this.wireId, connectionId: this.wireConnectionId(conn) });
  }

  // ── credit (issue 14) ──────────────────────────────────────────────────────────

  /** Our first WINDOW for a connection, once the peer is known (after its START, in order). */
  grantFirst(conn: Connection): void {
    const grant = this.flow.credit?.firstGrant(conn);
    if (grant) this.sendWindow(conn, grant);
  }

  /** Answers the peer's first WINDOW for a connection: ours, with ACK, after the DATA sent before it. */
  acknowledge(conn: Connection): void {
    const grant = this.flow.credit?.ackGrant(conn);
    if (grant) this.sendWindow(conn, grant);
  }

  /** A WINDOW for a connection goes in its own queue: in order with its START and DATA. */
  private sendWindow(conn: Connection, grant: Grant): void {
    // A peer speaking the V1 format does not have the extension; without a service id the message
    // would even be a violation for a relay with several services.
    if (this.version === 1 || (conn.state !== 'open' && conn.state !== 'connecting')) return;
    this.push(conn, {
      type: ExtensionType.CREDIT_WINDOW,
      ignorable: true,
      streamId: conn.streamId,
      serviceId: this.wireId,
      connectionId: this.wireConnectionId(conn),
      payload: encodeWindow(grant),
    });
  }

  // ── ConnectionOwner ────────────────────────────────────────────────────────────

  sendData(conn: Connection, bytes: Buffer): void {
    this.flow.credit?.sent(conn, bytes.length);
    // Smaller DATA messages on a slow link (issue 13): one never holds it for more than a few ms.
    const max = Math.min(this.flow.maxPayloadBytes, this.flow.outbound.dataPayloadBytes());
    if (bytes.length <= max) {
      this.push(conn, this.dataMessage(conn, bytes));
      return;
    }
    const messages: MessageInit[] = [];
    for (let at = 0; at < bytes.length; at += max) messages.push(this.dataMessage(conn, bytes.subarray(at, Math.min(at + max, bytes.length))));
    // At full rate a read of the local socket (64 KiB, more than one DATA payload of 63 KiB)
    // goes as one WebSocket message of its frames, encoded into one buffer (issue 15): the
    // relay forwards it as it came, and the peer writes both payloads to its app in one go.
    // On a slow link each DATA stays a message of its own (the pacer's size).
    if (max >= this.flow.maxPayloadBytes && bytes.length + messages.length * DATA_FRAME_OVERHEAD_BYTES <= MAX_WS_MESSAGE_BYTES) {
      this.flow.outbound.push(conn, encodeFrames(messages));
      return;
    }
    for (const msg of messages) this.push(conn, msg);
  }

  private dataMessage(conn: Connection, payload: Buffer): MessageInit {
    return { type: MessageType.DATA, streamId: conn.streamId, serviceId: this.wireId, connectionId: this.wireConnectionId(conn), payload };
  }

  /** CONNECTION_RESET, or STREAM_RESET for V1/V2 peers, whose stream ends with its connection. */
  sendReset(conn: Connection): void {
    if (this.version >= 3 && !this.endsStreamInstead(conn)) {
      this.push(conn, { type: MessageType.CONNECTION_RESET, streamId: conn.streamId, serviceId: this.wireId, connectionId: conn.id });
      return;
    }
    this.push(conn, { type: MessageType.STREAM_RESET, streamId: conn.streamId, serviceId: this.wireId });
    if (conn.streamId === this.streamId) this.streamId = 0;
  }

  /**
   * A source's only connection of a stream that closes before the peer sent anything ends the
   * stream (STREAM_RESET, valid V3) instead of itself, while the peer has not shown that it
   * speaks V3: a destination in the V1/V2 format (the reference with -y) wedges on a
   * CONNECTION_RESET, while a V3 one takes the STREAM_RESET as the end of that connection.
   */
  private endsStreamInstead(conn: Connection): boolean {
    if (!this.flow.source || this.v3Confirmed || conn.bytesIn > 0 || conn.streamId !== this.streamId) return false;
    // Another connection still open, connecting or with its last bytes queued: a STREAM_RESET
    // could overtake those bytes (each connection has its own queue) and cut them off.
    for (const other of this.connections.values()) if (other !== conn) return false;
    return true;
  }

  discard(conn: Connection): void {
    this.flow.outbound.drop(conn);
  }

  reading(conn: Connection, reading: boolean): void {
    if (reading) this.flow.outbound.register(conn);
    else this.flow.outbound.unregister(conn);
  }

  budgetFor(conn: Connection): InboundBudget {
    return this.flow.credit?.isGranted(conn) ? this.flow.granted : this.flow.inbound;
  }

  taken(conn: Connection, bytes: number): void {
    const grant = this.flow.credit?.consumed(conn, bytes);
    if (!grant) return;
    if (grant.grewTo) conn.log.debug(`credit window grown to ${grant.grewTo} bytes: the app drained it before the next grant arrived`);
    this.sendWindow(conn, grant);
  }

  sendRoom(conn: Connection): number {
    return this.flow.credit ? this.flow.credit.room(conn) : Infinity;
  }

  closed(conn: Connection): void {
    this.flow.credit?.close(conn);
    if (this.connections.get(conn.id) === conn) this.connections.delete(conn.id);
    this.flow.closed?.(conn);
  }

  /** The connection id on the wire: none for V1/V2 peers. */
  private wireConnectionId(conn: Connection): number {
    return this.version >= 3 ? conn.id : 0;
  }

  private push(conn: Connection, msg: Parameters<typeof encodeFrame>[0]): void {
    this.flow.outbound.push(conn, encodeFrame(msg));
  }
}
