/**
 * The C++ reference local proxy (v3.3.1) as a test peer, run as a process against our relay:
 * `localproxy -e 127.0.0.1:<relay port> -c <hashed CA dir> -s|-d <mapping>`, token in
 * AWSIOT_TUNNEL_ACCESS_TOKEN. The binary is `$LOCALPROXY_CPP`, else the one kept in the
 * repository, test/peers/cpp-localproxy/localproxy (its README says what it is).
 *
 * `LogWatch` follows a process's stdout and stderr line by line, so a test waits for a log line
 * (bounded) instead of sleeping; it is used for our proxies' processes too. `withLogs` puts the
 * peers' logs into a failing test's error, since the C++ proxy tells nothing otherwise.
 *
 * Things the reference does that the tests must live with (behaviour spec, section 9): SIGTERM
 * kills it (no close frame), an HTTP 4xx on the handshake ends it with exit 0, a slow local
 * reader crashes it ("basic_multi_buffer too long") unless `tcp.write_buffer_size` is raised,
 * its source listens with backlog 0 and its destination connects synchronously.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { freePort, within } from './wait';

const root = new URL('../..', import.meta.url).pathname;

/** Path of the C++ reference binary (see the module comment). */
export const CPP_LOCALPROXY = process.env.LOCALPROXY_CPP || resolve(root, 'test/peers/cpp-localproxy/localproxy');

/** Lines kept for failure output and late waiters; counts seen by live waiters are not bounded by it. */
const KEPT_LINES = 4000;

/**
 * Every line a process writes to stdout or stderr, with waits on them. Line numbers are
 * absolute (`mark()`), so "the next such line after this point" is `waitFor(re, { from })`.
 */
export class LogWatch extends EventEmitter {
  private lines: string[] = [];
  /** Absolute number of the first kept line. */
  private first = 0;
  private readonly partial = new Map<string, string>();

  constructor(readonly label: string) {
    super();
  }

  /** Follows `child`'s stdout and stderr (call right after spawning, before any I/O turn). */
  follow(child: ChildProcess): this {
    for (const [name, stream] of [['stdout', child.stdout], ['stderr', child.stderr]] as const) {
      stream?.on('data', (data: Buffer) => this.push(name, data.toString()));
      stream?.on('end', () => this.push(name, '\n'));
    }
    return this;
  }

  private push(stream: string, text: string): void {
    if (process.env.LOCALPROXY_TEST_LOG) process.stderr.write(text.replace(/^(?=.)/gm, `${this.label}: `));
    const parts = ((this.partial.get(stream) ?? '') + text).split('\n');
    this.partial.set(stream, parts.pop()!);
    for (const line of parts) {
      this.lines.push(line);
      this.emit('line', line);
    }
    if (this.lines.length > KEPT_LINES) {
      const drop = this.lines.length - KEPT_LINES;
      this.lines.splice(0, drop);
      this.first += drop;
    }
  }

  /** Adds a line of our own (e.g. why the process could not start). */
  note(line: string): void {
    this.push('note', `${line}\n`);
  }

  /** Number of lines seen so far: pass it as `from` to wait only for later lines. */
  mark(): number {
    return this.first + this.lines.length;
  }

  /** Kept lines (from absolute line `from` on) that match. */
  matches(re: RegExp, from = 0): string[] {
    return this.lines.slice(Math.max(0, from - this.first)).filter((line) => re.test(line));
  }

  /** Resolves with the `count`-th matching line at or after line `from`; rejects after `ms`. */
  waitFor(re: RegExp, options: { count?: number; from?: number; ms?: number; what?: string } = {}): Promise<string> {
    const need = options.count ?? 1;
    const found = this.matches(re, options.from);
    if (found.length >= need) return Promise.resolve(found[need - 1]!);
    let seen = found.length;
    let listener!: (line: string) => void;
    const done = new Promise<string>((resolve) => {
      listener = (line: string) => {
        if (re.test(line) && ++seen >= need) resolve(line);
      };
      this.on('line', listener);
    });
    const what = options.what ?? `${this.label}: ${need > 1 ? `${need} lines` : 'a line'} matching ${re}`;
    return within(done, options.ms ?? 15_000, what).finally(() => this.off('line', listener));
  }

  /** The kept lines and any unfinished one, prefixed with the label. */
  text(): string {
    const tail = [...this.partial.values()].filter((s) => s !== '');
    return [...this.lines, ...tail].map((line) => `${this.label}| ${line}`).join('\n');
  }
}

export interface CppSpec {
  relayPort: number;
  /** An OpenSSL hashed CA directory with the relay's certificate (`--tls-self-signed DIR`). */
  caDir: string;
  mode: 'source' | 'destination';
  accessToken: string;
  /** Service id → port ("" = the V1 form, `-s 5555` / `-d 22`). Source port 0 → a free port. */
  services: Record<string, number>;
  clientType?: 'V1' | 'V2';
  /** `-i`: sent on every handshake, so the access token survives reconnects (spec 1.8, 3.7). */
  clientToken?: string;
  /** Written as a `--settings-json` file (reference key names, e.g. `{ tunneling: { proxy: ... } }`). */
  settings?: Record<string, unknown>;
  /** `-v`; default $LOCALPROXY_CPP_VERBOSE or 4 (6 prints every message). */
  verbose?: number;
  label?: string;
}

