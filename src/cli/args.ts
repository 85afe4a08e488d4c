/**
 * The command-line syntax of all three command lines (`localproxy`, `localproxy relay`,
 * `localproxy tunnel`), which is the reference's (Boost program_options "unix style",
 * behaviour spec 1.3): `--name value`, `--name=value`, `-x value`, `-xvalue`, clusters of
 * switches ending in one value option (`-kv5`), unambiguous long prefixes (`--reg`), value
 * options at most once, a value never taken from a following option (`-t -r` is a missing
 * argument), unknown options and stray arguments refused. Plus the proxy's option table,
 * which also feeds the help text (src/cli/help.ts) and the `--config` file parser.
 *
 * node:util `parseArgs` splits the words (clusters, attached and `=` values, `--`); the
 * rules above are checked here on its tokens. It serves better than mri, which reads
 * `-tTOKEN` as the switches t, T, O, K, E and `--no-ssl-host-verify` as a negated
 * `ssl-host-verify`, and knows neither prefixes nor duplicates: every word would have to be
 * re-parsed before mri saw it, leaving mri nothing to do.
 */
import { parseArgs as splitArgs } from 'node:util';
import { usageError } from '../exit';
import { printable } from '../printable';
import { closest } from './suggest';

export { usageError };

/** One option of a command line. */
export interface OptionSpec {
  /** Long name without dashes. */
  name: string;
  short?: string;
  /** Value options take exactly one argument; the others are switches. */
  value: boolean;
}

/** A proxy option: also documented in `--help` and usable as a `--config` key. */
export interface ProxyOptionSpec extends OptionSpec {
  /** Placeholder shown in the help text. */
  arg?: string;
  description: string;
  example: string;
}

export const OPTIONS: readonly ProxyOptionSpec[] = [
  { name: 'help', short: 'h', value: false, description: 'Show help message and exit', example: 'localproxy --help' },
  { name: 'version', short: 'V', value: false, description: 'Print the version and exit', example: 'localproxy -V' },
  { name: 'access-token', short: 't', value: true, arg: 'TOKEN', description: 'Client access token (prefer AWSIOT_TUNNEL_ACCESS_TOKEN: the command line is visible to other users)', example: '-t "$TOKEN"' },
  { name: 'client-token', short: 'i', value: true, arg: 'TOKEN', description: 'Client token, 32-128 letters, digits or hyphens (default: derived from the access token and host name)', example: '-i 3f1c6e0e-7f5b-4f4b-9a44-7b2c5f0f0a11' },
  { name: 'proxy-endpoint', short: 'e', value: true, arg: 'HOST[:PORT]', description: 'Service endpoint, port 443 if omitted; IPv6 in brackets. Excludes --region', example: '-e data.tunneling.iot.us-east-1.amazonaws.com:443' },
  { name: 'region', short: 'r', value: true, arg: 'REGION', description: 'Region of the tunnel; the endpoint is derived from it. Excludes --proxy-endpoint', example: '-r us-east-1' },
  { name: 'source-listen-port', short: 's', value: true, arg: 'MAPPINGS', description: 'Source mode: listen ports per service id (PORT, ID=PORT or ID=HOST:PORT, comma separated), or stdio alone (-s stdio, -s ID=stdio): one connection over stdin/stdout, for ssh\'s ProxyCommand', example: '-s SSH1=5555,HTTP1=8080' },
  { name: 'destination-app', short: 'd', value: true, arg: 'MAPPINGS', description: 'Destination mode: where each service id connects (PORT, HOST:PORT, [IPv6]:PORT or a Unix socket path)', example: '-d SSH1=22,HTTP1=10.0.0.5:80' },
  { name: 'local-bind-address', short: 'b', value: true, arg: 'ADDRESS', description: 'Source: address to listen on (default localhost). Destination: default host for port-only targets', example: '-b 0.0.0.0' },
  { name: 'capath', short: 'c', value: true, arg: 'FILE|DIR', description: 'Also trust the CA certificates in FILE (PEM or DER, e.g. a relay\'s cert.pem) or in the files of DIR for verifying the service', example: '-c /etc/localproxy/relay-ca.pem' },
  { name: 'no-ssl-host-verify', short: 'k', value: false, description: '[INSECURE - DEV/TEST ONLY] Turn off TLS certificate verification', example: '-k' },
  { name: 'export-default-settings', value: true, arg: 'FILE', description: 'Write every fine-grained setting with its default value as JSON and exit', example: '--export-default-settings lpsettings.json' },
  { name: 'settings-json', value: true, arg: 'FILE', description: 'Fine-grained settings merged over the defaults', example: '--settings-json lpsettings.json' },
  { name: 'config', value: true, arg: 'FILE', description: 'File of "long-option = value" lines; command-line options override it', example: '--config config.ini' },
  { name: 'verbose', short: 'v', value: true, arg: 'LEVEL', description: 'Log level on stderr: 0 off, 1 fatal, 2 error, 3 warning, 4 info (default; 1 with -s stdio), 5 debug, 6 trace (up to 65535 accepted, read as 6)', example: '-v 5' },
  { name: 'mode', short: 'm', value: true, arg: 'MODE', description: 'src, source, dst or destination; without -s/-d mappings come from --config-dir', example: '-m dst' },
  { name: 'destination-client-type', short: 'y', value: true, arg: 'V1|V2', description: 'Speak the message format of an older peer', example: '-y V1' },
  { name: 'config-dir', value: true, arg: 'DIR', description: 'Directory of "ID = port" / "ID = host:port" files (default ./config, else config/ beside the executable)', example: '--config-dir /etc/localproxy/services' },
];

