/**
 * Runs the built executables (dist/bin/) the way a user would: natively, under qemu-user with
 * Debian's cross sysroots, or under wine. Long-running programs are watched through their output
 * (pipes, or a file under wine, where Node cannot write to a pipe); every wait is bounded.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, watch, type FSWatcher } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, within } from '../helpers/wait';

export const root = new URL('../..', import.meta.url).pathname;
export const binDir = join(root, 'dist', 'bin');
/** The bundle the executables embed (written by scripts/dist.mjs next to the SEA main script). */
export const bundle = join(root, 'dist', 'sea', 'localproxy.cjs');

export interface Platform {
  name: string;
  file: string;
  /** Command that runs the executable: [program, ...args before the executable's own]. */
  launcher: string[];
  /** Node writes to a file but not to a pipe under wine. */
  outputToFile: boolean;
  env: Record<string, string>;
  /** Converts a host path for the program's own command line. */
  hostPath(path: string): string;
}

export const WINE = '/usr/lib/wine/wine64';

export const platforms: Record<string, Platform> = {
  'linux-x64': { name: 'linux-x64', file: 'localproxy-linux-x64', launcher: [], outputToFile: false, env: {}, hostPath: (p) => p },
  'linux-arm64': {
    name: 'linux-arm64', file: 'localproxy-linux-arm64', launcher: ['qemu-aarch64-static', '-L', '/usr/aarch64-linux-gnu'],
    outputToFile: false, env: {}, hostPath: (p) => p,
  },
  'linux-armv7': {
    name: 'linux-armv7', file: 'localproxy-linux-armv7', launcher: ['qemu-arm-static', '-L', '/usr/arm-linux-gnueabihf'],
    outputToFile: false, env: {}, hostPath: (p) => p,
  },
  'win-x64': {
    name: 'win-x64', file: 'localproxy-win-x64.exe', launcher: [WINE], outputToFile: true,
    // The prefix is set up as a user's wine is (prepareWinePrefix): Windows 10, so Node starts
    // without NODE_SKIP_PLATFORM_CHECK, which no real Windows 10 user sets either.
    env: { WINEPREFIX: join(root, '.cache', 'wine-prefix'), WINEDEBUG: '-all' },
    // wine maps the host's / to drive Z:
    hostPath: (p) => `Z:${p.replace(/\//g, '\\')}`,
  },
};

/**
 * Creates the win-x64 platform's wine prefix if it is new and makes it report Windows 10, as
 * `winecfg -v win10` does for a user: a fresh prefix claims an older Windows, which Node
 * refuses ("only supported on Windows 8.1 ... or higher", exit 216). Returns the version the
 * prefix then reports (`CurrentVersion`, "10.0").
 */
export function prepareWinePrefix(ms = 300_000): string {
  const env = { ...baseEnv(), ...platforms['win-x64']!.env };
  const winecfg = spawnSync(WINE, ['winecfg', '-v', 'win10'], { env, stdio: 'ignore', timeout: ms });
  if (winecfg.status !== 0) throw new Error(`wine winecfg -v win10 failed (${winecfg.status ?? winecfg.signal ?? winecfg.error?.message})`);
  const query = spawnSync(WINE, ['reg', 'query', 'HKLM\\Software\\Microsoft\\Windows NT\\CurrentVersion', '/v', 'CurrentVersion'], { env, encoding: 'utf8', timeout: ms });
  const match = /CurrentVersion\s+REG_SZ\s+(\S+)/.exec(query.stdout ?? '');
  if (!match) throw new Error(`wine reg query gave no CurrentVersion: ${query.stdout}${query.stderr}`);
  return match[1]!;
}

/** Path of a built executable; a clear failure if `npm run dist` has not produced it. */
export function executable(platform: Platform): string {
  const path = join(binDir, platform.file);
  if (!existsSync(path)) throw new Error(`${path} is missing: run \`npm run dist\` first`);
  return path;
}

export interface Finished {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** A running program whose output can be awaited. */
export class Program {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private stdoutText = '';
  private stderrText = '';
  private readonly files: { dir: string; out: string; err: string } | undefined;
  private watcher: FSWatcher | undefined;
  private readonly listeners = new Set<() => void>();

