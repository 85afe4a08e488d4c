/**
 * Faults injected into a relay under test (src/relay/faults.ts): pass `faults` in the relay's
 * options, then `set` them at any time; the relay asks on each upgrade and each ping.
 */
import type { RelayFaults } from '../../src/relay/faults';

export class TestFaults implements RelayFaults {
  private rejects?: { status: number; count: number };
  private pings = true;

  /** `rejectHandshakes`: answer the next `count` upgrades with `status`; `answerPings` false: a dead service. */
  set(faults: { rejectHandshakes?: { status: number; count: number }; answerPings?: boolean }): void {
    if (faults.rejectHandshakes) this.rejects = { ...faults.rejectHandshakes };
    if (faults.answerPings !== undefined) this.pings = faults.answerPings;
  }

  rejectUpgrade(): number | undefined {
    const rejects = this.rejects;
    if (!rejects || rejects.count <= 0) return undefined;
    rejects.count--;
    return rejects.status;
  }

  answerPings(): boolean {
    return this.pings;
  }
}
