/**
 * Waiting with a hard bound. Tests wait on events and promises; a timer is only ever the
 * failure bound, so a broken tunnel fails the test with a message naming what never happened
 * instead of hanging the file until the runner kills it.
 */
import { once, type EventEmitter } from 'node:events';
import { createServer } from 'node:net';

/** Resolves like `promise`, or rejects with "<what> did not happen within <ms> ms". */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms);
  });
  return Promise.race([promise, bound]).finally(() => clearTimeout(timer));
}

/** The arguments of the next `event` on `emitter`, bounded by `ms`. Rejects on 'error'. */
export function waitForEvent<T extends unknown[] = unknown[]>(emitter: EventEmitter, event: string, ms: number): Promise<T> {
  return within(once(emitter, event) as Promise<T>, ms, `event '${event}'`);
}

/** Resolves when `check()` returns true, re-checked on every `event` of `emitter`; bounded by `ms`. */
export function waitUntil(emitter: EventEmitter, event: string, check: () => boolean, ms: number, what: string): Promise<void> {
  if (check()) return Promise.resolve();
  let listener: (() => void) | undefined;
  const done = new Promise<void>((resolve) => {
    listener = () => { if (check()) resolve(); };
    emitter.on(event, listener);
  });
  return within(done, ms, what).finally(() => emitter.off(event, listener!));
}

/**
 * A TCP port that was free a moment ago on 127.0.0.1 ("picked, not held"): only for programs
 * that cannot listen on port 0 and report the port (sshd, the CLI's `-s`).
 */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
