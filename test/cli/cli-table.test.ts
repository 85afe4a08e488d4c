/**
 * The proxy command line, table-driven: every option, validation rule, precedence rule,
 * config file and config dir case, settings file errors and every example command of the
 * reference's README. The rows run in this process through `runProxyCli`, the function the
 * executable runs, and end where the proxy would start (see run-cli.ts); the rows marked
 * `process` run the built CLI as a child instead, for its exit codes and stdio, and are
 * stopped at the line that ends option processing, so nothing reaches the network.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { CLI, runCli, runCliInProcess, type CliResult } from './run-cli';

const TOKEN = 'AQGAAXh0ZXN0LWFjY2Vzcy10b2tlbi1mb3ItdGhlLWNsaQ';
const CLIENT_TOKEN = '3f1c6e0e-7f5b-4f4b-9a44-7b2c5f0f0a11';
const TRY = "Try 'localproxy --help' for a list of options.";
const ACCEPTED = 'accepted' as const;

const dir = mkdtempSync(join(tmpdir(), 'localproxy-cli-'));
const version = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version as string;

function file(name: string, text: string): string {
  const path = join(dir, name);
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, text);
  return path;
}

// Files the cases refer to.
const seedConfig1 = file('seed/config.ini', 'region = us-east-1\naccess-token = foobar\nsource-listen-port = 5000\n');
file('seed2/config.ini', 'capath = /opt/rootca\nregion = us-west-2\nlocal-bind-address = ::1\nsource-listen-port = 6000\n');
const settingsPing = file('ping.json', JSON.stringify({ tunneling: { proxy: { websocket: { ping_period_ms: 5000 } } } }));
const settingsOverride = file('override.json', JSON.stringify({ tunneling: { proxy: { region_endpoint_overrides: { 'us-east-1': 'OVERRIDE.Example.test:9443' } } } }));
// The example of the reference's README, as printed there (stale values, 1.0 subprotocol).
const settingsSeed = file('seed-lpsettings.json', `{
"tunneling": {
"proxy": {
"default_bind_address": "localhost",
"message": {
"data_length_size": "2",
"max_payload_size": "64512",
"max_size": "65536"
},
"tcp": {
"connection_retry_count": "5",
"connection_retry_delay_ms": "1000",
"read_buffer_size": "131076"
},
"websocket": {
"ping_period_ms": "5000",
"retry_delay_ms": "2500",
"connect_retry_count": "-1",
"reconnect_on_data_error": "true",
"subprotocol": "aws.iot.securetunneling-1.0",
"max_frame_size": "131076",
"write_buffer_size": "131076",
"read_buffer_size": "131076"
}
}
}
}
`);
const settingsBadJson = file('bad.json', '{ "tunneling": ');
const settingsBadType = file('badtype.json', JSON.stringify({ tunneling: { proxy: { tcp: { max_active_connections: 'abc' } } } }));
const settingsBadBool = file('badbool.json', JSON.stringify({ tunneling: { proxy: { websocket: { reconnect_on_data_error: 'maybe' } } } }));
const settingsUnknown = file('unknown.json', JSON.stringify({ tunneling: { proxy: { bogus_key: '1' } } }));
const settingsArray = file('array.json', '[1, 2]');
const settingsBom = file('bom.json', `\uFEFF${JSON.stringify({ tunneling: { proxy: { region_endpoint_overrides: { 'us-east-1': 'bom.example.test:9443' } } } })}\r\n`);
const cfgBom = file('bom.ini', `\uFEFFregion = us-east-1\r\naccess-token = ${TOKEN}\r\nsource-listen-port = 5000\r\n`);
const cfgUnknown = file('unknown.ini', 'bogus-key = 1\n');
const cfgInvalidLine = file('invalid.ini', 'region\n');
const cfgDuplicate = file('dup.ini', 'region = us-east-1\nregion = us-west-2\n');
const cfgBadThirdLine = file('third.ini', '# a comment\nregion = us-east-1\nsource-listen-port 5555\n');
const cfgSection = file('section.ini', '[sec]\nregion = us-east-1\n');
const cfgVerbose = file('verbose.ini', `verbose = 5\nregion = us-east-1\naccess-token = ${TOKEN}\nsource-listen-port = 5555\n`);
const cfgInsecure = file('insecure.ini', 'no-ssl-host-verify = true\n');
const cfgRegion = file('region.ini', 'region = us-west-2   # where the tunnel is\n');
const cfgEmptyToken = file('emptytoken.ini', 'access-token =\n');
const cfgRegionAndEndpoint = file('region-endpoint.ini', 'region = us-west-2\nproxy-endpoint = 127.0.0.1:7\n');
const cfgControl = file('control.ini', '\u001b[31mred\u001b]0;title\u0007 = 1\n');
const cfgLongKey = file('longkey.ini', `${'~'.repeat(70_000)} = 1\n`);
const cfgHelp = file('help.ini', 'help = true\n');
const cfgEndpoint = file('endpoint.ini', 'proxy-endpoint = 127.0.0.1:7\n');
const cfgBadSwitch = file('badswitch.ini', 'no-ssl-host-verify = perhaps\n');
const unreadable = join(dir, 'unreadable.ini');
symlinkSync('/proc/self/mem', unreadable); // as root, chmod cannot make a file unreadable; this always fails with EIO
const cdGood = join(dir, 'cd-good');
file('cd-good/SSHSource.ini', '# source ports\nSSH1=3333\nSSH2=5555\n');
file('cd-good/more/HTTP.ini', '; nested\nHTTP1 = 8080\n');
const cdDest = join(dir, 'cd-dest');
file('cd-dest/SSHDestination.ini', 'SSH1=22\nSSH2=10.0.0.1:80\n');
const cdDup = join(dir, 'cd-dup');
file('cd-dup/a.ini', 'SSH1 = 3333\n');
file('cd-dup/b.ini', 'SSH1 = 4444\n');
const cdSame = join(dir, 'cd-same');
file('cd-same/a.ini', 'SSH1 = 3333\n');
file('cd-same/b.ini', 'SSH1 = 3333\n');
const cdBadValue = join(dir, 'cd-bad');
file('cd-bad/SSHSource.ini', 'SSH1 = abc\n');
const cdNotIni = join(dir, 'cd-notini');
file('cd-notini/README', 'This directory holds the service mappings\n');
file('cd-notini/ports.ini', 'SSH1 = 3333\n');
const cdUnreadable = join(dir, 'cd-unreadable');
mkdirSync(cdUnreadable);
symlinkSync('/proc/self/mem', join(cdUnreadable, 'mem.ini'));
const cdSymlinkLoop = join(dir, 'cd-symlink-loop');
file('cd-symlink-loop/ports.ini', 'SSH1 = 3333\n');
symlinkSync('self.ini', join(cdSymlinkLoop, 'self.ini'));
const cdCycle = join(dir, 'cd-cycle');
file('cd-cycle/a/ports.ini', 'SSH1 = 3333\n');
symlinkSync('..', join(cdCycle, 'a/up'));
const cfgTokenLine = file('tokenline.ini', `access-token: ${TOKEN}\n`);
const cdSamePort = join(dir, 'cd-same-port');
file('cd-same-port/a.ini', 'SSH1 = 3333\n');
file('cd-same-port/b.ini', 'SSH2 = 3333\n');
const cdBig = join(dir, 'cd-big');
file('cd-big/big.ini', '#'.repeat(1024 * 1024 + 1));
const cdControl = join(dir, 'cd-control');
file('cd-control/ports.ini', 'SSH1 = 3333\n');
file('cd-control/\u001b]0;title\u0007.ini', 'not \u001b[2J an ini line\n');
const cdEmpty = join(dir, 'cd-empty');
mkdirSync(cdEmpty);
const cwdWithConfig = join(dir, 'cwd');
file('cwd/config/dest.ini', 'SSH1 = 2222\n');
const certs = join(dir, 'certs');
mkdirSync(certs);

interface Case {
  args: string[];
  env?: Record<string, string>;
  cwd?: string;
  code: number | typeof ACCEPTED;
  out: string | string[];
  /** Run exactly as written (no `-v 5` added for the accepted marker). */
  exact?: boolean;
  /** Text that must not appear anywhere in the output. */
  absent?: string[];
  /** Run the built CLI as a child process (exit code, stdout and stderr of a real process). */
  process?: boolean;
}

