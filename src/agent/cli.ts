/**
 * `localproxy agent [options]`: the device service. Runs until SIGINT/SIGTERM, then closes its
 * tunnels and resolves 0. Bad flags or files: one line on stderr, exit 2. It has no runtime
 * failure of its own: a broker that is away is retried for as long as the agent runs, and a
 * state file it cannot read or write is said in one line and does without.
 */
import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import { checkConfigDir, readConfigDir } from '../cli/config-dir';
import { parseEndpoint } from '../cli/endpoint';
import { readSettings } from '../cli/proxy-options';
import { formatTarget, parseMappings } from '../cli/service-spec';
import { validateEndpoint, validatePath } from '../cli/validate';
import { parseCommandLine, stringOption, type OptionSpec } from '../cli/args';
import { reportError } from '../cli/report';
import { ExitCode, usageError } from '../exit';
import { Logger, type LoggerOptions } from '../log';
import { caPathProblem } from '../transport/ca';
import type { DestinationTarget } from '../options';
import { startAgent, DEFAULT_MAX_TUNNELS, type AgentOptions } from './agent';
import { defaultStateDir } from './state';
import { BROKER_OPTIONS, brokerFromArgs } from '../mqtt/flags';
import { isValidThingName } from '../mqtt/notification';

const HELP = `Usage: localproxy agent --mqtt-url URL --thing-name NAME --service ID=TARGET[,...] [options]

The device side of AWS IoT Secure Tunneling: listens on $aws/things/NAME/tunnels/notify for the
destination token of each tunnel opened for this thing (by the cloud, or by "localproxy relay
--mqtt-url") and runs the destination proxy for it in this process. No token is copied by hand.

Broker:
  --mqtt-url URL            mqtts://HOST[:PORT] (port 8883 if omitted); mqtt:// only for local tests.
                            AWS IoT Core: mqtts://<prefix>-ats.iot.<region>.amazonaws.com:8883
  --thing-name NAME         The thing this device is (1-128 of a-z A-Z 0-9 : _ -)
  --mqtt-cert FILE          PEM client certificate, with --mqtt-key (AWS IoT: the thing's certificate)
  --mqtt-key FILE           PEM private key of --mqtt-cert
  --mqtt-ca FILE            PEM CA certificate(s) for the broker instead of the system ones
                            (AWS IoT: AmazonRootCA1.pem)
  --mqtt-client-id ID       MQTT client id (default: the thing name, as AWS IoT policies expect)

Services (a tunnel is refused unless every one of its services is mapped):
  --service ID=TARGET,...   Where each service's connections go: PORT, HOST:PORT, [IPv6]:PORT or a
                            Unix socket path, e.g. --service SSH=22,HTTP=10.0.0.5:80
  --config-dir DIR          Files of "ID = TARGET" lines, as the proxy's --config-dir; --service
                            wins for an id defined in both
  --max-tunnels N           Tunnels at once (default ${DEFAULT_MAX_TUNNELS}); a new one closes the oldest when full

State (the tunnels it serves, resumed after a restart or a crash):
  --state-dir DIR           Where agent-<thing>.json is kept (mode 0600). Default: $STATE_DIRECTORY
                            (systemd StateDirectory=), else $XDG_STATE_HOME/localproxy, else
                            ~/.local/state/localproxy (%LOCALAPPDATA%\\localproxy on Windows).
                            A state file that cannot be read is said in one line (a damaged one is
                            renamed to .corrupt) and the agent starts without resumed tunnels.

Tunnel endpoint (as the proxy):
  -e, --proxy-endpoint HOST[:PORT]
                            A relay of your own (also --endpoint); default: the endpoint of the
                            region named in the notification
  -c, --capath DIR          Extra CA certificates for the tunnel endpoint
  -k, --no-ssl-host-verify  [INSECURE - DEV/TEST ONLY] No TLS verification of the tunnel endpoint
  --settings-json FILE      Fine-grained settings (retries, region_endpoint_overrides, ...)

  -v, --verbose LEVEL       Log level on stderr, 0-6 (default 4, info)
  -h, --help                Show this help and exit

The MQTT session is persistent (clean session off, client id unchanged across restarts), so
notifications sent while the agent is stopped or offline arrive when it is back.

Exit codes: 0 stopped by SIGTERM/SIGINT (after closing its tunnels; they are resumed at the next
start), 2 bad option or file.
`;

/** systemd waits 90 s for a stop by default, but a device service should stop in seconds. */
const SHUTDOWN_GRACE_MS = 5000;
const MAX_TUNNELS_LIMIT = 64;

const OPTIONS: readonly OptionSpec[] = [
  ...BROKER_OPTIONS,
  { name: 'thing-name', value: true },
  { name: 'service', value: true },
  { name: 'config-dir', value: true },
  { name: 'max-tunnels', value: true },
  { name: 'state-dir', value: true },
  { name: 'proxy-endpoint', short: 'e', value: true },
  { name: 'endpoint', value: true },
  { name: 'capath', short: 'c', value: true },
  { name: 'no-ssl-host-verify', short: 'k', value: false },
  { name: 'settings-json', value: true },
  { name: 'verbose', short: 'v', value: true },
  { name: 'help', short: 'h', value: false },
];

