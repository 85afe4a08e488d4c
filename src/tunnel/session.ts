/**
 * One WebSocket session: decodes frames, dispatches messages to services and connections,
 * allocates stream and connection ids. Sockets are attached by source.ts (accepted) and
 * destination.ts (connected); the runner (proxy.ts) owns the session's lifetime.
 *
 * Every received message has a defined reaction that never stops reading the WebSocket
 * (Decisions 3; fixes reference bugs 9.3#16-#24, #30, 44a).
 */
import type { Socket } from 'node:net';
import type WebSocket from 'ws';
import { LogLevel, type Logger } from '../log';
import type { ProxyOptions, ServiceTarget, DestinationTarget } from '../options';
import { printable, printableList } from '../printable';
import { pacerSettings, type Settings } from '../settings';
import type { ProtocolVersion } from '../protocol/constants';
import { ErrorCode, type TunnelError } from '../protocol/errors';
import { CREDIT_EXTENSION, decodeHello, decodeWindow, encodeHello, ExtensionType } from '../protocol/extension';
import { encodeFrame, FrameDecoder } from '../protocol/framing';
import { MessageType, typeName, type Message, type MessageInit } from '../protocol/message';
import { isKnownType, validateMessage, type ValidateOptions } from '../protocol/validate';
import { FairReader } from '../transport/fair';
import type { Connection } from './connection';
import { Credit } from './credit';
import { InboundBudget } from './inbound';
import { Outbound, type Producer } from './outbound';
import { Pacer } from '../flow/pacer';
import { ServiceState, type ServiceFlow } from './service';

/** Distinct once-per-session warnings remembered (peer-chosen service ids and types among them). */
const WARNED_KEYS_LIMIT = 100;

export interface SessionHooks {
  /**
   * Completes the configured mapping from the received SERVICE_IDS (undefined for a 1.0
   * subprotocol, which has none). Returns undefined when the session must end instead.
   */
  completeMapping(ids: string[] | undefined): Map<string, ServiceTarget> | undefined;
  /** The services exist: bind listeners (source), resolve `ready`. */
  onStarted(session: Session): void;
  /** Destination: connect a new connection's local socket. */
  connect(conn: Connection, target: DestinationTarget): void;
  /** A connection is over: its socket closed and its last frames handed to the WebSocket. */
  connectionClosed?(conn: Connection): void;
}

export interface SessionInit {
  ws: WebSocket;
  version: ProtocolVersion;
  /** Extensions the service says it forwards to us (ServiceConnection.extensions). */
  extensions?: readonly string[];
  options: ProxyOptions;
  log: Logger;
  hooks: SessionHooks;
}

/** Sends its own control messages (resets it answers with) through the outbound queue, as a producer. */
export class Session implements Producer {
  readonly ws: WebSocket;
  readonly version: ProtocolVersion;
  readonly log: Logger;
  readonly settings: Settings;
  readonly mode: ProxyOptions['mode'];
  readonly outbound: Outbound;
  readonly inbound: InboundBudget;
  /** Per-connection credit with the peer (credit/1), when this session announces it. */
  readonly credit?: Credit<Connection>;
  readonly services = new Map<string, ServiceState>();
  started = false;
  private ended = false;
  private serviceIds?: string[];
  private readonly decoder: FrameDecoder;
  /** Bounds the work the service's input gets per event-loop turn: local sockets and timers interleave. */
  private readonly reader: FairReader;
  /** How the service's messages are validated: one object for all of them (issue 15). */
  private readonly validation: ValidateOptions;
  private readonly options: ProxyOptions;
  private readonly hooks: SessionHooks;
  private readonly flow: ServiceFlow;
  /** Warnings logged once per session (per message type, per unknown service id, per detection). */
  private readonly warned = new Set<string>();

