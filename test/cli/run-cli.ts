/**
 * Runs the proxy command line and collects its output, two ways:
 * - `runCli`: the built CLI (`node dist/localproxy.cjs`) as a child process. `untilAccepted`:
 *   the run is stopped (SIGKILL) as soon as the debug line that ends option processing
 *   (`Service endpoint: …`) appears, so accepted invocations never reach the network.
 * - `runCliInProcess`: `runProxyCli`, the function the executable runs, in this process with
 *   its output, environment and working directory given to it; an accepted invocation ends
 *   where the proxy would start, with the options it would start with.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import type { ProxyOptions } from '../../src/options';
import { runProxyCli } from '../../src/cli/run';
import type { LocalProxy } from '../../src/tunnel/proxy';

const root = new URL('../..', import.meta.url).pathname;
export const CLI = join(root, 'dist/localproxy.cjs');
export const ACCEPTED_MARKER = 'Service endpoint: ';

export interface CliResult {
  /** Exit code, or 'accepted' when stopped at the marker (in process: where the proxy would start). */
  code: number | 'accepted';
  stdout: string;
  stderr: string;
  /** In process, for an accepted invocation: the options the proxy would have started with. */
  options?: ProxyOptions;
}

export interface RunOptions {
  env?: Record<string, string | undefined>;
  cwd?: string;
  untilAccepted?: boolean;
  /** Another copy of the bundle to run (default dist/localproxy.cjs). */
  cli?: string;
  /** Hard failure bound. */
  timeoutMs?: number;
}

/** The environment without anything that would change the proxy's configuration. */
export function cleanEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^AWSIOT_TUNNEL_|^https?_proxy$|^no_proxy$/i.test(k)) continue;
    env[k] = v;
  }
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

export function runCli(args: string[], options: RunOptions = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [options.cli ?? CLI, ...args], {
      cwd: options.cwd ?? root,
      env: cleanEnv(options.env),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let accepted = false;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`localproxy ${args.join(' ')} did not finish in time:\n${stderr}`));
    }, options.timeoutMs ?? 15_000);
    child.stdout.on('data', (d: Buffer) => { stdout += d; });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d;
      if (options.untilAccepted && !accepted && stderr.includes(ACCEPTED_MARKER)) {
        accepted = true;
        child.kill('SIGKILL');
      }
    });
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: accepted ? 'accepted' : (code ?? -1), stdout, stderr });
    });
  });
}

/** The proxy that an accepted in-process invocation gets: it has ended as soon as it starts. */
function endedProxy(): LocalProxy {
  const done = Promise.resolve({ kind: 'closed' as const, message: 'not started: the command line was accepted' });
  return { ready: Promise.resolve(), ports: () => new Map(), close: () => Promise.resolve(), done };
}

export async function runCliInProcess(args: string[], options: Pick<RunOptions, 'env' | 'cwd'> = {}): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  let started: ProxyOptions | undefined;
  const code = await runProxyCli(args, {
    env: cleanEnv(options.env),
    cwd: options.cwd ?? root,
    executable: CLI,
    stdout: (text) => { stdout += text; },
    stderr: (text) => { stderr += text; },
    logSink: (line) => { stderr += line; },
    startProxy: (proxyOptions) => {
      started = proxyOptions;
      return endedProxy();
    },
  });
  return started ? { code: 'accepted', stdout, stderr, options: started } : { code, stdout, stderr };
}
