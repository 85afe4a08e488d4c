/**
 * The proxy command line: build the options, start the proxy, stop it on SIGTERM/SIGINT
 * (Decisions 13) and return the exit code (Decisions 1).
 */
import { realpathSync } from 'node:fs';
import { ExitCode, ExitError, exitCodeOf } from '../exit';
import type { Logger } from '../log';
import { startProxy, type LocalProxy } from '../tunnel/proxy';
import { PRODUCT } from '../version';
import { buildProxyOptions, type CliContext } from './proxy-options';

/** Decisions 13: exit within 2 s of the first signal even if the close handshake stalls. */
const SHUTDOWN_GRACE_MS = 1800;
const TRY_HELP = "Try 'localproxy --help' for a list of options.";

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

export function defaultContext(): CliContext {
  return {
    env: process.env,
    cwd: process.cwd(),
    executable: executablePath(),
    stdout: (text) => process.stdout.write(text),
  };
}

/** One line for a failure; usage errors add the "Try --help" line (Decisions 1). */
export function reportError(err: unknown, scrub: (text: string) => string = (t) => t): number {
  if (err instanceof ExitError) {
    const tail = err.exitCode === ExitCode.USAGE ? `\n${TRY_HELP}` : '';
    process.stderr.write(`${scrub(err.message)}${tail}\n`);
    return err.exitCode;
  }
  process.stderr.write(`${PRODUCT}: internal error: ${scrub(err instanceof Error ? err.message : String(err))}\n`);
  return ExitCode.FAILURE;
}

const TOKEN_OPTIONS = ['-t', '--access-token', '-i', '--client-token'];

/**
 * Removes the tokens of the environment and the command line from a message about the
 * command line: the options may not have parsed, so they are picked out of argv here.
 */
function tokenScrubber(argv: readonly string[], env: NodeJS.ProcessEnv): (text: string) => string {
  const secrets = [env.AWSIOT_TUNNEL_ACCESS_TOKEN, env.AWSIOT_TUNNEL_CLIENT_TOKEN];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (TOKEN_OPTIONS.includes(arg)) secrets.push(argv[i + 1]);
    else if (/^-[ti]./.test(arg)) secrets.push(arg.slice(2));
    else if (/^--(access|client)-token=/.test(arg)) secrets.push(arg.slice(arg.indexOf('=') + 1));
  }
  const known = secrets.filter((s): s is string => s !== undefined && s.length >= 4);
  return (text) => known.reduce((t, secret) => t.split(secret).join('***'), text);
}

function stopOnSignals(proxy: LocalProxy, log: Logger): () => void {
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
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  return () => {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  };
}

export async function runProxyCli(argv: string[], ctx: CliContext = defaultContext()): Promise<number> {
  let plan;
  try {
    plan = buildProxyOptions(argv, ctx);
  } catch (err) {
    return reportError(err, tokenScrubber(argv, ctx.env));
  }
  if (plan.action === 'exit') return plan.exitCode;
  const { options } = plan;
  // A token given with -t or -i is visible in `ps` through the original argv; the process
  // title overwrites that memory on Linux, so the token does not stay listed.
  if (plan.secretInArgv) process.title = PRODUCT;
  let proxy: LocalProxy;
  options.log.info(`Starting proxy in ${options.mode} mode`);
  try {
    proxy = startProxy(options);
  } catch (err) {
    return reportError(err, (t) => options.log.scrub(t));
  }
  const detach = stopOnSignals(proxy, options.log);
  // The proxy logs how it ended; only the exit code is left to report.
  const outcome = await proxy.done;
  detach();
  return exitCodeOf(outcome);
}
