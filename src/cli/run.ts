/**
 * The proxy command line: build the options, start the proxy, stop it on SIGTERM/SIGINT
 * (Decisions 13) and return the exit code (Decisions 1).
 */
import { realpathSync } from 'node:fs';
import { ExitCode, exitCodeOf } from '../exit';
import { Logger, LogLevel } from '../log';
import type { ProxyOptions } from '../options';
import { printable } from '../printable';
import { startProxy, type LocalProxy, type ProxyOutcome } from '../tunnel/proxy';
import { PRODUCT } from '../version';
import { buildProxyOptions, type CliContext } from './proxy-options';
import { reportError } from './report';

/** Decisions 13: exit within 2 s of the first signal even if the close handshake stalls. */
const SHUTDOWN_GRACE_MS = 1800;

export interface ProxyCliContext extends CliContext {
  /** Starts the proxy once the options are built (tests of the command line stop here). */
  startProxy: (options: ProxyOptions) => LocalProxy;
}

/**
 * The executable's real path, for the `config/` directory beside it: the bundle behind an
 * npm bin symlink, or the single executable itself (whose argv[1] repeats its path).
 */
function executablePath(): string {
  try {
    return realpathSync(process.argv[1] ?? process.execPath);
  } catch {
    return process.execPath;
  }
}

export function defaultContext(): ProxyCliContext {
  return {
    env: process.env,
    cwd: process.cwd(),
    executable: executablePath(),
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
    startProxy,
  };
}

const TOKEN_OPTIONS = ['-t', '--access-token', '-i', '--client-token'];

/**
 * Removes the tokens of the environment and the command line from a message about the
 * command line: the options may not have parsed, so they are picked out of argv here.
 */
function tokenScrubber(argv: readonly string[], env: NodeJS.ProcessEnv): (text: string) => string {
  // The logger's redaction is the one place that hides secrets; this one writes nothing.
  const redactor = new Logger({ level: LogLevel.OFF, sink: () => {} });
  redactor.redact(env.AWSIOT_TUNNEL_ACCESS_TOKEN);
  redactor.redact(env.AWSIOT_TUNNEL_CLIENT_TOKEN);
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (TOKEN_OPTIONS.includes(arg)) redactor.redact(argv[i + 1]);
    else if (/^-[ti]./.test(arg)) redactor.redact(arg.slice(2));
    else if (/^--(access|client)-token=/.test(arg)) redactor.redact(arg.slice(arg.indexOf('=') + 1));
  }
  return (text) => redactor.scrub(text);
}

/**
 * `signals`: SIGTERM and SIGINT, and for a stdio run SIGHUP too: ssh sends it to its
 * ProxyCommand as it exits.
 */
export function stopOnSignals(proxy: LocalProxy, log: Logger, signals: readonly NodeJS.Signals[] = ['SIGTERM', 'SIGINT']): () => void {
  let stopping = false;
  function onSignal(signal: NodeJS.Signals): void {
    if (stopping) {
      log.warn(`Received ${signal} again, exiting now`);
      process.exit(ExitCode.OK);
    }
    stopping = true;
    log.info(`Received ${signal}, closing the tunnel`);
    setTimeout(onShutdownTimeout, SHUTDOWN_GRACE_MS).unref();
    proxy.close().catch(onCloseError);
  }
  function onShutdownTimeout(): void {
    log.warn(`Shutdown did not finish within ${SHUTDOWN_GRACE_MS} ms, exiting`);
    process.exit(ExitCode.OK);
  }
  function onCloseError(err: unknown): void {
    log.error(`Error while closing: ${err instanceof Error ? err.message : String(err)}`);
  }
  for (const signal of signals) process.on(signal, onSignal);
  return () => {
    for (const signal of signals) process.off(signal, onSignal);
  };
}

/** The signals that end a stdio run (ssh's ProxyCommand) gracefully. */
export const STDIO_SIGNALS: readonly NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP'];

/** One line on stderr when a stdio run did not end with its connection, unless the log said it already. */
export function reportStdioOutcome(outcome: ProxyOutcome, log: Logger, write: (text: string) => void, prefix = PRODUCT): void {
  if (outcome.kind === 'closed' || log.enabled(outcome.kind === 'tunnel-closed' ? LogLevel.INFO : LogLevel.ERROR)) return;
  write(`${prefix}: ${printable(outcome.message)}\n`);
}

export async function runProxyCli(argv: string[], ctx: ProxyCliContext = defaultContext()): Promise<number> {
  let plan;
  try {
    plan = buildProxyOptions(argv, ctx);
  } catch (err) {
    return reportError(err, { write: ctx.stderr, scrub: tokenScrubber(argv, ctx.env) });
  }
  if (plan.action === 'exit') return plan.exitCode;
  const { options } = plan;
  // A token given with -t or -i is visible in `ps` through the original argv; the process
  // title overwrites that memory on Linux, so the token does not stay listed. The rest of
  // the command line stays, so `ps` still tells one proxy from another.
  if (plan.secretInArgv) process.title = [PRODUCT, ...argv.map((arg) => options.log.scrub(arg))].join(' ');
  let proxy: LocalProxy;
  options.log.info(`Starting proxy in ${options.mode} mode`);
  try {
    proxy = ctx.startProxy(options);
  } catch (err) {
    return reportError(err, { write: ctx.stderr, scrub: (t) => options.log.scrub(t) });
  }
  const detach = stopOnSignals(proxy, options.log, plan.stdio ? STDIO_SIGNALS : undefined);
  // The proxy logs how it ended; only the exit code is left to report, and for a stdio run,
  // which logs nothing by default, the one line that says why it did not end well.
  const outcome = await proxy.done;
  detach();
  if (plan.stdio) reportStdioOutcome(outcome, options.log, ctx.stderr);
  return exitCodeOf(outcome);
}
