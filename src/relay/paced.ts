/**
 * What the relay sends to one peer of ours, on the paced writer (src/flow/writer.ts), as the
 * proxies pace and schedule what they send.
 *
 * When the peer is slower than the sender (a device behind a slow link), the kernel's send
 * buffer towards it and the link's buffers would take megabytes, and an echo would wait behind
 * all of them, in order: seconds behind an upload to a 1 MB/s destination. The proxy that sent
 * them cannot see that queue: its probes measure the way to the relay only. So the relay keeps
 * it short by the same means: delay probes to the peer, which answers one only after reading
 * every byte sent before it, and a Pacer that sets how many bytes may be in flight.
 *
 * The queue policy: what may not go yet waits here, one lane per connection, and leaves in the
 * scheduler's order: a connection that sends little (a keystroke, an echo) goes before one that
 * streams, and passes even while the pacer holds bulk back. Beyond the relay's high-water mark
 * the sender is not read (outlet.ts); before that, a ping from the sender is answered only once
 * the messages it sent before it have left this queue (`whenHanded`), so its pacer sees the
 * queue and keeps the rest in its own per-connection queues.
 *
 * Order is kept where the protocol needs it: every message of one connection (DATA,
 * CONNECTION_START/RESET, CREDIT_WINDOW) in one lane, in order; a message about a whole
 * stream or session (STREAM_START, STREAM_RESET, SESSION_RESET, SERVICE_IDS, CREDIT_HELLO,
 * anything the relay does not know, any frame without a connection id) is a barrier: it leaves
 * only after everything queued before it, and everything queued after it leaves after it.
 *
 * Only peers that declared a localproxy extension are paced: pings to them are answered by
 * ws while it goes on reading. Boost.Beast (the C++ reference) stops reading until its pong is
 * written, which deadlocks against a relay that is not reading it (see the heartbeat in
 * pings.ts). While the relay does not read a paced peer, or a probe is unanswered for long,
 * the pacer steps aside and everything goes to ws at once.
 */
import type { WebSocket } from 'ws';
import { MAX_WS_MESSAGE_BYTES } from '../protocol/constants';
import { MessageType, type Message } from '../protocol/message';
import { ExtensionType } from '../protocol/extension';
import type { Logger } from '../log';
import { Fifo } from '../flow/fifo';
import { Pacer } from '../flow/pacer';
import { Scheduler } from '../flow/scheduler';
import { COALESCE_BELOW_BYTES, PacedWriter } from '../flow/writer';

/**
 * The queueing delay the relay keeps towards a peer (ms; less on a fast link, as the proxies').
 * More than the proxies' 20: a queue this short in front of a slow link left it idle now and
 * then (the pongs that open the window come back unevenly); behind a 1 MB/s link the upload
 * kept 82-87 % of the link's rate with 20 ms and 91-93 % with 50, the echoes 50 and 90-130 ms
 * at the 99th percentile (bench, behindLink). Unpaced, they waited seconds.
 */
export const RELAY_TARGET_DELAY_MS = 50;
/** Callers waiting for the bytes queued before them (`whenHanded`), at most; beyond, none waits. */
const MAX_WAITERS = 16;
/** A waiter runs after this long even if the bytes before it still wait (the sender's keepalive must hear from us). */
const MAX_WAIT_MS = 2000;

/**
 * Lanes at most (connection ids come from the network): a frame of a connection that has no lane
 * when this many exist waits in arrival order, as a barrier does. Emptied lanes are forgotten
 * once they are more than FORGET_LANES_ABOVE and nothing is queued in any.
 */
const MAX_LANES = 1024;
const FORGET_LANES_ABOVE = 256;

/**
 * The lane of a message: its connection (service id, stream id, connection id), or undefined
 * for a barrier: a message about a whole stream or session, of a type the relay does not know,
 * or without a connection id. A V2-format message has none, and a V3 source switches a
 * connection to that format in the middle when the destination speaks it (src/tunnel/service.ts):
 * its DATA with connection id 0 must not pass the same connection's earlier frames.
 */
export function laneKey(msg: Message): string | undefined {
  if (msg.connectionId === 0) return undefined;
  switch (msg.type) {
    case MessageType.DATA:
    case MessageType.CONNECTION_START:
    case MessageType.CONNECTION_RESET:
    case ExtensionType.CREDIT_WINDOW:
      return `${msg.streamId} ${msg.connectionId} ${msg.serviceId}`;
    default:
      return undefined;
  }
}

interface Later {
  item: Buffer;
  key: string | undefined;
}
const GONE: Later = { item: Buffer.alloc(0), key: undefined };

export class PacedSend extends PacedWriter {
  private readonly lanes = new Scheduler<string>();
  /** Items behind a barrier that waits for the lanes to drain: the barrier first, in arrival order. */
  private readonly later = new Fifo<Later>(GONE);
  private laterBytes = 0;
  private readonly emptied: string[] = [];
  /** Bytes queued here and bytes handed to ws, since the start. */
  private pushedBytes = 0;
  private handedBytes = 0;
  private readonly waiters: Array<{ mark: number; at: number; run: () => void }> = [];

