/**
 * The data plane of one tunnel: two peers (source and destination) and the messages between
 * them. Each peer's byte stream is decoded with FrameDecoder, validated as a client's
 * message, normalised (V1 service ids), re-framed and forwarded in order to the other peer,
 * several frames per WebSocket message up to 131076 bytes.
 *
 * Flow control: when the receiving peer's unsent bytes pass its high-water mark the sending
 * peer's socket is paused, and resumed once they fall below a quarter of it. Nothing else
 * queues, so memory per tunnel stays bounded. The mark is HIGH_WATER_BYTES, or with a
 * bandwidth (`--bandwidth`) a bound in time at that rate (bandwidth.ts), and then each
 * sender is also read no faster than the rate.
 */
import type { Socket } from 'node:net';
import type { WebSocket, RawData } from 'ws';
import { LogLevel, type Logger } from '../log';
import { printable } from '../printable';
import type { ProtocolVersion } from '../protocol/constants';
import { MAX_WS_MESSAGE_BYTES } from '../protocol/constants';
import { encodeFrame, FrameDecoder, writeMessages, type OnMessage } from '../protocol/framing';
import { MessageType, typeName, type Message, type MessageInit } from '../protocol/message';
import { extensionOf } from '../protocol/extension';
import { isKnownType, validateMessage, type ValidateOptions } from '../protocol/validate';
import { FairReader } from '../transport/fair';
import { queueBoundBytes, TokenBucket } from './bandwidth';
import { laneKey, PacedSend } from './paced';
import type { PeerMode, TunnelRecord } from './tunnels';

/**
 * Pause the sender while the receiver has more than this many bytes not yet written to its
 * socket (without a bandwidth); resume it below a quarter of it.
 */
export const HIGH_WATER_BYTES = 256 * 1024;
/**
 * Towards a paced peer the sender is resumed once the backlog is below this fraction of the
 * high-water mark, not a quarter: the sender's own pacer must see the rate at which we drain,
 * and a quarter let the relay read it in bursts (hold while three quarters drain, then read
 * them at once), which the recent-minimum round trip of its probes takes for no queue at all.
 */
const PACED_RESUME_AT = 3 / 4;
/** How long a socket may stay half-closed after our close frame before it is destroyed. */
const CLOSE_LINGER_MS = 2000;
/** Bounds of the ping interval towards a peer we hold back (half its own ping interval). */
const HEARTBEAT_MIN_MS = 100;
const HEARTBEAT_MAX_MS = 10_000;
/** Until a peer has pinged twice its interval is unknown. */
const HEARTBEAT_DEFAULT_MS = 500;

export const CLOSE_POLICY = 1008;
export const REPLACED_REASON = 'connection is replaced by another connection';

/** Longest close reason: a control frame carries 125 bytes, 2 of them the code (RFC 6455 5.5). */
const MAX_CLOSE_REASON_BYTES = 123;

/**
 * A close reason cut to 123 bytes of UTF-8 at a code point boundary: a surrogate pair is
 * kept or dropped whole (cutting between its halves would leave a lone surrogate, which
 * UTF-8 cannot encode and ws would send as U+FFFD).
 */
export function fitCloseReason(text: string): string {
  let bytes = 0;
  let out = '';
  for (const char of text) {
    bytes += Buffer.byteLength(char);
    if (bytes > MAX_CLOSE_REASON_BYTES) break;
    out += char;
  }
  return out;
}

/**
 * What happens to a tunnel's peers, as structured events (for monitoring and for tests that
 * must not depend on the wording of log lines).
 */
export type PeerEvent =
  | { type: 'connected'; tunnelId: string; mode: PeerMode; channelId: string; replacing: boolean }
  | { type: 'disconnected'; tunnelId: string; mode: PeerMode; channelId: string; code: number; bytesIn: number; bytesOut: number }
  /** The relay stopped reading `mode` because `receiver` (the other peer, or `mode` itself for replies) has `unsentBytes` queued. */
  | { type: 'paused'; tunnelId: string; mode: PeerMode; receiver: PeerMode; unsentBytes: number }
  | { type: 'resumed'; tunnelId: string; mode: PeerMode };

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
}

/** Whatever can be paused because a receiver's backlog is too long, and resumed when it drains. */
export interface Sender {
  resumeReading(): void;
}