  constructor(init: SessionInit) {
    this.ws = init.ws;
    this.version = init.version;
    this.options = init.options;
    this.settings = init.options.settings;
    this.mode = init.options.mode;
    this.log = init.log;
    this.hooks = init.hooks;
    this.outbound = new Outbound(this.ws, this.settings.outboundHighWaterBytes, new Pacer(pacerSettings(this.settings)), this.log);
    this.inbound = new InboundBudget(this.outbound.reader, this.settings.inboundBudgetBytes);
    if (creditWanted(init)) {
      this.credit = new Credit<Connection>({
        initialWindow: this.settings.creditWindowBytes,
        maxWindow: Math.max(this.settings.creditWindowBytes, this.settings.creditMaxWindowBytes),
        totalBytes: this.settings.creditTotalBytes,
      });
    }
    this.flow = {
      outbound: this.outbound,
      inbound: this.inbound,
      granted: new InboundBudget(undefined, Infinity),
      credit: this.credit,
      maxPayloadBytes: this.settings.maxPayloadSize,
      source: this.mode === 'source',
      log: this.log,
      closed: (conn) => this.hooks.connectionClosed?.(conn),
    };
    this.decoder = new FrameDecoder({ maxMessageBytes: this.settings.maxSize });
    this.validation = { version: this.version, from: 'service', maxPayloadBytes: this.settings.maxPayloadSize };
    this.reader = new FairReader(this.ws, { message: this.onWsMessage });
    this.reader.start();
  }

  /** With a 1.0 subprotocol there is no SERVICE_IDS: the configured mapping applies at once. */
  startWithoutServiceIds(): void {
    const mapping = this.hooks.completeMapping(undefined);
    if (mapping) this.start(mapping);
  }

  /** The connection's binaryType is 'nodebuffer' (transport/connect.ts): every message is one Buffer. */
  private readonly onWsMessage = (data: Buffer): void => {
    if (this.ended) return;
    this.decoder.push(data, this.onMessage, this.onDecodeError);
  };

  private readonly onDecodeError = (err: TunnelError): void => {
    this.warnLimited(`decode:${err.code}`, `Dropping a malformed message from the service: ${err.message}`);
  };

  private readonly onMessage = (msg: Message): void => {
    try {
      this.handle(msg);
    } catch (err) {
      // A bug of ours must cost at most the message being handled, never the process.
      this.log.error(`Internal error while handling ${typeName(msg.type)} from the service: ${(err as Error)?.message ?? err}`);
    }
  };

  private handle(msg: Message): void {
    if (this.ended) return;
    const invalid = validateMessage(msg, this.validation);
    if (invalid) {
      this.onInvalid(msg, invalid);
      return;
    }
    if (msg.type === ExtensionType.CREDIT_HELLO || msg.type === ExtensionType.CREDIT_WINDOW) {
      this.onCreditMessage(msg);
      return;
    }
    if (!isKnownType(msg.type, this.version)) {
      this.log.debug(`Ignoring ignorable message of unknown type ${msg.type}`);
      return;
    }
    if (msg.type === MessageType.SERVICE_IDS) {
      this.onServiceIds(msg);
      return;
    }
    if (!this.started) {
      // The reference stops reading here (9.3#16); we drop the message and go on.
      this.log.debug(`Expect:Message_Type_SERVICE_IDS. Ignore message type: ${msg.type}`);
      return;
    }
    if (msg.type === MessageType.SESSION_RESET) {
      this.log.info('Session reset received: resetting every connection');
      for (const svc of this.services.values()) svc.closeAll('session reset');
      return;
    }
    const svc = this.serviceFor(msg);
    if (!svc) {
      this.onUnroutable(msg);
      return;
    }
    this.observeFormat(svc, msg);
    switch (msg.type) {
      case MessageType.DATA: return this.onData(svc, msg);
      case MessageType.STREAM_START: return this.onStreamStart(svc, msg);
      case MessageType.CONNECTION_START: return this.onConnectionStart(svc, msg);
      case MessageType.STREAM_RESET: return this.onStreamReset(svc, msg);
      case MessageType.CONNECTION_RESET: return this.onConnectionReset(svc, msg);
    }
  }

  private warnOnce(key: string, message: string): void {
    if (this.warned.has(key)) return;
    if (this.warned.size >= WARNED_KEYS_LIMIT) {
      // Keys include ids chosen by the peer: past the limit, the log level bounds the output.
      this.log.debug(message);
      return;
    }
    this.warned.add(key);
    this.log.warn(message);
  }

  /** A warning about a misbehaving peer: the first of its kind at warning level, the rest at debug. */
  private warnLimited(key: string, message: string): void {
    if (this.warned.has(key)) this.log.debug(message);
    else this.warnOnce(key, message);
  }

  private onInvalid(msg: Message, err: TunnelError): void {
    if (err.code === ErrorCode.PAYLOAD_TOO_LARGE && this.started) {
      const conn = this.serviceFor(msg)?.find(msg);
      this.log.warn(`${err.message}: resetting the connection`);
      conn?.reset('payload too large');
      return;
    }
    this.warnLimited(`invalid:${msg.type}:${err.code}`, `Dropping ${typeName(msg.type)} message from the service: ${err.message}`);
  }

