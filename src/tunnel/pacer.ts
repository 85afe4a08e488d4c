/**
 * How many bytes may be handed to the WebSocket now (Decisions 4). Bytes handed to `ws` wait
 * in its queue and in the kernel in the order they were handed, so whatever the scheduler
 * picks next waits behind them: the pacer keeps that queue short. Today it is a fixed window
 * of bytes not yet written by ws (two full WebSocket messages).
 *
 * Pure: fed with what the owner observes, no I/O and no timers, so a delay-based limit (ping
 * round trips against their minimum, issue 13) can replace the window behind the same call.
 */
import { MAX_WS_MESSAGE_BYTES } from '../protocol/constants';

/** Bytes handed to `ws` before waiting for its send callbacks (two full WebSocket messages). */
export const WS_SEND_WINDOW_BYTES = 2 * MAX_WS_MESSAGE_BYTES;

export class Pacer {
  constructor(readonly windowBytes: number = WS_SEND_WINDOW_BYTES) {}

  /** Bytes that may be handed to ws now, given the bytes it holds not yet written (≤ 0: none). */
  room(unwrittenBytes: number): number {
    return this.windowBytes - unwrittenBytes;
  }
}
