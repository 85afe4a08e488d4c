/**
 * `localproxy relay --bandwidth BYTES_PER_S`: the cloud's per-tunnel limit, emulated. Each
 * direction of a tunnel (what one peer sends) has a token bucket; while the bucket is in debt
 * the relay stops reading that peer, so the excess waits in the peer's own socket buffers as it
 * does in front of the cloud (TCP backpressure), and nothing queues in the relay.
 *
 * Pure: the caller passes the time, and pauses and resumes the reader itself.
 */

/** Tokens saved up while a sender is idle, in time at the rate: a short burst passes at once. */
export const BANDWIDTH_BURST_MS = 50;
/**
 * With a rate, the relay's queue towards a peer (bytes forwarded but not yet written to its
 * socket) is bounded by time at that rate instead of a fixed byte count, so a slow receiver
 * holds back its sender after a few tens of ms of data, not after seconds of it.
 */
export const BANDWIDTH_QUEUE_MS = 100;
/** The queue bound never goes below this (one DATA message and its framing fit). */
export const MIN_QUEUE_BYTES = 64 * 1024;

export class TokenBucket {
  private tokens: number;
  private last: number;
  readonly burstBytes: number;

  /** `rate` in bytes per second (> 0); the bucket starts full. */
  constructor(readonly rate: number, now: number, burstMs = BANDWIDTH_BURST_MS) {
    this.burstBytes = Math.max(1, Math.round((rate * burstMs) / 1000));
    this.tokens = this.burstBytes;
    this.last = now;
  }

  private refill(now: number): void {
    if (now > this.last) {
      this.tokens = Math.min(this.burstBytes, this.tokens + ((now - this.last) * this.rate) / 1000);
      this.last = now;
    }
  }

  /** Bytes read from the sender; the balance may go negative (what was read is never refused). */
  take(bytes: number, now: number): void {
    this.refill(now);
    this.tokens -= bytes;
  }

  /** Milliseconds until the balance is back to zero: 0 when reading may go on now. */
  waitMs(now: number): number {
    this.refill(now);
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens * 1000) / this.rate);
  }
}

/** The relay's bound on its queue towards one peer: time at the rate, or `fixed` without a rate. */
export function queueBoundBytes(rate: number | undefined, fixed: number): number {
  if (!rate) return fixed;
  return Math.max(MIN_QUEUE_BYTES, Math.round((rate * BANDWIDTH_QUEUE_MS) / 1000));
}
