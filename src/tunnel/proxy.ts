/**
 * The runner: one service connection at a time, for as long as the tunnel lasts.
 *
 *         ┌──────── abrupt loss (reconnect_on_data_error), after a backoff delay ────────┐
 *         ▼                                                                               │
 *   ► connecting ──connected──► session ──┬── close frame from the service ──► done      │
 *         │                        │      └── abrupt loss ──────────────────────────────┘
 *         │                        └── close() / mapping refused / bind failed ──► closing ──► done
 *         └── refused (4xx) / retries used up / close() ──► done
 *
 * Source listeners outlive sessions; connections never do (every one is reset when its
 * session ends, 3.7). Every close of the service connection by our side is logged with its
 * reason (issue 21).
 *
 * A stdio source (`-s stdio`) carries one connection: the run ends when it does, when the service
 * connection is lost (nothing is left to reconnect for), or when no session started within
 * PENDING_ACCEPT_TIMEOUT_MS, as long as any accepted connection waits for one.
 */
import type { Socket } from 'node:net';
import type { Logger } from '../log';
import type { ProxyOptions, SourceTarget } from '../options';
import { printable } from '../printable';
import { CLOSE_ABNORMAL, CLOSE_NORMAL } from '../protocol/constants';
import { Backoff, connectWithRetry, startKeepalive, type ServiceConnection } from '../transport';
import { connectDestination } from './destination';
import { completeMapping } from './mapping';
import { Session } from './session';
import { Listeners, PENDING_ACCEPT_TIMEOUT_MS } from './source';

/** A session that lived longer than this resets the reconnect backoff. */
export const STABLE_SESSION_MS = 30_000;
/** After our close frame, the WebSocket is forced down if the close handshake has not finished within this. */
export const CLOSE_HANDSHAKE_TIMEOUT_MS = 1_500;

/**
 * How a run ended. The CLI maps it to an exit code (src/exit.ts).
 * - closed: `close()` was called;
 * - tunnel-closed: the service closed the tunnel with a close frame;
 * - refused: the service refused the token (HTTP 4xx), or the tunnel's services do not match;
 * - misconfigured: no mapping names a port for the tunnel's services;
 * - failed: retries used up, a listener cannot be bound, the connection was lost without
 *   reconnect_on_data_error, or an internal error.
 */
export interface ProxyOutcome {
  kind: 'closed' | 'tunnel-closed' | 'refused' | 'misconfigured' | 'failed';
  /** One line, scrubbed of secrets. */
  message: string;
}

export interface LocalProxy {
  /** First SERVICE_IDS handled and (source) every listener bound; rejects if done first. */
  ready: Promise<void>;
  /** Source: service id → bound port. */
  ports(): Map<string, number>;
  /** Resets local connections, closes the WebSocket with 1000; done → closed. */
  close(): Promise<void>;
  /** How it ended; never rejects. */
  done: Promise<ProxyOutcome>;
}

/** One service connection and the session on it. */
interface Link {
  conn: ServiceConnection;
  session: Session;
  startedAt: number;
  stopKeepalive: () => void;
  /** Why the connection went down without a close frame, when we know (our keepalive, a ws error). */
  lostReason?: string;
}

type RunnerState =
  | { name: 'connecting' }
  | { name: 'session'; link: Link }
  /** Ending with `outcome`: waiting for the attempt to abort or the WebSocket to close. */
  | { name: 'closing'; outcome: ProxyOutcome }
  | { name: 'done'; outcome: ProxyOutcome };

const CLOSED: ProxyOutcome = { kind: 'closed', message: 'closed' };

class Runner implements LocalProxy {
  readonly ready: Promise<void>;
  readonly done: Promise<ProxyOutcome>;
  private state: RunnerState = { name: 'connecting' };
  /** Replaced once, when the service refused the credit extension (issue 14). */
  private options: ProxyOptions;
  private readonly log: Logger;
  /** Aborts the connect attempts once the run ends. */
  private readonly abort = new AbortController();
  private readonly backoff: Backoff;
  private readonly listeners: Listeners;
  private isReady = false;
  /** A stdio source service: one connection, and the run ends with it. */
  private readonly stdio: boolean;
  private startDeadline?: NodeJS.Timeout;
  /** The last failed connect attempt, for the line that ends a stdio run that never connected. */
  private lastConnectError?: string;
  private resolveReady!: () => void;
  private rejectReady!: (err: Error) => void;
  private resolveDone!: (outcome: ProxyOutcome) => void;

