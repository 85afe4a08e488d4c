/**
 * A peer's pings and our pongs. The server runs ws with `autoPong` off: the relay answers.
 *
 * - A ping is answered when it is read, as the cloud does, one pong at a time (PongSender).
 *   One exception: from a peer of ours (it declared an extension) whose earlier messages still
 *   wait in the relay's queue towards the other end (paced.ts), the answer waits until they have
 *   left it. Its pacer then sees that queue too, as it sees the one in front of the relay.
 *   Answered on reading, a sender filled the relay's queue unseen up to the high-water mark,
 *   and then the socket buffers behind it, where an echo waits in order (1 s behind an upload
 *   to a 1 MB/s destination).
 * - While the relay does not read a peer (its reading is paused), a heartbeat shows it that we
 *   are alive (see `startHeartbeat`).
 */
import type { WebSocket } from 'ws';
import { PongSender } from '../transport/keepalive';
import type { LinkEnd } from './link';

/** Bounds of the heartbeat interval towards a paused peer (half its own ping interval). */
const HEARTBEAT_MIN_MS = 100;
const HEARTBEAT_MAX_MS = 10_000;
/** Until a peer has pinged twice its interval is unknown. */
const HEARTBEAT_DEFAULT_MS = 500;

export class PeerPings {
  private readonly pongs: PongSender;
  /** When the peer last pinged us, and the time between its last two pings (0 = unknown). */
  private lastPingAt = 0;
  private pingIntervalMs = 0;
  private heartbeat?: NodeJS.Timeout;
  private heartbeatInFlight = false;

  constructor(
    private readonly ws: WebSocket,
    /** Whether pongs go out now: the peer is open and pings are answered at all. */
    private readonly answering: () => boolean,
  ) {
    this.pongs = new PongSender(ws, answering);
  }

  /**
   * A ping read from the peer; `after`: the end its earlier messages went to, when the answer
   * waits for them to leave the relay's queue (a peer of ours).
   */
  onPing(data: Buffer, after: LinkEnd | undefined): void {
    const now = Date.now();
    if (this.lastPingAt > 0) this.pingIntervalMs = now - this.lastPingAt;
    this.lastPingAt = now;
    if (!this.answering() || this.ws.readyState !== this.ws.OPEN) return;
    if (after && after.life === 'open' && after.whenForwarded(() => this.pongs.answer(data))) return;
    this.pongs.answer(data);
  }

  /**
   * While we do not read this peer its pings sit unread behind its data, and its keepalive
   * would take our flow control for a dead service once its last writes fitted in the socket
   * buffers (nothing of its own is then left waiting). It still reads us, so a heartbeat at
   * twice its own ping rate shows we are alive. One at a time; none while pings go unanswered.
   *
   * The heartbeat is an unsolicited pong (RFC 6455 5.5.3: a unidirectional heartbeat, no answer
   * expected), never a ping: a ping asks for a pong, a write that this peer cannot complete
   * while we do not read it. Boost.Beast (the C++ reference) suspends its WebSocket read until
   * that pong is written, so a ping here stopped the peer reading until we read it again. With
   * an echoing application behind the other peer that closed a cycle (we wait for this peer to
   * read before reading the other peer, whose application waits for it) and an echo through
   * the C++ source deadlocked. The payload is the time in decimal milliseconds, the only form
   * the C++ reference accepts in a pong.
   */
  startHeartbeat(): void {
    if (this.heartbeat) return;
    const every = this.pingIntervalMs > 0 ? Math.min(HEARTBEAT_MAX_MS, Math.max(HEARTBEAT_MIN_MS, Math.floor(this.pingIntervalMs / 2))) : HEARTBEAT_DEFAULT_MS;
    // The first beat after `every`, not at once: a peer's keepalive misses a pong only after a
    // pause longer than its ping interval, and paused reading on a busy tunnel toggles many
    // times a second (high-water hysteresis): a pong at each pause was one frame to the sender,
    // and a wake-up of it, per 200 KiB of bulk.
    this.heartbeat = setInterval(this.beat, every);
    this.heartbeat.unref();
  }

  stopHeartbeat(): void {
    clearInterval(this.heartbeat);
    this.heartbeat = undefined;
  }

  private readonly beat = (): void => {
    if (!this.answering() || this.heartbeatInFlight || this.ws.readyState !== this.ws.OPEN) return;
    this.heartbeatInFlight = true;
    this.ws.pong(String(Date.now()), undefined, () => {
      this.heartbeatInFlight = false;
    });
  };
}
