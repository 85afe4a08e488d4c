/**
 * A bridge: the WebSocket between two nodes of a cluster for one tunnel whose source is held by
 * one node and destination by the other. On each node the bridge is the `LinkEnd` of the far
 * peer (a `RemotePeer`), so the tunnel's link forwards to it as to a local peer, with the same
 * backpressure: frames for the far peer count as this end's unsent bytes and pause the local
 * sender above the high-water mark; frames from the far peer go to the local peer, and reading
 * the bridge pauses while the local peer's backlog is too long, which fills the TCP window and
 * so pauses the far node's sender in turn.
 *
 * The frames are the protocol's (length-prefixed protobuf), in the full form with service ids:
 * the receiving node tracks streams from them and re-encodes them for its peer's version.
 */
import { WebSocket, type RawData } from 'ws';
import { LogLevel, type Logger } from '../../log';
import { MAX_WS_MESSAGE_BYTES } from '../../protocol/constants';
import { socketOf } from '../../flow/writer';
import { encodeFrame, FrameDecoder } from '../../protocol/framing';
import type { Message, MessageInit } from '../../protocol/message';
import { Relayed } from '../forwarding';
import { CLOSE_POLICY, fitCloseReason, REPLACED_REASON, type LinkEnd, type TunnelLink } from '../link';
import { HIGH_WATER_BYTES, Outlet } from '../outlet';
import { Peer } from '../peer';
import type { PeerMode } from '../store/record';

/** The far peer left its node (or was closed there): the bridge is not to be dialed again for it. */
export const CLOSE_PEER_LEFT = 4100;
/** The far node is stopping. */
export const CLOSE_NODE_STOPPING = 4101;
/** How often each side pings; a bridge silent for SILENT_PINGS of these while we read it is dead. */
export const BRIDGE_PING_MS = 5000;
const SILENT_PINGS = 4;
const CLOSE_LINGER_MS = 2000;
const DIAL_TIMEOUT_MS = 10_000;

/**
 * Dials another node's bridge endpoint (`url`: its /cluster/bridge request, signed in
 * `headers`). `settled` is called once: with the open socket, or with why not (the socket is
 * then terminated).
 */
export function dialBridge(url: string, headers: Record<string, string>, ca: string[] | undefined, settled: (result: { ws: WebSocket } | { failed: string }) => void): WebSocket {
  const ws = new WebSocket(url, { headers, ...(ca ? { ca } : {}), perMessageDeflate: false, maxPayload: MAX_WS_MESSAGE_BYTES, handshakeTimeout: DIAL_TIMEOUT_MS });
  let done = false;
  const fail = (why: string): void => {
    if (done) return;
    done = true;
    ws.terminate();
    settled({ failed: why });
  };
  ws.once('unexpected-response', (_req, res) => {
    res.resume();
    fail(`HTTP ${res.statusCode} ${res.statusMessage ?? ''}`.trim());
  });
  // Kept for the life of the socket: an error after the open must not go unhandled (RemotePeer logs its own).
  ws.on('error', (err: Error) => fail(err.message));
  ws.once('open', () => {
    done = true;
    socketOf(ws)?.setNoDelay(true);
    settled({ ws });
  });
  return ws;
}

export interface RemotePeerInit {
  link: TunnelLink;
  ws: WebSocket;
  /** The far peer's mode. */
  mode: PeerMode;
  /** The far node's id. */
  node: string;
  log: Logger;
  pingMs?: number;
  /** The bridge closed (code from the far node, or 1006). Called once. */
  onClosed: (end: RemotePeer, code: number) => void;
}

export class RemotePeer extends Outlet implements LinkEnd {
  readonly mode: PeerMode;
  readonly node: string;
  readonly log: Logger;
  readonly link: TunnelLink;
  readonly ws: WebSocket;
  readonly highWater = HIGH_WATER_BYTES;
  bytesIn = 0;
  private readonly decoder = new FrameDecoder();
  private readonly onClosedHook: RemotePeerInit['onClosed'];
  private readonly pingMs: number;
  private lastHeard = Date.now();
  private pinger?: NodeJS.Timeout;