export interface CppProxy {
  process: ChildProcess;
  /** Source: service id → listening port. */
  ports: Record<string, number>;
  log: LogWatch;
  /** Source: every listener logged; destination: the WebSocket is up. Bounded; rejects if it exits first. */
  ready: Promise<void>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL (the reference has no graceful stop: SIGTERM kills it too) and wait for the exit. */
  stop(): Promise<void>;
}

/** `settings` for a C++ peer that receives big transfers (reference bug 9.4#33, see the module comment). */
export const CPP_BIG_WRITE_BUFFER = { tunneling: { proxy: { tcp: { write_buffer_size: '1073741824' } } } };

/** Lines the reference logs at info when it is up (spec 6.3). */
export const CPP_LISTENING = /Listening for new connection on port \d+/;
export const CPP_CONNECTED = /Successfully established websocket connection/;

/**
 * Resolves once the kernel lists a socket listening on 127.0.0.1/any `port` (/proc/net/tcp and
 * tcp6, state 0A). The reference logs "Listening for new connection on port N" *before* it calls
 * listen() (TcpAdapterProxy.cpp, v3.3.1), so a connect right after that line can be refused;
 * looking at the kernel's table does not make a connection, which a V1/V2 source would take as
 * a port check.
 */
export async function cppListening(port: number, ms = 5000): Promise<void> {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')} `;
  const listening = (): boolean => ['/proc/net/tcp', '/proc/net/tcp6'].some((table) => {
    let text = '';
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      return false;
    }
    // Columns: sl local_address rem_address st ...; a listener has st 0A.
    return text.split('\n').some((line) => {
      const fields = line.trim().split(/\s+/);
      return fields.length > 3 && `${fields[1]} `.endsWith(hex) && fields[3] === '0A';
    });
  });
  const deadline = Date.now() + ms;
  while (!listening()) {
    if (Date.now() > deadline) throw new Error(`nothing listens on port ${port} ${ms} ms after the reference said it did`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

export async function spawnCpp(spec: CppSpec): Promise<CppProxy> {
  if (!existsSync(CPP_LOCALPROXY)) throw new Error(`the C++ reference binary is missing at ${CPP_LOCALPROXY} (set LOCALPROXY_CPP)`);
  const ports: Record<string, number> = {};
  for (const [id, port] of Object.entries(spec.services)) ports[id] = spec.mode === 'source' && port === 0 ? await freePort() : port;
  const mapping = Object.entries(ports).map(([id, port]) => (id === '' ? String(port) : `${id}=${port}`)).join(',');
  const verbose = spec.verbose ?? Number(process.env.LOCALPROXY_CPP_VERBOSE ?? 4);
  const args = ['-e', `127.0.0.1:${spec.relayPort}`, '-c', spec.caDir, spec.mode === 'source' ? '-s' : '-d', mapping, '-v', String(verbose)];
  if (spec.clientType) args.push('-y', spec.clientType);
  if (spec.clientToken) args.push('-i', spec.clientToken);
  // Its working directory is a fresh one: no config/ there for the reference to pick up (spec 1.14).
  const cwd = mkdtempSync(join(tmpdir(), 'localproxy-cpp-'));
  if (spec.settings) {
    writeFileSync(join(cwd, 'settings.json'), JSON.stringify(spec.settings));
    args.push('--settings-json', join(cwd, 'settings.json'));
  }
  const child = spawn(CPP_LOCALPROXY, args, { cwd, env: { ...process.env, AWSIOT_TUNNEL_ACCESS_TOKEN: spec.accessToken }, stdio: ['ignore', 'pipe', 'pipe'] });
  const log = new LogWatch(spec.label ?? `cpp-${spec.mode}`).follow(child);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', (err) => {
      log.note(`cannot run ${CPP_LOCALPROXY}: ${err.message}`);
      resolve({ code: null, signal: null });
    });
  }).finally(() => rmSync(cwd, { recursive: true, force: true }));
  const up = spec.mode === 'source'
    ? log.waitFor(CPP_LISTENING, { count: Object.keys(ports).length, what: `${log.label} listening` }).then(() => Promise.all(Object.values(ports).map((port) => cppListening(port))))
    : log.waitFor(CPP_CONNECTED, { what: `${log.label} connected` });
  const early = exited.then(({ code, signal }) => { throw new Error(`${log.label} exited (${code ?? signal}) before it was ready`); });
  const ready = Promise.race([up, early]).then(() => {});
  // A peer expected to exit (and never be ready) must not leave a rejection unhandled.
  ready.catch(() => {});
  return {
    process: child,
    ports,
    log,
    ready,
    exited,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

/** Something with a log to show when a test fails. */
export interface Logged {
  text(): string;
}

/** Runs `fn`; if it throws, the error message gets the peers' logs appended (the C++ one says why). */
export async function withLogs<T>(logs: Logged[], fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const error = err instanceof Error ? err : new Error(String(err));
    error.message += `\n\n${logs.map((l) => l.text()).join('\n')}`;
    throw error;
  }
}
