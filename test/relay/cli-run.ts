/** Spawning the relay and tunnel CLIs (test/relay/cli-child.ts) with bounded waits. */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { within } from '../helpers/wait';

const CHILD = join(__dirname, 'cli-child.ts');

export interface Finished { code: number | null; stdout: string; stderr: string }

export function runCli(which: 'relay' | 'tunnel', args: string[], env: Record<string, string | undefined> = {}, ms = 20000): Promise<Finished> {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, which, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d; });
  child.stderr.on('data', (d: Buffer) => { stderr += d; });
  return within(new Promise<Finished>((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr }))), ms, `localproxy ${which} ${args.join(' ')} to exit`)
    .catch((err) => { child.kill('SIGKILL'); throw err; });
}

export interface RunningRelay {
  child: ChildProcess;
  url: string;
  stderr: () => string;
  /** SIGTERM and wait for the exit code. */
  stop(): Promise<number | null>;
}

/** Starts `localproxy relay ARGS` and waits for its "listening on URL" line. */
export async function startRelayCli(args: string[], env: Record<string, string | undefined> = {}): Promise<RunningRelay> {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, 'relay', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => { stderr += d; });
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const url = await within(new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      stdout += d;
      const m = /^localproxy relay listening on (\S+)$/m.exec(stdout);
      if (m) resolve(m[1]);
    });
    exited.then((code) => reject(new Error(`relay exited with ${code}: ${stderr}`)));
  }), 20000, 'relay listening line').catch((err) => { child.kill('SIGKILL'); throw err; });
  return {
    child,
    url,
    stderr: () => stderr,
    async stop() {
      child.kill('SIGTERM');
      return within(exited, 10000, 'relay exit after SIGTERM').catch((err) => { child.kill('SIGKILL'); throw err; });
    },
  };
}

/**
 * Runs a CLI function in this process with stdout/stderr captured: for paths that end before
 * any server starts (help, usage errors), where a child process would only add start-up time.
 */
export async function inProcess(run: (argv: string[]) => Promise<number>, args: string[], env: Record<string, string> = {}): Promise<Finished> {
  const saved = { ...process.env };
  Object.assign(process.env, env);
  const out = { stdout: '', stderr: '' };
  const writeOut = process.stdout.write;
  const writeErr = process.stderr.write;
  process.stdout.write = ((chunk: string) => { out.stdout += chunk; return true; }) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string) => { out.stderr += chunk; return true; }) as typeof process.stderr.write;
  try {
    const code = await run(args);
    return { code, ...out };
  } finally {
    process.stdout.write = writeOut;
    process.stderr.write = writeErr;
    for (const key of Object.keys(env)) {
      if (saved[key] === undefined) delete process.env[key];
      else process.env[key] = saved[key];
    }
  }
}