const t = ['-t', TOKEN];
const src = ['-r', 'us-east-1', '-s', '5555'];
const envToken = { AWSIOT_TUNNEL_ACCESS_TOKEN: TOKEN };

const cases: Record<string, Case> = {
  // --version, --help
  '-V prints name and version': { args: ['-V'], code: 0, out: `localproxy ${version}`, process: true },
  'syntax errors come before --version': { args: ['--version', '-Z'], code: 2, out: "unrecognised option '-Z'" },
  '--version alone': { args: ['--version'], code: 0, out: `localproxy ${version}`, process: true },
  '-h lists every option': { args: ['-h'], code: 0, out: ['--access-token', '--client-token', '--proxy-endpoint', '--region', '--source-listen-port', '--destination-app', '--local-bind-address', '--capath', '--no-ssl-host-verify', '--export-default-settings', '--settings-json', '--config ', '--verbose', '--mode', '--destination-client-type', '--config-dir'] },
  '--help names the subcommands and exit codes': { args: ['--help'], code: 0, out: ['localproxy relay', 'localproxy tunnel', 'Exit codes', '3  refused', 'up to 65535 accepted, read as 6'] },
  '--help with a value is an error': { args: ['--help=yes'], code: 2, out: "option '--help' does not take any arguments" },

  // syntax
  'unknown short option': { args: ['-Z'], code: 2, out: ["unrecognised option '-Z'", TRY], process: true },
  'unknown long option': { args: ['--bogus', 'x'], code: 2, out: "unrecognised option '--bogus'" },
  'a mistyped long option gets a suggestion': { args: ['--regoin', 'us-east-1'], code: 2, out: "unrecognised option '--regoin' (did you mean '--region'?)" },
  'no suggestion for a word unlike any option': { args: ['--bogus', 'x'], code: 2, out: "unrecognised option '--bogus'", absent: ['did you mean'] },
  'a mistyped subcommand gets a suggestion': { args: ['relya', '--listen', '127.0.0.1:0'], code: 2, out: ["unknown command 'relya' (did you mean 'localproxy relay'?)", TRY], process: true },
  'a mistyped tunnel subcommand gets a suggestion': { args: ['tunel', 'list'], code: 2, out: "unknown command 'tunel' (did you mean 'localproxy tunnel'?)" },
  'a mistyped agent subcommand gets a suggestion': { args: ['agnet', '--thing-name', 'pi1'], code: 2, out: "unknown command 'agnet' (did you mean 'localproxy agent'?)" },
  'ambiguous prefix': { args: ['--dest', 'x'], code: 2, out: "option '--dest' is ambiguous and matches '--destination-app', and '--destination-client-type'" },
  'ambiguous prefix of --config': { args: ['--conf', 'x'], code: 2, out: "option '--conf' is ambiguous and matches '--config', and '--config-dir'" },
  'value option twice': { args: [...t, '-r', 'us-east-1', '--region', 'us-west-2', '-s', '1'], code: 2, out: "option '--region' cannot be specified more than once" },
  'missing argument at the end': { args: ['-v'], code: 2, out: "the required argument for option '--verbose' is missing" },
  'missing argument before another option': { args: ['-t', '-r', 'us-east-1'], code: 2, out: "the required argument for option '--access-token' is missing" },
  'bad verbose value': { args: [...t, ...src, '-v', 'abc'], code: 2, out: "the argument ('abc') for option '--verbose' is invalid" },
  'verbose above 65535': { args: [...t, ...src, '-v', '70000'], code: 2, out: "the argument ('70000') for option '--verbose' is invalid" },
  'fixes reference bug 9.5#64: stray positional argument is an error': { args: [...t, ...src, 'extra'], code: 2, out: ["unexpected argument 'extra'", TRY] },
  'unambiguous long prefix --reg': { args: [...t, '--reg', 'us-east-1', '-s', '5555'], code: ACCEPTED, out: 'data.tunneling.iot.us-east-1.amazonaws.com:443' },
  '--name=value form': { args: [...t, '--region=eu-west-1', '--source-listen-port=5555'], code: ACCEPTED, out: 'data.tunneling.iot.eu-west-1.amazonaws.com:443' },
  'short option with attached value and a switch cluster': { args: [`-t${TOKEN}`, '-kv5', '-reu-west-1', '-s5555'], code: ACCEPTED, out: ['eu-west-1', 'SSL host verification is DISABLED'] },

  // required options and mode inference
  'missing token names the environment variable too': { args: src, code: 2, out: ["the option '--access-token' is required but missing: set AWSIOT_TUNNEL_ACCESS_TOKEN (or give -t TOKEN)", TRY], process: true },
  'neither region nor endpoint': { args: [...t, '-s', '5555'], code: 2, out: 'Must specify one and only one of --region/-r or --proxy-endpoint/-e options' },
  'both region and endpoint': { args: [...t, ...src, '-e', 'example.com'], code: 2, out: 'Must specify one and only one of --region/-r or --proxy-endpoint/-e options' },
  'no mapping and no mode': { args: [...t, '-r', 'us-east-1'], code: 2, out: 'Must specify one of --source-listen-port/-s or --destination-app/-d or --mode' },
  'both -s and -d': { args: [...t, ...src, '-d', '22'], code: 2, out: 'Must specify one and only one of --source-listen-port/-s or --destination-app/-d' },
  '-s with mode destination': { args: [...t, ...src, '-m', 'dst'], code: 2, out: '-s and --mode have mismatched mode. Mode is set to destination!' },
  '-d with mode source names -d': { args: [...t, '-r', 'us-east-1', '-d', '22', '-m', 'source'], code: 2, out: '-d and --mode have mismatched mode. Mode is set to source!' },
  'bad mode value': { args: [...t, '-r', 'us-east-1', '-m', 'Source'], code: 2, out: 'Mode value is wrong! Allowed values are: src, dst, source, destination' },
  '-m alone runs in source mode': { args: [...t, '-r', 'us-east-1', '-m', 'src'], code: ACCEPTED, out: 'source mode' },
  '-d implies destination mode': { args: [...t, '-r', 'us-east-1', '-d', '22'], code: ACCEPTED, out: 'destination mode' },

  // -v levels (a failing option after the lines of interest ends each run)
  '-v 0: nothing is logged, the usage error is still printed': { args: [...t, '-r', 'us-east-1', '-s', '0', '-v', '0'], code: 2, out: 'Port must be between 1 and 65535', absent: ['[warning]', '[fatal]', '[error]'] },
  '-v 2: no warnings': { args: [...t, '-r', 'us-east-1', '-s', '0', '-v', '2'], code: 2, out: 'Port must be between 1 and 65535', absent: ['Found access token supplied via CLI arg'] },
  '-v 3: warnings, no info': { args: [...t, '-r', 'us-east-1', '-s', '0', '--settings-json', settingsPing, '-v', '3'], code: 2, out: '[warning] Found access token supplied via CLI arg', absent: ['Using settings specified in file'] },
  'default level 4: info, no debug': { args: [...t, '-r', 'us-east-1', '-s', 'SSH1=5555', '--settings-json', settingsPing, '-b', 'my_host'], code: 2, out: '[info] Using settings specified in file', absent: ['[debug]'] },
  '-v 5: debug, no trace': { args: [...t, ...src, '-i', '', '-v', '5', '-b', 'my_host'], code: 2, out: '[debug] v2 local proxy starts with v1 local proxy format', absent: ['[trace]'] },
  '-v 255 is trace (values above 6 are 6)': { args: [...t, ...src, '-i', '', '-v', '255', '-b', 'my_host'], code: 2, out: '[trace] Client token is empty' },

  // tokens
  'empty token from the environment': { args: src, env: { AWSIOT_TUNNEL_ACCESS_TOKEN: '' }, code: 2, out: 'Access token cannot be empty' },
  'token with a control character': { args: ['-t', 'abc\u0001def', ...src], code: 2, out: 'Access token contains invalid control characters' },
  'token longer than 4096': { args: ['-t', 'a'.repeat(4097), ...src], code: 2, out: 'Access token exceeds maximum allowed length' },
  'fixes reference bug 9.5#55: non-ASCII token accepted': { args: ['-t', 'tökén-ü', ...src], code: ACCEPTED, out: ACCEPTED_LINE() },
  'warning when the token came from -t': { args: [...t, ...src], code: ACCEPTED, out: 'Found access token supplied via CLI arg. Consider using environment variable AWSIOT_TUNNEL_ACCESS_TOKEN instead', absent: [TOKEN] },
  'no warning when the token came from the environment': { args: src, env: envToken, code: ACCEPTED, out: 'source mode', absent: ['Found access token supplied via CLI arg', TOKEN] },
  'client token too short': { args: [...t, ...src, '-i', 'short'], code: 2, out: 'Client token must be between 32 and 128 characters' },
  'fixes reference bug 9.5#56: client token character class enforced': { args: [...t, ...src, '-i', 'a_b'.repeat(12)], code: 2, out: 'Client token must contain only letters, digits and hyphens' },
  'Decisions 12: a token given without -t is not echoed in the error': { args: [...src, TOKEN], code: 2, out: "unexpected argument 'AQGA…(46 characters not shown)'", absent: [TOKEN], process: true },
  'Decisions 12: a short -t token pasted twice is not echoed in the error': { args: ['-t', 'secret-token-1', ...src, 'secret-token-1'], code: 2, out: "unexpected argument '***'", absent: ['secret-token-1'] },
  'Decisions 12: an environment token in the wrong option is not echoed': { args: ['-r', 'us-east-1', '-s', 'tok-3n'], env: { AWSIOT_TUNNEL_ACCESS_TOKEN: 'tok-3n' }, code: 2, out: 'Listen address must be PORT or ADDRESS:PORT (ID=PORT for a service id): ***', absent: ['tok-3n'] },
  'Decisions 12: a --config line "access-token: TOKEN" is not echoed': { args: ['--config', cfgTokenLine], code: 2, out: "contains an invalid line 'access-token: AQGA…", absent: [TOKEN] },
  'client token from the environment is validated': { args: [...t, ...src], env: { AWSIOT_TUNNEL_CLIENT_TOKEN: 'short-client-token' }, code: 2, out: 'Client token must be between 32 and 128 characters', absent: ['short-client-token'] },
  'CLI client token overrides the environment one': { args: [...t, ...src, '-i', CLIENT_TOKEN], env: { AWSIOT_TUNNEL_CLIENT_TOKEN: 'short-client-token' }, code: ACCEPTED, out: 'source mode', absent: [CLIENT_TOKEN] },
  'valid client token from the environment': { args: src, env: { ...envToken, AWSIOT_TUNNEL_CLIENT_TOKEN: CLIENT_TOKEN }, code: ACCEPTED, out: 'source mode', absent: [CLIENT_TOKEN] },

  // region and endpoint
  'upper-case region': { args: [...t, '-r', 'US-EAST-1', '-s', '1'], code: 2, out: 'Region must contain only lowercase letters, numbers, and hyphens' },
  'empty region': { args: [...t, '--region=', '-s', '1'], code: 2, out: 'Region cannot be empty' },
  'endpoint with invalid characters': { args: [...t, '-e', 'h_x', '-s', '1'], code: 2, out: 'Proxy endpoint contains invalid characters' },
  'endpoint with an empty port': { args: [...t, '-e', 'host:', '-s', '1'], code: 2, out: 'Invalid endpoint specified: host:' },
  'bare IPv6 endpoint': { args: [...t, '-e', 'a:b:c', '-s', '1'], code: 2, out: 'Invalid endpoint specified: a:b:c' },
  'endpoint port out of range': { args: [...t, '-e', 'host:70000', '-s', '1'], code: 2, out: 'Invalid endpoint specified: host:70000' },
  'IPv6 endpoint in brackets (Decisions 10)': { args: [...t, '-e', '[::1]:9443', '-s', '1'], code: ACCEPTED, out: 'Service endpoint: [::1]:9443' },
  'endpoint lower-cased, default port 443': { args: [...t, '-e', 'Example.COM', '-s', '1'], code: ACCEPTED, out: 'Service endpoint: example.com:443' },
  'region to endpoint': { args: [...t, '-r', 'ap-northeast-1', '-s', '1'], code: ACCEPTED, out: 'data.tunneling.iot.ap-northeast-1.amazonaws.com:443' },
  'cn region ends in .com.cn': { args: [...t, '-r', 'cn-north-1', '-s', '1'], code: ACCEPTED, out: 'data.tunneling.iot.cn-north-1.amazonaws.com.cn:443' },
  'fixes reference bug 9.5#48: cn endpoints survive --settings-json': { args: [...t, '-r', 'cn-northwest-1', '-s', '1', '--settings-json', settingsPing], code: ACCEPTED, out: 'data.tunneling.iot.cn-northwest-1.amazonaws.com.cn:443' },
  'region override from settings, lower-cased': { args: [...t, '-r', 'us-east-1', '-s', '1', '--settings-json', settingsOverride], code: ACCEPTED, out: 'Service endpoint: override.example.test:9443' },

  // -s / -d mappings
  'source port 0': { args: [...t, '-r', 'us-east-1', '-s', '0'], code: 2, out: 'Port must be between 1 and 65535' },
  'source port above 65535': { args: [...t, '-r', 'us-east-1', '-s', '70000'], code: 2, out: 'Port must be between 1 and 65535' },
  'source port too large': { args: [...t, '-r', 'us-east-1', '-s', '99999999999'], code: 2, out: 'Port value is too large' },
  'source port not a number: called a listen address, not an endpoint (-e is the endpoint)': { args: [...t, '-r', 'us-east-1', '-s', 'abc'], code: 2, out: 'Listen address must be PORT or ADDRESS:PORT (ID=PORT for a service id): abc', absent: ['Endpoint'] },
  'trailing comma': { args: [...t, '-r', 'us-east-1', '-s', '5555,'], code: 2, out: 'Wrong format for the port mappings! Example: SSH1=5555,SSH2=6666.' },
  'empty service id': { args: [...t, '-r', 'us-east-1', '-s', '=5'], code: 2, out: 'Wrong format for the port mappings: =5 .Example: SSH1=5555' },
  'two equals signs': { args: [...t, '-r', 'us-east-1', '-s', 'a=b=c'], code: 2, out: 'Wrong format for the port mappings! Example' },
  'bad service id': { args: [...t, '-r', 'us-east-1', '-s', 'SSH.1=5555'], code: 2, out: 'Service ID must contain only alphanumeric characters, hyphens, and underscores' },
  'duplicate service id: first wins with a warning': { args: [...t, '-r', 'us-east-1', '-s', 'SSH1=5555,SSH1=6666', '-v', '5'], code: ACCEPTED, out: ['Duplicate mappings, ignore. This mapping already exists: SSH1 : 5555', 'SSH1 = 5555'] },
  'fixes reference bug 9.4#37: -s host:port is a bind address and port (Decisions 10)': { args: [...t, '-r', 'us-east-1', '-s', 'SSH1=0.0.0.0:5555', '-v', '5'], code: ACCEPTED, out: 'SSH1 = 0.0.0.0:5555' },
  'two source services on the same port are refused at start': { args: [...t, '-r', 'us-east-1', '-s', 'SSH1=5555,SSH2=5555'], code: 2, out: 'Services SSH1 and SSH2 both listen on 5555 (-s)' },
  'two source services on the same port of different addresses are fine': { args: [...t, '-r', 'us-east-1', '-s', 'SSH1=127.0.0.1:5555,SSH2=127.0.0.2:5555'], code: ACCEPTED, out: 'source mode' },
  'config-dir: two source services on the same port are refused': { args: [...t, '-r', 'us-east-1', '-m', 'src', '--config-dir', cdSamePort], code: 2, out: `Services SSH1 and SSH2 both listen on 3333 (${cdSamePort})` },
  'config-dir: the same port for two destination services is fine': { args: [...t, '-r', 'us-east-1', '-m', 'dst', '--config-dir', cdSamePort], code: ACCEPTED, out: 'destination mode' },
  'fixes reference bug 9.4#38: -s with a path is refused': { args: [...t, '-r', 'us-east-1', '-s', 'SSH1=/tmp/ssh.sock'], code: 2, out: 'not on a path' },
  'destination IPv6 in brackets': { args: [...t, '-r', 'us-east-1', '-d', 'SSH1=[::1]:22', '-v', '5'], code: ACCEPTED, out: 'SSH1 = [::1]:22' },
  'destination IPv6 without brackets': { args: [...t, '-r', 'us-east-1', '-d', '::1:22'], code: 2, out: 'IPv6 address without brackets' },
  'destination Unix socket': { args: [...t, '-r', 'us-east-1', '-d', 'SSH1=/run/ssh.sock,WEB=10.0.0.5:80', '-v', '5'], code: ACCEPTED, out: ['SSH1 = /run/ssh.sock', 'WEB = 10.0.0.5:80'] },
  'destination host without port': { args: [...t, '-r', 'us-east-1', '-d', 'host:'], code: 2, out: "Endpoint has no port after ':': host:" },
  'destination host with an underscore': { args: [...t, '-r', 'us-east-1', '-d', 'my_host:22'], code: 2, out: 'Bind address contains invalid characters' },
  'bind address with an underscore': { args: [...t, ...src, '-b', 'my_host'], code: 2, out: 'Bind address contains invalid characters' },
  'bind address IPv6 in brackets': { args: [...t, ...src, '-b', '[::1]'], code: ACCEPTED, out: ACCEPTED_LINE() },
  'missing CA path is a warning': { args: [...t, ...src, '-c', join(dir, 'nope')], code: ACCEPTED, out: `CA file or directory ${join(dir, 'nope')} does not exist; only the system CAs are used` },
  '-c FILE is accepted without a warning': { args: [...t, ...src, '-c', seedConfig1], code: ACCEPTED, out: ACCEPTED_LINE(), absent: ['[warning] CA'] },
  '-y V1': { args: [...t, ...src, '-y', 'V1'], code: ACCEPTED, out: 'setting source protocol to V1' },
  '-y in lower case falls back to V3': { args: [...t, ...src, '-y', 'v2'], code: ACCEPTED, out: 'unknown value for destination-client-type, assuming default protocol V3.' },
  '-k prints the five-line banner': { args: [...t, ...src, '-k'], code: ACCEPTED, out: ['*' + '*'.repeat(69), '* SECURITY WARNING: SSL host verification is DISABLED (-k flag)     *', '* to potential man-in-the-middle attacks. DO NOT use in production! *'] },
  '-s given twice': { args: [...t, ...src, '-s', '1'], code: 2, out: "option '--source-listen-port' cannot be specified more than once" },

  // precedence: command line > --config > environment (Decisions 9 for region/endpoint)
  'env region': { args: ['-s', '1'], env: { ...envToken, AWSIOT_TUNNEL_REGION: 'eu-west-1' }, code: ACCEPTED, out: 'eu-west-1.amazonaws.com:443' },
  'env endpoint': { args: ['-s', '1'], env: { ...envToken, AWSIOT_TUNNEL_ENDPOINT: '127.0.0.1:9' }, code: ACCEPTED, out: 'Service endpoint: 127.0.0.1:9' },
  'env region and env endpoint conflict': { args: ['-s', '1'], env: { ...envToken, AWSIOT_TUNNEL_REGION: 'eu-west-1', AWSIOT_TUNNEL_ENDPOINT: 'x' }, code: 2, out: 'Must specify one and only one' },
  'fixes reference bug 9.5#50: CLI region overrides env endpoint': { args: ['-r', 'us-east-1', '-s', '1'], env: { ...envToken, AWSIOT_TUNNEL_ENDPOINT: '127.0.0.1:9' }, code: ACCEPTED, out: 'us-east-1.amazonaws.com:443' },
  'CLI endpoint overrides env region': { args: ['-e', '127.0.0.1:9', '-s', '1'], env: { ...envToken, AWSIOT_TUNNEL_REGION: 'eu-west-1' }, code: ACCEPTED, out: 'Service endpoint: 127.0.0.1:9' },
  'CLI region overrides env region': { args: ['-r', 'us-east-1', '-s', '1'], env: { ...envToken, AWSIOT_TUNNEL_REGION: 'eu-west-1' }, code: ACCEPTED, out: 'us-east-1.amazonaws.com' },
  'config region overrides env region': { args: ['--config', cfgRegion, '-s', '1'], env: { ...envToken, AWSIOT_TUNNEL_REGION: 'eu-west-1' }, code: ACCEPTED, out: 'us-west-2.amazonaws.com' },
  'config endpoint overrides env endpoint': { args: ['--config', cfgEndpoint, '-s', '1'], env: { ...envToken, AWSIOT_TUNNEL_ENDPOINT: '127.0.0.1:9' }, code: ACCEPTED, out: 'Service endpoint: 127.0.0.1:7' },
  'CLI endpoint overrides config region (the command line wins)': { args: ['--config', cfgRegion, '-e', '127.0.0.1:9', '-s', '1'], env: envToken, code: ACCEPTED, out: 'Service endpoint: 127.0.0.1:9' },
  'CLI region overrides config endpoint': { args: ['--config', cfgEndpoint, '-r', 'eu-central-1', '-s', '1'], env: envToken, code: ACCEPTED, out: 'Service endpoint: data.tunneling.iot.eu-central-1.amazonaws.com:443' },
  'config region and config endpoint conflict': { args: ['--config', cfgRegionAndEndpoint, '-s', '1'], env: envToken, code: 2, out: 'Must specify one and only one of --region/-r or --proxy-endpoint/-e options' },
  'CLI region overrides config region': { args: ['--config', cfgRegion, '-r', 'eu-central-1', '-s', '1'], env: envToken, code: ACCEPTED, out: 'eu-central-1.amazonaws.com' },
  'config token overrides env token': { args: ['--config', cfgEmptyToken, ...src], env: envToken, code: 2, out: 'Access token cannot be empty' },
  'CLI token overrides config token': { args: ['--config', cfgEmptyToken, ...t, ...src], code: ACCEPTED, out: 'source mode' },

  // --config file
  'config: unknown key': { args: ['--config', cfgUnknown], code: 2, out: ["unrecognised option 'bogus-key'", 'unknown.ini', TRY] },
  'config: control characters in a line are escaped, never sent to the terminal': { args: ['--config', cfgControl], code: 2, out: "unrecognised option '\\x1b[31mred\\x1b]0;title\\x07'" },
  'config: a 70 KB key is cut in the message': { args: ['--config', cfgLongKey], code: 2, out: `unrecognised option '${'~'.repeat(200)}…(69800 more characters)'` },
  'config: line without =': { args: ['--config', cfgInvalidLine], code: 2, out: `the options configuration file contains an invalid line 'region' (${cfgInvalidLine}, line 1)` },
  'config: a bad line names its line number': { args: ['--config', cfgBadThirdLine], code: 2, out: `the options configuration file contains an invalid line 'source-listen-port 5555' (${cfgBadThirdLine}, line 3)` },
  'config: an unknown key names its line number': { args: ['--config', cfgUnknown], code: 2, out: `unrecognised option 'bogus-key' (${cfgUnknown}, line 1)` },
  'config: the second of two keys names its line number': { args: ['--config', cfgDuplicate], code: 2, out: `option '--region' cannot be specified more than once (${cfgDuplicate}, line 2)` },
  'config: a file that does not exist is said in words': { args: ['--config', join(dir, 'nope.ini')], code: 2, out: `can not read options configuration file '${join(dir, 'nope.ini')}': it does not exist`, absent: ['ENOENT'] },
  'config: a directory is said in words': { args: ['--config', dir], code: 2, out: `can not read options configuration file '${dir}': it is a directory, not a file`, absent: ['EISDIR'] },
  'settings: a file that does not exist is said in words': { args: [...t, ...src, '--settings-json', join(dir, 'nope.json')], code: 2, out: `can not read settings file '${join(dir, 'nope.json')}': it does not exist`, absent: ['ENOENT'] },
  'settings: a directory is said in words': { args: [...t, ...src, '--settings-json', dir], code: 2, out: `can not read settings file '${dir}': it is a directory, not a file`, absent: ['EISDIR'] },
  '-e with a URL: drop the scheme': { args: [...t, '-e', 'https://relay.example.com:8443/', '-s', '5555'], code: 2, out: 'Proxy endpoint is HOST[:PORT] without a scheme: drop "https://" (-e relay.example.com:8443)' },
  '-e wss://[::1]: drop the scheme': { args: [...t, '-e', 'wss://[::1]:8443', '-s', '5555'], code: 2, out: 'Proxy endpoint is HOST[:PORT] without a scheme: drop "wss://" (-e [::1]:8443)' },
  'config: unreadable file': { args: ['--config', unreadable, ...t, ...src], code: 2, out: `can not read options configuration file '${unreadable}'` },
  'config: missing file': { args: ['--config', join(dir, 'nope.ini')], code: 2, out: 'can not read options configuration file' },
  'config: same key twice': { args: ['--config', cfgDuplicate], code: 2, out: "option '--region' cannot be specified more than once" },
  'config: section makes keys unknown': { args: ['--config', cfgSection], code: 2, out: "unrecognised option 'sec.region'" },
  'config: help is refused': { args: ['--config', cfgHelp], code: 2, out: "option 'help' cannot be used in a configuration file" },
  'config: bad switch value': { args: ['--config', cfgBadSwitch], code: 2, out: "the argument ('perhaps') for option '--no-ssl-host-verify' is invalid" },
  'fixes reference bug 9.5#49: verbose from --config works': { args: ['--config', cfgVerbose], exact: true, code: ACCEPTED, out: '[debug] v2 local proxy starts with v1 local proxy format' },
  'config: no-ssl-host-verify = true': { args: ['--config', cfgInsecure, ...t, ...src], code: ACCEPTED, out: 'SSL host verification is DISABLED' },

  // --settings-json and --export-default-settings
  'settings: unreadable file': { args: [...t, ...src, '--settings-json', unreadable], code: 2, out: 'can not read settings file' },
  'settings: malformed JSON, not announced as used first': { args: [...t, ...src, '--settings-json', settingsBadJson], code: 2, out: 'settings file is not valid JSON', absent: ['Using settings specified in file'] },
  'settings: not an object': { args: [...t, ...src, '--settings-json', settingsArray], code: 2, out: 'settings file must contain a JSON object', absent: ['Using settings specified in file'] },
  'settings: wrong type names the key': { args: [...t, ...src, '--settings-json', settingsBadType], code: 2, out: 'tunneling.proxy.tcp.max_active_connections must be an integer', absent: ['Using settings specified in file'] },
  'settings: bad boolean names the key': { args: [...t, ...src, '--settings-json', settingsBadBool], code: 2, out: 'tunneling.proxy.websocket.reconnect_on_data_error must be true or false', absent: ['Using settings specified in file'] },
  'settings: a file saved with a byte order mark (Windows editors) is read': { args: [...t, ...src, '--settings-json', settingsBom], code: ACCEPTED, out: 'Service endpoint: bom.example.test:9443' },
  'config: a file with a byte order mark and CRLF lines is read': { args: ['--config', cfgBom], code: ACCEPTED, out: 'data.tunneling.iot.us-east-1.amazonaws.com:443, source mode' },
  'settings: a device that never ends is refused, not read forever': { args: [...t, ...src, '--settings-json', '/dev/zero'], code: 2, out: "can not read settings file '/dev/zero': larger than 1 MiB" },
  'config: a device that never ends is refused, not read forever': { args: ['--config', '/dev/zero'], code: 2, out: "can not read options configuration file '/dev/zero': larger than 1 MiB" },
  'settings: unknown key is a debug line': { args: [...t, ...src, '--settings-json', settingsUnknown, '-v', '5'], code: ACCEPTED, out: ['Using settings specified in file', 'Ignoring unknown setting tunneling.proxy.bogus_key'] },
  'export to a directory that does not exist': { args: ['--export-default-settings', join(dir, 'no/such/dir.json')], code: 2, out: `${join(dir, 'no/such/dir.json')}: cannot open file: its directory does not exist` },
  'export onto a directory': { args: ['--export-default-settings', dir], code: 2, out: `${dir}: cannot open file: it is a directory, not a file`, absent: ['EISDIR'] },
  'export ignores everything else': { args: ['--export-default-settings', join(dir, 'export.json'), '-s', '0'], code: 0, out: '' },

  // --config-dir
  'config-dir: missing': { args: [...t, '-r', 'us-east-1', '-m', 'src', '--config-dir', join(dir, 'nope')], code: 2, out: 'Invalid configuration directory' },
  'config-dir: empty': { args: [...t, '-r', 'us-east-1', '-m', 'src', '--config-dir', cdEmpty], code: 2, out: `Invalid configuration directory: ${cdEmpty} (empty)` },
  'config-dir: a file, not a directory': { args: [...t, '-r', 'us-east-1', '-m', 'src', '--config-dir', seedConfig1], code: 2, out: '(not a directory)' },
  'config-dir: unreadable file': { args: [...t, '-r', 'us-east-1', '-m', 'src', '--config-dir', cdUnreadable], code: 2, out: `Cannot read configuration file ${join(cdUnreadable, 'mem.ini')}` },
  'config-dir: conflicting ids name both files': { args: [...t, '-r', 'us-east-1', '-m', 'src', '--config-dir', cdDup], code: 2, out: ['Service id SSH1 is defined twice', join(cdDup, 'a.ini'), join(cdDup, 'b.ini')] },
  'config-dir: same value twice is fine': { args: [...t, '-r', 'us-east-1', '-m', 'src', '--config-dir', cdSame, '-v', '5'], code: ACCEPTED, out: 'SSH1 = 3333 (configuration files)' },
  'config-dir: bad value names file and line': { args: [...t, '-r', 'us-east-1', '-m', 'src', '--config-dir', cdBadValue], code: 2, out: `${join(cdBadValue, 'SSHSource.ini')}:1: Listen address must be PORT or ADDRESS:PORT (ID=PORT for a service id): abc` },
  'config-dir: a symlink loop is an error naming the file': { args: [...t, '-r', 'us-east-1', '-m', 'src', '--config-dir', cdSymlinkLoop], code: 2, out: `Cannot read configuration file ${join(cdSymlinkLoop, 'self.ini')}: too many symbolic links (a loop?)` },
  'config-dir: a symlink back to a parent directory is read once': { args: [...t, '-r', 'us-east-1', '-m', 'src', '--config-dir', cdCycle, '-v', '5'], code: ACCEPTED, out: ['SSH1 = 3333 (configuration files)', join(cdCycle, 'a/ports.ini')], absent: ['a/up/a'] },
  'config-dir: a file over 1 MiB is refused': { args: [...t, '-r', 'us-east-1', '-m', 'src', '--config-dir', cdBig], code: 2, out: `Cannot read configuration file ${join(cdBig, 'big.ini')}: larger than 1 MiB` },
  'config-dir: a file name and a line with control characters are escaped': { args: [...t, '-r', 'us-east-1', '-m', 'src', '--config-dir', cdControl, '-v', '5'], code: ACCEPTED, out: [join(cdControl, '\\x1b]0;title\\x07.ini'), 'is not "ID = value": not \\x1b[2J an ini line', 'SSH1 = 3333 (configuration files)'] },
  'config-dir: nested files read': { args: [...t, '-r', 'us-east-1', '-m', 'src', '--config-dir', cdGood, '-v', '5'], code: ACCEPTED, out: ['Detect configuration files', join(cdGood, 'more/HTTP.ini'), 'HTTP1 = 8080 (configuration files)', 'SSH2 = 5555 (configuration files)'] },
  'config-dir: destination values': { args: [...t, '-r', 'us-east-1', '-m', 'dst', '--config-dir', cdDest, '-v', '5'], code: ACCEPTED, out: 'SSH2 = 10.0.0.1:80 (configuration files)' },
  'config-dir: file not in ini format skipped with a warning': { args: [...t, '-r', 'us-east-1', '-m', 'src', '--config-dir', cdNotIni, '-v', '5'], code: ACCEPTED, out: ['Fail to parse', 'SSH1 = 3333 (configuration files)'] },
  'config-dir: default ./config in the current directory': { args: [...t, '-r', 'us-east-1', '-m', 'dst', '-v', '5'], cwd: cwdWithConfig, code: ACCEPTED, out: 'SSH1 = 2222 (configuration files)' },
  'config-dir: default ./config ignored when -d is given': { args: [...t, '-r', 'us-east-1', '-d', '22', '-v', '5'], cwd: cwdWithConfig, code: ACCEPTED, out: ACCEPTED_LINE(), absent: ['configuration files'] },

  // web proxy environment
  'https_proxy that cannot be parsed': { args: [...t, ...src], env: { https_proxy: 'http://user@proxy:3128' }, code: 2, out: 'Failed to parse the value of environment variable https_proxy' },
  'HTTPS_PROXY with an unsupported scheme': { args: [...t, ...src], env: { HTTPS_PROXY: 'socks5://proxy:1080' }, code: 2, out: ['environment variable HTTPS_PROXY', 'Unsupported protocol'] },
  'https_proxy="" masks HTTPS_PROXY': { args: [...t, ...src], env: { https_proxy: '', HTTPS_PROXY: 'socks5://proxy:1080' }, code: ACCEPTED, out: ACCEPTED_LINE(), absent: ['Web proxy'] },
  'no_proxy listing the endpoint: the web proxy is not announced as used': { args: [...t, ...src], env: { https_proxy: 'http://proxy.example:3128', no_proxy: 'localhost,.amazonaws.com' }, code: ACCEPTED, out: 'Found Web proxy information in the environment variables, but data.tunneling.iot.us-east-1.amazonaws.com is listed in no_proxy: connecting directly.', absent: ['will use it to connect via the proxy'] },
  'NO_PROXY not listing the endpoint: the web proxy is used': { args: [...t, ...src], env: { https_proxy: 'http://proxy.example:3128', NO_PROXY: 'localhost' }, code: ACCEPTED, out: 'will use it to connect via the proxy' },
  'HTTPS_PROXY is used': { args: [...t, ...src], env: { HTTPS_PROXY: 'http://user:secret@proxy.example:3128' }, code: ACCEPTED, out: 'Found Web proxy information in the environment variables', absent: ['secret'] },

  // the examples of the reference's README
  'README: -r us-east-1 -d localhost:3389 -t': { args: ['-r', 'us-east-1', '-d', 'localhost:3389', '-t', TOKEN], code: ACCEPTED, out: 'destination mode' },
  'README: -r us-east-1 -d HTTP1=80,SSH1=22 -t': { args: ['-r', 'us-east-1', '-d', 'HTTP1=80,SSH1=22', '-t', TOKEN], code: ACCEPTED, out: 'destination mode' },
  'README: -r us-east-1 -s 3389 -t': { args: ['-r', 'us-east-1', '-s', '3389', '-t', TOKEN], code: ACCEPTED, out: 'source mode', absent: [TOKEN], process: true },
  'README: -r us-east-1 -s HTTP1=5555,SSH1=3333 -t': { args: ['-r', 'us-east-1', '-s', 'HTTP1=5555,SSH1=3333', '-t', TOKEN], code: ACCEPTED, out: 'source mode' },
  'README: -r us-east-1 -s 3389 -c ./certs (token from the environment)': { args: ['-r', 'us-east-1', '-s', '3389', '-c', './certs'], cwd: dir, env: envToken, code: ACCEPTED, out: 'source mode' },
  'README: -r us-east-1 -s 3389 -c ./certs without a token': { args: ['-r', 'us-east-1', '-s', '3389', '-c', './certs'], cwd: dir, code: 2, out: "the option '--access-token' is required but missing" },
  'README: -s 5000 with env token and region': { args: ['-s', '5000'], env: { ...envToken, AWSIOT_TUNNEL_REGION: 'us-east-1' }, code: ACCEPTED, out: 'source mode' },
  'README: -s SSH1=$port1,SSH2=$port2': { args: ['-s', 'SSH1=5555,SSH2=6666'], env: { ...envToken, AWSIOT_TUNNEL_REGION: 'us-east-1' }, code: ACCEPTED, out: 'source mode' },
  'README: -d SSH1=$port1,SSH2=$port2': { args: ['-d', 'SSH1=22,SSH2=80'], env: { ...envToken, AWSIOT_TUNNEL_REGION: 'us-east-1' }, code: ACCEPTED, out: 'destination mode' },
  'README: --config config.ini': { args: ['--config', 'config.ini'], cwd: join(dir, 'seed'), code: ACCEPTED, out: 'data.tunneling.iot.us-east-1.amazonaws.com:443, source mode' },
  'README: -r us-east-1 -t foobar -s 5000': { args: ['-r', 'us-east-1', '-t', 'foobar', '-s', '5000'], code: ACCEPTED, out: 'data.tunneling.iot.us-east-1.amazonaws.com:443, source mode' },
  'README: --config config.ini -t foobar': { args: ['--config', 'config.ini', '-t', 'foobar'], cwd: join(dir, 'seed2'), code: ACCEPTED, out: 'data.tunneling.iot.us-west-2.amazonaws.com:443, source mode' },
  'README: -c /opt/rootca -r us-west-2 -b ::1 -s 6000 -t foobar': { args: ['-c', '/opt/rootca', '-r', 'us-west-2', '-b', '::1', '-s', '6000', '-t', 'foobar'], code: ACCEPTED, out: 'data.tunneling.iot.us-west-2.amazonaws.com:443, source mode' },
  'README: --export-default-settings lpsettings.json': { args: ['--export-default-settings', 'lpsettings.json'], cwd: dir, code: 0, out: '' },
  'README: -r us-east-1 -t foobar -d localhost:22 --settings-json lpsettings.json': { args: ['-r', 'us-east-1', '-t', 'foobar', '-d', 'localhost:22', '--settings-json', settingsPing], code: ACCEPTED, out: 'destination mode' },
  'README: the example lpsettings.json as printed there': { args: ['-r', 'us-east-1', '-t', 'foobar', '-d', 'localhost:22', '--settings-json', settingsSeed], code: ACCEPTED, out: ['Using settings specified in file', 'destination mode'] },
  'README: Windows -c D:\\certs': { args: ['-r', 'us-east-1', '-s', '3389', '-c', 'D:\\certs'], env: envToken, code: ACCEPTED, out: 'source mode' },
  'README: -b 0.0.0.0 in a container': { args: ['-r', 'us-east-1', '-s', '5555', '-b', '0.0.0.0'], env: envToken, code: ACCEPTED, out: 'source mode' },
};

