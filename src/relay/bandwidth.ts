/**
 * `localproxy relay --bandwidth BYTES_PER_S`: the cloud's per-tunnel limit, emulated. Each
 * direction of a tunnel (what one peer sends) has a token bucket; while the bucket is in debt
 * the relay stops reading that peer, so the excess waits in the peer's own socket buffers as it
 * does in front of the cloud (TCP backpressure), and nothing queues in the relay.
 *
 * TokenBucket is pure (the caller passes the time); BandwidthLimit pauses and resumes one
 * peer's reading by it.
 */
import type { ReadingPause } from './reading';

/** Tokens saved up while a sender is idle, in time at the rate: a short burst passes at once. */
export const BANDWIDTH_BURST_MS = 50;
/**
 * With a rate, the relay's queue towards a peer (bytes forwarded but not yet written to its
 * socket) is bounded by time at that rate instead of a fixed byte count, so a slow receiver
 * pauses its sender after a few tens of ms of data, not after seconds of it.
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

/**
 * One peer's `--bandwidth`: bytes read from it are charged to its bucket; while the bucket is
 * in debt the peer is not read, so what it sends beyond the rate waits in its own socket
 * buffers, in front of its pings, as in front of the cloud. The relay's ping answers are never
 * paused: a ping is answered when it is read.
 */
export class BandwidthLimit {
  private readonly bucket: TokenBucket;
  private timer?: NodeJS.Timeout;

  constructor(rate: number, private readonly reading: ReadingPause) {
    this.bucket = new TokenBucket(rate, Date.now());
  }

  /** `bytes` were read from the peer: it is paused until the bucket is out of debt. */
  charge(bytes: number): void {
    const now = Date.now();
    this.bucket.take(bytes, now);
    if (this.reading.isPaused('bandwidth')) return;
    const wait = this.bucket.waitMs(now);
    if (wait <= 0) return;
    this.reading.pause('bandwidth');
    this.timer = setTimeout(this.onTimer, wait);
  }

  /** The peer is closing or gone: its reading is no longer paused by the rate. */
  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.reading.resume('bandwidth');
  }

  private readonly onTimer = (): void => {
    this.timer = undefined;
    const wait = this.bucket.waitMs(Date.now());
    if (wait > 0) {
      this.timer = setTimeout(this.onTimer, wait);
      return;
    }
    this.stop();
  };
}
