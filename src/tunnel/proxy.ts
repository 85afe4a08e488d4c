/**
 * The runner: connect → session → (reconnect) → done.
 *
 *   connectWithRetry ──► Session ──► close frame from the service ──► done (exit 0)
 *         ▲                  │
 *         └── backoff ◄──────┴── abrupt loss (error, keepalive dead) ──► reconnect
 *
 * Source listeners outlive sessions; connections never do (every one is reset when its
 * session ends, 3.7).
 */
import type { Socket } from 'node:net';
import { ExitCode, ExitError } from '../exit';
import type { ProxyOptions, ServiceTarget, SourceTarget } from '../options';
import { MAX_PRINTED_ITEMS, printable, printableList } from '../printable';
import { Backoff, connectWithRetry, startKeepalive, type ServiceConnection } from '../transport';
import { CLOSE_HANDSHAKE_TIMEOUT_MS, STABLE_SESSION_MS } from './flow';
import { connectDestination } from './destination';
import { Session } from './session';
import { Listeners } from './source';

export interface LocalProxy {
  /** First SERVICE_IDS handled and (source) every listener bound; rejects if done first. */
  ready: Promise<void>;
  /** Source: service id → bound port. */
  ports(): Map<string, number>;
  /** Resets local connections, closes the WebSocket with 1000; done → exit 0. */
  close(): Promise<void>;
  /** How it ended; never rejects. */
  done: Promise<{ exitCode: number; message: string }>;
}

export interface Outcome {
  exitCode: number;
  message: string;
}

/** How one session ended. */
type SessionEnd = { kind: 'lost'; message: string } | { kind: 'final'; outcome: Outcome };

const CLOSE_NORMAL = 1000;
const CLOSE_ABNORMAL = 1006;

/**
 * Completes the configured mapping with the received service ids (behaviour spec 4.5).
 * `ids` undefined: a 1.0 subprotocol, which carries none.
 */
export function completeMapping(options: ProxyOptions, ids: string[] | undefined): Map<string, ServiceTarget> | Outcome {
  const configured = options.services;
  const keys = [...configured.keys()];
  const v1Form = keys.length === 1 && keys[0] === '';
  const log = options.log;
  if (ids === undefined) {
    const mapping = configured.size > 0 ? configured : options.configDirMappings ?? new Map();
    if (mapping.size === 0) return { exitCode: ExitCode.USAGE, message: 'No port mapping exists: the 1.0 protocol names no services, so give -s/-d with a port' };
    return new Map(mapping);
  }
  if (options.clientType === 'V1' && ids.length > 1) {
    // Messages without a service id are refused by the service in such a tunnel (and the
    // reference sends them all to the first service): fail now, with the reason.
    return {
      exitCode: ExitCode.REFUSED,
      message: `-y V1 cannot be used with a tunnel of several services [${printableList(ids)}]: the V1 message format carries no service id. Open the tunnel with one service, or start the local proxy without -y V1.`,
    };
  }
  if (v1Form) {
    if (ids.length === 1) {
      log.info(`Updated port mapping for v1 format: ${printable(ids[0])} = ${describe(configured.get('')!)}`);
      return new Map([[ids[0], configured.get('')!]]);
    }
    if (ids.length > 1) {
      // Messages without a service id are refused by the service in such a tunnel (the
      // reference keeps going and its first connection ends the session): fail now.
      const flag = options.mode === 'source' ? '-s' : '-d';
      return {
        exitCode: ExitCode.REFUSED,
        message: `The tunnel has several services [${printableList(ids)}] but ${flag} ${describe(configured.get('')!)} names none: give one mapping per service, e.g. ${flag} ${ids.slice(0, MAX_PRINTED_ITEMS).map((id, i) => `${printable(id)}=${i === 0 ? describe(configured.get('')!) : 'PORT'}`).join(',')}`,
      };
    }
    return new Map(configured);
  }
  if (configured.size > 0) {
    const missing = ids.filter((id) => !configured.has(id));
    const extra = keys.filter((id) => !ids.includes(id));
    if (missing.length > 0 || extra.length > 0) {
      return {
        exitCode: ExitCode.REFUSED,
        message: `Wrong configurations detected in local proxy: the tunnel has service ids [${printableList(ids)}] but this proxy is configured for [${keys.join(', ')}]. Please start the local proxy with the tunnel's service ids.`,
      };
    }
    return new Map(ids.map((id) => [id, configured.get(id)!]));
  }
  // No -s/-d mapping: the config directory, then (source) free ports for the rest.
  const fromDir = options.configDirMappings ?? new Map<string, ServiceTarget>();
  const mapping = new Map<string, ServiceTarget>();
  const absent: string[] = [];
  for (const id of ids) {
    const target = fromDir.get(id);
    if (target) mapping.set(id, target);
    else if (options.mode === 'source') mapping.set(id, { kind: 'tcp', port: 0 });
    else absent.push(id);
  }
  if (ids.length === 0) for (const [id, target] of fromDir) mapping.set(id, target);
  if (absent.length > 0 || mapping.size === 0) {
    return {
      exitCode: ExitCode.USAGE,
      message: `No port mapping exists for service id${absent.length === 1 ? '' : 's'} ${printableList(absent) || '(none)'}: fail to start local proxy in destination mode. Give -d ${absent[0] === undefined ? 'SERVICE' : printable(absent[0])}=PORT or a --config-dir file.`,
    };
  }
  log.info('Use port mapping:');
  for (const [id, target] of mapping) log.info(`${printable(id)} = ${describe(target)}`);
  return mapping;
}

