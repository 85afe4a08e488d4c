/**
 * The sending half that every end of a link shares (a local peer, a bridge to another node):
 * whole frames to its WebSocket, the bytes handed over and not yet written (`unsent`), and the
 * senders paused because of them, which wait here until the backlog drains.
 *
 * Flow control: once an end's unsent bytes pass its high-water mark, whoever sends to it is
 * paused (not read), and resumed once they fall below a quarter of the mark, or below three
 * quarters towards a paced peer (see PACED_RESUME_AT). Nothing else queues, so memory per tunnel
 * stays bounded.
 */
import type { WebSocket } from 'ws';
import type { Logger } from '../log';
import { MAX_WS_MESSAGE_BYTES } from '../protocol/constants';
import { writeMessages } from '../protocol/framing';
import { canMove, type Life, type Sender } from './link';
import { PacedSend } from './paced';

/**
 * Pause the sender while the receiver has more than this many bytes not yet written to its
 * socket (without a bandwidth); resume it below a quarter of it.
 */
export const HIGH_WATER_BYTES = 256 * 1024;
/**
 * Towards a paced peer the sender is resumed once the backlog is below this fraction of the
 * high-water mark, not a quarter: the sender's own pacer must see the rate at which we drain,
 * and a quarter let the relay read it in bursts (paused while three quarters drain, then read
 * them at once), which the recent-minimum round trip of its probes takes for no queue at all.
 */
const PACED_RESUME_AT = 3 / 4;
const UNPACED_RESUME_AT = 1 / 4;

export abstract class Outlet {
  abstract readonly ws: WebSocket;
  abstract readonly highWater: number;
  abstract readonly log: Logger;
  /** Bytes handed to ws.send whose write callback has not run yet. */
  unsent = 0;
  bytesOut = 0;
  /** Senders paused because this end's backlog is above its high-water mark, resumed once it drains. */
  private readonly waitingSenders = new Set<Sender>();
  /** Set for a paced peer (paced.ts): frames wait there, in their lanes, until the pacer lets them go. */
  private paced?: PacedSend;
  private current: Life = 'open';

  /** Where this end is in its life (link.ts); frames are sent only while it is open. */
  get life(): Life {
    return this.current;
  }

  /** Moves to `next` when its life allows (link.ts, `canMove`); returns whether it did. */
  protected moveTo(next: Life): boolean {
    if (!canMove(this.current, next)) return false;
    this.current = next;
    return true;
  }

  get laned(): boolean {
    return this.paced !== undefined;
  }

  sendFrames(frames: Buffer[], keys?: readonly (string | undefined)[], whole?: Buffer): void {
    if (frames.length === 0 || this.current !== 'open' || this.ws.readyState !== this.ws.OPEN) return;
    if (this.paced) {
      // Counted as unsent from now: queued here, they pause the sender as bytes in ws do.
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

  resumeWhenDrained(sender: Sender): void {
    this.waitingSenders.add(sender);
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

  /** Resumes every sender paused because of this end (its backlog drained, or it is gone). */
  protected resumeSenders(): void {
    for (const sender of this.waitingSenders) sender.resumeReading();
    this.waitingSenders.clear();
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
    if (this.waitingSenders.size > 0 && this.unsent < this.highWater * (this.paced ? PACED_RESUME_AT : UNPACED_RESUME_AT)) this.resumeSenders();
    this.paced?.written();
  }
}