/**
 * One end of a tunnel as its link sees it: a `Peer` connected to this relay, or a peer held by
 * another node of a cluster, reached over a bridge (src/relay/cluster/bridge.ts). Frames for it
 * go through `sendFrames`; `unsent` and `holdBack` give it the same backpressure as a local peer.
 */
export interface LinkEnd extends Sender {
  readonly mode: PeerMode;
  readonly log: Logger;
  /** A close was started: nothing more is forwarded to it. */
  readonly closing: boolean;
  /** Set when this end was replaced: it no longer takes part in the tunnel. */
  detached: boolean;
  /** Bytes handed to the socket and not yet written. */
  readonly unsent: number;
  /** Above this many unsent bytes, senders to this end are paused. */
  readonly highWater: number;
  /** Whether a message of this type is forwarded to this end (extension messages only to peers that declared them). */
  takes(type: number): boolean;
  /** Encodes a message in the form this end expects. */
  frameFor(msg: MessageInit): Buffer;
  /**
   * The service id this end expects on the wire for a message of (normalised) `serviceId`: a
   * received frame whose service id is this one is forwarded as it came, without re-encoding.
   */
  wireServiceId(serviceId: string): string;
  /**
   * Sends frames to this end. `keys`: each frame's lane (paced.ts, laneKey) when this end is
   * `laned`; without them every frame is a barrier. `whole`: the received message the frames
   * came in, when it may be forwarded as it is.
   */
  sendFrames(frames: Buffer[], keys?: readonly (string | undefined)[], whole?: Buffer): void;
  /** This end schedules frames per connection (a paced peer): give `sendFrames` their lanes. */
  readonly laned: boolean;
  /**
   * Runs `run` once the frames queued for this end so far have left its queue (a paced peer);
   * false, without running it, when none wait there.
   */
  whenForwarded(run: () => void): boolean;
  /** `sender` was paused because of this end's backlog: resume it once the backlog drains. */
  holdBack(sender: Sender): void;
  close(code: number, reason: string): void;
}

/** Runtime state of one open tunnel: its connected peers and the streams between them. */
export class TunnelLink {
  readonly tunnel: TunnelRecord;
  readonly peers: { source?: LinkEnd; destination?: LinkEnd } = {};
  /** Active stream id per service id ("" for a tunnel without services); one stream per service at a time. */
  readonly activeStreams = new Map<string, number>();
  private readonly onPeerGone: (peer: LinkEnd) => void;

  constructor(tunnel: TunnelRecord, onPeerGone: (peer: LinkEnd) => void) {
    this.tunnel = tunnel;
    this.onPeerGone = onPeerGone;
  }

  /** Installs a peer; an existing peer of the same mode is replaced (closed with 1008). */
  attach(init: PeerInit): Peer {
    const peer = new Peer(this, init);
    this.install(peer, `channel ${init.channelId}`);
    peer.start();
    return peer;
  }

  /** Installs an end that is not a local peer (a bridge to another node), replacing one of its mode. */
  install(end: LinkEnd, what: string): void {
    const old = this.peers[end.mode];
    this.peers[end.mode] = end;
    if (old) {
      old.log.info(`replaced by a new connection (${what})`);
      old.detached = true;
      old.close(CLOSE_POLICY, REPLACED_REASON);
      this.resetActiveStreams(end.mode);
    }
  }

  other(mode: PeerMode): LinkEnd | undefined {
    return this.peers[mode === 'source' ? 'destination' : 'source'];
  }

  /** Closes both peers with a close frame (CloseTunnel, expiry). */
  closeAll(code: number, reason: string): void {
    for (const peer of [this.peers.source, this.peers.destination]) peer?.close(code, reason);
  }

  /** A peer of `mode` went away: the other peer learns that every active stream is gone. */
  resetActiveStreams(mode: PeerMode): void {
    const other = this.other(mode);
    if (other && !other.detached) {
      const frames: Buffer[] = [];
      for (const [serviceId, streamId] of this.activeStreams) frames.push(other.frameFor({ type: MessageType.STREAM_RESET, serviceId, streamId }));
      if (frames.length) other.log.debug(`sending STREAM_RESET for ${frames.length} active stream(s): the ${mode} disconnected`);
      other.sendFrames(frames);
    }
    this.activeStreams.clear();
  }

