/**
 * `localproxy tunnel COMMAND`: a client for the management API of the cloud service or a
 * relay, one command per operation. Prints the response as the AWS CLI does (output.ts), with
 * AWS credentials found as the AWS CLI finds them (credentials.ts).
 * Exit codes: 0 ok, 1 the call failed (network or API error), 2 usage or credentials.
 */
import { parseCommandLine, usageError, type OptionSpec } from '../cli/args';
import { reportError } from '../cli/report';
import { closest } from '../cli/suggest';
import { ExitCode, ExitError } from '../exit';
import { MAX_LIFETIME_MINUTES, MIN_LIFETIME_MINUTES } from './model';
import type { Operation } from './client';
import { apiFailure, commonHelp, COMMON_OPTIONS, connectApi, type ApiSetup } from './setup';
import { formatOutput, outputChoice, type OutputChoice } from './output';

const HELP = `Usage: localproxy tunnel COMMAND [options]

Commands (the operations of the IoTSecuredTunneling API):
  open        OpenTunnel                [--services a,b] [--thing-name NAME] [--lifetime MINUTES]
                                        [--description TEXT] [--tags k=v,k2=v2]
  close       CloseTunnel               --tunnel-id ID [--delete]
  describe    DescribeTunnel            --tunnel-id ID
  list        ListTunnels               [--thing-name NAME] [--max-results N] [--next-token TOKEN]
  rotate      RotateTunnelAccessToken   --tunnel-id ID --client-mode SOURCE|DESTINATION|ALL
                                        [--services a,b [--thing-name NAME]]  (replaces the destination config)
  tag         TagResource               --resource-arn ARN | --tunnel-id ID, --tags k=v,k2=v2
  untag       UntagResource             --resource-arn ARN | --tunnel-id ID, --tag-keys k,k2
  tags        ListTagsForResource       --resource-arn ARN | --tunnel-id ID

Common options:
${commonHelp(22)}  --output FORMAT     json (default), text or table, as the AWS CLI prints them
                      (default: the profile's output setting or AWS_DEFAULT_OUTPUT)
  --query EXPR        JMESPath expression applied to the response, as the AWS CLI's --query
  -h, --help          Show this help and exit

Operations that return nothing (close, tag, untag) print nothing.
`;

const COMMANDS: Record<string, Operation> = {
  open: 'OpenTunnel',
  close: 'CloseTunnel',
  describe: 'DescribeTunnel',
  list: 'ListTunnels',
  rotate: 'RotateTunnelAccessToken',
  tag: 'TagResource',
  untag: 'UntagResource',
  tags: 'ListTagsForResource',
};

const OPTIONS: readonly OptionSpec[] = [
  ...COMMON_OPTIONS,
  { name: 'output', value: true },
  { name: 'query', value: true },
  { name: 'services', value: true },
  { name: 'lifetime', value: true },
  { name: 'description', value: true },
  { name: 'thing-name', value: true },
  { name: 'tags', value: true },
  { name: 'tag-keys', value: true },
  { name: 'resource-arn', value: true },
  { name: 'tunnel-id', value: true },
  { name: 'delete', value: false },
  { name: 'client-mode', value: true },
  { name: 'max-results', value: true },
  { name: 'next-token', value: true },
  { name: 'help', short: 'h', value: false },
];

/** Which options each command takes (the common ones aside). */
const ALLOWED: Record<string, readonly string[]> = {
  open: ['services', 'thing-name', 'lifetime', 'description', 'tags'],
  close: ['tunnel-id', 'delete'],
  describe: ['tunnel-id'],
  list: ['thing-name', 'max-results', 'next-token'],
  rotate: ['tunnel-id', 'client-mode', 'services', 'thing-name'],
  tag: ['resource-arn', 'tunnel-id', 'tags'],
  untag: ['resource-arn', 'tunnel-id', 'tag-keys'],
  tags: ['resource-arn', 'tunnel-id'],
};
const COMMON = [...COMMON_OPTIONS.map((o) => o.name), 'output', 'query', 'help'];

type Values = Record<string, string | true | undefined>;

function need(values: Values, name: string): string {
  const value = values[name];
  if (typeof value !== 'string' || value === '') throw usageError(`--${name} is required`);
  return value;
}

function list(value: string | true | undefined): string[] | undefined {
  if (typeof value !== 'string') return undefined;
  return value.split(',').map((s) => s.trim()).filter(Boolean);
}

/** `k=v,k2=v2` (tags hold no commas: the service's pattern has none); a key ends at its first '='. */
function tags(value: string | true | undefined): Array<{ key: string; value: string }> | undefined {
  if (typeof value !== 'string') return undefined;
  return value.split(',').filter((s) => s.trim() !== '').map((pair) => {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw usageError(`invalid --tags entry '${pair}': expected KEY=VALUE (the value may be empty)`);
    return { key: pair.slice(0, eq).trim(), value: pair.slice(eq + 1).trim() };
  });
}

/** The destination config: services, and a thing name only with them (the service requires services). */
function destinationConfig(v: Values): Record<string, unknown> | undefined {
  const services = list(v.services);
  if (!services) {
    if (v['thing-name'] !== undefined) throw usageError('--thing-name needs --services: a destination config names its services');
    return undefined;
  }
  if (services.length === 0) throw usageError('--services is empty: give service ids, e.g. --services SSH');
  return typeof v['thing-name'] === 'string' ? { thingName: v['thing-name'], services } : { services };
}