function ACCEPTED_LINE(): string {
  return 'Service endpoint: ';
}

const table = suite('cli table');

table.after(() => {
  rmSync(dir, { recursive: true, force: true });
});

function check(name: string, c: Case, r: CliResult): void {
  const output = r.stdout + r.stderr;
  const context = `${name}: localproxy ${c.args.join(' ')}\n--- output ---\n${JSON.stringify(output).slice(0, 5000)}`;
  // Whatever the input, nothing but line ends reaches the terminal raw, and no line is huge.
  assert.not.match(output, /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/, `a control character in the output\n${context}`);
  assert.ok(output.split('\n').every((line) => line.length < 2100), `a line over 2100 characters\n${context}`);
  assert.is(r.code, c.code, `exit code\n${context}`);
  for (const text of Array.isArray(c.out) ? c.out : [c.out]) assert.ok(output.includes(text), `missing ${JSON.stringify(text)}\n${context}`);
  for (const text of c.absent ?? []) assert.not.ok(output.includes(text), `must not contain ${JSON.stringify(text)}\n${context}`);
  if (c.code === 2) {
    // Decisions 1: one line naming the problem, then the "Try" line, nothing on stdout.
    const lines = r.stderr.trimEnd().split('\n');
    assert.is(lines[lines.length - 1], TRY, context);
    assert.not.match(r.stderr, /\n\s+at /, `no stack trace\n${context}`);
    assert.is(r.stdout, '', context);
  }
}