  /** Called by a peer whose socket closed. */
  peerClosed(peer: LinkEnd): void {
    if (this.peers[peer.mode] === peer) {
      delete this.peers[peer.mode];
      this.resetActiveStreams(peer.mode);
      this.onPeerGone(peer);
    }
    // A sender paused because of this peer must not stay paused forever.
    this.other(peer.mode)?.resumeReading();
  }

  /** Tracks streams from the messages the source/destination exchange. */
  track(msg: Message): void {
    switch (msg.type) {
      case MessageType.STREAM_START:
        this.activeStreams.set(msg.serviceId, msg.streamId);
        break;
      case MessageType.STREAM_RESET:
        if (this.activeStreams.get(msg.serviceId) === msg.streamId) this.activeStreams.delete(msg.serviceId);
        break;
      case MessageType.CONNECTION_START:
        // A V3 peer that reconnected may continue a stream the relay has not seen start.
        this.activeStreams.set(msg.serviceId, msg.streamId);
        break;
    }
  }
}

/**
 * The sending half that every LinkEnd shares: whole frames to its WebSocket, the bytes handed
 * over and not yet written (`unsent`), and the senders held back because of them, resumed once
 * the backlog is below a quarter of `highWater`.
 */
export abstract class Outlet {
  abstract readonly ws: WebSocket;
  abstract readonly highWater: number;
  abstract readonly log: Logger;
  /** A close was started: nothing more is sent. */
  closing = false;
  /** Bytes handed to ws.send whose write callback has not run yet. */
  unsent = 0;
  bytesOut = 0;
  /** Senders paused because this end's backlog is above its high-water mark. */
  protected readonly pausedSenders = new Set<Sender>();
  /** Set for a paced peer (paced.ts): frames wait there, in their lanes, until the pacer lets them go. */
  protected paced?: PacedSend;

  get laned(): boolean {
    return this.paced !== undefined;
  }

  sendFrames(frames: Buffer[], keys?: readonly (string | undefined)[], whole?: Buffer): void {
    if (frames.length === 0 || this.closing || this.ws.readyState !== this.ws.OPEN) return;
    if (this.paced) {
      // Counted as unsent from now: queued here, they hold the sender back as bytes in ws do.
      for (const frame of frames) this.unsent += frame.length;
      this.paced.push(frames, keys ?? frames.map(() => undefined), whole);
      return;
    }
    if (whole) return this.sendMessage(whole);
    // Unpaced, every frame is packed with its neighbours, up to the largest message.
    writeMessages(frames, Infinity, MAX_WS_MESSAGE_BYTES, this.sendMessage);
  }

  whenForwarded(run: () => void): boolean {
    return this.paced?.whenHanded(run) ?? false;
  }

  /** Starts pacing what is sent to this end (a peer that declared a localproxy extension). */
  protected startPacing(): void {
    this.paced = new PacedSend(this.ws, (payload) => this.writeMessage(payload), this.log);
  }

  /** Stops pacing; `flush`: what still waits goes to ws first (a close frame follows), else it is dropped (the socket closed). */
  protected stopPacing(flush: boolean): void {
    if (!this.paced) return;
    if (flush) this.paced.flushNow();
    this.unsent -= this.paced.queuedBytes;
    this.paced.close();
    this.paced = undefined;
  }

  holdBack(sender: Sender): void {
    this.pausedSenders.add(sender);
  }

  /** Resumes every sender held back because of this end (its backlog drained, or it is gone). */
  protected releaseSenders(): void {
    for (const sender of this.pausedSenders) sender.resumeReading();
    this.pausedSenders.clear();
  }

  /** One WebSocket message of whole frames. */
  private readonly sendMessage = (payload: Buffer): void => {
    this.unsent += payload.length;
    this.writeMessage(payload);
  };

  /** Hands a message, already counted in `unsent`, to ws. */
  private writeMessage(payload: Buffer): void {
    const length = payload.length;
    this.bytesOut += length;
    this.ws.send(payload, { binary: true }, () => this.onSent(length));
  }

  private onSent(length: number): void {
    this.unsent -= length;
    if (this.pausedSenders.size > 0 && this.unsent < this.highWater * (this.paced ? PACED_RESUME_AT : 1 / 4)) this.releaseSenders();
    this.paced?.written();
  }
}

