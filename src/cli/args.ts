/**
 * The proxy's option table and the command-line syntax of the reference (Boost
 * program_options "unix style"): `--name value`, `--name=value`, `-x value`, `-xvalue`,
 * unambiguous long prefixes, value options at most once. The table also feeds the
 * help text (src/cli/help.ts) and the `--config` file parser.
 */
import mri from 'mri';
import { usageError } from '../exit';

export { usageError };

export interface OptionSpec {
  /** Long name without dashes; also the key in a `--config` file. */
  name: string;
  short?: string;
  /** Value options take exactly one argument; the others are switches. */
  value: boolean;
  /** Placeholder shown in the help text. */
  arg?: string;
  description: string;
  example: string;
}

export const OPTIONS: readonly OptionSpec[] = [
  { name: 'help', short: 'h', value: false, description: 'Show help message and exit', example: 'localproxy --help' },
  { name: 'version', short: 'V', value: false, description: 'Print the version and exit', example: 'localproxy -V' },
  { name: 'access-token', short: 't', value: true, arg: 'TOKEN', description: 'Client access token (prefer AWSIOT_TUNNEL_ACCESS_TOKEN: the command line is visible to other users)', example: '-t "$TOKEN"' },
  { name: 'client-token', short: 'i', value: true, arg: 'TOKEN', description: 'Client token, 32-128 letters, digits or hyphens (default: derived from the access token and host name)', example: '-i 3f1c6e0e-7f5b-4f4b-9a44-7b2c5f0f0a11' },
  { name: 'proxy-endpoint', short: 'e', value: true, arg: 'HOST[:PORT]', description: 'Service endpoint, port 443 if omitted; IPv6 in brackets. Excludes --region', example: '-e data.tunneling.iot.us-east-1.amazonaws.com:443' },
  { name: 'region', short: 'r', value: true, arg: 'REGION', description: 'Region of the tunnel; the endpoint is derived from it. Excludes --proxy-endpoint', example: '-r us-east-1' },
  { name: 'source-listen-port', short: 's', value: true, arg: 'MAPPINGS', description: 'Source mode: listen ports per service id (PORT, ID=PORT or ID=HOST:PORT, comma separated)', example: '-s SSH1=5555,HTTP1=8080' },
  { name: 'destination-app', short: 'd', value: true, arg: 'MAPPINGS', description: 'Destination mode: where each service id connects (PORT, HOST:PORT, [IPv6]:PORT or a Unix socket path)', example: '-d SSH1=22,HTTP1=10.0.0.5:80' },
  { name: 'local-bind-address', short: 'b', value: true, arg: 'ADDRESS', description: 'Source: address to listen on (default localhost). Destination: default host for port-only targets', example: '-b 0.0.0.0' },
  { name: 'capath', short: 'c', value: true, arg: 'DIR', description: 'Directory of extra CA certificates for verifying the service', example: '-c /etc/localproxy/certs' },
  { name: 'no-ssl-host-verify', short: 'k', value: false, description: '[INSECURE - DEV/TEST ONLY] Turn off TLS certificate verification', example: '-k' },
  { name: 'export-default-settings', value: true, arg: 'FILE', description: 'Write every fine-grained setting with its default value as JSON and exit', example: '--export-default-settings lpsettings.json' },
  { name: 'settings-json', value: true, arg: 'FILE', description: 'Fine-grained settings merged over the defaults', example: '--settings-json lpsettings.json' },
  { name: 'config', value: true, arg: 'FILE', description: 'File of "long-option = value" lines; command-line options override it', example: '--config config.ini' },
  { name: 'verbose', short: 'v', value: true, arg: 'LEVEL', description: 'Log level on stderr: 0 off, 1 fatal, 2 error, 3 warning, 4 info (default), 5 debug, 6 trace (up to 65535 accepted, read as 6)', example: '-v 5' },
  { name: 'mode', short: 'm', value: true, arg: 'MODE', description: 'src, source, dst or destination; without -s/-d mappings come from --config-dir', example: '-m dst' },
  { name: 'destination-client-type', short: 'y', value: true, arg: 'V1|V2', description: 'Speak the message format of an older peer', example: '-y V1' },
  { name: 'config-dir', value: true, arg: 'DIR', description: 'Directory of "ID = port" / "ID = host:port" files (default ./config, else config/ beside the executable)', example: '--config-dir /etc/localproxy/services' },
];

