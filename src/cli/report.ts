/**
 * How every command line reports the error that ends it (Decisions 1): one line naming the
 * problem and the exit code of its ExitError; a usage error adds where help is. Anything
 * else is an internal error, still one line and exit 1, never a stack trace.
 */
import { ExitCode, ExitError } from '../exit';
import { PRODUCT } from '../version';

/** '' for the proxy, or the subcommand whose error this is. */
export type Command = '' | 'relay' | 'tunnel' | 'agent';

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
    const message = scrub(err.message);
    if (err.exitCode !== ExitCode.USAGE) write(command === '' ? `${message}\n` : `${name}: ${message}\n`);
    // The proxy's form is the reference's; the subcommands keep the hint on the same line.
    else if (command === '') write(`${message}\nTry '${name} --help' for a list of options.\n`);
    else write(`${name}: ${message} (try '${name} --help')\n`);
    return err.exitCode;
  }
  write(`${name}: internal error: ${scrub(err instanceof Error ? err.message : String(err))}\n`);
  return ExitCode.FAILURE;
}
