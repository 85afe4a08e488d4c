/** Collects a relay's peer events (RelayOptions.onEvent) and waits for one, bounded. */
import type { PeerEvent } from '../../src/relay/server';
import { within } from '../helpers/wait';

export class EventLog {
  readonly events: PeerEvent[] = [];
  private waiters: Array<() => void> = [];

  /** Pass as `onEvent` to startRelay. */
  readonly onEvent = (event: PeerEvent): void => {
    this.events.push(event);
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  };

  /** The first event (already seen or coming) for which `match` holds. */
  async waitFor<T extends PeerEvent['type']>(type: T, match: (e: Extract<PeerEvent, { type: T }>) => boolean = () => true, ms = 5000): Promise<Extract<PeerEvent, { type: T }>> {
    const deadline = Date.now() + ms;
    for (;;) {
      const found = this.events.find((e): e is Extract<PeerEvent, { type: T }> => e.type === type && match(e as Extract<PeerEvent, { type: T }>));
      if (found) return found;
      await within(new Promise<void>((resolve) => this.waiters.push(resolve)), Math.max(1, deadline - Date.now()), `relay event '${type}'`);
    }
  }
}