  private firstService(): ServiceState | undefined {
    return this.services.values().next().value as ServiceState | undefined;
  }

  /** The service a received message is for; no side effects. */
  private serviceFor(msg: Message): ServiceState | undefined {
    if (this.version === 1 || this.options.clientType === 'V1') return this.firstService();
    if (msg.serviceId !== '') return this.services.get(msg.serviceId);
    // No service id: a peer speaking the V1 message format (Decisions 6).
    const v1 = this.services.get('');
    if (v1) return v1;
    if (this.mode === 'destination') return this.firstService();
    for (const svc of this.services.values()) if (svc.streamId === msg.streamId && svc.connections.size > 0) return svc;
    return undefined;
  }

  /** A message for no service we have: dropped; a start we cannot serve is answered, so the peer's application is not left waiting. */
  private onUnroutable(msg: Message): void {
    if (msg.serviceId === '') {
      this.log.debug(`Dropping ${typeName(msg.type)} without a service id for stream ${msg.streamId}`);
      return;
    }
    this.warnOnce(`service:${msg.serviceId}`, `Dropping messages for unknown service id ${printable(msg.serviceId)} (configured: ${[...this.services.keys()].join(', ')})`);
    if (this.mode === 'destination' && (msg.type === MessageType.STREAM_START || msg.type === MessageType.CONNECTION_START)) {
      this.sendControl(msg.connectionId !== 0
        ? { type: MessageType.CONNECTION_RESET, serviceId: msg.serviceId, streamId: msg.streamId, connectionId: msg.connectionId }
        : { type: MessageType.STREAM_RESET, serviceId: msg.serviceId, streamId: msg.streamId });
    }
  }

  /**
   * The one place that decides the message format the peer speaks for a service (Decisions 6).
   * A service starts at the negotiated version (lowered by -y); the peer's own messages can
   * only lower it further:
   * - a message without a service id: V1 (one connection at a time);
   * - on a V3 service, a message without a connection id that a V3 peer would have given one:
   *   a DATA for the current stream (source) or a STREAM_START (destination): V2 (one
   *   connection per stream). Further connections of that stream were started with
   *   CONNECTION_START, which a V2 peer ignores: they are closed.
   */
  private observeFormat(svc: ServiceState, msg: Message): void {
    if (svc.version === 1) return;
    if (msg.connectionId !== 0 && msg.serviceId !== '') svc.v3Confirmed = true;
    if (msg.serviceId === '') {
      svc.version = 1;
      this.log.info(`The peer omits service ids (V1 message format): service ${svc.label} now uses one connection at a time`);
      return;
    }
    if (svc.version !== 3 || msg.connectionId !== 0) return;
    if (this.mode === 'destination' && msg.type === MessageType.STREAM_START) {
      svc.version = 2;
      this.log.info(`The peer omits connection ids (V2 message format) for service ${svc.label}: reverting to v2 message format`);
      return;
    }
    if (this.mode !== 'source' || msg.type !== MessageType.DATA || msg.streamId !== svc.streamId) return;
    svc.version = 2;
    this.log.info(`The peer omits connection ids (V2 message format): service ${svc.label} now uses one connection per stream`);
    let kept = false;
    for (const conn of [...svc.connections.values()]) {
      if (conn.streamId !== msg.streamId) continue;
      if (!kept && conn.state !== 'closed') kept = true;
      else conn.closeFromPeer('the peer allows only one connection per stream');
    }
  }

  private onServiceIds(msg: Message): void {
    const ids: string[] = [];
    for (const id of msg.availableServiceIds) {
      if (ids.includes(id)) this.log.warn(`Duplicate service Id received, ignore: ${printable(id)}`);
      else ids.push(id);
    }
    if (this.serviceIds) {
      const same = ids.length === this.serviceIds.length && ids.every((id) => this.serviceIds!.includes(id));
      if (same) this.log.debug('Repeated SERVICE_IDS received: ignored');
      else this.warnLimited('service-ids', `Receive service Ids during data transfer. ignore (received ${printableList(ids) || 'none'})`);
      return;
    }
    this.serviceIds = ids;
    const mapping = this.hooks.completeMapping(ids);
    if (mapping) this.start(mapping);
  }

