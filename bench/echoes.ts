/**
 * The echo client and the echo server of the echo-behind-bulk benchmark, each a process of its
 * own (bench/echo-child.ts), apart from the bulk clients and the bulk server in the benchmark
 * process: an echo reply then waits for the path, not for an event loop busy hashing bulk data.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import type net from 'node:net';
import type { AppServer } from './apps';
import type { EchoReply, EchoRequest } from './echo-child';

const root = new URL('..', import.meta.url).pathname;

/** A forked bench/echo-child.ts; `next` resolves with its next message that `accept` takes. */
class EchoChild {
  private readonly listeners = new Set<(message: EchoReply) => void>();
  private exited = false;

  private constructor(readonly role: string, readonly child: ChildProcess) {
    child.on('message', (message: EchoReply) => {
      for (const listener of this.listeners) listener(message);
    });
    child.once('exit', (code, signal) => {
      this.exited = true;
      const message = `the echo ${role} process exited (${signal ?? `code ${code}`})`;
      for (const listener of this.listeners) listener({ kind: 'failed', message });
    });
  }

  static async start(role: 'client' | 'server'): Promise<EchoChild> {
    const child = fork(join(root, 'bench/echo-child.ts'), [role], { cwd: root, execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const started = new EchoChild(role, child);
    const ready = await started.next((m) => m.kind === 'ready' || m.kind === 'failed', 30_000);
    if (ready.kind === 'failed') throw new Error(ready.message);
    return started;
  }

  /** The next message `accept` takes, a 'failed' one if the process exits, or an error after `limitMs`. */
  next(accept: (message: EchoReply) => boolean, limitMs: number): Promise<EchoReply> {
    if (this.exited) return Promise.reject(new Error(`the echo ${this.role} process has exited`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => finish(new Error(`the echo ${this.role} process did not answer within ${limitMs} ms`)), limitMs);
      const listener = (message: EchoReply) => {
        if (accept(message) || message.kind === 'failed') finish(undefined, message);
      };
      const finish = (err?: Error, message?: EchoReply) => {
        clearTimeout(timer);
        this.listeners.delete(listener);
        if (err) reject(err);
        else resolve(message!);
      };
      this.listeners.add(listener);
    });
  }

  send(message: EchoRequest, socket?: net.Socket): void {
    if (!this.exited) this.child.send(message, socket);
  }

  async close(): Promise<void> {
    if (this.exited) return;
    const exited = once(this.child, 'exit');
    this.child.disconnect();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  }
}

/** An echo that got no reply within its bound (30 s): what the path did, not a broken connection. */
export class EchoWaited extends Error {
  constructor(message: string, readonly limitMs: number, readonly rounds: number) {
    super(message);
  }
}

export class EchoProcesses {
  private constructor(private readonly client: EchoChild, private readonly server: EchoChild) {}

  static async start(): Promise<EchoProcesses> {
    const [client, server] = await Promise.all([EchoChild.start('client'), EchoChild.start('server')]);
    return new EchoProcesses(client, server);
  }

  /**
   * 1-byte echoes on one new connection to `port` (the app server's, or a source proxy's in front
   * of it) for `durationMs` or `rounds`, whichever ends first: the app server hands the next
   * connection it accepts, unread, to the echo server process. Resolves with the round trips in
   * µs; rejects if a round fails (EchoWaited: no reply within 30 s), or if the connection the echo
   * server got was not the echo one.
   */
  async run(app: AppServer, port: number, rounds: number, durationMs: number): Promise<number[]> {
    const modes: string[] = [];
    const served = this.server.next((m) => m.kind === 'served', durationMs + 60_000).then((m) => {
      if (m.kind === 'served') modes.push(m.mode);
      return m;
    });
    served.catch(() => {});
    app.handNextTo((socket) => this.server.send({ kind: 'socket' }, socket));
    try {
      this.client.send({ kind: 'echo', port, rounds, durationMs });
      // A round waits at most 30 s for its reply (echoRounds), after the last one that started in time.
      const result = await this.client.next((m) => m.kind === 'echoed', durationMs + 60_000);
      if (result.kind === 'failed' && result.noReplyMs !== undefined) throw new EchoWaited(result.message, result.noReplyMs, result.rounds ?? 0);
      if (result.kind === 'failed') throw new Error(result.message);
      if (result.kind !== 'echoed') throw new Error(`the echo client answered ${result.kind}`);
      // The server process reported the connection's mode byte before it echoed anything.
      const first = await Promise.race([served, new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 2_000))]);
      if (first?.kind === 'failed') throw new Error(first.message);
      if (modes[0] !== 'E') throw new Error(`harness: the echo server process was handed ${modes.length === 0 ? 'no connection' : `a connection in mode '${modes[0]}'`}, not the echo connection`);
      return result.rtts;
    } finally {
      app.handNextTo(undefined);
    }
  }

  /** Ends the round under way (its connection is closed; `run` then rejects). */
  stop(): void {
    this.client.send({ kind: 'stop' });
  }

  async close(): Promise<void> {
    await Promise.all([this.client.close(), this.server.close()]);
  }
}
