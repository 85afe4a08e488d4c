/**
 * Connecting with retries (Decisions 2): `connect_retry_count` retries (-1 forever, 0 none),
 * exponential delays from `retry_delay_ms` with full jitter up to `retry_max_delay_ms`.
 * A 4xx is never retried. How it ended is a typed outcome; exit codes are the CLI's business.
 */
import type { ProxyOptions } from '../options';
import { connectToService, type ConnectOptions, type ServiceConnection } from './connect';
import { isConnectError, type ConnectError } from './errors';
import { hostPort } from './sockets';

/** Exponent ceiling, so `base * 2 ** n` never overflows into Infinity. */
const MAX_DOUBLINGS = 30;

/**
 * Full-jitter exponential backoff: the n-th delay is uniform in
 * [0, min(cap, base * 2^n)]. The caller resets it once a session has proved stable.
 */
export class Backoff {
  readonly baseMs: number;
  readonly capMs: number;
  private attempt = 0;
  private readonly random: () => number;

  constructor(baseMs: number, capMs: number, random: () => number = Math.random) {
    this.baseMs = Math.max(0, baseMs);
    this.capMs = Math.max(this.baseMs, capMs);
    this.random = random;
  }

  /** The upper bound of the next delay. */
  ceiling(): number {
    return Math.min(this.capMs, this.baseMs * 2 ** Math.min(this.attempt, MAX_DOUBLINGS));
  }

  next(): number {
    const delay = Math.floor(this.random() * (this.ceiling() + 1));
    this.attempt++;
    return Math.min(delay, this.capMs);
  }

  reset(): void {
    this.attempt = 0;
  }
}

export interface RetryOptions {
  signal?: AbortSignal;
  backoff?: Backoff;
  /** Wait one backoff delay before the first attempt (a reconnect after a lost session). */
  delayFirst?: boolean;
  /** Passed to each attempt (tests shorten the attempt bound). */
  connect?: ConnectOptions;
  /** Each failed attempt that will be retried, with the line logged for it. */
  onRetry?: (message: string) => void;
}

/** How connectWithRetry ended. `message` is one line, scrubbed of secrets. */
export type RetryOutcome =
  | { kind: 'connected'; connection: ServiceConnection }
  /** The service refused the upgrade (HTTP 4xx): not retried. */
  | { kind: 'refused'; message: string; error: ConnectError }
  /** Every attempt failed and the retries are used up. */
  | { kind: 'gave-up'; message: string; error: ConnectError }
  /** `signal` aborted the attempts (or the wait between them). */
  | { kind: 'aborted'; reason: unknown };

/**
 * Attempts until one succeeds, the service refuses, the retries are used up or `signal`
 * aborts; never rejects for those. Anything else thrown on the way is a bug and rejects.
 */
export async function connectWithRetry(options: ProxyOptions, retry: RetryOptions = {}): Promise<RetryOutcome> {
  const { log, settings } = options;
  const { signal } = retry;
  const backoff = retry.backoff ?? new Backoff(settings.retryDelayMs, settings.retryMaxDelayMs);
  const allowed = settings.connectRetryCount;
  const endpoint = `wss://${hostPort(options.endpoint.host, options.endpoint.port)}`;
  const aborted = (): RetryOutcome => ({ kind: 'aborted', reason: signal?.reason });
  if (retry.delayFirst) {
    // Said aloud: otherwise the operator sees "reconnecting" and then nothing for up to a minute.
    const wait = backoff.next();
    log.info(`Reconnecting to ${endpoint} in ${wait} ms`);
    if (!(await delay(wait, signal).then(() => true, () => false))) return aborted();
  }
  for (let retries = 0; ; retries++) {
    let error: ConnectError;
    try {
      return { kind: 'connected', connection: await connectToService(options, signal, retry.connect) };
    } catch (err) {
      if (signal?.aborted) return aborted();
      if (!isConnectError(err)) throw err;
      error = err;
    }
    const message = log.scrub(error.message);
    // A refusal is logged once, with its hint, by whoever ends the run with this outcome.
    if (error.refused) return { kind: 'refused', message: log.scrub(`${error.message}; ${error.hint ?? 'check the access token'}`), error };
    log.error(message);
    retry.onRetry?.(message);
    if (allowed !== -1 && retries >= allowed) {
      const tries = allowed === 0 ? 'retries are disabled (websocket.connect_retry_count is 0)' : `gave up after ${allowed} ${allowed === 1 ? 'retry' : 'retries'}`;
      return { kind: 'gave-up', message: `Could not connect to ${endpoint}: ${message} (${tries})`, error };
    }
    const wait = backoff.next();
    const of = allowed === -1 ? '' : ` of ${allowed}`;
    log.info(`Retrying connection to ${endpoint} in ${wait} ms (retry ${retries + 1}${of})`);
    if (!(await delay(wait, signal).then(() => true, () => false))) return aborted();
  }
}

/** Waits `ms`; rejects with `signal.reason` as soon as the signal aborts. */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    function onAbort(): void {
      clearTimeout(timer);
      reject(signal?.reason);
    }
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