  private start(mapping: Map<string, ServiceTarget>): void {
    const version: ProtocolVersion = this.options.clientType === 'V1' ? 1 : this.options.clientType === 'V2' ? 2 : 3;
    for (const [id, target] of mapping) {
      this.services.set(id, new ServiceState(id, target, Math.min(version, this.version) as ProtocolVersion, this.flow));
    }
    this.started = true;
    // Before any connection exists, so that the peer knows us before it sees our first START.
    if (this.credit) this.sendHello();
    this.hooks.onStarted(this);
  }

  private onData(svc: ServiceState, msg: Message): void {
    const conn = svc.find(msg);
    if (!conn) {
      this.log.trace(`Dropping DATA for unknown or stale stream ${msg.streamId} connection ${msg.connectionId} of service ${svc.label}`);
      return;
    }
    if (this.credit && (conn.state === 'open' || conn.state === 'connecting') && this.credit.received(conn, msg.payload.length) === 'violation') {
      const w = this.credit.inspect(conn)!;
      this.log.limited(LogLevel.WARNING, 'credit-violation', `The peer sent ${w.received} bytes on connection ${conn.id} of service ${svc.label}, more than the ${Math.max(w.granted, w.floor)} it was granted: resetting that connection`);
      conn.reset('the peer exceeded its credit');
      return;
    }
    conn.deliver(msg.payload);
  }

  // ── credit (issue 14) ───────────────────────────────────────────────────────────

  /** Our HELLO: at the start, and in reply to a new peer's (before any WINDOW we send it). */
  private sendHello(): void {
    const credit = this.credit!;
    credit.announced(Date.now());
    // Ahead of everything queued: WINDOWs go in their connections' queues, which the scheduler
    // may serve first. Not by flushing those queues past the pacer, as before: a peer's HELLO
    // that arrived once an upload had begun put a megabyte of it on the wire at once, and an
    // echo then waited a second behind it on a 1 MB/s link.
    this.outbound.sendFirst(encodeFrame({ type: ExtensionType.CREDIT_HELLO, ignorable: true, serviceId: this.serviceIds?.[0] ?? '', payload: encodeHello(credit.nonce) }));
  }

  private onCreditMessage(msg: Message): void {
    const credit = this.credit;
    if (!credit) {
      this.log.trace(`Ignoring ${typeName(msg.type)}: this session does not use the credit extension`);
      return;
    }
    // Before SERVICE_IDS our HELLO could not carry a service id yet; the one we send at the start
    // makes the peer answer with its own.
    if (!this.started) return;
    if (msg.type === ExtensionType.CREDIT_HELLO) {
      const hello = decodeHello(msg.payload);
      if (!hello) {
        this.warnLimited('credit-hello', `Dropping a malformed ${typeName(msg.type)} from the peer (${msg.payload.length} bytes of payload)`);
        return;
      }
      const { newPeer, reply } = credit.onHello(hello);
      if (reply) this.sendHello();
      if (!newPeer) return;
      this.log.debug(`The peer uses per-connection credit (${CREDIT_EXTENSION}, version ${hello.version}, session ${hello.nonce})`);
      // What was agreed with a previous peer is void; every connection gets a first grant from us.
      for (const svc of this.services.values()) {
        for (const conn of svc.connections.values()) {
          svc.grantFirst(conn);
          conn.onCredit();
        }
      }
      return;
    }
    const window = decodeWindow(msg.payload);
    if (!window) {
      this.warnLimited('credit-window', `Dropping a malformed ${typeName(msg.type)} from the peer (${msg.payload.length} bytes of payload)`);
      return;
    }
    const svc = this.serviceFor(msg);
    const conn = svc?.find(msg);
    if (!svc || !conn) {
      this.log.trace(`Dropping ${typeName(msg.type)} for unknown or stale stream ${msg.streamId} connection ${msg.connectionId}`);
      return;
    }
    const result = credit.onWindow(conn, window);
    if (!result) return;
    if (result.ackDue) svc.acknowledge(conn);
    conn.onCredit();
  }