table(`at least 60 invocations (${Object.keys(cases).length})`, () => {
  assert.ok(Object.keys(cases).length >= 60);
});

/** Accepted cases need the debug line that ends option processing. */
function argsOf(c: Case): string[] {
  return c.code === ACCEPTED && !c.exact && !c.args.includes('-v') && !c.args.some((a) => a.startsWith('-kv')) ? [...c.args, '-v', '5'] : c.args;
}

table('every invocation gives its exit code and message (in process)', async () => {
  const failures: string[] = [];
  for (const [name, c] of Object.entries(cases)) {
    if (c.process) continue;
    const args = argsOf(c);
    try {
      check(name, { ...c, args }, await runCliInProcess(args, { env: c.env, cwd: c.cwd }));
    } catch (err) {
      failures.push((err as Error).message);
    }
  }
  assert.is(failures.length, 0, failures.join('\n\n'));
});

table('exit codes and stdio of the built CLI (one child process per row)', async () => {
  const rows = Object.entries(cases).filter(([, c]) => c.process);
  assert.ok(rows.length >= 5, 'a handful of rows run as processes');
  const results = await Promise.allSettled(rows.map(async ([name, c]) => {
    const args = argsOf(c);
    check(name, { ...c, args }, await runCli(args, { env: c.env, cwd: c.cwd, untilAccepted: c.code === ACCEPTED, timeoutMs: 30_000 }));
  }));
  const failures = results.flatMap((r) => (r.status === 'rejected' ? [(r.reason as Error).message] : []));
  assert.is(failures.length, 0, failures.join('\n\n'));
});