function describe(target: ServiceTarget): string {
  if (target.kind === 'unix') return target.path;
  return target.host ? `${target.host}:${target.port}` : String(target.port);
}

/** Runs a source or destination until the tunnel closes, it fails for good, or `close()`. */
export function startProxy(options: ProxyOptions): LocalProxy {
  const log = options.log;
  const settings = options.settings;
  const abort = new AbortController();
  const backoff = new Backoff(settings.retryDelayMs, settings.retryMaxDelayMs);
  let session: Session | undefined;
  let current: ServiceConnection | undefined;
  let closing = false;
  let finished: Outcome | undefined;
  let endSession: ((end: SessionEnd) => void) | undefined;

  let readyResolve!: () => void;
  let readyReject!: (err: Error) => void;
  let isReady = false;
  const ready = new Promise<void>((resolve, reject) => {
    readyResolve = resolve;
    readyReject = reject;
  });
  ready.catch(() => {});

  const listeners = new Listeners({
    accept(serviceId: string, socket: Socket): boolean {
      if (!session || !session.started) return false;
      session.accept(serviceId, socket);
      return true;
    },
  }, settings, options.bindAddress, log);

  function finish(outcome: Outcome): void {
    if (finished) return;
    finished = outcome;
    endSession?.({ kind: 'final', outcome });
  }

  async function bindAll(s: Session): Promise<void> {
    try {
      for (const svc of s.services.values()) {
        if (listeners.has(svc.id)) continue;
        await listeners.bind(svc.id, svc.target as SourceTarget);
      }
    } catch (err) {
      if (closing) return;
      finish({ exitCode: ExitCode.FAILURE, message: `Source local proxy fails to bind address: ${(err as Error).message}` });
      return;
    }
    if (session !== s) return;
    listeners.drain();
    markReady();
  }

  function markReady(): void {
    if (isReady) return;
    isReady = true;
    readyResolve();
  }

  function runSession(conn: ServiceConnection): Promise<SessionEnd> {
    return new Promise<SessionEnd>((resolve) => {
      const { ws } = conn;
      const slog = log;
      let settled = false;
      const settle = (end: SessionEnd): void => {
        if (settled) return;
        settled = true;
        endSession = undefined;
        stopKeepalive();
        ws.off('close', onClose);
        s.end();
        if (session === s) session = undefined;
        resolve(end);
      };
      endSession = settle;
      const s = new Session({
        ws,
        version: conn.version,
        options,
        log: slog,
        hooks: {
          completeMapping(ids) {
            const result = completeMapping({ ...options, log: slog }, ids);
            if (result instanceof Map) return result;
            finish(result);
            return undefined;
          },
          onStarted(started) {
            if (options.mode === 'source') void bindAll(started);
            else markReady();
          },
          connect(c, target) {
            connectDestination(c, target, options.bindAddress);
          },
        },
      });
      session = s;
      // The keepalive must know when the reader is paused for slow apps: pongs are not read then.
      const stopKeepalive = startKeepalive(ws, {
        periodMs: settings.pingPeriodMs,
        maxMissed: settings.maxMissedPings,
        log: slog,
        readerPaused: () => s.inbound.isPaused,
        onDead: () => ws.terminate(),
      });
      const onClose = (code: number, reasonBuf: Buffer): void => {
        const reason = reasonBuf.toString();
        if (closing) {
          settle({ kind: 'final', outcome: { exitCode: ExitCode.OK, message: 'closed' } });
          return;
        }
        if (code !== CLOSE_ABNORMAL) {
          slog.info(`Web socket close received. Code: ${code}; Reason: ${printable(reason)}`);
          settle({ kind: 'final', outcome: { exitCode: ExitCode.OK, message: `the service closed the tunnel (code ${code}${reason ? `: ${printable(reason)}` : ''})` } });
          return;
        }
        settle({ kind: 'lost', message: 'the service connection was lost' });
      };
      ws.on('close', onClose);
      ws.on('error', (err: Error) => slog.error(`Web socket error: ${options.log.scrub(err.message)}`));
      if (conn.version === 1) s.startWithoutServiceIds();
    });
  }

  async function run(): Promise<Outcome> {
    let delayFirst = false;
    for (;;) {
      let conn: ServiceConnection;
      try {
        conn = await connectWithRetry(options, { signal: abort.signal, backoff, delayFirst });
      } catch (err) {
        if (closing || abort.signal.aborted) return finished ?? { exitCode: ExitCode.OK, message: 'closed' };
        if (err instanceof ExitError) return { exitCode: err.exitCode, message: err.message };
        return { exitCode: ExitCode.FAILURE, message: options.log.scrub(String((err as Error)?.message ?? err)) };
      }
      if (closing) {
        conn.ws.close(CLOSE_NORMAL);
        return finished ?? { exitCode: ExitCode.OK, message: 'closed' };
      }
      current = conn;
      log.debug(`Web socket session ID: ${conn.channelId || '(none)'}; protocol V${conn.version}`);
      const startedAt = Date.now();
      const end = await runSession(conn);
      current = undefined;
      if (end.kind === 'final') {
        if (conn.ws.readyState === conn.ws.OPEN) {
          conn.ws.close(CLOSE_NORMAL);
          setTimeout(() => conn.ws.terminate(), CLOSE_HANDSHAKE_TIMEOUT_MS).unref();
        }
        return finished ?? end.outcome;
      }
      if (!settings.reconnectOnDataError) return { exitCode: ExitCode.FAILURE, message: end.message };
      const lived = Date.now() - startedAt;
      if (lived > STABLE_SESSION_MS) backoff.reset();
      delayFirst = lived <= STABLE_SESSION_MS;
      log.error(`${end.message}${conn.channelId ? ` (web socket session ID: ${conn.channelId})` : ''}; reconnecting`);
    }
  }

  const done: Promise<Outcome> = run()
    .catch((err: unknown): Outcome => ({ exitCode: ExitCode.FAILURE, message: `internal error: ${options.log.scrub(String((err as Error)?.message ?? err))}` }))
    .then(async (outcome) => {
      finished ??= outcome;
      listeners.close();
      if (!isReady) readyReject(new Error(finished.message));
      if (finished.exitCode !== ExitCode.OK) log.error(finished.message);
      return finished;
    });

  async function close(): Promise<void> {
    if (closing) {
      await done;
      return;
    }
    closing = true;
    abort.abort(new Error('closing'));
    const s = session;
    const conn = current;
    if (s && conn) {
      s.resetAll('the proxy is closing');
      conn.ws.close(CLOSE_NORMAL);
      const timer = setTimeout(() => conn.ws.terminate(), CLOSE_HANDSHAKE_TIMEOUT_MS);
      timer.unref();
      conn.ws.once('close', () => clearTimeout(timer));
    } else {
      finish({ exitCode: ExitCode.OK, message: 'closed' });
    }
    await done;
  }

  return {
    ready,
    ports: () => listeners.ports(),
    close,
    done,
  };
}