  private onStreamStart(svc: ServiceState, msg: Message): void {
    if (this.mode === 'source') {
      this.warnOnce('source-stream-start', `Ignoring STREAM_START received in source mode (service ${svc.id}, stream ${msg.streamId})`);
      return;
    }
    if (svc.streamId !== 0 && svc.streamId !== msg.streamId) {
      // The guides say a new stream replaces the old one at once (fixes reference bug 9.3#20).
      this.log.info(`Stream start received for service id ${svc.label} with new stream id ${msg.streamId}: resetting stream ${svc.streamId}`);
      svc.closeAll('a new stream started');
    } else if (svc.streamId === msg.streamId && svc.find(msg)) {
      this.log.debug(`Ignoring repeated STREAM_START for stream ${msg.streamId} of service ${svc.label}`);
      return;
    }
    svc.streamId = msg.streamId;
    this.log.debug(`Received service id : ${svc.label}, stream id: ${msg.streamId}`);
    this.openDestination(svc, msg.streamId, msg.connectionId);
  }

  private onConnectionStart(svc: ServiceState, msg: Message): void {
    if (this.mode === 'source') {
      // The reference aborts here (9.3#44a); the V3 guide's answer to a connection we cannot have is a reset.
      this.warnOnce('source-connection-start', `CONNECTION_START received in source mode (service ${svc.id}, connection ${msg.connectionId}): answering with CONNECTION_RESET`);
      this.sendControl({ type: MessageType.CONNECTION_RESET, serviceId: svc.wireId, streamId: msg.streamId, connectionId: msg.connectionId });
      return;
    }
    if (svc.version < 3) {
      // Our replies carry no connection id in the V1/V2 form: a second connection of the stream
      // would be indistinguishable from the first at the peer.
      this.warnLimited('connection-start-v2', `CONNECTION_START for connection ${msg.connectionId} of service ${svc.id}: the V${svc.version} message format allows one connection per stream, answering with CONNECTION_RESET`);
      this.sendControl({ type: MessageType.CONNECTION_RESET, serviceId: msg.serviceId, streamId: msg.streamId, connectionId: msg.connectionId });
      return;
    }
    if (svc.streamId === 0) svc.streamId = msg.streamId;
    if (msg.streamId !== svc.streamId) {
      this.warnLimited('connection-start-stream', `CONNECTION_START for stream ${msg.streamId} of service ${svc.id}, whose stream is ${svc.streamId}: answering with CONNECTION_RESET`);
      this.sendControl({ type: MessageType.CONNECTION_RESET, serviceId: svc.wireId, streamId: msg.streamId, connectionId: msg.connectionId });
      return;
    }
    const existing = svc.connections.get(msg.connectionId);
    if (existing) {
      // Fixes reference bug 9.3#23: only this connection is reset, the others go on.
      this.warnLimited('connection-start-duplicate', `CONNECTION_START for existing connection id ${msg.connectionId} of service ${svc.id}: resetting that connection`);
      existing.reset('duplicate connection id');
      return;
    }
    this.openDestination(svc, msg.streamId, msg.connectionId);
  }

  private openDestination(svc: ServiceState, streamId: number, connectionId: number): void {
    if (svc.connections.size >= this.settings.maxActiveConnections) {
      this.warnLimited('max-active', `Refusing connection ${connectionId} of service ${svc.id}: max_active_connections (${this.settings.maxActiveConnections}) reached`);
      const reset: MessageInit = svc.version >= 3
        ? { type: MessageType.CONNECTION_RESET, serviceId: svc.wireId, streamId, connectionId }
        : { type: MessageType.STREAM_RESET, serviceId: svc.wireId, streamId };
      this.sendControl(reset);
      return;
    }
    const conn = svc.open(streamId, connectionId);
    svc.grantFirst(conn);
    this.hooks.connect(conn, svc.target as DestinationTarget);
  }

  private onStreamReset(svc: ServiceState, msg: Message): void {
    if (msg.streamId !== svc.streamId) {
      this.log.trace(`Stale STREAM_RESET for stream ${msg.streamId} of service ${svc.label}: dropped`);
      return;
    }
    this.log.debug(`Stream reset received for service ${svc.label} stream ${msg.streamId}`);
    if (this.mode === 'source') for (const conn of svc.connections.values()) conn.noteResetBeforeReply();
    // Reading goes on (fixes reference bug 9.3#21); the next connection starts a new stream.
    svc.closeAll('stream reset by the peer');
  }

  private onConnectionReset(svc: ServiceState, msg: Message): void {
    const conn = svc.find(msg);
    if (!conn) {
      this.log.debug(`Dropping CONNECTION_RESET for unknown connection ${msg.connectionId} of service ${svc.label}`);
      return;
    }
    if (this.mode === 'source') conn.noteResetBeforeReply();
    conn.closeFromPeer('connection reset by the peer');
  }

