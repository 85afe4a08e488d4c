/**
 * The one logger of all the agent's tunnels. Each tunnel logs through a fork of it (prefix
 * `tunnel <id>: `), so they share its level, its `limited()` counts and one budget of lines:
 * whoever can publish on the thing's topic can start tunnels at the rate the broker delivers,
 * and each would otherwise write its own lines. Past the budget, lines are counted and one line
 * says how many were left out.
 */
import { Logger, type LoggerOptions } from '../log';

/** Lines from all tunnels together per window; a busy tunnel writes about 3 per connection at info. */
export const TUNNEL_LINES_PER_WINDOW = 300;
export const TUNNEL_LINES_WINDOW_MS = 10_000;

export class TunnelLog {
  /** Fork it per tunnel; never write to it directly. */
  readonly root: Logger;
  private windowStart = 0;
  private written = 0;
  private suppressed = 0;
  private timer: NodeJS.Timeout | undefined;

  /** `report` writes the "left out" line (the agent's own logger, outside the budget). */
  constructor(logging: LoggerOptions, private readonly report: Logger, private readonly budget = TUNNEL_LINES_PER_WINDOW, private readonly windowMs = TUNNEL_LINES_WINDOW_MS) {
    const sink = logging.sink ?? ((line: string) => process.stderr.write(line));
    this.root = new Logger({ ...logging, sink: (line) => this.admit(line, sink) });
  }

  private admit(line: string, sink: (line: string) => void): void {
    const now = Date.now();
    if (now - this.windowStart >= this.windowMs) {
      this.flush();
      this.windowStart = now;
      this.written = 0;
    }
    if (this.written < this.budget) {
      this.written++;
      sink(line);
      return;
    }
    this.suppressed++;
    if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), Math.max(1, this.windowStart + this.windowMs - now));
      this.timer.unref();
    }
  }

  /** Writes the count of lines left out, if any (at the end of a window, and before the agent stops). */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.suppressed === 0) return;
    this.report.warn(`${this.suppressed} log line${this.suppressed === 1 ? '' : 's'} of tunnels left out: over ${this.budget} in ${this.windowMs / 1000} s`);
    this.suppressed = 0;
  }
}