/** The input of one operation, or a usage error. `resource` is set for the tag commands. */
function buildInput(command: string, v: Values): { input: Record<string, unknown>; resource?: { arn?: string; tunnelId?: string } } {
  for (const name of Object.keys(v)) {
    if (v[name] !== undefined && !COMMON.includes(name) && !ALLOWED[command]?.includes(name)) throw usageError(`--${name} does not apply to '${command}'`);
  }
  switch (command) {
    case 'open': {
      const input: Record<string, unknown> = {};
      const destination = destinationConfig(v);
      if (destination) input.destinationConfig = destination;
      if (v.lifetime !== undefined) {
        const minutes = Number(v.lifetime);
        if (!Number.isInteger(minutes) || minutes < MIN_LIFETIME_MINUTES || minutes > MAX_LIFETIME_MINUTES) {
          throw usageError(`invalid --lifetime '${v.lifetime}': expected ${MIN_LIFETIME_MINUTES}-${MAX_LIFETIME_MINUTES} minutes`);
        }
        input.timeoutConfig = { maxLifetimeTimeoutMinutes: minutes };
      }
      if (typeof v.description === 'string') input.description = v.description;
      const tagList = tags(v.tags);
      if (tagList) input.tags = tagList;
      return { input };
    }
    case 'close':
      return { input: { tunnelId: need(v, 'tunnel-id'), delete: v.delete === true } };
    case 'describe':
      return { input: { tunnelId: need(v, 'tunnel-id') } };
    case 'list': {
      const input: Record<string, unknown> = {};
      if (v['max-results'] !== undefined) {
        const n = Number(v['max-results']);
        if (!Number.isInteger(n) || n < 1 || n > 100) throw usageError(`invalid --max-results '${v['max-results']}': expected 1-100`);
        input.maxResults = n;
      }
      if (typeof v['next-token'] === 'string') input.nextToken = v['next-token'];
      if (typeof v['thing-name'] === 'string') input.thingName = v['thing-name'];
      return { input };
    }
    case 'rotate': {
      const mode = need(v, 'client-mode').toUpperCase();
      if (mode !== 'SOURCE' && mode !== 'DESTINATION' && mode !== 'ALL') throw usageError(`invalid --client-mode '${v['client-mode']}': expected SOURCE, DESTINATION or ALL`);
      const input: Record<string, unknown> = { tunnelId: need(v, 'tunnel-id'), clientMode: mode };
      const destination = destinationConfig(v);
      if (destination && mode === 'SOURCE') throw usageError('--services and --thing-name replace the destination config: not with --client-mode SOURCE');
      if (destination) input.destinationConfig = destination;
      return { input };
    }
    case 'tag':
    case 'untag':
    case 'tags': {
      const arn = typeof v['resource-arn'] === 'string' ? v['resource-arn'] : undefined;
      const tunnelId = typeof v['tunnel-id'] === 'string' ? v['tunnel-id'] : undefined;
      if ((arn === undefined) === (tunnelId === undefined)) throw usageError('give --resource-arn ARN or --tunnel-id ID (one of them)');
      const input: Record<string, unknown> = {};
      if (command === 'tag') input.tags = tags(need(v, 'tags'));
      if (command === 'untag') input.tagKeys = list(need(v, 'tag-keys'));
      return { input, resource: { arn, tunnelId } };
    }
    default: {
      const guess = closest(command, Object.keys(COMMANDS));
      throw usageError(`unknown command '${command}' (${guess ? `did you mean '${guess}'?` : Object.keys(COMMANDS).join(', ')})`);
    }
  }
}

export async function runTunnelCli(argv: string[]): Promise<number> {
  let api: ApiSetup;
  let operation: Operation;
  let input: Record<string, unknown>;
  let resource: { arn?: string; tunnelId?: string } | undefined;
  let output: OutputChoice;
  try {
    const parsed = parseCommandLine(argv, OPTIONS, 1);
    const v: Values = Object.fromEntries(parsed.options);
    if (v.help) {
      process.stdout.write(HELP);
      return ExitCode.OK;
    }
    const [command] = parsed.positionals;
    if (command === undefined) throw usageError(`missing command (${Object.keys(COMMANDS).join(', ')})`);
    ({ input, resource } = buildInput(command, v));
    operation = COMMANDS[command];
    const query = typeof v.query === 'string' ? v.query : undefined;
    output = outputChoice(typeof v.output === 'string' ? v.output : undefined, query);
    api = await connectApi(v);
    if (v.output === undefined) output = outputChoice(undefined, query, process.env.AWS_DEFAULT_OUTPUT || api.aws.output);
  } catch (err) {
    if (!(err instanceof ExitError)) throw err;
    return reportError(err, { command: 'tunnel' });
  }
  const { client } = api;
  let response: unknown;
  try {
    if (resource) {
      // The tag operations name a resource by ARN; a tunnel id is looked up first.
      const arn = resource.arn ?? String((await client.call<{ tunnel: { tunnelArn: string } }>('DescribeTunnel', { tunnelId: resource.tunnelId })).tunnel.tunnelArn);
      input = { resourceArn: arn, ...input };
    }
    response = await client.call(operation, input);
  } catch (err) {
    if (err instanceof ExitError) return reportError(err, { command: 'tunnel' });
    // The service's words: escaped and cut where they are printed.
    return reportError(new ExitError(ExitCode.FAILURE, `${operation} failed: ${apiFailure(err, api)}`), { command: 'tunnel' });
  }
  try {
    process.stdout.write(formatOutput(operation, response, output, process.stdout.isTTY ? process.stdout.columns : undefined));
  } catch (err) {
    if (!(err instanceof ExitError)) throw err;
    return reportError(err, { command: 'tunnel' });
  }
  return ExitCode.OK;
}