  /** Source: an accepted local socket starts a stream or a connection in it. */
  accept(serviceId: string, socket: Socket): void {
    const svc = this.services.get(serviceId);
    // stdin/stdout (stdio.ts) has an address and no port.
    const from = socket.remotePort === undefined ? String(socket.remoteAddress) : `${socket.remoteAddress}:${socket.remotePort}`;
    if (!svc || this.ended) {
      socket.destroy();
      return;
    }
    if (svc.version < 3 && svc.connections.size > 0) {
      if (svc.hasLiveConnection()) {
        // Fixes reference bug 9.4#36: the second connection used to break both.
        this.log.info(`Refusing connection from ${from} for service ${svc.label}: the peer's V${svc.version} message format allows one connection at a time`);
        socket.destroy();
        return;
      }
      // The previous connection is only closing: its last DATA and STREAM_RESET go on the wire
      // before the new STREAM_START, so a quick reconnect is served and loses no byte.
      this.outbound.flushNow();
    }
    if (svc.connections.size >= this.settings.maxActiveConnections) {
      this.log.warn(`Refusing connection from ${from} for service ${svc.label}: max_active_connections (${this.settings.maxActiveConnections}) reached`);
      socket.destroy();
      return;
    }
    const id = svc.nextConnectionId();
    let type: typeof MessageType.STREAM_START | typeof MessageType.CONNECTION_START = MessageType.CONNECTION_START;
    // A stream outlives its connections: the next one joins it with CONNECTION_START, as the
    // reference's source does. A C++ V3 destination takes a STREAM_START with a new stream id
    // during data transfer as a reset only (reference bug 9.3#20), and a STREAM_RESET ending the
    // old stream can stop it for good while it still sends (both seen in test/interop). A V1/V2
    // destination ends the stream itself (STREAM_RESET) when a connection closes.
    if (svc.version < 3 || svc.streamId === 0) {
      svc.streamId = svc.nextStreamId();
      type = MessageType.STREAM_START;
    }
    const conn = svc.open(svc.streamId, id);
    this.log.info(socket.localPort === undefined ? `Accepted the connection on ${from}` : `Accepted tcp connection on port ${socket.localPort} from ${from}`);
    if (type === MessageType.STREAM_START) this.log.debug(`Sending stream start, setting new stream ID to: ${svc.streamId}, service id: ${svc.label}`);
    else this.log.debug(`sending connection start for service id: ${svc.label} connection id: ${id}`);
    svc.sendStart(conn, type);
    svc.grantFirst(conn);
    conn.attach(socket);
  }

  onQueueEmpty(): void {
    // Control messages need no follow-up once they are on the wire.
  }

  sendControl(msg: MessageInit): void {
    this.outbound.push(this, encodeFrame(msg));
  }

  /**
   * The service closed the connection with `code` soon after our credit HELLO, before any peer's
   * HELLO: it may refuse the extension's messages (the runner reconnects without it).
   */
  creditRejectedBy(code: number): boolean {
    return this.credit?.rejectedBy(code, Date.now()) ?? false;
  }

  /** Every connection of the session. */
  connections(): Connection[] {
    return [...this.services.values()].flatMap((svc) => [...svc.connections.values()]);
  }

  /** close(): tells the peer about every active connection, then closes them locally. */
  resetAll(reason: string): void {
    for (const conn of this.connections()) conn.reset(reason);
    this.outbound.flushNow();
  }

  /** The WebSocket is gone: local connections close after writing what they received. */
  end(): void {
    if (this.ended) return;
    // What the service sent before the WebSocket closed is still delivered.
    this.reader.flush();
    this.ended = true;
    this.reader.stop();
    this.decoder.reset();
    this.outbound.close();
    for (const conn of this.connections()) conn.sessionEnded();
  }
}

/**
 * The session announces credit when the setting says on, or auto and the service said it
 * forwards the extension; never with the V1 message format (no service ids to carry it).
 */
function creditWanted(init: SessionInit): boolean {
  const mode = init.options.settings.creditExtension;
  if (mode === 'off' || init.version < 2 || init.options.clientType === 'V1') return false;
  return mode === 'on' || (init.extensions ?? []).includes(CREDIT_EXTENSION);
}