  constructor(command: string, args: string[], env: NodeJS.ProcessEnv, outputToFile: boolean) {
    if (outputToFile) {
      const dir = mkdtempSync(join(tmpdir(), 'localproxy-dist-out-'));
      this.files = { dir, out: join(dir, 'stdout'), err: join(dir, 'stderr') };
      const out = openSync(this.files.out, 'w');
      const err = openSync(this.files.err, 'w');
      this.child = spawn(command, args, { env, stdio: ['ignore', out, err] });
      closeSync(out);
      closeSync(err);
      this.watcher = watch(dir, this.onFileChange);
    } else {
      this.child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
      this.child.stdout!.on('data', this.onStdout);
      this.child.stderr!.on('data', this.onStderr);
    }
    this.exited = once(this.child, 'close').then(([code, signal]) => {
      this.onFileChange();
      this.watcher?.close();
      this.watcher = undefined;
      this.notify();
      return { code: code as number | null, signal: signal as NodeJS.Signals | null };
    });
    this.exited.catch(() => {});
  }

  private readonly onStdout = (data: Buffer): void => {
    this.stdoutText += data.toString('utf8');
    this.notify();
  };

  private readonly onStderr = (data: Buffer): void => {
    this.stderrText += data.toString('utf8');
    this.notify();
  };

  private readonly onFileChange = (): void => {
    if (!this.files) return;
    this.stdoutText = readFileSync(this.files.out, 'utf8');
    this.stderrText = readFileSync(this.files.err, 'utf8');
    this.notify();
  };

  private notify(): void {
    for (const listener of this.listeners) listener();
  }

  get stdout(): string {
    return this.stdoutText;
  }

  get stderr(): string {
    return this.stderrText;
  }

  /** Resolves with the first match of `pattern` in stdout+stderr; rejects if the program exits first. */
  waitFor(pattern: RegExp, ms: number, what: string): Promise<RegExpMatchArray> {
    let listener: (() => void) | undefined;
    let exitedFirst = false;
    const found = new Promise<RegExpMatchArray>((resolve, reject) => {
      listener = () => {
        const match = pattern.exec(`${this.stdoutText}\n${this.stderrText}`);
        if (match) resolve(match);
        else if (exitedFirst) reject(new Error(`${what}: the program exited first; output:\n${this.stdoutText}\n${this.stderrText}`));
      };
      this.listeners.add(listener);
      void this.exited.then(() => {
        exitedFirst = true;
        listener!();
      });
      listener();
    });
    return within(found, ms, `${what} (output so far:\n${this.stdoutText}\n${this.stderrText})`).finally(() => this.listeners.delete(listener!));
  }

