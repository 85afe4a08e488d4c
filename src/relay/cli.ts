/**
 * `localproxy relay [options]`: runs the relay until SIGINT/SIGTERM (then resolves 0).
 * Bad flags: one line on stderr, exit 2. Runtime failures (port in use): one line, exit 1.
 */
import { randomBytes, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { BROKER_OPTIONS, brokerFromArgs } from '../mqtt/flags';
import { parseCommandLine, shownValue, stringOption, usageError, type OptionSpec, type RawArgs } from '../cli/args';
import { fileProblem } from '../cli/read-file';
import { reportError } from '../cli/report';
import { ExitCode, ExitError } from '../exit';
import { Logger } from '../log';
import { PRODUCT, VERSION } from '../version';
import type { Credentials } from './sigv4';
import { MIN_SECRET_BYTES } from './cluster/auth';
import { namesOf, tlsNameProblem } from './certs';
import { RelayConfigError } from './errors';
import { healthCheck, healthUrl } from './health-check';
import { ACCOUNT_ID_PATTERN, isRegion, REGION_TEXT } from './store/record';
import { checkStoreUrl, describeStoreUrl } from './store/url';
import { startRelay, type RelayOptions } from './server';

const HELP = `Usage: localproxy relay [options]

A self-hostable AWS IoT Secure Tunneling service: the WebSocket data plane (/tunnel) and the
management API (AWS JSON 1.1, SigV4) on one port.

Options:
  --listen HOST:PORT        Address to serve on (default 127.0.0.1:8443; IPv6 as [::1]:8443)
  --tls-self-signed DIR     Use DIR/cert.pem and DIR/key.pem, creating a self-signed certificate
                            for localhost, 127.0.0.1 and ::1 if missing, plus the OpenSSL hash
                            link, so proxies can use "-c DIR" (or "-c DIR/cert.pem")
  --tls-name NAME[,NAME...] DNS names and IP addresses the self-signed certificate names too:
                            the names proxies give with -e (e.g. relay.example.com,192.0.2.10);
                            a kept certificate lacking one is re-issued (copy it again)
  --tls-cert FILE           PEM certificate (chain) to serve, with --tls-key
  --tls-key FILE            PEM private key for --tls-cert
  --plain                   Serve ws:// without TLS (local experiments only)
  --state FILE              Keep open tunnels in FILE across restarts (token hashes only)
  --bandwidth BYTES_PER_S   Carry at most this many bytes per second in each direction of
                            every tunnel, as the cloud limits a tunnel (800000 is its class of
                            limit): a peer sending faster is not read until it is back within
                            the rate, so the excess waits in its own socket buffers
  --no-pacing               Hand everything for a peer to its socket at once: no delay probes
                            to our proxies, no per-connection order. For tunnels that carry bulk
                            transfers only, to destinations on slow links: the link stays full
                            (about 5 % more of its rate), while anything interactive waits
                            seconds behind the bulk (paced, by default: milliseconds)
  --store URL               Keep tunnels in Redis (or Valkey), shared by several relays (a
                            cluster): redis://HOST[:PORT][/DB] or rediss://... (TLS). The
                            password: in the URL, or LOCALPROXY_RELAY_REDIS_PASSWORD (better:
                            the URL is visible in the process list). Needs --node-url and the
                            cluster secret; instead of --state
  --store-ca FILE           PEM CA certificate(s) for rediss:// instead of the system ones
  --node-url URL            How the other relays of the cluster reach this one: wss://HOST:PORT
                            of this relay's own port (ws:// with --plain)
  --cluster-secret-file FILE
                            The secret shared by the relays of a cluster (at least 16 bytes;
                            default: LOCALPROXY_RELAY_CLUSTER_SECRET); they authenticate to
                            each other with it
  --cluster-ca FILE         PEM CA certificate(s) to trust when connecting to other relays
                            (default: the system ones and this relay's own certificate)
  --lease-seconds N         How long the record of a peer held by this relay outlives the
                            relay if it dies (2-300, default 15; renewed every third of it)
  --max-services N          Services a tunnel may have (default 3, the cloud's quota)
  --region R                Region in tunnel ARNs (default: the region each OpenTunnel
                            request is signed for)
  --account-id ID           Account in tunnel ARNs, 12 digits (default 000000000000)
  --credentials-file FILE   Management API credentials: lines "aws_access_key_id = ..." and
                            "aws_secret_access_key = ..." (default: the environment variables
                            LOCALPROXY_RELAY_ACCESS_KEY_ID and LOCALPROXY_RELAY_SECRET_ACCESS_KEY)
  --mqtt-url URL            Notify things as the cloud does: when a tunnel with a thing name is
                            opened, or its destination token rotated, publish the token to
                            $aws/things/<thing>/tunnels/notify (QoS 1) on this broker, where
                            "localproxy agent" picks it up. mqtts://HOST[:PORT] (mqtt:// for tests)
  --mqtt-cert FILE, --mqtt-key FILE
                            PEM client certificate and key for the broker
  --mqtt-ca FILE            PEM CA certificate(s) for the broker instead of the system ones
  --mqtt-client-id ID       MQTT client id (default localproxy-relay-<random>)
  -v, --verbose LEVEL       Log level on stderr, 0-6 (default 4, info)
  --health-check URL        Ask the relay at URL (https://127.0.0.1:8443) for GET /health and
                            exit 0 if it answers 200, else 1: for container health checks (the
                            certificate is not verified; nothing secret is sent)
  -V, --version             Print the version and exit
  -h, --help                Show this help and exit

Without a TLS option the relay serves a self-signed certificate generated at start (clients
then need -k); --tls-self-signed DIR is the convenient choice for tests and labs.
`;

const OPTIONS: readonly OptionSpec[] = [
  { name: 'listen', value: true },
  { name: 'tls-self-signed', value: true },
  { name: 'tls-name', value: true },
  { name: 'health-check', value: true },
  { name: 'tls-cert', value: true },
  { name: 'tls-key', value: true },
  { name: 'plain', value: false },
  { name: 'state', value: true },
  { name: 'bandwidth', value: true },
  { name: 'no-pacing', value: false },
  { name: 'store', value: true },
  { name: 'store-ca', value: true },
  { name: 'node-url', value: true },
  { name: 'cluster-secret-file', value: true },
  { name: 'cluster-ca', value: true },
  { name: 'lease-seconds', value: true },
  { name: 'credentials-file', value: true },
  { name: 'max-services', value: true },
  { name: 'region', value: true },
  { name: 'account-id', value: true },
  { name: 'verbose', short: 'v', value: true },
  { name: 'help', short: 'h', value: false },
  ...BROKER_OPTIONS,
];

function parseListen(value: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw usageError(`invalid --listen '${value}': expected HOST:PORT, e.g. 127.0.0.1:8443 or [::1]:8443`);
  return { host: m[1] ?? m[2], port };
}

function readText(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw usageError(`cannot read ${what} '${path}': ${fileProblem(err)}`);
  }
}