export const OPTION_BY_NAME: ReadonlyMap<string, ProxyOptionSpec> = new Map(OPTIONS.map((o) => [o.name, o]));

/** Option values by long name: a string for value options, true for switches that were given. */
export type RawArgs = Map<string, string | true>;

export interface CommandLine {
  options: RawArgs;
  positionals: string[];
}

/** A string value option, or undefined when absent. */
export function stringOption(args: RawArgs, name: string): string | undefined {
  const value = args.get(name);
  return typeof value === 'string' ? value : undefined;
}

/**
 * A value echoed in an error message, with any run of 32 or more token characters cut to
 * its first four: the text may be an access or client token typed in the wrong place
 * (tokens never appear in output, Decisions 12). Absolute paths are shown whole. The rest
 * is made printable: control characters escaped, a long value cut.
 */
export function shownValue(text: string): string {
  return printable(text.replace(/[A-Za-z0-9+/=_-]{32,}/g, (run) => (run.startsWith('/') ? run : `${run.slice(0, 4)}…(${run.length} characters not shown)`)));
}

/** A long name or an unambiguous prefix of one, as Boost's allow_guessing does. */
function resolveLong(table: readonly OptionSpec[], given: string): OptionSpec {
  const exact = table.find((o) => o.name === given);
  if (exact) return exact;
  const matches = given === '' ? [] : table.filter((o) => o.name.startsWith(given));
  if (matches.length === 0) {
    const guess = closest(given, table.map((o) => o.name));
    throw usageError(`unrecognised option '--${shownValue(given)}'${guess ? ` (did you mean '--${guess}'?)` : ''}`);
  }
  if (matches.length > 1) {
    const names = matches.map((o) => `'--${o.name}'`);
    throw usageError(`option '--${given}' is ambiguous and matches ${names.slice(0, -1).join(', ')}, and ${names[names.length - 1]}`);
  }
  return matches[0];
}

/** A word that looks like an option is not taken as a value (Boost does the same). */
function isOptionLike(word: string): boolean {
  return word.length > 1 && word.startsWith('-');
}

/**
 * Turns argv into option values and positional arguments, checked against `table`. Every
 * syntax problem is a usage error (exit 2) with the reference's message text, raised at
 * the first offending word; more than `maxPositionals` positional arguments is one too
 * (the reference silently ignores them, 9.5#64).
 */
export function parseCommandLine(argv: readonly string[], table: readonly OptionSpec[], maxPositionals = 0): CommandLine {
  // Non-strict: unknown names and prefixes come through as tokens to be resolved below.
  const { tokens } = splitArgs({
    args: [...argv],
    options: Object.fromEntries(table.map((o) => [o.name, o.short ? { type: o.value ? 'string' : 'boolean', short: o.short } : { type: o.value ? 'string' : 'boolean' }])),
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  const options: RawArgs = new Map();
  const positionals: string[] = [];
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i];
    if (token.kind === 'option-terminator') continue;
    if (token.kind === 'positional') {
      if (positionals.length >= maxPositionals) {
        const hint = maxPositionals === 0 ? ' (options take the form -x VALUE or --name VALUE)' : '';
        throw usageError(`unexpected argument '${shownValue(token.value)}'${hint}`);
      }
      positionals.push(token.value);
      continue;
    }
    const isLong = token.rawName.startsWith('--');
    const spec = isLong ? resolveLong(table, token.name) : table.find((o) => o.short === token.rawName.slice(1));
    if (!spec) throw usageError(`unrecognised option '${shownValue(token.rawName)}'`);
    if (!spec.value) {
      if (token.inlineValue) throw usageError(`option '--${spec.name}' does not take any arguments`);
      options.set(spec.name, true);
      continue;
    }
    let value = token.value;
    if (value === undefined) {
      // A prefix (`--reg`) is unknown to node:util, which left its value as the next token.
      const next = tokens[i + 1];
      if (next?.kind === 'positional' && next.index === token.index + 1) {
        value = next.value;
        i++;
      }
    } else if (!token.inlineValue && isOptionLike(value)) {
      value = undefined;
    }
    if (value === undefined) throw usageError(`the required argument for option '--${spec.name}' is missing`);
    if (options.has(spec.name)) throw usageError(`option '--${spec.name}' cannot be specified more than once`);
    options.set(spec.name, value);
  }
  return { options, positionals };
}

/** The words after `localproxy` that start another command line (src/main.ts). */
export const SUBCOMMANDS: readonly string[] = ['relay', 'tunnel', 'agent', 'connect'];

/** The proxy's command line: options only, no positional arguments. */
export function parseArgs(argv: readonly string[]): RawArgs {
  const first = argv[0];
  const guess = first !== undefined && !first.startsWith('-') ? closest(first, SUBCOMMANDS) : undefined;
  if (guess) throw usageError(`unknown command '${shownValue(first)}' (did you mean 'localproxy ${guess}'?)`);
  return parseCommandLine(argv, OPTIONS).options;
}
