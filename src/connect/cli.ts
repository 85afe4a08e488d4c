/**
 * `localproxy connect THING SERVICE`: the command line. One command to reach a device: open a
 * tunnel for the thing, wait for its agent, carry the connection (stdin/stdout for ssh's
 * ProxyCommand, or a port with --listen), close the tunnel (run.ts).
 */
import { parseCommandLine, usageError, type OptionSpec } from '../cli/args';
import { reportError } from '../cli/report';
import { parseTarget } from '../cli/service-spec';
import { validateServiceId } from '../cli/validate';
import { ExitCode, ExitError } from '../exit';
import { LogLevel } from '../log';
import type { SourceTarget } from '../options';
import { printable } from '../printable';
import { MAX_LIFETIME_MINUTES, MIN_LIFETIME_MINUTES } from '../api/model';
import { commonHelp, COMMON_OPTIONS } from '../api/setup';
import { connect, type ConnectRequest } from './run';

const HELP = `Usage: localproxy connect THING SERVICE [options]

Opens a tunnel to the thing THING for its service SERVICE (OpenTunnel), waits until the device's
agent ("localproxy agent", or the AWS IoT Device Client) has connected its end, then carries one
connection over stdin and stdout, as ssh's ProxyCommand:

  ssh -o ProxyCommand='localproxy connect %h SSH' pi@pi1
  ssh -o ProxyCommand='localproxy connect %h SSH --endpoint https://relay:8443 --ca relay.pem' pi@pi1

or, with --listen, listens on a port and prints the command to use. The tunnel is closed when the
connection (or, with --listen, the command) ends.

Options:
  --listen [HOST:]PORT  Listen on PORT (0: any free one) of HOST (default 127.0.0.1) instead of
                        stdin/stdout, print the command to use, run until Ctrl-C
  --wait SECONDS        How long to wait for the device's agent (default 60)
  --lifetime MINUTES    The tunnel's lifetime, ${MIN_LIFETIME_MINUTES}-${MAX_LIFETIME_MINUTES} (default: the service's, 720)
  --keep                Leave the tunnel open when done
${commonHelp(24)}  -v, --verbose LEVEL   Log level on stderr, 0-6 (default 1, nothing, over stdin/stdout;
                        3, warnings, with --listen)
  -h, --help            Show this help and exit

Without --endpoint the tunnel is the cloud's, in the region, and so is its data plane; with a
relay's endpoint (https://HOST:PORT) the relay's same port carries the tunnel too.

Exit codes: 0 the connection or the command ended (Ctrl-C, SIGTERM, SIGHUP, the tunnel closed by
the service); 1 failure (an API call, the agent did not connect within --wait, the tunnel
connection); 2 usage or credentials; 3 the service refused the tunnel connection.
`;

const OPTIONS: readonly OptionSpec[] = [
  ...COMMON_OPTIONS,
  { name: 'listen', value: true },
  { name: 'wait', value: true },
  { name: 'lifetime', value: true },
  { name: 'keep', value: false },
  { name: 'verbose', short: 'v', value: true },
  { name: 'help', short: 'h', value: false },
];

const DEFAULT_WAIT_SECONDS = 60;
const MAX_WAIT_SECONDS = 3600;
/** Where --listen listens when it names only a port: the command it prints is then unambiguous. */
const DEFAULT_LISTEN_HOST = '127.0.0.1';

function integer(text: string, name: string, min: number, max: number, unit: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || value < min || value > max) throw usageError(`invalid --${name} '${printable(text)}': expected ${min}-${max} ${unit}`);
  return value;
}

/** The request for argv, or a usage error. */
export function parseConnect(argv: string[]): ConnectRequest | 'help' {
  const parsed = parseCommandLine(argv, OPTIONS, 2);
  const v = Object.fromEntries(parsed.options) as Record<string, string | true | undefined>;
  if (v.help) return 'help';
  const [thingName, service] = parsed.positionals;
  if (thingName === undefined || service === undefined) throw usageError('give the thing and its service: localproxy connect THING SERVICE');
  if (!/^[a-zA-Z0-9:_-]{1,128}$/.test(thingName)) throw usageError(`invalid thing name '${printable(thingName)}': 1-128 of a-z A-Z 0-9 : _ -`);
  validateServiceId(service);
  let target: SourceTarget = { kind: 'stdio' };
  if (typeof v.listen === 'string') {
    // Port 0 (any free port, printed) is checked as a port like any other. In source mode a target is never a path.
    const anyPort = /(^|:)0+$/.test(v.listen);
    const listen = parseTarget(anyPort ? v.listen.replace(/0+$/, '1') : v.listen, 'source') as SourceTarget;
    target = listen.kind === 'tcp' ? { kind: 'tcp', host: listen.host ?? DEFAULT_LISTEN_HOST, port: anyPort ? 0 : listen.port } : listen;
  }
  const endpoint = typeof v.endpoint === 'string' ? v.endpoint : undefined;
  // The tunnel itself needs TLS: the proxy speaks wss:// only.
  if (endpoint !== undefined && /^http:\/\//i.test(endpoint)) throw usageError(`--endpoint '${printable(endpoint)}': the tunnel needs TLS (https://), which a relay started with --plain does not serve`);
  return {
    thingName,
    service,
    target,
    waitSeconds: typeof v.wait === 'string' ? integer(v.wait, 'wait', 1, MAX_WAIT_SECONDS, 'seconds') : DEFAULT_WAIT_SECONDS,
    lifetimeMinutes: typeof v.lifetime === 'string' ? integer(v.lifetime, 'lifetime', MIN_LIFETIME_MINUTES, MAX_LIFETIME_MINUTES, 'minutes') : undefined,
    keep: v.keep === true,
    logLevel: typeof v.verbose === 'string' ? Math.min(integer(v.verbose, 'verbose', 0, 65535, '(a log level)'), LogLevel.TRACE) : target.kind === 'stdio' ? LogLevel.FATAL : LogLevel.WARNING,
    api: v,
  };
}

export async function runConnectCli(argv: string[]): Promise<number> {
  let request: ConnectRequest | 'help';
  try {
    request = parseConnect(argv);
  } catch (err) {
    if (!(err instanceof ExitError)) throw err;
    return reportError(err, { command: 'connect' });
  }
  if (request === 'help') {
    process.stdout.write(HELP);
    return ExitCode.OK;
  }
  return connect(request);
}