/** `aws_access_key_id = X` / `aws_secret_access_key = Y` lines (the ~/.aws/credentials shape) or the env var names. */
export function parseCredentialsFile(text: string, path: string): Credentials {
  const values = new Map<string, string>();
  for (const line of text.split(/\r?\n/)) {
    const m = /^\s*([A-Za-z_]+)\s*=\s*(.*?)\s*$/.exec(line);
    if (m) values.set(m[1].toLowerCase(), m[2]);
  }
  const accessKeyId = values.get('aws_access_key_id') ?? values.get('localproxy_relay_access_key_id');
  const secretAccessKey = values.get('aws_secret_access_key') ?? values.get('localproxy_relay_secret_access_key');
  if (!accessKeyId || !secretAccessKey) throw usageError(`credentials file '${path}' needs aws_access_key_id and aws_secret_access_key`);
  return { accessKeyId, secretAccessKey };
}

/** `--store` and the cluster options; the warnings go to `log` once the relay started. */
function clusterFromArgs(args: RawArgs, options: RelayOptions, log: Logger): void {
  const url = stringOption(args, 'store');
  const clusterFlags = ['store-ca', 'node-url', 'cluster-secret-file', 'cluster-ca', 'lease-seconds'].filter((f) => args.has(f));
  if (url === undefined) {
    if (clusterFlags.length > 0) throw usageError(`--${clusterFlags[0]} needs --store`);
    return;
  }
  if (options.statePath !== undefined) throw usageError('--state and --store cannot be combined: a cluster keeps its tunnels in the store');
  const problem = checkStoreUrl(url);
  if (problem) throw usageError(`invalid --store '${describeStoreUrl(url)}': ${problem}`);
  const password = process.env.LOCALPROXY_RELAY_REDIS_PASSWORD;
  const storeCa = stringOption(args, 'store-ca');
  options.store = { url, ...(password ? { password } : {}), ...(storeCa !== undefined ? { ca: readText(storeCa, 'store CA file') } : {}) };
  const nodeUrl = stringOption(args, 'node-url');
  if (nodeUrl === undefined) throw usageError('--store needs --node-url: how the other relays of the cluster reach this one (wss://HOST:PORT)');
  let parsed: URL | undefined;
  try {
    parsed = new URL(nodeUrl);
  } catch {
    parsed = undefined;
  }
  if (!parsed || (parsed.protocol !== 'wss:' && parsed.protocol !== 'ws:') || !parsed.hostname || (parsed.pathname !== '/' && parsed.pathname !== '') || parsed.search || parsed.username) {
    throw usageError(`invalid --node-url '${nodeUrl}': expected wss://HOST:PORT (ws:// with --plain)`);
  }
  if ((parsed.protocol === 'ws:') !== (options.tls === 'plain')) throw usageError(`--node-url ${parsed.protocol}// does not match the relay: ${options.tls === 'plain' ? 'ws:// with --plain' : 'wss:// when it serves TLS'}`);
  const secretFile = stringOption(args, 'cluster-secret-file');
  const secretText = secretFile !== undefined ? readText(secretFile, 'cluster secret file').trim() : process.env.LOCALPROXY_RELAY_CLUSTER_SECRET ?? '';
  if (secretText === '') throw usageError('--store needs the cluster secret: --cluster-secret-file FILE or LOCALPROXY_RELAY_CLUSTER_SECRET');
  const secret = Buffer.from(secretText, 'utf8');
  if (secret.length < MIN_SECRET_BYTES) throw usageError(`the cluster secret must be at least ${MIN_SECRET_BYTES} bytes`);
  const clusterCa = stringOption(args, 'cluster-ca');
  const lease = stringOption(args, 'lease-seconds');
  if (lease !== undefined && (!/^\d{1,3}$/.test(lease) || Number(lease) < 2 || Number(lease) > 300)) throw usageError(`invalid --lease-seconds '${lease}': expected 2 to 300`);
  options.cluster = {
    nodeUrl: `${parsed.protocol}//${parsed.host}`,
    secret,
    ...(clusterCa !== undefined ? { ca: [readText(clusterCa, 'cluster CA file')] } : {}),
    ...(lease !== undefined ? { leaseMs: Number(lease) * 1000 } : {}),
  };
  const inUrl = new URL(url);
  if (inUrl.password) pendingWarnings.set(log, '--store URL carries a password: it is visible in the process list to other users of this machine; prefer LOCALPROXY_RELAY_REDIS_PASSWORD');
}

