/**
 * How every command line reports the error that ends it (Decisions 1): one line naming the
 * problem and the exit code of its ExitError; a usage error adds where help is. Anything
 * else is an internal error, still one line and exit 1, never a stack trace.
 */
import { ExitCode, ExitError } from '../exit';
import { printable } from '../printable';
import { PRODUCT } from '../version';

/** An error line longer than this is cut: it would only repeat a value from outside. */
const MAX_MESSAGE_CHARS = 2000;

/** '' for the proxy, or the subcommand whose error this is. */
export type Command = '' | 'relay' | 'tunnel' | 'agent' | 'connect';

export interface ErrorReport {
  command?: Command;
  /** Where the line goes; default stderr. */
  write?: (text: string) => void;
  /** Removes secrets from the message before it is written. */
  scrub?: (text: string) => string;
}

export function reportError(err: unknown, { command = '', write = (t) => process.stderr.write(t), scrub = (t) => t }: ErrorReport = {}): number {
  const name = command === '' ? PRODUCT : `${PRODUCT} ${command}`;
  if (err instanceof ExitError) {
    // Every value from outside is made printable where it enters a message; this is the net
    // under those, so no error line can carry a control character to the terminal.
    const message = printable(scrub(err.message), MAX_MESSAGE_CHARS);
    if (err.exitCode !== ExitCode.USAGE) write(command === '' ? `${message}\n` : `${name}: ${message}\n`);
    // The proxy's form is the reference's; the subcommands keep the hint on the same line.
    else if (command === '') write(`${message}\nTry '${name} --help' for a list of options.\n`);
    else write(`${name}: ${message} (try '${name} --help')\n`);
    return err.exitCode;
  }
  write(`${name}: internal error: ${printable(scrub(err instanceof Error ? err.message : String(err)), MAX_MESSAGE_CHARS)}\n`);
  return ExitCode.FAILURE;
}
