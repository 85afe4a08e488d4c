/**
 * The inbound budget (Decisions 4): each DATA payload is written to its app socket at once;
 * the budget counts the bytes not yet taken by the kernel, for all apps of the session
 * together, and pauses the WebSocket reader only when that total exceeds the budget (resumed
 * below half). A slow app therefore delays nobody until the shared budget is used up.
 *
 * It is the backstop for peers without per-connection credit (issue 14): with credit, a peer
 * never sends more than a connection's window, and the budget is not reached.
 */

/** What the budget pauses: the WebSocket (ws's pause()/resume()). */
export interface Reader {
  pause(): void;
  resume(): void;
}

export class InboundBudget {
  private pending = 0;
  private paused = false;

  constructor(private readonly reader: Reader, private readonly budgetBytes: number) {}

  get pendingBytes(): number {
    return this.pending;
  }

  /** True while the reader is paused for the apps (pongs are not read either). */
  get isPaused(): boolean {
    return this.paused;
  }

  /** Bytes received for an app and not yet taken by its socket. */
  retain(n: number): void {
    this.pending += n;
    if (!this.paused && this.pending > this.budgetBytes) {
      this.paused = true;
      this.reader.pause();
    }
  }

  /** Bytes the kernel took (or that were dropped). */
  release(n: number): void {
    this.pending -= n;
    if (this.paused && this.pending < this.budgetBytes / 2) {
      this.paused = false;
      this.reader.resume();
    }
  }
}