  constructor(
    ws: WebSocket,
    /** Hands one WebSocket message to ws (the outlet counted its bytes when they were queued). */
    private readonly write: (payload: Buffer) => void,
    log?: Logger,
  ) {
    super(ws, new Pacer({ targetDelayMs: RELAY_TARGET_DELAY_MS }), 'pacing', log);
  }

  /** Bytes queued here, not yet handed to ws. */
  get queuedBytes(): number {
    return this.lanes.queuedBytes + this.laterBytes;
  }

  /**
   * Queues the frames of one received message, each with its lane (`keys`, undefined: a
   * barrier); `whole`: the message as received, forwarded as one item when all its frames are
   * in one lane (no copy). Then sends what the pacer allows.
   */
  push(frames: readonly Buffer[], keys: readonly (string | undefined)[], whole?: Buffer): void {
    if (this.closed) return;
    const first = keys[0];
    let oneLane = whole !== undefined && first !== undefined;
    for (let i = 1; oneLane && i < keys.length; i++) if (keys[i] !== first) oneLane = false;
    if (oneLane) this.add(whole!, first);
    else for (let i = 0; i < frames.length; i++) this.add(frames[i], keys[i]);
    this.flush();
  }

  /**
   * Runs `run` once every byte queued here so far has been handed to ws (or MAX_WAIT_MS have
   * passed, or this stops); returns false, without running it, when nothing is queued.
   */
  whenHanded(run: () => void): boolean {
    if (this.closed || this.queuedBytes === 0 || this.waiters.length >= MAX_WAITERS) return false;
    this.waiters.push({ mark: this.pushedBytes, at: this.clock(), run });
    return true;
  }

  private runWaiters(now: number, all: boolean): void {
    const waiters = this.waiters;
    while (waiters.length > 0 && (all || waiters[0].mark <= this.handedBytes || now - waiters[0].at >= MAX_WAIT_MS)) waiters.shift()!.run();
  }

  private add(item: Buffer, key: string | undefined): void {
    this.pushedBytes += item.length;
    // A barrier, and whatever comes after one, waits in arrival order until the lanes are empty.
    if (key === undefined || this.later.length > 0 || !this.hasLaneFor(key)) {
      this.later.push({ item, key });
      this.laterBytes += item.length;
    } else {
      // A lane new to the scheduler may send one quantum past the window: one message at the rate.
      this.lanes.quantum = this.pacer.messageBytes();
      this.lanes.push(key, item);
    }
  }

  /** The key has a lane, or may have one (fewer than MAX_LANES). */
  private hasLaneFor(key: string): boolean {
    return this.lanes.size < MAX_LANES || this.lanes.has(key);
  }

  /** Stops: queued items are dropped (the peer is closing or gone). */
  override close(): void {
    super.close();
    this.runWaiters(0, true);
    this.lanes.clear();
    this.later.clear();
    this.laterBytes = 0;
  }

  /**
   * Bytes that may go now: the pacer's room, or no limit while it steps aside (the relay does
   * not read this peer, so pongs wait unread; or a probe went unanswered).
   */
  protected override room(now: number): number {
    const paused = this.ws.isPaused;
    const room = this.pacer.room(now, this.ws.bufferedAmount, paused);
    const state = this.pacer.state;
    return paused || state === 'stalled' || state === 'off' ? Infinity : room;
  }

  protected take(room: number, out: Buffer[]): void {
    const lanes = this.lanes;
    for (;;) {
      if (lanes.queuedBytes > 0) {
        lanes.quantum = this.pacer.messageBytes();
        if (room > 0) room -= lanes.take(room, out, this.emptied);
        else if (lanes.hasNewFlow) lanes.take(lanes.quantum, out, this.emptied, true);
        if (lanes.queuedBytes > 0) break;
      }
      // The lanes are empty: what waited behind a barrier comes next.
      const next = this.later.peek();
      if (!next) break;
      if (next.key === undefined || !this.hasLaneFor(next.key)) {
        if (room <= 0) break;
        room -= next.item.length;
        out.push(next.item);
      } else {
        lanes.quantum = this.pacer.messageBytes();
        lanes.push(next.key, next.item);
      }
      this.later.shift();
      this.laterBytes -= next.item.length;
    }
    this.emptied.length = 0;
    if (lanes.queuedBytes === 0 && lanes.size > FORGET_LANES_ABOVE) lanes.clear();
  }

  /** Items of COALESCE_BELOW_BYTES or more in a message of their own, as received (no copy); smaller ones packed together, as the proxies send them. */
  protected packing(): { aloneBytes: number; maxBytes: number } {
    return PACKING;
  }

  protected flushed(now: number, handedBytes: number): void {
    this.handedBytes += handedBytes;
    if (this.waiters.length > 0) this.runWaiters(now, false);
  }

  /** Nothing more will be handed over: whoever waits for it need not. */
  protected override notOpen(): void {
    this.runWaiters(0, true);
  }

  protected writeMessage(message: Buffer): void {
    this.write(message);
  }
}

const PACKING = { aloneBytes: COALESCE_BELOW_BYTES, maxBytes: MAX_WS_MESSAGE_BYTES };