/**
 * What one WebSocket message brings for a receiver: each frame as it came where the receiver
 * takes it unchanged, re-encoded where not. When every frame of the message went as it came,
 * the message itself is forwarded: no re-encoding, no copy, one send (issue 15). A peer and a
 * cluster bridge forward through it alike.
 */
export class Relayed {
  private readonly frames: Buffer[] = [];
  /** Each frame's lane (paced.ts), kept only when the receiver is laned. */
  private readonly keys: (string | undefined)[] = [];
  private asReceived = false;
  /** During `pass`: the receiver of this message (undefined: none), and the first error met in it. */
  to?: LinkEnd;
  error?: string;

  /**
   * Decodes one WebSocket message through `decoder` (its callbacks read `to`, `add` or `skip`
   * each frame, and record the first error with `fail`), then sends `to` what it got: whatever
   * arrived before an error too, in order. Returns that error. The state lives here, in fields,
   * so a message costs no closure.
   */
  pass(decoder: FrameDecoder, chunk: Buffer, to: LinkEnd | undefined, onFrame: OnMessage, onDecodeError: (err: Error) => void): string | undefined {
    this.to = to;
    this.error = undefined;
    this.frames.length = 0;
    this.keys.length = 0;
    this.asReceived = decoder.bufferedBytes === 0;
    decoder.push(chunk, onFrame, onDecodeError);
    const error = this.error;
    this.to = undefined;
    this.error = undefined;
    if (to) this.deliver(to, chunk, !error && decoder.bufferedBytes === 0);
    return error;
  }

  /** Records `error` for the message being passed, unless one was met before. */
  fail(error: string | undefined): void {
    this.error ??= error;
  }

  /** A frame of this message is not forwarded to the receiver. */
  skip(): void {
    this.asReceived = false;
  }

  /** `msg` for `to`: its original bytes when it has them and its service id reaches `to` as it arrived. */
  add(to: LinkEnd, msg: Message, frame: Uint8Array | undefined, receivedServiceId: string): void {
    if (frame && to.wireServiceId(msg.serviceId) === receivedServiceId) {
      this.frames.push(frame as Buffer);
    } else {
      this.asReceived = false;
      this.frames.push(to.frameFor(msg));
    }
    if (to.laned) this.keys.push(laneKey(msg));
  }

