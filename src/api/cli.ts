/**
 * `localproxy tunnel open|close|describe|list|rotate`: a client for the management API of
 * the cloud service or a relay. Prints the JSON response on stdout.
 * Exit codes: 0 ok, 1 the call failed (network or API error), 2 usage.
 */
import { readFileSync } from 'node:fs';
import { parseCommandLine, usageError, type OptionSpec } from '../cli/args';
import { reportError } from '../cli/report';
import { closest } from '../cli/suggest';
import { printable } from '../printable';
import { ExitCode, ExitError } from '../exit';
import { MAX_LIFETIME_MINUTES, MIN_LIFETIME_MINUTES } from '../relay/tunnels';
import { ApiError, defaultEndpoint, TunnelApiClient, type Operation } from './client';

const HELP = `Usage: localproxy tunnel COMMAND [options]

Commands:
  open       Open a tunnel          [--services a,b] [--lifetime MINUTES] [--description TEXT] [--thing-name NAME]
  close      Close a tunnel         --tunnel-id ID [--delete]
  describe   Describe a tunnel      --tunnel-id ID
  list       List tunnels           [--max-results N] [--next-token TOKEN] [--thing-name NAME]
  rotate     Rotate access tokens   --tunnel-id ID --client-mode SOURCE|DESTINATION|ALL [--services a,b]

Common options:
  --endpoint URL      API endpoint, e.g. https://127.0.0.1:8443 for a relay
                      (default https://api.tunneling.iot.REGION.amazonaws.com)
  --region R          Signing region (default AWS_REGION, AWS_DEFAULT_REGION or us-east-1)
  --ca FILE           Also trust the PEM certificate(s) in FILE (e.g. a relay's cert.pem)
  -h, --help          Show this help and exit

Credentials come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN.
For a relay, use the values it was started with (LOCALPROXY_RELAY_ACCESS_KEY_ID/...SECRET_ACCESS_KEY).
`;

const COMMANDS: Record<string, Operation> = {
  open: 'OpenTunnel',
  close: 'CloseTunnel',
  describe: 'DescribeTunnel',
  list: 'ListTunnels',
  rotate: 'RotateTunnelAccessToken',
};

const OPTIONS: readonly OptionSpec[] = [
  { name: 'endpoint', value: true },
  { name: 'region', value: true },
  { name: 'ca', value: true },
  { name: 'services', value: true },
  { name: 'lifetime', value: true },
  { name: 'description', value: true },
  { name: 'thing-name', value: true },
  { name: 'tunnel-id', value: true },
  { name: 'delete', value: false },
  { name: 'client-mode', value: true },
  { name: 'max-results', value: true },
  { name: 'next-token', value: true },
  { name: 'help', short: 'h', value: false },
];

type Values = Record<string, string | true | undefined>;

function need(values: Values, name: string): string {
  const value = values[name];
  if (typeof value !== 'string' || value === '') throw usageError(`--${name} is required`);
  return value;
}

function services(value: string | true | undefined): string[] | undefined {
  if (typeof value !== 'string') return undefined;
  return value.split(',').map((s) => s.trim()).filter(Boolean);
}

function buildInput(command: string, v: Values): object {
  switch (command) {
    case 'open': {
      const input: Record<string, unknown> = {};
      const list = services(v.services);
      if (list || v['thing-name']) input.destinationConfig = { services: list ?? [], thingName: v['thing-name'] };
      if (v.lifetime !== undefined) {
        const minutes = Number(v.lifetime);
        if (!Number.isInteger(minutes) || minutes < MIN_LIFETIME_MINUTES || minutes > MAX_LIFETIME_MINUTES) {
          throw usageError(`invalid --lifetime '${v.lifetime}': expected ${MIN_LIFETIME_MINUTES}-${MAX_LIFETIME_MINUTES} minutes`);
        }
        input.timeoutConfig = { maxLifetimeTimeoutMinutes: minutes };
      }
      if (typeof v.description === 'string') input.description = v.description;
      return input;
    }
    case 'close':
      return { tunnelId: need(v, 'tunnel-id'), delete: v.delete === true };
    case 'describe':
      return { tunnelId: need(v, 'tunnel-id') };
    case 'list': {
      const input: Record<string, unknown> = {};
      if (v['max-results'] !== undefined) {
        const n = Number(v['max-results']);
        if (!Number.isInteger(n) || n < 1 || n > 100) throw usageError(`invalid --max-results '${v['max-results']}': expected 1-100`);
        input.maxResults = n;
      }
      if (typeof v['next-token'] === 'string') input.nextToken = v['next-token'];
      if (typeof v['thing-name'] === 'string') input.thingName = v['thing-name'];
      return input;
    }
    case 'rotate': {
      const mode = need(v, 'client-mode').toUpperCase();
      if (mode !== 'SOURCE' && mode !== 'DESTINATION' && mode !== 'ALL') throw usageError(`invalid --client-mode '${v['client-mode']}': expected SOURCE, DESTINATION or ALL`);
      const input: Record<string, unknown> = { tunnelId: need(v, 'tunnel-id'), clientMode: mode };
      const list = services(v.services);
      if (list) input.destinationConfig = { services: list };
      return input;
    }
    default: {
      const guess = closest(command, Object.keys(COMMANDS));
      throw usageError(`unknown command '${command}' (${guess ? `did you mean '${guess}'?` : 'open, close, describe, list or rotate'})`);
    }
  }
}

export async function runTunnelCli(argv: string[]): Promise<number> {
  let client: TunnelApiClient;
  let operation: Operation;
  let input: object;
  try {
    const parsed = parseCommandLine(argv, OPTIONS, 1);
    const v: Values = Object.fromEntries(parsed.options);
    if (v.help) {
      process.stdout.write(HELP);
      return ExitCode.OK;
    }
    const [command] = parsed.positionals;
    if (command === undefined) throw usageError('missing command (open, close, describe, list or rotate)');
    input = buildInput(command, v);
    operation = COMMANDS[command];
    const region = (typeof v.region === 'string' && v.region) || process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION || 'us-east-1';
    const accessKeyId = process.env.AWS_ACCESS_KEY_ID;
    const secretAccessKey = process.env.AWS_SECRET_ACCESS_KEY;
    if (!accessKeyId || !secretAccessKey) throw usageError('set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary credentials)');
    let ca: string | undefined;
    if (typeof v.ca === 'string') {
      try {
        ca = readFileSync(v.ca, 'utf8');
      } catch (err) {
        throw usageError(`cannot read --ca '${v.ca}': ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
    }
    try {
      client = new TunnelApiClient({
        endpoint: typeof v.endpoint === 'string' ? v.endpoint : defaultEndpoint(region),
        region,
        credentials: { accessKeyId, secretAccessKey, sessionToken: process.env.AWS_SESSION_TOKEN || undefined },
        ca,
      });
    } catch (err) {
      throw usageError(`invalid --endpoint: ${(err as Error).message}`);
    }
  } catch (err) {
    if (!(err instanceof ExitError)) throw err;
    return reportError(err, { command: 'tunnel' });
  }
  try {
    const output = await client.call(operation, input);
    process.stdout.write(`${JSON.stringify(output, null, 2)}\n`);
    return ExitCode.OK;
  } catch (err) {
    // The service's words: escaped and cut where they are printed.
    const text = err instanceof ApiError ? `${printable(err.type)}: ${printable(err.message)}` : printable((err as Error).message);
    return reportError(new ExitError(ExitCode.FAILURE, `${operation} failed: ${text}`), { command: 'tunnel' });
  }
}
