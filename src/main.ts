/** Process entry: `relay`, `tunnel`, `agent`, `connect`, or the proxy command line (src/cli). */
// First, before the other modules load: the relay's heap settings (see the module).
import './relay/young';
import { runTunnelCli } from './api/cli';
import { SUBCOMMANDS } from './cli/args';
import { reportError } from './cli/report';
import { runConnectCli } from './connect/cli';
import { runProxyCli } from './cli/run';
import { ensureStdio } from './cli/stdio';
import { runRelayCli } from './relay/cli';
import { PRODUCT, VERSION } from './version';

/** `--version` or `-V` among a subcommand's options (before any `--`): a value never starts with "-". */
function asksVersion(args: readonly string[]): boolean {
  const end = args.indexOf('--');
  return (end < 0 ? args : args.slice(0, end)).some((arg) => arg === '--version' || arg === '-V');
}

// A word close to `relay`, `tunnel`, `agent` or `connect` is answered with "did you mean" by the proxy's parser.
async function dispatch(argv: string[]): Promise<number> {
  // Every command answers --version with the same line, whatever else it was given.
  if (SUBCOMMANDS.includes(argv[0] ?? '') && asksVersion(argv.slice(1))) {
    process.stdout.write(`${PRODUCT} ${VERSION}\n`);
    return 0;
  }
  if (argv[0] === 'relay') return runRelayCli(argv.slice(1));
  if (argv[0] === 'tunnel') return runTunnelCli(argv.slice(1));
  if (argv[0] === 'connect') return runConnectCli(argv.slice(1));
  // Loaded on demand: MQTT.js is as large as the rest of the bundle, and only the agent uses it.
  if (argv[0] === 'agent') return (await import('./agent/cli')).runAgentCli(argv.slice(1));
  return runProxyCli(argv);
}

function onExitCode(code: number): void {
  process.exit(code);
}

// Anything that escapes is one line and exit 1, never a stack trace.
function onEscapedError(err: unknown): void {
  process.exit(reportError(err));
}

// A log reader that went away (`localproxy ... 2>&1 | head`, a restarted log collector)
// must not end the tunnel: the lines are dropped and the proxy keeps running.
function onStdioError(err: NodeJS.ErrnoException): void {
  if (err.code === 'EPIPE' || err.code === 'ERR_STREAM_DESTROYED') return;
  onEscapedError(err);
}

ensureStdio();
process.stdout.on('error', onStdioError);
process.stderr.on('error', onStdioError);
process.on('uncaughtException', onEscapedError);
process.on('unhandledRejection', onEscapedError);
dispatch(process.argv.slice(2)).then(onExitCode, onEscapedError);