  /** Sends the message's frames to `to`; `whole`: it was decoded without error up to its last byte. */
  private deliver(to: LinkEnd, chunk: Buffer, whole: boolean): void {
    const asIs = this.asReceived && whole && this.frames.length > 0 && chunk.length <= MAX_WS_MESSAGE_BYTES;
    if (to.laned) to.sendFrames(this.frames, this.keys, asIs ? chunk : undefined);
    else if (asIs) to.sendFrames([chunk]);
    else to.sendFrames(this.frames);
    this.frames.length = 0;
    this.keys.length = 0;
  }
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
  private readonly onEvent?: (event: PeerEvent) => void;
  /** Set when this peer was replaced: it no longer takes part in the tunnel. */
  detached = false;
  bytesIn = 0;
  answerPings = true;
  private readonly decoder = new FrameDecoder();
  /** Bounds the work this peer's input gets per event-loop turn, so that other peers' work interleaves. */
  private readonly reader: FairReader;
  /** How this peer's messages are validated: one object for all of them. */
  private readonly validation: ValidateOptions;
  /** Above this many unsent bytes, senders to this peer are paused; resumed below a quarter of it. */
  readonly highWater: number;
  /** Why this peer is not read: its receiver's backlog, its bandwidth budget (either or both). */
  private heldForBacklog = false;
  private heldForBandwidth = false;
  private readonly bucket?: TokenBucket;
  private readonly shouldPace: boolean;
  private bandwidthTimer?: NodeJS.Timeout;
  private readonly startedAt = Date.now();
  /** When this peer last pinged us, and the time between its last two pings (0 = unknown). */
  private lastPingAt = 0;
  private pingIntervalMs = 0;
  /** Our heartbeat (unsolicited pongs) to this peer while its reading is paused (see startHeartbeat). */
  private heartbeat?: NodeJS.Timeout;
  private heartbeatInFlight = false;
  /** A pong handed to ws and not yet written, and the latest ping received meanwhile. */
  private pongInFlight = false;
  private pendingPing?: Buffer;

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
    this.validation = { version: init.version, from: 'client' };
    this.onEvent = init.onEvent;
    this.highWater = queueBoundBytes(init.bandwidth, HIGH_WATER_BYTES);
    if (init.bandwidth) this.bucket = new TokenBucket(init.bandwidth, Date.now());
    this.shouldPace = init.pace !== false && this.extensions.size > 0;
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
    if (this.closing) return;
    this.stopPacing(true);
    this.closing = true;
    this.resumeReading();
    this.releaseBandwidthHold();
    try {
      this.ws.close(code, reason);
    } catch {
      // Still CONNECTING or already closed: nothing to send.
    }
    this.socket.end();
    setTimeout(() => this.socket.destroy(), CLOSE_LINGER_MS).unref();
  }

  /**
   * Whether a message type is forwarded to this peer: every type of the protocol; an ignorable
   * one of another type only when it belongs to an extension this peer declared (issue 14), so
   * that no extension message reaches a peer that did not ask for it (the C++ reference, V1).
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

  /** The receiver's backlog no longer holds this peer back. */
  resumeReading(): void {
    this.stopHeartbeat();
    if (!this.heldForBacklog) return;
    this.heldForBacklog = false;
    this.log.debug('resumed reading');
    this.applyHolds();
    this.onEvent?.({ type: 'resumed', tunnelId: this.link.tunnel.tunnelId, mode: this.mode });
  }

  /** ws is paused while anything holds the peer back, and resumed when nothing does. */
  private applyHolds(): void {
    const hold = this.heldForBacklog || this.heldForBandwidth;
    if (hold && !this.ws.isPaused) this.ws.pause();
    else if (!hold && this.ws.isPaused) this.ws.resume();
  }

  /**
   * `--bandwidth`: bytes read from this peer are charged to its bucket; while the bucket is in
   * debt the peer is not read, so what it sends beyond the rate waits in its own socket
   * buffers, in front of its pings, as in front of the cloud. The relay's ping answers are
   * never held: a ping is answered when it is read.
   */
  private charge(bytes: number): void {
    if (!this.bucket || this.closing) return;
    const now = Date.now();
    this.bucket.take(bytes, now);
    if (this.heldForBandwidth) return;
    const wait = this.bucket.waitMs(now);
    if (wait <= 0) return;
    this.heldForBandwidth = true;
    this.applyHolds();
    this.bandwidthTimer = setTimeout(this.onBandwidthTimer, wait);
  }

  private readonly onBandwidthTimer = (): void => {
    this.bandwidthTimer = undefined;
    const wait = this.bucket!.waitMs(Date.now());
    if (wait > 0 && !this.closing) {
      this.bandwidthTimer = setTimeout(this.onBandwidthTimer, wait);
      return;
    }
    this.releaseBandwidthHold();
  };

  private releaseBandwidthHold(): void {
    clearTimeout(this.bandwidthTimer);
    this.bandwidthTimer = undefined;
    if (!this.heldForBandwidth) return;
    this.heldForBandwidth = false;
    this.applyHolds();
  }

  /**
   * While we do not read this peer its pings sit unread behind its data, and its keepalive
   * would take our flow control for a dead service once its last writes fitted in the socket
   * buffers (nothing of its own is then left waiting). It still reads us, so a heartbeat at
   * twice its own ping rate shows we are alive. One at a time; none when pings are faulted off.
   *
   * The heartbeat is an unsolicited pong (RFC 6455 5.5.3: a unidirectional heartbeat, no answer
   * expected), never a ping: a ping asks for a pong, a write that this peer cannot complete
   * while we do not read it. Boost.Beast (the C++ reference) suspends its WebSocket read until
   * that pong is written, so a ping here stopped the peer reading until we read it again. With
   * an echoing application behind the other peer that closed a cycle (we wait for this peer to
   * read before reading the other peer, whose application waits for it) and an echo through
   * the C++ source deadlocked. The payload is the time in decimal milliseconds, the only form
   * the C++ reference accepts in a pong (behaviour spec 3.8).
   */
  private startHeartbeat(): void {
    if (this.heartbeat) return;
    const every = this.pingIntervalMs > 0 ? Math.min(HEARTBEAT_MAX_MS, Math.max(HEARTBEAT_MIN_MS, Math.floor(this.pingIntervalMs / 2))) : HEARTBEAT_DEFAULT_MS;
    const beat = (): void => {
      if (!this.answerPings || this.heartbeatInFlight || this.ws.readyState !== this.ws.OPEN) return;
      this.heartbeatInFlight = true;
      this.ws.pong(String(Date.now()), undefined, () => {
        this.heartbeatInFlight = false;
      });
    };
    // The first beat after `every`, not at once: a peer's keepalive misses a pong only after a
    // pause longer than its ping interval, and held-back reading on a busy tunnel toggles many
    // times a second (high-water hysteresis): a pong at each pause was one frame to the sender,
    // and a wake-up of it, per 200 KiB of bulk.
    this.heartbeat = setInterval(beat, every);
    this.heartbeat.unref();
  }

  private stopHeartbeat(): void {
    clearInterval(this.heartbeat);
    this.heartbeat = undefined;
  }

  private onWsPing(data: Buffer): void {
    const now = Date.now();
    if (this.lastPingAt > 0) this.pingIntervalMs = now - this.lastPingAt;
    this.lastPingAt = now;
    // The cloud counts pings towards the tunnel's bandwidth (V3 guide): frame header + payload.
    this.charge(data.length + 6);
    // The server runs with autoPong off so that setFaults({answerPings:false}) can stop answering.
    if (!this.answerPings || this.ws.readyState !== this.ws.OPEN) return;
    // A ping is answered when it is read, as the cloud does, with one exception: from a peer
    // of ours (it declared an extension) when its earlier messages still wait in the relay's
    // queue for the other peer (paced.ts), once they have left it. Its pacer then sees that
    // queue too, as it sees the one in front of the relay. Answered on reading, a sender
    // filled the relay's queue unseen up to the high-water mark, and then the socket buffers
    // behind it, where an echo waits in order (1 s behind an upload to a 1 MB/s destination).
    const other = this.detached || this.extensions.size === 0 ? undefined : this.link.other(this.mode);
    if (other && !other.closing && other.whenForwarded(() => this.answerPing(data))) return;
    this.answerPing(data);
  }

  /**
   * One pong waits at a time; pings read meanwhile are answered by one pong for the latest
   * (RFC 6455 5.5.3), so a peer that pings but never reads costs one pending pong.
   */
  private answerPing(data: Buffer): void {
    if (!this.answerPings || this.closing || this.ws.readyState !== this.ws.OPEN) return;
    if (this.pongInFlight) this.pendingPing = data;
    else this.sendPong(data);
  }

  private sendPong(data: Buffer): void {
    this.pongInFlight = true;
    this.ws.pong(data, undefined, this.onPongWritten);
  }

  private readonly onPongWritten = (err?: Error): void => {
    this.pongInFlight = false;
    const next = this.pendingPing;
    this.pendingPing = undefined;
    if (!err && next && this.answerPings && this.ws.readyState === this.ws.OPEN) this.sendPong(next);
  };

  private onWsError(err: Error): void {
    // ws closes the connection after a protocol error (bad frame, message too large).
    // A peer can provoke this at will (a message over the size limit, then reconnect): rate-limited.
    this.log.limited(LogLevel.WARNING, 'websocket-error', `WebSocket error, closing the connection: ${printable(err.message)}`);
  }

  // State of the WebSocket message being decoded (onWsMessage), in fields so that decoding
  // needs no closure and no arrays of its own per message.
  private readonly relayed = new Relayed();
  private readonly replies: Buffer[] = [];

  private onWsMessage(data: RawData, isBinary: boolean): void {
    if (this.closing) return;
    if (!isBinary) return this.violation('text frames are not allowed');
    const chunk = data as Buffer;
    this.bytesIn += chunk.length;
    this.charge(chunk.length);
    const other = this.detached ? undefined : this.link.other(this.mode);
    const replies = this.replies;
    // Whatever arrived before a violation is still delivered, in order.
    const error = this.relayed.pass(this.decoder, chunk, other && !other.closing ? other : undefined, this.onFrame, this.onDecodeError);
    const replied = replies.length > 0;
    if (replied) {
      this.sendFrames(replies);
      replies.length = 0;
    }
    if (error) return this.violation(error);
    // Replies to this peer count too: a peer that sends starts but never reads must not grow
    // our queue. Only when there were replies, though: pausing a sender because of data
    // forwarded *to* it would couple the two directions of the tunnel, and an app that stops
    // reading while its writes are blocked (an echo server) then deadlocks the whole tunnel.
    if (other) this.holdFor(other);
    if (replied) this.holdFor(this);
  }

  /** Stops reading this peer while `receiver` has more than its high-water mark unsent. */
  private holdFor(receiver: LinkEnd): void {
    if (receiver.unsent > receiver.highWater && !this.heldForBacklog) {
      this.log.debug(`paused reading: the ${receiver === this ? 'peer itself' : receiver.mode} has ${receiver.unsent} bytes unsent`);
      this.heldForBacklog = true;
      this.applyHolds();
      this.startHeartbeat();
      receiver.holdBack(this);
      this.onEvent?.({ type: 'paused', tunnelId: this.link.tunnel.tunnelId, mode: this.mode, receiver: receiver.mode, unsentBytes: receiver.unsent });
    }
  }

  private readonly onFrame = (msg: Message, frame: Uint8Array | undefined): void => {
    const relayed = this.relayed;
    if (relayed.error) return;
    const received = msg.serviceId;
    relayed.fail(this.check(msg));
    if (relayed.error) return;
    const other = relayed.to;
    if (!other) {
      relayed.skip();
      this.answerAbsent(msg, this.replies);
      return;
    }
    if (!other.takes(msg.type)) {
      relayed.skip();
      this.log.limited(LogLevel.DEBUG, 'not-forwarded', `not forwarded: ${typeName(msg.type)}, which the ${other.mode} did not declare`);
      return;
    }
    this.link.track(msg);
    relayed.add(other, msg, frame, received);
  };

  private readonly onDecodeError = (err: Error): void => {
    this.relayed.fail(`undecodable frame: ${err.message}`);
  };

  /**
   * With the other peer absent nobody can answer a start, so the relay refuses it at once
   * (STREAM_RESET / CONNECTION_RESET) and drops every other message.
   */
  private answerAbsent(msg: Message, replies: Buffer[]): void {
    if (msg.type === MessageType.STREAM_START) {
      replies.push(this.frameFor({ type: MessageType.STREAM_RESET, serviceId: msg.serviceId, streamId: msg.streamId }));
    } else if (msg.type === MessageType.CONNECTION_START) {
      replies.push(this.frameFor({ type: MessageType.CONNECTION_RESET, serviceId: msg.serviceId, streamId: msg.streamId, connectionId: msg.connectionId }));
    }
  }

  /** Returns a violation text, or undefined; fills in the service id of V1-style messages. */
  private check(msg: Message): string | undefined {
    const invalid = validateMessage(msg, this.validation);
    if (invalid) return invalid.message;
    // Stream ids are counted up from 1 by the source; a negative one is no stream the other side can know.
    if (msg.streamId < 0) return `${typeName(msg.type)} with a negative stream id (${msg.streamId})`;
    if (this.mode === 'destination' && (msg.type === MessageType.STREAM_START || msg.type === MessageType.CONNECTION_START)) {
      return `${typeName(msg.type)} may only be sent by a source`;
    }
    const services = this.link.tunnel.services;
    if (msg.serviceId === '') {
      // V1 form: with exactly one service it can only mean that one (V2 guide, compatibility).
      if (services.length === 1) msg.serviceId = services[0];
      else if (services.length > 1) return `${typeName(msg.type)} without a service id in a tunnel with ${services.length} services`;
    } else if (!services.includes(msg.serviceId)) {
      return `service id ${JSON.stringify(msg.serviceId)} is not part of this tunnel`;
    }
    return undefined;
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
    this.stopHeartbeat();
    this.stopPacing(false);
    this.releaseBandwidthHold();
    this.decoder.reset();
    const seconds = ((Date.now() - this.startedAt) / 1000).toFixed(1);
    this.log.info(`disconnected (code ${code}) after ${seconds} s: received ${this.bytesIn} bytes, sent ${this.bytesOut} bytes`);
    this.link.peerClosed(this);
    this.onEvent?.({ type: 'disconnected', tunnelId: this.link.tunnel.tunnelId, mode: this.mode, channelId: this.channelId, code, bytesIn: this.bytesIn, bytesOut: this.bytesOut });
  }
}