/** Warnings found while parsing, printed once the relay started (so that a start-up error stands alone). */
const pendingWarnings = new WeakMap<Logger, string>();

/** `--tls-name a,b`: each a DNS name or an IP address (an IPv6 one may be in brackets). */
function parseTlsNames(value: string): string[] {
  const names = value.split(',').map((n) => n.trim().replace(/^\[(.*)\]$/, '$1')).filter((n) => n !== '');
  if (names.length === 0) throw usageError("invalid --tls-name '': expected NAME[,NAME...], e.g. relay.example.com,192.0.2.10");
  for (const name of names) {
    const problem = tlsNameProblem(name);
    if (problem) throw usageError(`invalid --tls-name '${shownValue(name)}': ${problem}`);
  }
  return names;
}

interface Built {
  options: RelayOptions;
  help: boolean;
  healthCheck?: URL;
  mqtt?: ReturnType<typeof brokerFromArgs>;
}

function buildOptions(argv: string[], log: Logger): Built {
  const args = parseCommandLine(argv, OPTIONS).options;
  if (args.has('help')) return { options: {}, help: true };
  const probe = stringOption(args, 'health-check');
  if (probe !== undefined) {
    const url = healthUrl(probe);
    if (!url) throw usageError(`invalid --health-check '${shownValue(probe)}': expected https://HOST:PORT (http:// for a relay started with --plain)`);
    return { options: {}, help: false, healthCheck: url };
  }
  const mqtt = brokerFromArgs(args, `localproxy-relay-${randomBytes(4).toString('hex')}`);
  const options: RelayOptions = { log };
  const verbose = stringOption(args, 'verbose');
  if (verbose !== undefined) {
    if (!/^[0-6]$/.test(verbose)) throw usageError(`invalid --verbose '${verbose}': expected 0-6`);
    log.level = Number(verbose);
  }
  const listen = parseListen(stringOption(args, 'listen') ?? '127.0.0.1:8443');
  options.host = listen.host;
  options.port = listen.port;
  const plain = args.has('plain');
  const selfSignedDir = stringOption(args, 'tls-self-signed');
  const certFile = stringOption(args, 'tls-cert');
  const keyFile = stringOption(args, 'tls-key');
  const tlsChoices = [plain && '--plain', selfSignedDir !== undefined && '--tls-self-signed', (certFile !== undefined || keyFile !== undefined) && '--tls-cert/--tls-key'].filter(Boolean);
  if (tlsChoices.length > 1) throw usageError(`${tlsChoices.join(' and ')} cannot be combined`);
  const tlsNames = stringOption(args, 'tls-name');
  if (tlsNames !== undefined) {
    if (plain || certFile !== undefined || keyFile !== undefined) throw usageError(`--tls-name names the relay's self-signed certificate; ${plain ? '--plain serves no certificate' : 'the names of --tls-cert are in that certificate'}`);
    options.tlsNames = parseTlsNames(tlsNames);
  }
  if (plain) {
    options.tls = 'plain';
  } else if (selfSignedDir !== undefined) {
    options.selfSignedDir = selfSignedDir;
  } else if (certFile !== undefined || keyFile !== undefined) {
    if (certFile === undefined || keyFile === undefined) throw usageError('--tls-cert and --tls-key must be given together');
    options.tls = { cert: readText(certFile, 'certificate'), key: readText(keyFile, 'private key'), certFile: `--tls-cert ${certFile}`, keyFile: `--tls-key ${keyFile}` };
  } else {
    options.tls = 'self-signed';
  }
  options.statePath = stringOption(args, 'state');
  const bandwidth = stringOption(args, 'bandwidth');
  if (bandwidth !== undefined) {
    const rate = /^\d{1,15}$/.test(bandwidth) ? Number(bandwidth) : NaN;
    if (!(rate >= 1024)) throw usageError(`invalid --bandwidth '${bandwidth}': expected bytes per second, at least 1024 (e.g. 800000)`);
    options.bandwidth = rate;
  }
  if (args.has('no-pacing')) options.pace = false;
  clusterFromArgs(args, options, log);
  const maxServices = stringOption(args, 'max-services');
  if (maxServices !== undefined) {
    if (!/^\d{1,4}$/.test(maxServices) || Number(maxServices) < 1) throw usageError(`invalid --max-services '${maxServices}': expected a number from 1`);
    options.limits = { maxServicesPerTunnel: Number(maxServices) };
  }
  const region = stringOption(args, 'region');
  if (region !== undefined) {
    if (!isRegion(region)) throw usageError(`invalid --region '${region}': expected ${REGION_TEXT}`);
    options.region = region;
  }
  const accountId = stringOption(args, 'account-id');
  if (accountId !== undefined) {
    if (!ACCOUNT_ID_PATTERN.test(accountId)) throw usageError(`invalid --account-id '${accountId}': expected 12 digits`);
    options.accountId = accountId;
  }
  const credentialsFile = stringOption(args, 'credentials-file');
  if (credentialsFile !== undefined) {
    options.credentials = parseCredentialsFile(readText(credentialsFile, 'credentials file'), credentialsFile);
  } else {
    const accessKeyId = process.env.LOCALPROXY_RELAY_ACCESS_KEY_ID;
    const secretAccessKey = process.env.LOCALPROXY_RELAY_SECRET_ACCESS_KEY;
    if (accessKeyId && secretAccessKey) options.credentials = { accessKeyId, secretAccessKey };
    else if (accessKeyId || secretAccessKey) throw usageError('set both LOCALPROXY_RELAY_ACCESS_KEY_ID and LOCALPROXY_RELAY_SECRET_ACCESS_KEY, or neither');
  }
  return { options, help: false, mqtt };
}

