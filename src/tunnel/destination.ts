/**
 * Destination side: connects a started connection to its local app, with the
 * tcp.connection_retry_count / connection_retry_delay_ms policy. Connecting is asynchronous:
 * other connections keep flowing while one retries (fixes reference bugs 9.1#2, 9.3#22), and
 * a final failure resets only that connection (fixes 9.3#24).
 */
import { connect, type Socket } from 'node:net';
import type { DestinationTarget } from '../options';
import type { Settings } from '../settings';
import type { Connection } from './connection';

/** One attempt to connect to the local application gives up after this (then the retry policy applies). */
export const LOCAL_CONNECT_TIMEOUT_MS = 15_000;

/** `-d 22` → 127.0.0.1:22 (or the `-b` host); IPv6 hosts come without brackets. */
export function describeTarget(target: DestinationTarget, bindAddress?: string): string {
  if (target.kind === 'unix') return target.path;
  const host = target.host ?? bindAddress ?? '127.0.0.1';
  return host.includes(':') ? `[${host}]:${target.port}` : `${host}:${target.port}`;
}

export function connectDestination(conn: Connection, target: DestinationTarget, settings: Settings, bindAddress?: string): void {
  const retries = settings.tcpConnectionRetryCount;
  const log = conn.log;
  const where = describeTarget(target, bindAddress);
  let attempt = 0;
  let aborted = false;
  let socket: Socket | undefined;
  let timer: NodeJS.Timeout | undefined;

  conn.connecting(() => {
    aborted = true;
    clearTimeout(timer);
    socket?.destroy();
  });

  log.info(`Attempting to establish tcp socket connection to: ${where}`);
  const tryOnce = (): void => {
    attempt++;
    let s: Socket;
    try {
      s = target.kind === 'unix'
        ? connect({ path: target.path })
        : connect({ host: target.host ?? bindAddress ?? '127.0.0.1', port: target.port });
    } catch (err) {
      // A target no attempt can reach (a port out of range from a library caller): answer now.
      log.error(`Could not connect to destination ${where} -- ${(err as Error).message}`);
      conn.connectFailed(`giving up on ${where}: ${(err as Error).message}`);
      return;
    }
    socket = s;
    s.pause();
    s.setTimeout(LOCAL_CONNECT_TIMEOUT_MS);
    const onError = (err: Error): void => done(err);
    const onTimeout = (): void => done(new Error(`no answer within ${LOCAL_CONNECT_TIMEOUT_MS} ms`));
    const onConnect = (): void => done();
    s.once('connect', onConnect);
    s.once('error', onError);
    s.once('timeout', onTimeout);
    const done = (err?: Error): void => {
      s.off('connect', onConnect);
      s.off('error', onError);
      s.off('timeout', onTimeout);
      if (aborted) return;
      if (!err) {
        s.setTimeout(0);
        if (target.kind === 'unix') log.info(`Connected to Unix socket: ${target.path}`);
        else log.info(`Connected to ${s.remoteAddress}, port: ${s.remotePort}`);
        conn.attach(s);
        return;
      }
      s.destroy();
      socket = undefined;
      log.error(target.kind === 'unix'
        ? `Could not connect to Unix socket ${target.path} -- ${err.message}`
        : `Could not connect to destination ${where} -- ${err.message}`);
      if (retries >= 0 && attempt > retries) {
        conn.connectFailed(`giving up on ${where} after ${attempt} attempt${attempt === 1 ? '' : 's'}`);
        return;
      }
      timer = setTimeout(tryOnce, settings.tcpConnectionRetryDelayMs);
    };
  };
  tryOnce();
}
