/**
 * `localproxy relay [options]`: runs the relay until SIGINT/SIGTERM (then resolves 0).
 * Bad flags: one line on stderr, exit 2. Runtime failures (port in use): one line, exit 1.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ExitCode } from '../exit';
import { Logger } from '../log';
import type { Credentials } from './sigv4';
import { startRelay, type RelayOptions } from './server';

const HELP = `Usage: localproxy relay [options]

A self-hostable AWS IoT Secure Tunneling service: the WebSocket data plane (/tunnel) and the
management API (AWS JSON 1.1, SigV4) on one port.

Options:
  --listen HOST:PORT        Address to serve on (default 127.0.0.1:8443; IPv6 as [::1]:8443)
  --tls-self-signed DIR     Use DIR/cert.pem and DIR/key.pem, creating a self-signed certificate
                            for localhost, 127.0.0.1 and ::1 if missing, plus the OpenSSL hash
                            link, so proxies can use "-c DIR"
  --tls-cert FILE           PEM certificate (chain) to serve, with --tls-key
  --tls-key FILE            PEM private key for --tls-cert
  --plain                   Serve ws:// without TLS (local experiments only)
  --state FILE              Keep open tunnels in FILE across restarts (token hashes only)
  --credentials-file FILE   Management API credentials: lines "aws_access_key_id = ..." and
                            "aws_secret_access_key = ..." (default: the environment variables
                            LOCALPROXY_RELAY_ACCESS_KEY_ID and LOCALPROXY_RELAY_SECRET_ACCESS_KEY)
  -v, --verbose LEVEL       Log level on stderr, 0-6 (default 4, info)
  -h, --help                Show this help and exit

Without a TLS option the relay serves a self-signed certificate generated at start (clients
then need -k); --tls-self-signed DIR is the convenient choice for tests and labs.
`;

class UsageError extends Error {}

function parseListen(value: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new UsageError(`invalid --listen '${value}': expected HOST:PORT, e.g. 127.0.0.1:8443 or [::1]:8443`);
  return { host: m[1] ?? m[2], port };
}

function readText(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${what} '${path}': ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
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
  if (!accessKeyId || !secretAccessKey) throw new UsageError(`credentials file '${path}' needs aws_access_key_id and aws_secret_access_key`);
  return { accessKeyId, secretAccessKey };
}

function buildOptions(argv: string[], log: Logger): { options: RelayOptions; help: boolean } {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        listen: { type: 'string' },
        'tls-self-signed': { type: 'string' },
        'tls-cert': { type: 'string' },
        'tls-key': { type: 'string' },
        plain: { type: 'boolean' },
        state: { type: 'string' },
        'credentials-file': { type: 'string' },
        verbose: { type: 'string', short: 'v' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    // node:util's messages run to several sentences; keep the first.
    throw new UsageError(String((err as Error).message).split('. ')[0]);
  }
  const v = parsed.values;
  if (v.help) return { options: {}, help: true };
  const options: RelayOptions = { log };
  if (v.verbose !== undefined) {
    if (!/^[0-6]$/.test(v.verbose)) throw new UsageError(`invalid --verbose '${v.verbose}': expected 0-6`);
    log.level = Number(v.verbose);
  }
  const listen = parseListen(v.listen ?? '127.0.0.1:8443');
  options.host = listen.host;
  options.port = listen.port;
  const tlsChoices = [v.plain && '--plain', v['tls-self-signed'] !== undefined && '--tls-self-signed', (v['tls-cert'] !== undefined || v['tls-key'] !== undefined) && '--tls-cert/--tls-key'].filter(Boolean);
  if (tlsChoices.length > 1) throw new UsageError(`${tlsChoices.join(' and ')} cannot be combined`);
  if (v.plain) {
    options.tls = 'plain';
  } else if (v['tls-self-signed'] !== undefined) {
    options.selfSignedDir = v['tls-self-signed'];
  } else if (v['tls-cert'] !== undefined || v['tls-key'] !== undefined) {
    if (v['tls-cert'] === undefined || v['tls-key'] === undefined) throw new UsageError('--tls-cert and --tls-key must be given together');
    options.tls = { cert: readText(v['tls-cert'], 'certificate'), key: readText(v['tls-key'], 'private key') };
  } else {
    options.tls = 'self-signed';
  }
  options.statePath = v.state;
  if (v['credentials-file'] !== undefined) {
    options.credentials = parseCredentialsFile(readText(v['credentials-file'], 'credentials file'), v['credentials-file']);
  } else {
    const accessKeyId = process.env.LOCALPROXY_RELAY_ACCESS_KEY_ID;
    const secretAccessKey = process.env.LOCALPROXY_RELAY_SECRET_ACCESS_KEY;
    if (accessKeyId && secretAccessKey) options.credentials = { accessKeyId, secretAccessKey };
    else if (accessKeyId || secretAccessKey) throw new UsageError('set both LOCALPROXY_RELAY_ACCESS_KEY_ID and LOCALPROXY_RELAY_SECRET_ACCESS_KEY, or neither');
  }
  return { options, help: false };
}

export async function runRelayCli(argv: string[]): Promise<number> {
  const log = new Logger();
  let built;
  try {
    built = buildOptions(argv, log);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`localproxy relay: ${err.message} (try 'localproxy relay --help')\n`);
    return ExitCode.USAGE;
  }
  if (built.help) {
    process.stdout.write(HELP);
    return ExitCode.OK;
  }
  const { options } = built;
  if (options.tls === 'plain') log.warn('--plain: serving ws:// without TLS; tokens cross the network in clear text. Use only for local experiments.');
  if (options.tls === 'self-signed') log.warn('no TLS option given: serving a certificate generated at start that no client trusts (clients need -k); use --tls-self-signed DIR to keep one');
  if (!options.credentials) log.warn('no management API credentials (LOCALPROXY_RELAY_ACCESS_KEY_ID/LOCALPROXY_RELAY_SECRET_ACCESS_KEY or --credentials-file): the API refuses every request');

  let relay;
  try {
    relay = await startRelay(options);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const what = e.code === 'EADDRINUSE' ? `address ${options.host}:${options.port} is already in use`
      : e.code === 'EACCES' ? `no permission to listen on ${options.host}:${options.port}`
      : e.message;
    process.stderr.write(`localproxy relay: cannot start: ${what}\n`);
    return ExitCode.FAILURE;
  }
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
  process.stdout.write(`localproxy relay listening on ${relay.url}\n`);
  await stopped;
  await relay.close();
  return ExitCode.OK;
}