export const OPTION_BY_NAME: ReadonlyMap<string, OptionSpec> = new Map(OPTIONS.map((o) => [o.name, o]));
const OPTION_BY_SHORT: ReadonlyMap<string, OptionSpec> = new Map(OPTIONS.filter((o) => o.short).map((o) => [o.short as string, o]));

/** Option values by long name: a string for value options, true for switches that were given. */
export type RawArgs = Map<string, string | true>;

/**
 * A value echoed in an error message, with any run of 32 or more token characters cut to
 * its first four: the text may be an access or client token typed in the wrong place
 * (tokens never appear in output, Decisions 12). Absolute paths are shown whole.
 */
export function shownValue(text: string): string {
  return text.replace(/[A-Za-z0-9+/=_-]{32,}/g, (run) => (run.startsWith('/') ? run : `${run.slice(0, 4)}…(${run.length} characters not shown)`));
}

/** A long name or an unambiguous prefix of one, as Boost's allow_guessing does. */
function resolveLong(given: string): OptionSpec {
  const exact = OPTION_BY_NAME.get(given);
  if (exact) return exact;
  const matches = OPTIONS.filter((o) => o.name.startsWith(given));
  if (given === '' || matches.length === 0) throw usageError(`unrecognised option '--${given}'`);
  if (matches.length > 1) {
    const names = matches.map((o) => `'--${o.name}'`);
    throw usageError(`option '--${given}' is ambiguous and matches ${names.slice(0, -1).join(', ')}, and ${names[names.length - 1]}`);
  }
  return matches[0];
}

/** A following token that looks like an option is not taken as a value (Boost does the same). */
function isOptionLike(token: string): boolean {
  return token.length > 1 && token.startsWith('-');
}

/**
 * Turns argv into option values. Every syntax problem is a usage error (exit 2) with
 * the reference's message text; stray positional arguments are rejected, where the
 * reference silently ignores them (9.5#64).
 */
export function parseArgs(argv: readonly string[]): RawArgs {
  // The pre-pass resolves prefixes, short clusters and duplicates, which mri does not
  // know about; mri then splits the normalised `--name=value` tokens.
  const normalised: string[] = [];
  const seen = new Set<string>();
  const add = (spec: OptionSpec, value: string | undefined): void => {
    if (spec.value) {
      if (seen.has(spec.name)) throw usageError(`option '--${spec.name}' cannot be specified more than once`);
      normalised.push(`--${spec.name}=${value}`);
    } else {
      normalised.push(`--${spec.name}`);
    }
    seen.add(spec.name);
  };
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i];
    if (token === '--') {
      if (i + 1 < argv.length) throw usageError(`unexpected argument '${shownValue(argv[i + 1])}'`);
      break;
    }
    if (token.startsWith('--')) {
      const eq = token.indexOf('=');
      const spec = resolveLong(eq === -1 ? token.slice(2) : token.slice(2, eq));
      if (!spec.value) {
        if (eq !== -1) throw usageError(`option '--${spec.name}' does not take any arguments`);
        add(spec, undefined);
      } else if (eq !== -1) {
        add(spec, token.slice(eq + 1));
      } else {
        const next = argv[i + 1];
        if (next === undefined || isOptionLike(next)) throw usageError(`the required argument for option '--${spec.name}' is missing`);
        add(spec, next);
        i++;
      }
      continue;
    }
    if (token.startsWith('-') && token.length > 1) {
      // A cluster of switches may end with one value option: `-kv6`, `-kv 6`.
      for (let j = 1; j < token.length; j++) {
        const spec = OPTION_BY_SHORT.get(token[j]);
        if (!spec) throw usageError(`unrecognised option '-${token[j]}'`);
        if (!spec.value) {
          add(spec, undefined);
          continue;
        }
        let value = token.slice(j + 1);
        if (value === '') {
          const next = argv[i + 1];
          if (next === undefined || isOptionLike(next)) throw usageError(`the required argument for option '--${spec.name}' is missing`);
          value = next;
          i++;
        }
        add(spec, value);
        break;
      }
      continue;
    }
    throw usageError(`unexpected argument '${shownValue(token)}' (options take the form -x VALUE or --name VALUE)`);
  }

  const parsed = mri(normalised, {
    string: OPTIONS.filter((o) => o.value).map((o) => o.name),
    boolean: OPTIONS.filter((o) => !o.value).map((o) => o.name),
  });
  const out: RawArgs = new Map();
  for (const spec of OPTIONS) {
    if (!seen.has(spec.name)) continue;
    const value: unknown = parsed[spec.name];
    out.set(spec.name, spec.value ? String(Array.isArray(value) ? value[value.length - 1] : value) : true);
  }
  return out;
}
