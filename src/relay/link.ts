/**
 * The link of one open tunnel: its two ends (source and destination) and the streams between
 * them. An end is a `Peer` connected to this relay (peer.ts) or, on a node of a cluster, a peer
 * held by another node, reached over a bridge (cluster/bridge.ts); the link forwards to either
 * alike and knows nothing of clusters.
 */
import type { Logger } from '../log';
import { MessageType, type Message, type MessageInit } from '../protocol/message';
import type { PeerMode, TunnelRecord } from './store/record';

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
 * The life of one end of a link:
 * - `open`: messages go both ways;
 * - `closing`: our close frame is on its way (a violation, CloseTunnel, a rotation): nothing more
 *   is forwarded to it;
 * - `replaced`: a newer connection of the same mode took its place; its close is on its way or
 *   done, and it takes no further part in the tunnel (the other end is not told its streams ended);
 * - `closed`: its connection closed.
 *
 * open → closing → closed, and open or closing → replaced, which is final.
 */
export type Life = 'open' | 'closing' | 'replaced' | 'closed';

/** Whether an end in life `from` may move to `to`. */
export function canMove(from: Life, to: Life): boolean {
  if (from === 'open') return to !== 'open';
  return from === 'closing' && (to === 'replaced' || to === 'closed');
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

/** Whatever stops reading while a receiver's backlog is too long, and reads again when it drains. */
export interface Sender {
  resumeReading(): void;
}

/**
 * One end of a tunnel as its link sees it. Frames for it go through `sendFrames`; `unsent` and
 * `resumeWhenDrained` give every end the same backpressure (outlet.ts).
 */
export interface LinkEnd extends Sender {
  readonly mode: PeerMode;
  readonly log: Logger;
  readonly life: Life;
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
  resumeWhenDrained(sender: Sender): void;
  /** Starts a close: a close frame with `code` and `reason`, then the connection ends. */
  close(code: number, reason: string): void;
  /** A newer connection of the same mode took this end's place: it closes with 1008. */
  replace(): void;
}

/** Runtime state of one open tunnel: its connected ends and the streams between them. */
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

  /** Installs an end, replacing the end of its mode (closed with 1008); `what` names the newcomer in the log. */
  install(end: LinkEnd, what: string): void {
    const old = this.peers[end.mode];
    this.peers[end.mode] = end;
    if (old) {
      old.log.info(`replaced by a new connection (${what})`);
      old.replace();
      this.resetActiveStreams(end.mode);
    }
  }

  other(mode: PeerMode): LinkEnd | undefined {
    return this.peers[mode === 'source' ? 'destination' : 'source'];
  }

  /** Closes both ends with a close frame (CloseTunnel, expiry). */
  closeAll(code: number, reason: string): void {
    for (const peer of [this.peers.source, this.peers.destination]) peer?.close(code, reason);
  }

  /** The end of `mode` went away: the other end learns that every active stream is gone. */
  resetActiveStreams(mode: PeerMode): void {
    const other = this.other(mode);
    if (other && other.life !== 'replaced') {
      const frames: Buffer[] = [];
      for (const [serviceId, streamId] of this.activeStreams) frames.push(other.frameFor({ type: MessageType.STREAM_RESET, serviceId, streamId }));
      if (frames.length) other.log.debug(`sending STREAM_RESET for ${frames.length} active stream(s): the ${mode} disconnected`);
      other.sendFrames(frames);
    }
    this.activeStreams.clear();
  }

  /** Called by an end whose connection closed. */
  peerClosed(peer: LinkEnd): void {
    if (this.peers[peer.mode] === peer) {
      delete this.peers[peer.mode];
      this.resetActiveStreams(peer.mode);
      this.onPeerGone(peer);
    }
    // A sender paused because of this end must not stay paused forever.
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
