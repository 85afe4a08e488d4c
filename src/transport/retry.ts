/**
 * Connecting with retries (Decisions 2): `connect_retry_count` retries (-1 forever, 0 none),
 * exponential delays from `retry_delay_ms` with full jitter up to `retry_max_delay_ms`.
 * A 4xx is never retried; it ends the process with exit 3.
 */
import { ExitCode, ExitError } from '../exit';
import type { ProxyOptions } from '../options';
import { connectToService, type ConnectOptions, type ServiceConnection } from './connect';
import { isConnectError } from './errors';
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
}

/**
 * Attempts until one succeeds. Rejects with ExitError(REFUSED) on a 4xx, with
 * ExitError(FAILURE) when the retries are used up, and with `signal.reason` when aborted.
 */
export async function connectWithRetry(options: ProxyOptions, retry: RetryOptions = {}): Promise<ServiceConnection> {
  const { log, settings } = options;
  const { signal } = retry;
  const backoff = retry.backoff ?? new Backoff(settings.retryDelayMs, settings.retryMaxDelayMs);
  const allowed = settings.connectRetryCount;
  const endpoint = `wss://${hostPort(options.endpoint.host, options.endpoint.port)}`;
  if (retry.delayFirst) {
    // Said aloud: otherwise the operator sees "reconnecting" and then nothing for up to a minute.
    const wait = backoff.next();
    log.info(`Reconnecting to ${endpoint} in ${wait} ms`);
    await delay(wait, signal);
  }
  for (let retries = 0; ; retries++) {
    try {
      return await connectToService(options, signal, retry.connect);
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      if (!isConnectError(err)) {
        throw new ExitError(ExitCode.FAILURE, log.scrub(`Internal error while connecting to ${endpoint}: ${(err as Error)?.message ?? String(err)}`), { cause: err });
      }
      const message = log.scrub(err.message);
      // A refusal is logged once, with its hint, by whoever ends the run with this error.
      if (err.refused) {
        throw new ExitError(ExitCode.REFUSED, log.scrub(`${err.message}; ${err.hint ?? 'check the access token'}`), { cause: err });
      }
      log.error(message);
      if (allowed !== -1 && retries >= allowed) {
        const tries = allowed === 0 ? 'retries are disabled (websocket.connect_retry_count is 0)' : `gave up after ${allowed} ${allowed === 1 ? 'retry' : 'retries'}`;
        throw new ExitError(ExitCode.FAILURE, `Could not connect to ${endpoint}: ${message} (${tries})`, { cause: err });
      }
      const wait = backoff.next();
      const of = allowed === -1 ? '' : ` of ${allowed}`;
      log.info(`Retrying connection to ${endpoint} in ${wait} ms (retry ${retries + 1}${of})`);
      await delay(wait, signal);
    }
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
