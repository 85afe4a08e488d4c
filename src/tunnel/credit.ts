/**
 * Per-connection credit between localproxy peers (issue 14), the credit/1 extension: its
 * messages are in protocol/extension.ts, the rules here. Like SSH channel windows (RFC 4254
 * §5.2) and HTTP/2 flow control, a receiver grants each connection a window and grants more as
 * its application takes the bytes; a sender never sends a connection past its grant, so one
 * application that stops reading stops only its own connection, and the memory it holds is
 * bounded by its window.
 *
 * Negotiation. Each side sends a HELLO naming its session (a random nonce) when the session
 * starts, and again in reply to a HELLO whose nonce it has not seen (the peer is new: it joined
 * later, or reconnected). A side grants only once it has the peer's HELLO.
 *
 * Activation, per connection and direction, needs no timing assumption:
 * - the receiver sends a first WINDOW for a connection once it knows the peer (at the
 *   connection's start, or when the HELLO arrives) and then keeps granting as its app takes bytes;
 * - a sender is limited on a connection only once it has received a WINDOW for it, so a peer
 *   without the extension, or one that never granted that connection (a new peer after a
 *   reconnect), leaves it unlimited as without credit — nobody ever waits for a peer that is gone;
 * - on its first WINDOW for a connection the sender answers with a WINDOW carrying ACK, in
 *   order with its DATA: every byte of the connection after that ACK is bounded by the grants.
 *   The receiver takes the bytes it has received at the ACK as the floor; from then on more
 *   than max(granted limit, floor) is a violation (the connection is reset, not the session).
 * Limits are absolute ("up to N payload bytes on this connection"), so a WINDOW is idempotent.
 *
 * Window size (yamux/HTTP/2 style autotuning without clocks): a window starts at
 * `initialWindow` and doubles, up to `maxWindow`, whenever the app has taken every byte while
 * the sender was blocked at the previous limit (the window, not the app, was the bottleneck).
 * A slow application never grows its window. Growth stops while the grants not yet taken, all
 * connections together, would exceed `totalBytes`.
 *
 * Pure: no I/O and no timers (the clock is an argument); keyed by an opaque connection key.
 */
import { randomBytes } from 'node:crypto';
import type { CreditHello, CreditWindow } from '../protocol/extension';

export interface CreditSettings {
  /** First window of each connection (`flow.credit_window_bytes`). */
  initialWindow: number;
  /** Largest window a connection grows to (`flow.credit_max_window_bytes`). */
  maxWindow: number;
  /** Bound on granted-but-not-taken bytes, all connections together, for window growth (`flow.credit_total_bytes`). */
  totalBytes: number;
}

/** A WINDOW to send for a connection. */
export interface Grant {
  limit: number;
  /** Set once we have received a grant for the connection: our DATA is bounded by it. */
  ack: boolean;
  /** The connection's window grew to this size with this grant (for a debug line). */
  grewTo?: number;
}

/** What a received DATA payload is, for the connection's receiver. */
export type Arrival =
  /** The peer's DATA is not bound by our grants (yet): it counts in the shared inbound budget. */
  | 'unbounded'
  /** Bound by our grants: memory is bounded by the window, not by the shared budget. */
  | 'granted'
  /** More than the peer was granted: the connection must be reset. */
  | 'violation';

/** A service that closes the connection with one of these codes soon after our HELLO refused the extension. */
export const REJECTION_CLOSE_CODES: ReadonlySet<number> = new Set([1002, 1003, 1007, 1008]);
/** How soon after our HELLO such a close counts as a refusal of it. */
export const REJECTION_WINDOW_MS = 10_000;

interface Window {
  /** Receiving: a first grant was sent to the current peer. */
  granting: boolean;
  /** Receiving: the limit granted; `previous`: the one before the latest grant. */
  granted: number;
  previous: number;
  /** Receiving: the window size used for the next grant. */
  size: number;
  received: number;
  /** Received bytes the app has taken. */
  consumed: number;
  /** Receiving: bytes received when the peer's ACK arrived; -1 until then (its DATA is not bound). */
  floor: number;
  /** Sending: the peer's limit for us; -1 while it has granted nothing (unlimited). */
  limit: number;
  sent: number;
}

export function randomNonce(): string {
  return randomBytes(8).toString('hex');
}

export class Credit<K> {
  /** The current peer's nonce, once its HELLO arrived. */
  private peer?: string;
  private heardPeer = false;
  private announcedAt = 0;
  private readonly windows = new Map<K, Window>();
  /** Σ max(0, granted − consumed) over the connections we grant. */
  private outstanding = 0;

  constructor(readonly settings: CreditSettings, readonly nonce: string = randomNonce()) {}

  /** Our HELLO is being sent (at the session's start, or as a reply). */
  announced(now: number): void {
    if (this.announcedAt === 0) this.announcedAt = now;
  }

  /** True once a peer's HELLO arrived: we grant from then on. */
  get peerKnown(): boolean {
    return this.peer !== undefined;
  }

  /** Granted and not yet taken, all connections together. */
  get outstandingBytes(): number {
    return this.outstanding;
  }

  /**
   * A close of the service connection with `code` at `now` looks like the service refusing our
   * HELLO: it came soon after it, with a protocol or policy code, and no peer's HELLO ever arrived.
   */
  rejectedBy(code: number, now: number): boolean {
    return this.announcedAt > 0 && !this.heardPeer && now - this.announcedAt <= REJECTION_WINDOW_MS && REJECTION_CLOSE_CODES.has(code);
  }

