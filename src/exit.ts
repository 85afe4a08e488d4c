/**
 * Process exit codes (Decisions 1), documented in the README and `--help`. The library reports
 * how a run ended as a typed outcome; only the entry points (src/main.ts, the CLIs) turn it
 * into an exit code, here.
 */
import type { ProxyOutcome } from './tunnel/proxy';

export const ExitCode = {
  /** Normal stop: signal, tunnel closed by the service, --help, --version, --export-default-settings. */
  OK: 0,
  /** Runtime failure: connect retries exhausted, cannot bind after retries, internal error. */
  FAILURE: 1,
  /** Usage or configuration error: bad flag or value, missing token, unreadable file. */
  USAGE: 2,
  /** Refused by the service or the tunnel: handshake 4xx, SERVICE_IDS that do not match. */
  REFUSED: 3,
} as const;

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/** An error that ends the process with a given code and a one-line message. */
export class ExitError extends Error {
  readonly exitCode: ExitCodeValue;
  constructor(exitCode: ExitCodeValue, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ExitError';
    this.exitCode = exitCode;
  }
}

/** A usage or configuration error (exit 2) with its one-line message. */
export function usageError(message: string): ExitError {
  return new ExitError(ExitCode.USAGE, message);
}

/** The exit code for how a proxy run ended. */
export function exitCodeOf(outcome: Pick<ProxyOutcome, 'kind'>): ExitCodeValue {
  switch (outcome.kind) {
    case 'closed':
    case 'tunnel-closed':
      return ExitCode.OK;
    case 'misconfigured':
      return ExitCode.USAGE;
    case 'refused':
      return ExitCode.REFUSED;
    case 'failed':
      return ExitCode.FAILURE;
  }
}
