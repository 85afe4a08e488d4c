/**
 * A first-in first-out queue on an array with a head index: taking from the front costs no
 * shift (quadratic on a long queue); the array is compacted once the taken part is at least
 * half of it. Used by the scheduler's per-producer queues and the relay's barrier queue.
 */
export class Fifo<T> {
  private items: T[] = [];
  private head = 0;

  constructor(private readonly gone: T) {}

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    this.items.push(item);
  }

  /** The first item, or undefined when empty. */
  peek(): T | undefined {
    return this.head < this.items.length ? this.items[this.head] : undefined;
  }

  /** Removes and returns the first item; the queue must not be empty. */
  shift(): T {
    const item = this.items[this.head];
    // The taken slot no longer holds the item (its memory can go before the next compaction).
    this.items[this.head++] = this.gone;
    if (this.head === this.items.length) this.clear();
    else if (this.head >= 64 && this.head * 2 >= this.items.length) {
      this.items.splice(0, this.head);
      this.head = 0;
    }
    return item;
  }

  clear(): void {
    this.items.length = 0;
    this.head = 0;
  }
}
