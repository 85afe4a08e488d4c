/**
 * Which queued frame goes on the wire next (Decisions 4). Every producer (a tunneled
 * connection, or the session for its own control messages) has a queue of encoded frames;
 * the scheduler takes from them round-robin, one frame per producer per turn, so an
 * interactive connection's frame waits behind at most one frame of each bulk connection.
 *
 * Pure: no I/O, no timers. The owner (outbound.ts) decides how many bytes to take and when.
 */
export class Scheduler<K> {
  private readonly queues = new Map<K, { frames: Buffer[]; bytes: number }>();
  /** Producers with a non-empty queue, in serving order. */
  private readonly ring: K[] = [];
  private total = 0;

  /** Bytes queued, all producers together. */
  get queuedBytes(): number {
    return this.total;
  }

  /** Bytes queued by one producer. */
  queued(key: K): number {
    return this.queues.get(key)?.bytes ?? 0;
  }

  push(key: K, frame: Buffer): void {
    let queue = this.queues.get(key);
    if (!queue) {
      queue = { frames: [], bytes: 0 };
      this.queues.set(key, queue);
      this.ring.push(key);
    }
    queue.frames.push(frame);
    queue.bytes += frame.length;
    this.total += frame.length;
  }

  /**
   * Takes frames round-robin until at least `bytes` are taken or nothing is left, into
   * `out`; `emptied` receives each producer whose queue it emptied.
   */
  take(bytes: number, out: Buffer[], emptied: K[]): number {
    let taken = 0;
    while (taken < bytes && this.ring.length > 0) {
      const key = this.ring.shift()!;
      const queue = this.queues.get(key)!;
      const frame = queue.frames.shift()!;
      queue.bytes -= frame.length;
      this.total -= frame.length;
      taken += frame.length;
      out.push(frame);
      if (queue.frames.length > 0) {
        this.ring.push(key);
      } else {
        this.queues.delete(key);
        emptied.push(key);
      }
    }
    return taken;
  }

  /** Forgets a producer's queued frames; returns how many bytes they were. */
  drop(key: K): number {
    const queue = this.queues.get(key);
    if (!queue) return 0;
    this.queues.delete(key);
    this.ring.splice(this.ring.indexOf(key), 1);
    this.total -= queue.bytes;
    return queue.bytes;
  }

  clear(): void {
    this.queues.clear();
    this.ring.length = 0;
    this.total = 0;
  }
}