function buildServices(list: string | undefined, configDir: string | undefined, log: Logger): Map<string, DestinationTarget> {
  const services = new Map<string, DestinationTarget>();
  if (configDir !== undefined) {
    validatePath(configDir, '--config-dir');
    checkConfigDir(configDir);
    const result = readConfigDir(configDir, 'destination');
    for (const warning of result.warnings) log.warn(warning);
    for (const [id, target] of result.mappings) services.set(id, target as DestinationTarget);
  }
  if (list !== undefined) {
    const parsed = parseMappings(list, 'destination');
    for (const warning of parsed.warnings) log.warn(warning);
    for (const [id, target] of parsed.services) {
      // A bare port would send every service, whatever it is, to one place.
      if (id === '') throw usageError(`--service takes ID=TARGET items, e.g. --service SSH=${formatTarget(target)}`);
      if (services.has(id)) log.debug(`--service ${id} replaces the --config-dir mapping ${formatTarget(services.get(id)!)}`);
      services.set(id, target as DestinationTarget);
    }
  }
  if (services.size === 0) throw usageError('no services to serve: give --service ID=TARGET (e.g. --service SSH=22) or --config-dir DIR');
  return services;
}

/** --state-dir (which must be a directory if it exists), else the default; undefined if there is none. */
function stateDirectory(given: string | undefined): string | undefined {
  if (given === undefined) return defaultStateDir();
  validatePath(given, '--state-dir');
  const info = statSync(given, { throwIfNoEntry: false });
  if (info && !info.isDirectory()) throw usageError(`--state-dir ${given} is not a directory`);
  return resolve(given);
}

/** The options, or `undefined` for --help (already printed). */
export function buildAgentOptions(argv: string[], logging: LoggerOptions): AgentOptions | undefined {
  const args = parseCommandLine(argv, OPTIONS).options;
  const flag = (name: string): string | undefined => stringOption(args, name);
  if (args.has('help')) {
    process.stdout.write(HELP);
    return undefined;
  }
  const verbose = flag('verbose');
  if (verbose !== undefined) {
    if (!/^[0-6]$/.test(verbose)) throw usageError(`invalid --verbose '${verbose}': expected 0-6`);
    logging.level = Number(verbose);
  }
  const log = new Logger(logging);

  if (flag('mqtt-url') === undefined) throw usageError('--mqtt-url is required, e.g. --mqtt-url mqtts://broker.example.com:8883');
  const thingName = flag('thing-name');
  if (thingName === undefined) throw usageError('--thing-name is required');
  if (!isValidThingName(thingName)) throw usageError(`invalid --thing-name '${thingName.slice(0, 140)}': 1-128 of a-z A-Z 0-9 : _ -`);
  const { broker, plain } = brokerFromArgs(args, thingName)!;

  const services = buildServices(flag('service'), flag('config-dir'), log);
  let maxTunnels = DEFAULT_MAX_TUNNELS;
  const maxText = flag('max-tunnels');
  if (maxText !== undefined) {
    maxTunnels = Number(maxText);
    if (!/^\d+$/.test(maxText) || maxTunnels < 1 || maxTunnels > MAX_TUNNELS_LIMIT) throw usageError(`invalid --max-tunnels '${maxText}': expected 1-${MAX_TUNNELS_LIMIT}`);
  }

  const options: AgentOptions = { broker, thingName, services, maxTunnels, logging };
  const stateDir = stateDirectory(flag('state-dir'));
  if (stateDir !== undefined) options.stateDir = stateDir;
  if (flag('proxy-endpoint') !== undefined && flag('endpoint') !== undefined) throw usageError('give --proxy-endpoint or --endpoint, not both');
  const endpoint = flag('proxy-endpoint') ?? flag('endpoint');
  if (endpoint !== undefined) {
    validateEndpoint(endpoint);
    options.endpoint = parseEndpoint(endpoint);
  }
  const caPath = flag('capath');
  if (caPath !== undefined) {
    validatePath(caPath, '--capath');
    const problem = caPathProblem(caPath);
    if (problem) log.warn(problem);
    options.caPath = caPath;
  }
  if (args.has('no-ssl-host-verify')) options.insecure = true;
  const settingsFile = flag('settings-json');
  if (settingsFile !== undefined) options.settings = readSettings(settingsFile, process.cwd(), log);
  if (plain) log.warn('--mqtt-url mqtt://: no TLS to the broker; access tokens cross the network in clear text. Use only for local tests.');
  if (options.insecure) log.warn('-k: TLS verification of the tunnel endpoint is DISABLED; use only for development and tests');
  return options;
}

export async function runAgentCli(argv: string[]): Promise<number> {
  const logging: LoggerOptions = {};
  let options: AgentOptions | undefined;
  try {
    options = buildAgentOptions(argv, logging);
  } catch (err) {
    return reportError(err, { command: 'agent' });
  }
  if (!options) return ExitCode.OK;
  const log = new Logger(logging);
  const agent = startAgent(options);

  // The close handshakes of the tunnels are waited for, within a bound; a second signal ends at once.
  await new Promise<void>((resolve) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals): void => {
      if (stopping) {
        log.warn(`Received ${signal} again, exiting now`);
        resolve();
        return;
      }
      stopping = true;
      log.info(`Received ${signal}, closing ${agent.tunnels()} tunnel${agent.tunnels() === 1 ? '' : 's'} and stopping`);
      const timer = setTimeout(() => {
        log.warn(`Shutdown did not finish within ${SHUTDOWN_GRACE_MS} ms, exiting`);
        resolve();
      }, SHUTDOWN_GRACE_MS);
      timer.unref();
      agent.close().then(() => {
        clearTimeout(timer);
        resolve();
      }, (err: unknown) => {
        log.error(`error while stopping: ${(err as Error)?.message ?? String(err)}`);
        resolve();
      });
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
  return ExitCode.OK;
}
