/** Log lines of an in-process agent, kept for assertions and awaited with a bound. */
import { EventEmitter } from 'node:events';
import { waitUntil } from '../helpers/wait';

export class Lines extends EventEmitter {
  text = '';

  /** The sink to give a Logger. */
  readonly sink = (line: string): void => {
    this.text += line;
    if (process.env.LOCALPROXY_TEST_LOG) process.stderr.write(`agent: ${line}`);
    this.emit('line');
  };

  /** Resolves once `pattern` matches the text after offset `from`. */
  waitFor(pattern: RegExp, ms: number, what: string, from = 0): Promise<void> {
    // The log is shown as it is when the bound runs out, not as it was when the wait began.
    return waitUntil(this, 'line', () => pattern.test(this.text.slice(from)), ms, what).catch((err: Error) => {
      throw new Error(`${err.message} (agent log:\n${this.text.slice(-3000)})`);
    });
  }

  /** Lines (after `from`) containing `text`. */
  count(text: string, from = 0): number {
    return this.text.slice(from).split('\n').filter((line) => line.includes(text)).length;
  }
}
