/**
 * Source side: one listener per service. Listeners are bound at the first SERVICE_IDS and stay
 * bound across reconnects (the reference closes them, 3.7); a connection accepted while there
 * is no session waits, bounded in number and time, for the next one. A `stdio` service has no
 * listener: its one connection, stdin/stdout (stdio.ts), is accepted when it is "bound".
 */
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../log';
import type { SourceTarget } from '../options';
import { printable } from '../printable';
import type { Settings } from '../settings';
import type { StdioStreams } from '../options';
import { StdioSocket } from './stdio';

/** Connections accepted while there is no session wait this long for the next one. */
export const PENDING_ACCEPT_TIMEOUT_MS = 30_000;
/** At most this many connections wait for the next session (all listeners together). */
export const PENDING_ACCEPT_LIMIT = 64;

interface Waiting {
  serviceId: string;
  socket: Socket;
  timer: NodeJS.Timeout;
  onEarlyClose: () => void;
}

export interface ListenerHost {
  /** Hands an accepted socket to the current session; false when there is none. */
  accept(serviceId: string, socket: Socket): boolean;
}

export class Listeners {
  private readonly servers = new Map<string, Server>();
  private readonly bound = new Map<string, number>();
  private readonly binding = new Map<string, Promise<number>>();
  private readonly waiting: Waiting[] = [];
  private closed = false;
  /** The stdio service and its connection, once bound. */
  private stdio?: { serviceId: string; socket: StdioSocket };

  constructor(
    private readonly host: ListenerHost,
    private readonly settings: Settings,
    private readonly bindAddress: string | undefined,
    private readonly log: Logger,
    /** Where a stdio service's connection is read and written; default the process's stdin and stdout. */
    private readonly stdioStreams?: StdioStreams,
  ) {}

  ports(): Map<string, number> {
    return new Map(this.bound);
  }

  has(serviceId: string): boolean {
    return this.servers.has(serviceId) || this.stdio?.serviceId === serviceId;
  }

  /** The stdio connection, once its service is bound. */
  stdioSocket(): StdioSocket | undefined {
    return this.stdio?.socket;
  }

  /**
   * Binds the service's listener, retrying tcp.connection_retry_count times.
   * Rejects with a one-line message when every attempt failed.
   */
  bind(serviceId: string, target: SourceTarget): Promise<number> {
    if (target.kind === 'stdio') return Promise.resolve(this.startStdio(serviceId));
    // A reconnect may ask again while the first bind is still retrying: share it.
    let pending = this.binding.get(serviceId);
    if (!pending) {
      pending = this.bindWithRetries(serviceId, target).finally(() => this.binding.delete(serviceId));
      this.binding.set(serviceId, pending);
    }
    return pending;
  }

  /** The one connection of a stdio service starts at once: there is nothing to listen for. */
  private startStdio(serviceId: string): number {
    if (!this.stdio && !this.closed) {
      const streams = this.stdioStreams ?? { input: process.stdin, output: process.stdout };
      const socket = new StdioSocket(streams.input, streams.output);
      this.stdio = { serviceId, socket };
      this.log.info(`Carrying one connection for service id ${printable(serviceId)} over stdin and stdout`);
      this.onConnection(serviceId, socket.asSocket());
    }
    return 0;
  }

  private async bindWithRetries(serviceId: string, target: Extract<SourceTarget, { kind: 'tcp' }>): Promise<number> {
    const host = target.host ?? this.bindAddress ?? this.settings.defaultBindAddress;
    const retries = this.settings.tcpConnectionRetryCount;
    for (let attempt = 1; ; attempt++) {
      if (this.closed) throw new Error('the proxy is closing');
      try {
        const port = await this.listenOnce(serviceId, host, target.port);
        if (target.port === 0) this.log.info(`Listen port assigned for service id ${printable(serviceId)}. New port mapping: ${printable(serviceId)} = ${port}`);
        this.log.info(`Listening for new connection on port ${port}`);
        return port;
      } catch (err) {
        const message = `Could not bind to address: ${host}:${target.port} -- ${(err as Error).message}`;
        this.log.error(message);
        if (retries >= 0 && attempt > retries) throw new Error(message);
        await new Promise((resolve) => setTimeout(resolve, this.settings.tcpConnectionRetryDelayMs));
      }
    }
  }

  private listenOnce(serviceId: string, host: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      const server = createServer({ allowHalfOpen: false, pauseOnConnect: true });
      server.on('connection', (socket: Socket) => this.onConnection(serviceId, socket));
      const onError = (err: Error): void => {
        server.close();
        reject(err);
      };
      server.once('error', onError);
      server.listen({ host, port, backlog: 511 }, () => {
        server.off('error', onError);
        if (this.closed) {
          server.close();
          reject(new Error('the proxy is closing'));
          return;
        }
        // An accept error must never stop accepting (reference bug 9.4#39) nor crash.
        server.on('error', (err: Error) => this.log.error(`Could not listen/accept incoming connection on ${host}:${port} -- ${err.message}`));
        const bound = (server.address() as { port: number }).port;
        this.servers.set(serviceId, server);
        this.bound.set(serviceId, bound);
        resolve(bound);
      });
    });
  }

  private onConnection(serviceId: string, socket: Socket): void {
    socket.setNoDelay(true);
    if (this.closed) {
      socket.destroy();
      return;
    }
    if (this.host.accept(serviceId, socket)) return;
    if (this.waiting.length >= PENDING_ACCEPT_LIMIT) {
      this.log.warn(`Refusing connection for service ${serviceId}: ${PENDING_ACCEPT_LIMIT} connections already wait for the service connection`);
      socket.destroy();
      return;
    }
    this.log.info(`Connection for service ${serviceId} waits for the service connection to come back`);
    const entry: Waiting = {
      serviceId,
      socket,
      onEarlyClose: () => this.forget(entry),
      timer: setTimeout(() => {
        this.log.info(`Closing a connection for service ${serviceId}: the service connection did not come back within ${PENDING_ACCEPT_TIMEOUT_MS} ms`);
        this.forget(entry);
        socket.destroy();
      }, PENDING_ACCEPT_TIMEOUT_MS),
    };
    socket.once('close', entry.onEarlyClose);
    socket.on('error', noop);
    this.waiting.push(entry);
  }

  private forget(entry: Waiting): void {
    clearTimeout(entry.timer);
    const at = this.waiting.indexOf(entry);
    if (at >= 0) this.waiting.splice(at, 1);
  }

  /** A session started: hand it the connections that waited. */
  drain(): void {
    for (const entry of this.waiting.splice(0)) {
      clearTimeout(entry.timer);
      entry.socket.off('close', entry.onEarlyClose);
      entry.socket.off('error', noop);
      if (entry.socket.destroyed) continue;
      if (!this.host.accept(entry.serviceId, entry.socket)) entry.socket.destroy();
    }
  }

  close(): void {
    this.closed = true;
    this.stdio?.socket.destroy();
    for (const entry of this.waiting.splice(0)) {
      clearTimeout(entry.timer);
      entry.socket.destroy();
    }
    const servers = [...this.servers.values()];
    this.servers.clear();
    this.bound.clear();
    // server.close() unbinds at once; its callback and 'close' event would also wait for
    // every accepted connection, which close() must not (they are closing, bounded).
    for (const server of servers) server.close();
  }
}

function noop(): void {}
