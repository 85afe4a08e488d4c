/**
 * A long-running built CLI (`node dist/localproxy.cjs …`) whose output can be awaited:
 * for the tests that need a real session through our relay.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { CLI, cleanEnv } from './run-cli';

export interface LiveCli {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves with the first match of `pattern` in stderr+stdout; rejects if the process exits first or after `ms`. */
  waitFor(pattern: RegExp, ms?: number): Promise<RegExpExecArray>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  /** SIGKILL if still running (cleanup). */
  kill(): void;
}

export function startCli(args: string[], options: { env?: Record<string, string | undefined>; cwd?: string } = {}): LiveCli {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: options.cwd, env: cleanEnv(options.env), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const waiters = new Set<() => void>();
  const notify = (): void => { for (const w of waiters) w(); };
  child.stdout!.on('data', (d: Buffer) => { out += d; notify(); });
  child.stderr!.on('data', (d: Buffer) => { err += d; notify(); });
  const exited = once(child, 'close').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null, at: Date.now() }));
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exited,
    kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
    waitFor(pattern, ms = 15_000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const m = pattern.exec(err + out);
          if (m) {
            done();
            resolve(m);
          }
        };
        const timer = setTimeout(() => { done(); reject(new Error(`no ${pattern} within ${ms} ms:\n${err}${out}`)); }, ms);
        const done = (): void => { clearTimeout(timer); waiters.delete(check); };
        void exited.then(({ code, signal }) => {
          if (!waiters.has(check)) return;
          done();
          reject(new Error(`exited (${code ?? signal}) before ${pattern}:\n${err}${out}`));
        });
        waiters.add(check);
        check();
      });
    },
  };
}