  /** SIGTERM (or `signal`), then the exit; SIGKILL if it is still running after `ms`. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', ms = 10_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    try {
      return await within(this.exited, ms, 'exit after a signal');
    } catch {
      this.child.kill('SIGKILL');
      return await this.exited;
    } finally {
      if (this.files) rmSync(this.files.dir, { recursive: true, force: true });
    }
  }
}

/** This process's environment without NODE_OPTIONS: tests that want one set it explicitly. */
function baseEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  return env;
}

/** Starts the executable of `platform` with `args`. */
export function start(platform: Platform, args: string[], env: NodeJS.ProcessEnv = {}): Program {
  const exe = executable(platform);
  const [command, ...pre] = platform.launcher.length > 0 ? [...platform.launcher, exe] : [exe];
  return new Program(command!, [...pre, ...args], { ...baseEnv(), ...platform.env, ...env }, platform.outputToFile);
}

/** Runs the executable to completion (bounded by `ms`). */
export async function run(platform: Platform, args: string[], env: NodeJS.ProcessEnv = {}, ms = 60_000): Promise<Finished> {
  const program = start(platform, args, env);
  try {
    const { code, signal } = await within(program.exited, ms, `${platform.file} ${args.join(' ')} to exit`);
    return { code, signal, stdout: program.stdout, stderr: program.stderr };
  } finally {
    await program.stop('SIGKILL');
  }
}

/** Runs `node dist/localproxy.cjs` (the copy embedded in the executables) the same way, for comparisons. */
export async function runBundle(args: string[], env: NodeJS.ProcessEnv = {}, ms = 30_000): Promise<Finished> {
  const program = new Program(process.execPath, [bundle, ...args], { ...baseEnv(), ...env }, false);
  try {
    const { code, signal } = await within(program.exited, ms, `node dist/localproxy.cjs ${args.join(' ')} to exit`);
    return { code, signal, stdout: program.stdout, stderr: program.stderr };
  } finally {
    await program.stop('SIGKILL');
  }
}

/** A TCP echo server on 127.0.0.1:0. */
export async function echoServer(): Promise<{ server: Server; port: number; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>();
  const server = createServer(function onEchoConnection(socket) {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    socket.pipe(socket);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as { port: number }).port, sockets };
}

/** Sends `bytes` random bytes to 127.0.0.1:port and resolves with the echo, once it is complete. */
export async function echoRoundTrip(port: number, bytes: number, ms: number): Promise<{ sent: string; received: string; length: number }> {
  const payload = randomBytes(bytes);
  const socket = createConnection({ host: '127.0.0.1', port });
  const chunks: Buffer[] = [];
  let length = 0;
  const done = new Promise<void>((resolve, reject) => {
    socket.on('data', function onEcho(chunk: Buffer) {
      chunks.push(chunk);
      length += chunk.length;
      if (length >= bytes) resolve();
    });
    socket.on('error', reject);
    socket.on('close', () => reject(new Error(`connection closed after ${length} of ${bytes} echoed bytes`)));
  });
  done.catch(() => {});
  await once(socket, 'connect');
  // write, not end: like the reference, the tunnel closes both directions when one side closes.
  socket.write(payload);
  try {
    await within(done, ms, `${bytes} bytes echoed through the tunnel`);
  } finally {
    socket.destroy();
  }
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  return { sent: sha(payload), received: sha(Buffer.concat(chunks)), length };
}

const RELAY_KEY = { id: 'AKIDLOCALPROXYDIST', secret: 'dist-smoke-test-secret-key-0123456789' };

export interface TunnelResult {
  sent: string;
  received: string;
  length: number;
}

/**
 * The loopback tunnel, every piece run from `platform`'s executable: `relay` (self-signed TLS),
 * `tunnel open` against its management API, a destination in front of an echo server and a
 * source; then `bytes` random bytes through the source and back.
 */
export async function tunnelThrough(platform: Platform, bytes: number, ms: number): Promise<TunnelResult> {
  const dir = mkdtempSync(join(tmpdir(), 'localproxy-dist-tunnel-'));
  const programs: Program[] = [];
  const echo = await echoServer();
  try {
    const relay = start(platform, ['relay', '--listen', '127.0.0.1:0', '--tls-self-signed', platform.hostPath(dir)], {
      LOCALPROXY_RELAY_ACCESS_KEY_ID: RELAY_KEY.id,
      LOCALPROXY_RELAY_SECRET_ACCESS_KEY: RELAY_KEY.secret,
    });
    programs.push(relay);
    const [, relayPort] = await relay.waitFor(/listening on wss:\/\/127\.0\.0\.1:(\d+)/, ms, 'relay listening line');

    const opened = await run(platform, ['tunnel', 'open', '--endpoint', `https://127.0.0.1:${relayPort}`, '--region', 'us-east-1',
      '--services', 'SSH1', '--ca', platform.hostPath(join(dir, 'cert.pem'))], {
      AWS_ACCESS_KEY_ID: RELAY_KEY.id,
      AWS_SECRET_ACCESS_KEY: RELAY_KEY.secret,
    }, ms);
    if (opened.code !== 0) throw new Error(`tunnel open exited ${opened.code}: ${opened.stderr}${opened.stdout}`);
    const tokens = JSON.parse(opened.stdout) as { sourceAccessToken: string; destinationAccessToken: string };

    const common = ['-e', `127.0.0.1:${relayPort}`, '-c', platform.hostPath(dir), '-v', '4'];
    const destination = start(platform, [...common, '-d', `SSH1=${echo.port}`], { AWSIOT_TUNNEL_ACCESS_TOKEN: tokens.destinationAccessToken });
    programs.push(destination);
    await destination.waitFor(/Successfully established websocket connection/, ms, 'destination connected');

    const sourcePort = await freePort();
    const source = start(platform, [...common, '-s', `SSH1=${sourcePort}`], { AWSIOT_TUNNEL_ACCESS_TOKEN: tokens.sourceAccessToken });
    programs.push(source);
    await source.waitFor(/Listening for new connection on port \d+/, ms, 'source listening');

    return await echoRoundTrip(sourcePort, bytes, ms);
  } finally {
    for (const program of programs.reverse()) await program.stop();
    for (const socket of echo.sockets) socket.destroy();
    echo.server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
