/**
 * `localproxy agent [options]`: the device service. Runs until SIGINT/SIGTERM, then closes its
 * tunnels and resolves 0. Bad flags or files: one line on stderr, exit 2. It has no runtime
 * failure of its own: a broker that is away is retried for as long as the agent runs.
 */
import { readFileSync, statSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { checkConfigDir, readConfigDir } from '../cli/config-dir';
import { parseEndpoint } from '../cli/endpoint';
import { readSettings } from '../cli/proxy-options';
import { formatTarget, parseMappings } from '../cli/service-spec';
import { validateEndpoint, validatePath } from '../cli/validate';
import { ExitCode, ExitError, usageError } from '../exit';
import { Logger, type LoggerOptions } from '../log';
import type { DestinationTarget } from '../options';
import { startAgent, DEFAULT_MAX_TUNNELS, type AgentOptions } from './agent';
import { checkBrokerUrl } from './mqtt';
import { isValidThingName } from './notification';

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
                            Unix socket path, e.g. --service SSH=22,HTTP=10.0.0.5:80 (repeatable)
  --config-dir DIR          Files of "ID = TARGET" lines, as the proxy's --config-dir; --service
                            wins for an id defined in both
  --max-tunnels N           Tunnels at once (default ${DEFAULT_MAX_TUNNELS}); a new one closes the oldest when full

Tunnel endpoint (as the proxy):
  -e, --proxy-endpoint HOST[:PORT]
                            A relay of your own (also --endpoint); default: the endpoint of the
                            region named in the notification
  -c, --capath DIR          Extra CA certificates for the tunnel endpoint
  -k, --no-ssl-host-verify  [INSECURE - DEV/TEST ONLY] No TLS verification of the tunnel endpoint
  --settings-json FILE      Fine-grained settings (retries, region_endpoint_overrides, ...)

  -v, --verbose LEVEL       Log level on stderr, 0-6 (default 4, info)
  -h, --help                Show this help and exit

Exit codes: 0 stopped by SIGTERM/SIGINT (after closing its tunnels), 2 bad option or file.
`;

/** Decisions 13 for a service: systemd waits 90 s by default, but a stop should take seconds. */
const SHUTDOWN_GRACE_MS = 5000;
const MAX_TUNNELS_LIMIT = 64;

function readText(path: string, what: string): string {
  validatePath(path, what);
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw usageError(`cannot read ${what} '${path}': ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

function parse(argv: string[]) {
  try {
    return parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        'mqtt-url': { type: 'string' },
        'thing-name': { type: 'string' },
        'mqtt-cert': { type: 'string' },
        'mqtt-key': { type: 'string' },
        'mqtt-ca': { type: 'string' },
        'mqtt-client-id': { type: 'string' },
        service: { type: 'string', multiple: true },
        'config-dir': { type: 'string' },
        'max-tunnels': { type: 'string' },
        'proxy-endpoint': { type: 'string', short: 'e' },
        endpoint: { type: 'string' },
        capath: { type: 'string', short: 'c' },
        'no-ssl-host-verify': { type: 'boolean', short: 'k' },
        'settings-json': { type: 'string' },
        verbose: { type: 'string', short: 'v' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (err) {
    // node:util's messages run to several sentences; keep the first.
    throw usageError(String((err as Error).message).split('. ')[0]);
  }
}

function buildServices(lists: string[], configDir: string | undefined, log: Logger): Map<string, DestinationTarget> {
  const services = new Map<string, DestinationTarget>();
  if (configDir !== undefined) {
    validatePath(configDir, '--config-dir');
    checkConfigDir(configDir);
    const result = readConfigDir(configDir, 'destination');
    for (const warning of result.warnings) log.warn(warning);
    for (const [id, target] of result.mappings) services.set(id, target as DestinationTarget);
  }
  for (const list of lists) {
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

/** The options, or `undefined` for --help (already printed). */
export function buildAgentOptions(argv: string[], logging: LoggerOptions): AgentOptions | undefined {
  const v = parse(argv);
  if (v.help) {
    process.stdout.write(HELP);
    return undefined;
  }
  if (v.verbose !== undefined) {
    if (!/^[0-6]$/.test(v.verbose)) throw usageError(`invalid --verbose '${v.verbose}': expected 0-6`);
    logging.level = Number(v.verbose);
  }
  const log = new Logger(logging);

  const url = v['mqtt-url'];
  if (url === undefined) throw usageError('--mqtt-url is required, e.g. --mqtt-url mqtts://broker.example.com:8883');
  const urlProblem = checkBrokerUrl(url);
  if (urlProblem) throw usageError(urlProblem);
  const plain = new URL(url).protocol === 'mqtt:';
  const thingName = v['thing-name'];
  if (thingName === undefined) throw usageError('--thing-name is required');
  if (!isValidThingName(thingName)) throw usageError(`invalid --thing-name '${thingName.slice(0, 140)}': 1-128 of a-z A-Z 0-9 : _ -`);
  if ((v['mqtt-cert'] === undefined) !== (v['mqtt-key'] === undefined)) throw usageError('--mqtt-cert and --mqtt-key must be given together');
  const broker: AgentOptions['broker'] = { url, clientId: v['mqtt-client-id'] ?? thingName };
  if (broker.clientId === '') throw usageError('--mqtt-client-id cannot be empty');
  // MQTT.js would quietly switch to TLS; say it instead.
  if (v['mqtt-cert'] !== undefined && plain) throw usageError('a client certificate needs TLS: use an mqtts:// URL');
  if (v['mqtt-cert'] !== undefined) broker.cert = readText(v['mqtt-cert'], '--mqtt-cert');
  if (v['mqtt-key'] !== undefined) broker.key = readText(v['mqtt-key'], '--mqtt-key');
  if (v['mqtt-ca'] !== undefined) broker.ca = readText(v['mqtt-ca'], '--mqtt-ca');

  const services = buildServices(v.service ?? [], v['config-dir'], log);
  let maxTunnels = DEFAULT_MAX_TUNNELS;
  if (v['max-tunnels'] !== undefined) {
    maxTunnels = Number(v['max-tunnels']);
    if (!/^\d+$/.test(v['max-tunnels']) || maxTunnels < 1 || maxTunnels > MAX_TUNNELS_LIMIT) throw usageError(`invalid --max-tunnels '${v['max-tunnels']}': expected 1-${MAX_TUNNELS_LIMIT}`);
  }

  const options: AgentOptions = { broker, thingName, services, maxTunnels, logging };
  if (v['proxy-endpoint'] !== undefined && v.endpoint !== undefined) throw usageError('give --proxy-endpoint or --endpoint, not both');
  const endpoint = v['proxy-endpoint'] ?? v.endpoint;
  if (endpoint !== undefined) {
    validateEndpoint(endpoint);
    options.endpoint = parseEndpoint(endpoint);
  }
  if (v.capath !== undefined) {
    validatePath(v.capath, '--capath');
    if (!statSync(v.capath, { throwIfNoEntry: false })?.isDirectory()) log.warn(`CA directory ${v.capath} does not exist or is not a directory; only the system CAs are used`);
    options.caPath = v.capath;
  }
  if (v['no-ssl-host-verify']) options.insecure = true;
  if (v['settings-json'] !== undefined) options.settings = readSettings(v['settings-json'], process.cwd(), log);
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
    if (!(err instanceof ExitError)) throw err;
    process.stderr.write(`localproxy agent: ${err.message} (try 'localproxy agent --help')\n`);
    return err.exitCode;
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