export async function runRelayCli(argv: string[]): Promise<number> {
  const log = new Logger();
  let built;
  try {
    built = buildOptions(argv, log);
  } catch (err) {
    if (!(err instanceof ExitError)) throw err;
    return reportError(err, { command: 'relay' });
  }
  if (built.help) {
    process.stdout.write(HELP);
    return ExitCode.OK;
  }
  if (built.healthCheck) {
    const { healthy, line } = await healthCheck(built.healthCheck);
    if (healthy) process.stdout.write(`${line}\n`);
    else process.stderr.write(`localproxy relay: unhealthy: ${line}\n`);
    return healthy ? ExitCode.OK : ExitCode.FAILURE;
  }
  const { options } = built;
  // First, so that any report of a problem says which release it came from.
  log.info(`${PRODUCT} ${VERSION} relay (Node ${process.versions.node}, ${process.platform} ${process.arch})`);
  // Loaded on demand, as in main.ts: MQTT.js is as large as the rest of the bundle.
  if (built.mqtt) options.notifier = (await import('./notify')).mqttNotifier({ ...built.mqtt.broker, log: log.fork('mqtt') });

  let relay;
  try {
    relay = await startRelay(options);
  } catch (err) {
    await options.notifier?.close();
    // A certificate or state file it cannot use: a configuration error, one line naming the file.
    if (err instanceof RelayConfigError) return reportError(new ExitError(ExitCode.USAGE, err.message), { command: 'relay' });
    const e = err as NodeJS.ErrnoException;
    const what = e.code === 'EADDRINUSE' ? `address ${options.host}:${options.port} is already in use`
      : e.code === 'EACCES' ? `no permission to listen on ${options.host}:${options.port}`
      : e.message;
    return reportError(new ExitError(ExitCode.FAILURE, `cannot start: ${what}`), { command: 'relay' });
  }
  // Warnings once the relay could start, so that a start-up error stands alone.
  if (options.tls === 'plain') log.warn('--plain: serving ws:// without TLS; tokens cross the network in clear text. Use only for local experiments.');
  if (options.tls === 'self-signed' && !options.selfSignedDir) log.warn('no TLS option given: serving a certificate generated at start that no client trusts (clients need -k); use --tls-self-signed DIR to keep one');
  // The certificate generated at start needs -k anyway: its names matter only when kept or given.
  const served = options.selfSignedDir !== undefined ? relay.caPem : typeof options.tls === 'object' ? options.tls.cert : undefined;
  const coverage = served ? certificateCoverage(options.host ?? '', served, options.selfSignedDir !== undefined) : undefined;
  if (coverage?.warn) log.warn(coverage.line);
  else if (coverage) log.info(coverage.line);
  if (!options.credentials) log.warn('no management API credentials (LOCALPROXY_RELAY_ACCESS_KEY_ID/LOCALPROXY_RELAY_SECRET_ACCESS_KEY or --credentials-file): the API refuses every request');
  const pending = pendingWarnings.get(log);
  if (pending) log.warn(pending);
  if (options.store && options.store.url.startsWith('redis:')) log.warn('--store redis://: no TLS to Redis; use rediss:// where the network between the relays and Redis is not trusted.');
  if (built.mqtt?.plain) log.warn('--mqtt-url mqtt://: no TLS to the broker; access tokens cross the network in clear text. Use only for local tests.');
  // Handlers first: a script may signal as soon as it reads the line below.
  const stopped = new Promise<void>((resolve) => {
    const onSignal = (signal: string) => {
      log.info(`${signal} received: stopping`);
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      resolve();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
  if (options.bandwidth) log.info(`each direction of every tunnel is limited to ${options.bandwidth} bytes/s (--bandwidth)`);
  process.stdout.write(`localproxy relay listening on ${relay.url}\n`);
  await stopped;
  await relay.close();
  await options.notifier?.close();
  return ExitCode.OK;
}

const WILDCARDS = new Set(['0.0.0.0', '::', '']);
const LOOPBACK = /^(localhost|127(\.\d{1,3}){3}|::1)$/i;

/**
 * What the served certificate covers, when it matters: on every address (0.0.0.0, ::) proxies
 * on other hosts connect by a name or address the certificate must contain; on one address,
 * that address. Undefined when there is nothing to say.
 */
export function certificateCoverage(host: string, certPem: string, selfSigned: boolean): { warn: boolean; line: string } | undefined {
  const names = namesOf(certPem);
  const shown = names.join(', ') || 'no name';
  const fix = selfSigned ? 'add the names proxies use in -e with --tls-name NAME[,NAME...]' : 'serve a certificate that names it (--tls-cert)';
  if (WILDCARDS.has(host)) {
    if (names.every((n) => LOOPBACK.test(n))) {
      return { warn: true, line: `listening on every address, but the certificate names only ${shown}: proxies on other hosts will fail to verify it; ${fix}` };
    }
    return { warn: false, line: `listening on every address; the certificate names ${shown}: proxies connect with -e one of these` };
  }
  if (LOOPBACK.test(host) || !isIP(host)) return undefined;
  const cert = new X509Certificate(certPem);
  if (cert.checkIP(host)) return undefined;
  return { warn: true, line: `listening on ${host}, which the certificate does not name (it names ${shown}): proxies using -e ${host} will fail to verify it; ${selfSigned ? `add it with --tls-name ${host}` : fix}` };
}