  constructor(options: ProxyOptions) {
    this.options = options;
    this.log = options.log;
    this.backoff = new Backoff(options.settings.retryDelayMs, options.settings.retryMaxDelayMs);
    this.listeners = new Listeners({ accept: (serviceId, socket) => this.accept(serviceId, socket) }, options.settings, options.bindAddress, this.log, options.stdio);
    const mappings = options.services.size > 0 ? options.services : options.configDirMappings ?? new Map();
    this.stdio = options.mode === 'source' && [...mappings.values()].some((target) => target.kind === 'stdio');
    if (this.stdio) this.startDeadline = setTimeout(() => this.startTimedOut(), PENDING_ACCEPT_TIMEOUT_MS);
    this.ready = new Promise<void>((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.ready.catch(() => {});
    this.done = new Promise<ProxyOutcome>((resolve) => { this.resolveDone = resolve; });
  }

  ports(): Map<string, number> {
    return this.listeners.ports();
  }

  async close(): Promise<void> {
    this.end(CLOSED, 'the proxy is closing');
    await this.done;
  }

  /** connecting: one connectWithRetry, then a session or the end. */
  connect(delayFirst: boolean): void {
    this.state = { name: 'connecting' };
    connectWithRetry(this.options, { signal: this.abort.signal, backoff: this.backoff, delayFirst, onRetry: (message) => { this.lastConnectError = message; } })
      .then((result) => {
        const state = this.state;
        if (result.kind === 'connected') {
          if (state.name === 'connecting') return this.openSession(result.connection);
          // close() came after the upgrade completed and before we saw it.
          this.closeService(result.connection, 'the proxy is closing');
          return this.finish(state.name === 'closing' ? state.outcome : CLOSED);
        }
        if (result.kind === 'aborted') return this.finish(state.name === 'closing' ? state.outcome : CLOSED);
        this.finish({ kind: result.kind === 'refused' ? 'refused' : 'failed', message: result.message });
      })
      .catch((err: unknown) => this.finish(this.internalError(err)));
  }

  private openSession(conn: ServiceConnection): void {
    const { options, log } = this;
    const { ws } = conn;
    log.debug(`Web socket session ID: ${conn.channelId || '(none)'}; protocol V${conn.version}`);
    const link = { conn, startedAt: Date.now() } as Link;
    link.session = new Session({
      ws,
      version: conn.version,
      extensions: conn.extensions,
      options,
      log,
      hooks: {
        completeMapping: (ids) => {
          const result = completeMapping(options, ids);
          if (result instanceof Map) return result;
          // The outcome's message is logged as the run ends; the close line only says why.
          this.end(result, result.kind === 'refused' ? "the tunnel's service ids do not match this proxy's" : 'no port mapping for the tunnel');
          return undefined;
        },
        onStarted: () => {
          if (options.mode === 'source') void this.bindAll(link);
          else this.markReady();
        },
        connect: (c, target) => connectDestination(c, target, options.settings, options.bindAddress),
        connectionClosed: () => {
          if (this.stdio) this.stdioEnded(link);
        },
      },
    });
    ws.on('close', (code: number, reason: Buffer) => this.onServiceClose(link, code, reason.toString()));
    ws.on('error', (err: Error) => {
      link.lostReason = log.scrub(err.message);
      log.error(`Web socket error: ${link.lostReason}`);
    });
    this.state = { name: 'session', link };
    // The keepalive must know when the reader is paused for slow apps: pongs are not read then.
    link.stopKeepalive = startKeepalive(ws, {
      periodMs: options.settings.pingPeriodMs,
      maxMissed: options.settings.maxMissedPings,
      log,
      readerPaused: () => link.session.inbound.isPaused,
      onDead: () => this.drop(link, `no pong for ${options.settings.maxMissedPings} pings`),
    });
    if (conn.version === 1) link.session.startWithoutServiceIds();
  }

  private onServiceClose(link: Link, code: number, reason: string): void {
    link.stopKeepalive();
    link.session.end();
    const state = this.state;
    if (state.name === 'closing') return this.finish(state.outcome);
    if (state.name !== 'session' || state.link !== link) return;
    // A stdio run's connection went with the session: there is nothing to reconnect for.
    if (!this.stdio && code !== CLOSE_ABNORMAL && link.session.creditRejectedBy(code) && !/replaced/i.test(reason)) {
      // The service may not take messages of unknown types: once, the run goes on without them.
      this.log.warn(`The service closed the connection (code ${code}${reason ? `: ${printable(reason)}` : ''}) soon after our per-connection credit announcement: reconnecting with tunneling.proxy.extensions.credit off`);
      this.options = { ...this.options, settings: { ...this.options.settings, creditExtension: 'off' } };
      return this.connect(false);
    }
    if (code !== CLOSE_ABNORMAL) {
      this.log.info(`Web socket close received. Code: ${code}; Reason: ${printable(reason)}`);
      return this.finish({ kind: 'tunnel-closed', message: `the service closed the tunnel (code ${code}${reason ? `: ${printable(reason)}` : ''})` });
    }
    const channel = link.conn.channelId ? ` (web socket session ID: ${link.conn.channelId})` : '';
    const lost = `the service connection was lost: ${link.lostReason ?? 'it ended without a close frame'}${channel}`;
    if (!this.options.settings.reconnectOnDataError || this.stdio) return this.finish({ kind: 'failed', message: lost });
    const lived = Date.now() - link.startedAt;
    if (lived > STABLE_SESSION_MS) this.backoff.reset();
    this.log.error(`${lost}; reconnecting`);
    this.connect(lived <= STABLE_SESSION_MS);
  }

  /** Ends the run: connections are reset, the WebSocket closed with 1000; `done` follows its close. */
  private end(outcome: ProxyOutcome, reason: string): void {
    const state = this.state;
    if (state.name === 'closing' || state.name === 'done') return;
    this.state = { name: 'closing', outcome };
    this.abort.abort(new Error(reason));
    if (state.name === 'session') {
      state.link.session.resetAll(reason);
      this.closeService(state.link.conn, reason);
    }
  }

  /** Our side drops the connection without a close frame (the service is not answering); a reconnect follows. */
  private drop(link: Link, reason: string): void {
    link.lostReason = reason;
    this.log.info(`Dropping the service connection: ${reason}`);
    link.conn.ws.terminate();
  }

  /** Our side closes the connection with a close frame, forcing it down if the service does not answer. */
  private closeService(conn: ServiceConnection, reason: string): void {
    const { ws } = conn;
    if (ws.readyState !== ws.OPEN) return;
    this.log.info(`Closing the service connection: ${reason}`);
    ws.close(CLOSE_NORMAL);
    const timer = setTimeout(() => {
      this.log.warn(`The service did not answer our close frame within ${CLOSE_HANDSHAKE_TIMEOUT_MS} ms: dropping the connection`);
      ws.terminate();
    }, CLOSE_HANDSHAKE_TIMEOUT_MS);
    timer.unref();
    ws.once('close', () => clearTimeout(timer));
  }

  /** stdio: the one connection is over, and with it the run. */
  private stdioEnded(link: Link): void {
    const state = this.state;
    if (state.name !== 'session' || state.link !== link) return;
    const socket = this.listeners.stdioSocket();
    // Closed by the far end before it sent a byte: its application refused the connection.
    if (socket && !socket.inputEnded && socket.bytesWritten === 0) {
      this.end({ kind: 'failed', message: 'the destination closed the connection before sending anything: is its application running?' }, 'the stdin/stdout connection was refused');
      return;
    }
    this.end(CLOSED, 'the stdin/stdout connection ended');
  }

  /** stdio: the application on stdin/stdout waits for us, as long as any connection waits for a session. */
  private startTimedOut(): void {
    const last = this.lastConnectError ? `: ${this.lastConnectError}` : '';
    this.end({ kind: 'failed', message: `no connection to the service within ${PENDING_ACCEPT_TIMEOUT_MS / 1000} s${last}` }, 'the service connection did not start in time');
  }

  private finish(outcome: ProxyOutcome): void {
    if (this.state.name === 'done') return;
    clearTimeout(this.startDeadline);
    this.state = { name: 'done', outcome };
    this.abort.abort(new Error('done'));
    this.listeners.close();
    if (!this.isReady) this.rejectReady(new Error(outcome.message));
    if (outcome.kind !== 'closed' && outcome.kind !== 'tunnel-closed') this.log.error(outcome.message);
    this.resolveDone(outcome);
  }

  private internalError(err: unknown): ProxyOutcome {
    return { kind: 'failed', message: `internal error: ${this.log.scrub(String((err as Error)?.message ?? err))}` };
  }

  /** Source: an accepted socket goes to the current session, if there is one that has started. */
  private accept(serviceId: string, socket: Socket): boolean {
    const state = this.state;
    if (state.name !== 'session' || !state.link.session.started) return false;
    state.link.session.accept(serviceId, socket);
    return true;
  }

  private async bindAll(link: Link): Promise<void> {
    try {
      for (const svc of link.session.services.values()) {
        if (this.listeners.has(svc.id)) continue;
        await this.listeners.bind(svc.id, svc.target as SourceTarget);
      }
    } catch (err) {
      this.end({ kind: 'failed', message: `Source local proxy fails to bind address: ${(err as Error).message}` }, 'a listener could not be bound');
      return;
    }
    const state = this.state;
    if (state.name !== 'session' || state.link !== link) return;
    this.listeners.drain();
    this.markReady();
  }

  private markReady(): void {
    if (this.isReady) return;
    this.isReady = true;
    clearTimeout(this.startDeadline);
    this.resolveReady();
  }
}

/** Runs a source or destination until the tunnel closes, it fails for good, or `close()`. */
export function startProxy(options: ProxyOptions): LocalProxy {
  const runner = new Runner(options);
  runner.connect(false);
  return runner;
}
