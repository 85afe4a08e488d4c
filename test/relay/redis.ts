/**
 * A real redis-server (Debian's package) for the cluster tests, on a free port with its own
 * directory, never the system service. Readiness is its own "Ready to accept connections" line.
 * `persist: true` runs it with an append-only file fsynced on every write, so a restart keeps
 * the data (a Redis restart test); otherwise nothing is saved. `password`: --requirepass.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, within } from '../helpers/wait';

export interface RedisServer {
  port: number;
  url: string;
  /** Its log so far. */
  output(): string;
  /** SIGTERM and wait for the exit (Redis then writes its append-only file). */
  stop(): Promise<void>;
  /** Starts it again on the same port and directory; resolves once it accepts connections. */
  start(): Promise<void>;
  /** Stops it and removes its directory. */
  remove(): Promise<void>;
}

export async function startRedis(options: { persist?: boolean; password?: string } = {}): Promise<RedisServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'localproxy-redis-'));
  let child: ChildProcess | undefined;
  let output = '';
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--daemonize', 'no', '--protected-mode', 'yes',
    ...(options.persist ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no']),
    ...(options.password ? ['--requirepass', options.password] : [])];
  const start = async (): Promise<void> => {
    const proc = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child = proc;
    const ready = new Promise<void>((resolve, reject) => {
      const onData = (data: Buffer): void => {
        output += data.toString();
        if (/Ready to accept connections/.test(output.slice(-4096))) resolve();
      };
      proc.stdout!.on('data', onData);
      proc.stderr!.on('data', onData);
      proc.once('exit', (code) => reject(new Error(`redis-server exited (${code}) before it was ready:\n${output.slice(-2000)}`)));
    });
    await within(ready, 10_000, 'redis-server ready');
  };
  const stop = async (): Promise<void> => {
    const proc = child;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = once(proc, 'exit');
    proc.kill('SIGTERM');
    await within(exited, 10_000, 'redis-server exit');
  };
  await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    output: () => output,
    stop,
    async start() {
      output = '';
      await start();
    },
    async remove() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
