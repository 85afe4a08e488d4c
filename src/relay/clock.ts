/**
 * The relay's notion of time for tunnels: creation and update timestamps, and lifetime expiry.
 * Injectable so that a test (or an embedding application) can let 12 hours pass in a moment.
 * Network timeouts (TLS handshake, request, linger) are not tunnel time and use real timers.
 */

export interface ClockTimer {
  /** Cancels the timer; calling it again or after it fired does nothing. */
  cancel(): void;
}

export interface Clock {
  /** Milliseconds since the epoch, like Date.now(). */
  now(): number;
  /** Calls `fn` once `ms` have passed on this clock. The timer never keeps the process alive. */
  setTimer(fn: () => void, ms: number): ClockTimer;
}

/** setTimeout takes at most a signed 32-bit delay; longer ones are chained. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Real time. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer(fn, ms) {
    const due = Date.now() + Math.max(0, ms);
    let timer: NodeJS.Timeout;
    const arm = (): void => {
      const left = due - Date.now();
      timer = setTimeout(left > MAX_TIMER_MS ? arm : fn, Math.min(Math.max(0, left), MAX_TIMER_MS));
      timer.unref();
    };
    arm();
    return { cancel: () => clearTimeout(timer) };
  },
};

interface Pending {
  due: number;
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

/**
 * A clock that moves only when told to: `advance(ms)` runs every timer that falls due, in
 * order of due time, each seeing `now()` at its own due time.
 */
export class ManualClock implements Clock {
  private current: number;
  private seq = 0;
  private pending: Pending[] = [];

  constructor(start = Date.now()) {
    this.current = start;
  }

  now(): number {
    return this.current;
  }

  setTimer(fn: () => void, ms: number): ClockTimer {
    const entry: Pending = { due: this.current + Math.max(0, ms), seq: this.seq++, fn, cancelled: false };
    this.pending.push(entry);
    return { cancel: () => { entry.cancelled = true; } };
  }

  /** Moves time forward by `ms`, running the timers that fall due (also ones they set). */
  advance(ms: number): void {
    const target = this.current + ms;
    for (;;) {
      this.pending = this.pending.filter((p) => !p.cancelled);
      let next: Pending | undefined;
      for (const p of this.pending) if (p.due <= target && (!next || p.due < next.due || (p.due === next.due && p.seq < next.seq))) next = p;
      if (!next) break;
      next.cancelled = true;
      this.current = Math.max(this.current, next.due);
      next.fn();
    }
    this.current = target;
  }
}
