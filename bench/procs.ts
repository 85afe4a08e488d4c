/**
 * The relay and both proxies as child processes, and what /proc says about them: CPU time
 * (utime + stime), resident memory now (VmRSS) and at its peak (VmHWM, which `clear_refs` resets
 * so each workload gets its own peak).
 *
 * They run the built CLI (`node dist/localproxy.cjs relay|-s|-d ...`) with plain `node`, without
 * the tsx loader, so their memory is the product's.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
export const CLI = join(root, 'dist/localproxy.cjs');

let clockTicks = 0;
function ticksPerSecond(): number {
  if (clockTicks === 0) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** User + system CPU seconds used so far by a live process. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name, which may itself hold spaces and parentheses.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond();
}

/** Read and write system calls so far (syscr and syscw of /proc/<pid>/io); NaN where that is not readable. */
export function syscalls(pid: number): { reads: number; writes: number } {
  try {
    const io = readFileSync(`/proc/${pid}/io`, 'utf8');
    const count = (key: string) => Number(new RegExp(`^${key}: (\\d+)`, 'm').exec(io)?.[1] ?? NaN);
    return { reads: count('syscr'), writes: count('syscw') };
  } catch {
    return { reads: NaN, writes: NaN };
  }
}

function statusKiB(pid: number, key: 'VmRSS' | 'VmHWM'): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status);
  if (!match) throw new Error(`no ${key} in /proc/${pid}/status`);
  return Number(match[1]);
}

export const rssMiB = (pid: number): number => statusKiB(pid, 'VmRSS') / 1024;
export const peakRssMiB = (pid: number): number => statusKiB(pid, 'VmHWM') / 1024;

/** Starts a new peak-RSS window (Linux: writing 5 to clear_refs resets VmHWM to the current RSS). */
export function resetPeakRss(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

export interface Child {
  name: string;
  process: ChildProcess;
  pid: number;
  /** Resolves with the first stdout/stderr line matching `pattern`; rejects if the process exits first. */
  waitFor(pattern: RegExp, limitMs: number): Promise<RegExpMatchArray>;
  /** The last 16 KiB of its output, for error messages. */
  output(): string;
  stop(): Promise<void>;
}

let nodeFlags: string[] = [];

/** Children started from now on write a V8 CPU profile into `dir` when they exit (node refuses --cpu-prof in NODE_OPTIONS). */
export function profileChildren(dir: string): void {
  nodeFlags = ['--cpu-prof', `--cpu-prof-dir=${dir}`];
}

/** Starts `node ARGS` (or `command ARGS` for another executable, such as the C++ reference). */
export function spawnChild(name: string, args: string[], env: NodeJS.ProcessEnv, command?: string): Child {
  const [file, argv] = command ? [command, args] : [process.execPath, [...nodeFlags, ...args]];
  const child = spawn(file, argv, { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  let exited = false;
  const waiters = new Set<() => void>();
  const onOutput = (data: Buffer) => {
    output = (output + data.toString()).slice(-16384);
    if (process.env.BENCH_LOG) process.stderr.write(`[${name}] ${data}`);
    for (const check of waiters) check();
  };
  child.stdout!.on('data', onOutput);
  child.stderr!.on('data', onOutput);
  const exit = new Promise<void>((resolve) => child.once('exit', () => {
    exited = true;
    for (const check of waiters) check();
    resolve();
  }));
  return {
    name,
    process: child,
    pid: child.pid!,
    output: () => output,
    waitFor(pattern, limitMs) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => finish(new Error(`${name}: no ${pattern} within ${limitMs} ms; output:\n${output}`)), limitMs);
        const check = () => {
          const match = pattern.exec(output);
          if (match) finish(undefined, match);
          else if (exited) finish(new Error(`${name} exited before printing ${pattern}; output:\n${output}`));
        };
        function finish(err?: Error, match?: RegExpMatchArray): void {
          clearTimeout(timer);
          waiters.delete(check);
          if (err) reject(err);
          else resolve(match!);
        }
        waiters.add(check);
        check();
      });
    },
    async stop() {
      if (exited) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exit;
      clearTimeout(timer);
    },
  };
}
