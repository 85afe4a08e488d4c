/**
 * Which queued frame goes on the wire next (Decisions 4, issue 13). Every producer (a tunneled
 * connection, or the session for its own control messages) has a queue of encoded frames.
 *
 * The rule is fq_codel's (RFC 8290 §4.1-4.2), with bytes for packets:
 * - a producer whose queue was empty, and which has not been served since (it sends little:
 *   a keystroke, an echo, a request), joins the *new* list, which is served first;
 * - everybody else is in the *old* list, served by deficit round robin: each turn a producer
 *   may send while its deficit is positive, and gets `quantum` more bytes when it runs out and
 *   goes to the back. Two bulk transfers share the link evenly, in bytes, whatever their frame sizes;
 * - a new producer that is served moves to the old list when it has used its quantum or emptied
 *   its queue; it becomes new again only once a round of the old list has passed it by empty. A
 *   producer that keeps its queue non-empty can therefore never stay in front.
 *
 * Pure: no I/O, no timers. The owner (outbound.ts) decides how many bytes to take and when.
 */

/** Bytes a producer may send per round of the old list (one full DATA message). */
import { Fifo } from './fifo';

export const DEFAULT_QUANTUM_BYTES = 64 * 1024;

interface Flow {
  frames: Fifo<Buffer>;
  bytes: number;
  deficit: number;
  /** Which list holds it; a flow in no list has no queue and is forgotten. */
  list: 'new' | 'old';
}

export class Scheduler<K> {
  private readonly flows = new Map<K, Flow>();
  private readonly newFlows: K[] = [];
  private readonly oldFlows: K[] = [];
  private total = 0;

  constructor(public quantum: number = DEFAULT_QUANTUM_BYTES) {}

  /** Bytes queued, all producers together. */
  get queuedBytes(): number {
    return this.total;
  }

  /** Producers the scheduler knows (with a queue, or emptied and not yet forgotten). */
  get size(): number {
    return this.flows.size;
  }

  has(key: K): boolean {
    return this.flows.has(key);
  }

  /** Bytes queued by one producer. */
  queued(key: K): number {
    return this.flows.get(key)?.bytes ?? 0;
  }

  /** True when a producer that sends little has something queued (it goes first). */
  get hasNewFlow(): boolean {
    for (const key of this.newFlows) if (this.flows.get(key)!.bytes > 0) return true;
    return false;
  }

  push(key: K, frame: Buffer): void {
    let flow = this.flows.get(key);
    if (!flow) {
      flow = { frames: new Fifo<Buffer>(EMPTY), bytes: 0, deficit: this.quantum, list: 'new' };
      this.flows.set(key, flow);
      this.newFlows.push(key);
    }
    flow.frames.push(frame);
    flow.bytes += frame.length;
    this.total += frame.length;
  }

  /**
   * Takes frames until at least `bytes` are taken or nothing is left, into `out`; `emptied`
   * receives each producer whose queue it emptied. `newOnly`: only from producers of the new
   * list (what may pass while the pacer holds bulk data back).
   */
  take(bytes: number, out: Buffer[], emptied: K[], newOnly = false): number {
    let taken = 0;
    while (taken < bytes) {
      const list = this.newFlows.length > 0 ? this.newFlows : newOnly ? undefined : this.oldFlows;
      if (!list || list.length === 0) break;
      const key = list[0];
      const flow = this.flows.get(key)!;
      if (flow.deficit <= 0) {
        flow.deficit += this.quantum;
        list.shift();
        this.toOld(key, flow);
        continue;
      }
      if (flow.bytes === 0) {
        list.shift();
        // A new flow that emptied stays in the old list for a round: it cannot come back as new
        // at once (RFC 8290 §4.2). An old flow that is still empty is forgotten.
        if (flow.list === 'new') this.toOld(key, flow);
        else this.flows.delete(key);
        continue;
      }
      const frame = flow.frames.shift();
      flow.bytes -= frame.length;
      flow.deficit -= frame.length;
      this.total -= frame.length;
      taken += frame.length;
      out.push(frame);
      if (flow.bytes === 0) emptied.push(key);
    }
    return taken;
  }

  private toOld(key: K, flow: Flow): void {
    flow.list = 'old';
    this.oldFlows.push(key);
  }

  /** Forgets a producer's queued frames; returns how many bytes they were. */
  drop(key: K): number {
    const flow = this.flows.get(key);
    if (!flow) return 0;
    this.flows.delete(key);
    const list = flow.list === 'new' ? this.newFlows : this.oldFlows;
    list.splice(list.indexOf(key), 1);
    this.total -= flow.bytes;
    return flow.bytes;
  }

  clear(): void {
    this.flows.clear();
    this.newFlows.length = 0;
    this.oldFlows.length = 0;
    this.total = 0;
  }
}

const EMPTY = Buffer.alloc(0);
