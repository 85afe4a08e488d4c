/**
 * Why the relay does not read a peer now. Two reasons pause a peer's reading, each set and
 * cleared on its own: `backlog` (the end it sends to has too much unsent, outlet.ts) and
 * `bandwidth` (its token bucket is in debt, bandwidth.ts). The WebSocket (and so its socket)
 * is paused while any reason holds, and resumed once none does.
 */
import type { WebSocket } from 'ws';

export type PauseReason = 'backlog' | 'bandwidth';

export class ReadingPause {
  private backlog = false;
  private bandwidth = false;

  constructor(private readonly ws: WebSocket) {}

  isPaused(reason: PauseReason): boolean {
    return reason === 'backlog' ? this.backlog : this.bandwidth;
  }

  /** Pauses reading for `reason`; false when it was paused for it already. */
  pause(reason: PauseReason): boolean {
    if (this.isPaused(reason)) return false;
    this.set(reason, true);
    return true;
  }

  /** Clears `reason`; false when it did not hold. */
  resume(reason: PauseReason): boolean {
    if (!this.isPaused(reason)) return false;
    this.set(reason, false);
    return true;
  }

  private set(reason: PauseReason, paused: boolean): void {
    if (reason === 'backlog') this.backlog = paused;
    else this.bandwidth = paused;
    const pause = this.backlog || this.bandwidth;
    if (pause && !this.ws.isPaused) this.ws.pause();
    else if (!pause && this.ws.isPaused) this.ws.resume();
  }
}