  constructor(init: RemotePeerInit) {
    super();
    this.link = init.link;
    this.ws = init.ws;
    this.mode = init.mode;
    this.node = init.node;
    this.log = init.log;
    this.pingMs = init.pingMs ?? BRIDGE_PING_MS;
    this.onClosedHook = init.onClosed;
  }

  start(): void {
    const heard = (): void => {
      this.lastHeard = Date.now();
    };
    this.ws.on('message', (data: RawData, isBinary: boolean) => {
      heard();
      this.onMessage(data as Buffer, isBinary);
    });
    this.ws.on('ping', heard);
    this.ws.on('pong', heard);
    this.ws.on('error', (err: Error) => this.log.limited(LogLevel.WARNING, 'bridge-error', `bridge to node ${this.node}: ${err.message}`));
    this.ws.on('close', (code: number) => this.onClose(code));
    // Each side pings, so the side that stopped reading (backpressure) still shows it is alive.
    this.pinger = setInterval(() => {
      if (this.ws.readyState !== this.ws.OPEN) return;
      if (!this.ws.isPaused && Date.now() - this.lastHeard > SILENT_PINGS * this.pingMs) {
        this.log.warn(`bridge to node ${this.node}: nothing heard for ${SILENT_PINGS * this.pingMs} ms, dropping it`);
        this.ws.terminate();
        return;
      }
      this.ws.ping();
    }, this.pingMs);
    this.pinger.unref();
  }

  /** Every type crosses the bridge: the far node decides what its peer takes. */
  takes(): boolean {
    return true;
  }

  frameFor(msg: MessageInit): Buffer {
    return encodeFrame(msg);
  }

  /** The full form: the far node re-encodes for its peer where needed. */
  wireServiceId(serviceId: string): string {
    return serviceId;
  }

  resumeReading(): void {
    if (!this.ws.isPaused) return;
    // Time spent paused is not silence.
    this.lastHeard = Date.now();
    this.ws.resume();
  }

  close(code: number, reason: string): void {
    if (this.moveTo('closing')) this.shut(code, reason);
  }

  replace(): void {
    const open = this.life === 'open';
    if (this.moveTo('replaced') && open) this.shut(CLOSE_POLICY, REPLACED_REASON);
  }

  /** Drops the connection without a close frame (the relay is stopping). */
  terminate(): void {
    this.moveTo('closing');
    this.ws.terminate();
  }

  private shut(code: number, reason: string): void {
    this.resumeReading();
    try {
      this.ws.close(code, fitCloseReason(reason));
    } catch {
      // Already closed.
    }
    setTimeout(() => this.ws.terminate(), CLOSE_LINGER_MS).unref();
  }

  /** Frames from the far peer, for the local peer of the other mode. */
  private onMessage(chunk: Buffer, isBinary: boolean): void {
    if (this.life !== 'open' || !isBinary) return;
    this.bytesIn += chunk.length;
    const local = this.link.other(this.mode);
    const receiver = local instanceof Peer && local.life === 'open' ? local : undefined;
    const error = this.relayed.pass(this.decoder, chunk, receiver, this.onFrame, this.onDecodeError);
    if (error) {
      this.log.error(error);
      this.close(1008, 'undecodable frame');
      return;
    }
    if (receiver && receiver.unsent > receiver.highWater && !this.ws.isPaused) {
      this.ws.pause();
      receiver.resumeWhenDrained(this);
    }
  }

  /** The bridge message being decoded (onMessage), with its receiver and first error. */
  private readonly relayed = new Relayed();

  private readonly onFrame = (msg: Message, frame: Uint8Array | undefined): void => {
    const relayed = this.relayed;
    if (relayed.error) return;
    const receiver = relayed.to;
    if (receiver && !receiver.takes(msg.type)) {
      relayed.skip();
      return;
    }
    this.link.track(msg);
    if (receiver) relayed.add(receiver, msg, frame, msg.serviceId);
  };

  private readonly onDecodeError = (err: Error): void => {
    this.relayed.fail(`undecodable frame from node ${this.node}: ${err.message}`);
  };

  /** ws emits 'close' once. */
  private onClose(code: number): void {
    this.moveTo('closed');
    clearInterval(this.pinger);
    this.decoder.reset();
    // A local sender paused because of this end must not stay paused.
    this.resumeSenders();
    this.link.peerClosed(this);
    this.onClosedHook(this, code);
  }
}