table('the README example writes lpsettings.json in the current directory', () => {
  const text = readFileSync(join(dir, 'lpsettings.json'), 'utf8');
  assert.match(text, /"connect_retry_count": "-1"/);
});

table('Decisions 9: without ./config, the config/ directory beside the executable is used', async () => {
  const install = join(dir, 'install');
  file('install/config/services.ini', 'SSH1 = 2200\n');
  copyFileSync(CLI, join(install, 'localproxy.cjs'));
  const elsewhere = join(dir, 'elsewhere');
  mkdirSync(elsewhere);
  const r = await runCli([...t, '-r', 'us-east-1', '-m', 'dst', '-v', '5'], { cli: join(install, 'localproxy.cjs'), cwd: elsewhere, untilAccepted: true });
  check('config beside the executable', { args: [], code: ACCEPTED, out: ['SSH1 = 2200 (configuration files)', join(install, 'config/services.ini')] }, r);
  // ./config in the current directory wins over it.
  const r2 = await runCli([...t, '-r', 'us-east-1', '-m', 'dst', '-v', '5'], { cli: join(install, 'localproxy.cjs'), cwd: cwdWithConfig, untilAccepted: true });
  check('./config first', { args: [], code: ACCEPTED, out: 'SSH1 = 2222 (configuration files)', absent: ['2200'] }, r2);
});

table.run();