  /**
   * A peer's HELLO. `newPeer`: its nonce is new — every connection starts over with it
   * (unlimited, not granted; the caller sends first grants) and our HELLO goes back (`reply`).
   */
  onHello(hello: CreditHello): { newPeer: boolean; reply: boolean } {
    if (hello.nonce === this.nonce || hello.nonce === this.peer) return { newPeer: false, reply: false };
    this.heardPeer = true;
    this.peer = hello.nonce;
    this.outstanding = 0;
    for (const w of this.windows.values()) {
      // Byte counts are the connection's own (absolute); what was agreed with a previous peer is not.
      w.granting = false;
      w.granted = 0;
      w.previous = 0;
      w.size = this.settings.initialWindow;
      w.floor = -1;
      w.limit = -1;
    }
    return { newPeer: true, reply: true };
  }

  open(key: K): void {
    this.windows.set(key, { granting: false, granted: 0, previous: 0, size: this.settings.initialWindow, received: 0, consumed: 0, floor: -1, limit: -1, sent: 0 });
  }

  close(key: K): void {
    const w = this.windows.get(key);
    if (!w) return;
    this.outstanding -= this.share(w);
    this.windows.delete(key);
  }

  keys(): IterableIterator<K> {
    return this.windows.keys();
  }

  // ── receiving ─────────────────────────────────────────────────────────────────

  /** The first WINDOW for a connection, once the peer is known; undefined if it has one or cannot have one yet. */
  firstGrant(key: K): Grant | undefined {
    const w = this.windows.get(key);
    if (!w || !this.peer || w.granting) return undefined;
    w.granting = true;
    return this.raise(w, w.consumed + w.size);
  }

  /** DATA arrived for a connection. */
  received(key: K, bytes: number): Arrival {
    const w = this.windows.get(key);
    if (!w) return 'unbounded';
    w.received += bytes;
    if (w.floor < 0) return 'unbounded';
    return w.received > Math.max(w.granted, w.floor) ? 'violation' : 'granted';
  }

  /** The app took `bytes` of the connection (its socket's write callback): a WINDOW to send, or undefined. */
  consumed(key: K, bytes: number): Grant | undefined {
    const w = this.windows.get(key);
    if (!w) return undefined;
    const before = this.share(w);
    w.consumed += bytes;
    this.outstanding += this.share(w) - before;
    if (!w.granting) return undefined;
    // The app has taken every byte while the sender stood at the previous limit: the window, not
    // the app, held the connection back.
    const starved = w.floor >= 0 && w.consumed === w.received && w.received === w.previous && w.granted > w.received;
    let grew = false;
    if (starved && w.size < this.settings.maxWindow) {
      const grown = Math.min(this.settings.maxWindow, w.size * 2);
      if (this.outstanding - this.share(w) + grown <= this.settings.totalBytes) {
        w.size = grown;
        grew = true;
      }
    }
    const next = w.consumed + w.size;
    if (next <= w.granted) return undefined;
    if (!starved && w.granted - w.consumed > w.size / 2) return undefined;
    const grant = this.raise(w, next);
    if (grew) grant.grewTo = w.size;
    return grant;
  }

  /** True once the peer's DATA on the connection is bound by our grants. */
  isGranted(key: K): boolean {
    return (this.windows.get(key)?.floor ?? -1) >= 0;
  }

  // ── sending ───────────────────────────────────────────────────────────────────

  /**
   * A WINDOW from the peer. Returns undefined when it is for no connection we have or the peer is
   * unknown; `ackDue` when it is the first one for the connection: the caller answers with
   * `ackGrant()`, in order with the connection's DATA.
   */
  onWindow(key: K, window: CreditWindow): { ackDue: boolean } | undefined {
    const w = this.windows.get(key);
    if (!w || !this.peer) return undefined;
    if (window.ack && w.floor < 0) w.floor = w.received;
    const first = w.limit < 0;
    w.limit = Math.max(w.limit, window.limit);
    return { ackDue: first };
  }

  /** The WINDOW that acknowledges the peer's first grant: our current grant (a first one if none yet), with ACK. */
  ackGrant(key: K): Grant | undefined {
    const w = this.windows.get(key);
    if (!w) return undefined;
    if (!w.granting) return this.firstGrant(key);
    return { limit: w.granted, ack: w.limit >= 0 };
  }

  /** Payload bytes the connection may send now: Infinity while the peer has granted nothing. */
  room(key: K): number {
    const w = this.windows.get(key);
    if (!w || w.limit < 0) return Infinity;
    return Math.max(0, w.limit - w.sent);
  }

  sent(key: K, bytes: number): void {
    const w = this.windows.get(key);
    if (w) w.sent += bytes;
  }

  /** For tests and debug lines: a connection's counters. */
  inspect(key: K): Readonly<Window> | undefined {
    const w = this.windows.get(key);
    return w && { ...w };
  }

  private share(w: Window): number {
    return w.granting ? Math.max(0, w.granted - w.consumed) : 0;
  }

  private raise(w: Window, limit: number): Grant {
    const before = this.share(w);
    w.previous = w.granted;
    w.granted = limit;
    this.outstanding += this.share(w) - before;
    return { limit, ack: w.limit >= 0 };
  }
}
