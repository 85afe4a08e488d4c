/** The pure parsers behind the command line: argv, mapping lists, endpoints, --config text. */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { parseArgs, parseCommandLine, type OptionSpec } from '../../src/cli/args';
import { parseConfigText } from '../../src/cli/config-file';
import { parseEndpoint, regionEndpoint } from '../../src/cli/endpoint';
import { parseMappings } from '../../src/cli/service-spec';
import { defaultSettings } from '../../src/settings';

const usage = (message: string) => (err: Error & { exitCode?: number }) => err.exitCode === 2 && err.message.includes(message);

const args = suite('parseArgs');

args('long, long=value, prefixes, short, attached and clustered forms give the same values', () => {
  const forms = [
    ['--access-token', 'T', '--region', 'r1', '--no-ssl-host-verify', '--verbose', '5'],
    ['--access-token=T', '--region=r1', '--no-ssl', '--verb=5'],
    ['-t', 'T', '-r', 'r1', '-k', '-v', '5'],
    ['-tT', '-rr1', '-kv5'],
    ['-tT', '-rr1', '-kv', '5'],
  ];
  for (const form of forms) {
    assert.equal(Object.fromEntries(parseArgs(form)), { 'access-token': 'T', region: 'r1', 'no-ssl-host-verify': true, verbose: '5' }, form.join(' '));
  }
});

args('values keep leading zeros, equals signs and spaces (nothing coerces them to numbers)', () => {
  const parsed = parseArgs(['-s', '05555', '--destination-app=SSH1=22', '-t', 'a b']);
  assert.is(parsed.get('source-listen-port'), '05555');
  assert.is(parsed.get('destination-app'), 'SSH1=22');
  assert.is(parsed.get('access-token'), 'a b');
});

args('syntax errors carry the reference texts', () => {
  assert.throws(() => parseArgs(['--dest', 'x']), usage("option '--dest' is ambiguous and matches '--destination-app', and '--destination-client-type'"));
  assert.throws(() => parseArgs(['-r', 'a', '--reg', 'b']), usage("option '--region' cannot be specified more than once"));
  assert.throws(() => parseArgs(['-x']), usage("unrecognised option '-x'"));
  assert.throws(() => parseArgs(['--verbose']), usage("the required argument for option '--verbose' is missing"));
  assert.throws(() => parseArgs(['-k', 'extra']), usage("unexpected argument 'extra'"));
  assert.throws(() => parseArgs(['--', 'extra']), usage("unexpected argument 'extra'"));
  assert.throws(() => parseArgs(['--k=1']), usage("unrecognised option '--k'"));
});

args('relay and tunnel share the syntax: prefixes, attached values, once-only values, a bounded number of positionals', () => {
  const table: OptionSpec[] = [
    { name: 'tunnel-id', value: true },
    { name: 'thing-name', value: true },
    { name: 'delete', value: false },
    { name: 'verbose', short: 'v', value: true },
  ];
  const parsed = parseCommandLine(['close', '--tun', 'x', '--del', '-v5'], table, 1);
  assert.equal(parsed.positionals, ['close']);
  assert.equal(Object.fromEntries(parsed.options), { 'tunnel-id': 'x', delete: true, verbose: '5' });
  assert.equal(parseCommandLine(['--thing=a', 'open'], table, 1).positionals, ['open']);
  assert.throws(() => parseCommandLine(['close', 'now'], table, 1), usage("unexpected argument 'now'"));
  assert.throws(() => parseCommandLine(['--t', 'x'], table, 1), usage("option '--t' is ambiguous and matches '--tunnel-id', and '--thing-name'"));
  assert.throws(() => parseCommandLine(['--tunnel-id', 'x', '--tunnel-id=y'], table, 1), usage("option '--tunnel-id' cannot be specified more than once"));
  assert.throws(() => parseCommandLine(['--tunnel-id', '--delete'], table, 1), usage("the required argument for option '--tunnel-id' is missing"));
  assert.throws(() => parseCommandLine(['--delete=yes'], table, 1), usage("option '--delete' does not take any arguments"));
});

args('a prefix takes the next word as its value only when it is not an option or after --', () => {
  assert.is(parseArgs(['--reg', 'us-east-1']).get('region'), 'us-east-1');
  assert.throws(() => parseArgs(['--reg', '-k']), usage("the required argument for option '--region' is missing"));
  assert.throws(() => parseArgs(['--reg', '--', 'us-east-1']), usage("the required argument for option '--region' is missing"));
  assert.is(parseArgs(['-t', '-']).get('access-token'), '-');
});

args('an exact long name wins over a longer one it prefixes', () => {
  assert.is(parseArgs(['--config', 'a.ini']).get('config'), 'a.ini');
});

const mappings = suite('parseMappings');

const table: Array<[string, 'source' | 'destination', Array<[string, unknown]>]> = [
  ['5555', 'source', [['', { kind: 'tcp', port: 5555 }]]],
  ['SSH1=5555,HTTP1=8080', 'source', [['SSH1', { kind: 'tcp', port: 5555 }], ['HTTP1', { kind: 'tcp', port: 8080 }]]],
  [' SSH1 = 5555 ,,HTTP1==8080', 'source', [['SSH1', { kind: 'tcp', port: 5555 }], ['HTTP1', { kind: 'tcp', port: 8080 }]]],
  ['SSH1=127.0.0.1:5555', 'source', [['SSH1', { kind: 'tcp', host: '127.0.0.1', port: 5555 }]]],
  ['22', 'destination', [['', { kind: 'tcp', port: 22 }]]],
  ['localhost:22', 'destination', [['', { kind: 'tcp', host: 'localhost', port: 22 }]]],
  ['SSH1=22,HTTP1=10.0.0.5:80', 'destination', [['SSH1', { kind: 'tcp', port: 22 }], ['HTTP1', { kind: 'tcp', host: '10.0.0.5', port: 80 }]]],
  ['SSH1=[::1]:22', 'destination', [['SSH1', { kind: 'tcp', host: '::1', port: 22 }]]],
  ['/run/ssh.sock', 'destination', [['', { kind: 'unix', path: '/run/ssh.sock' }]]],
];

mappings('the grammar of 2.10, in insertion order', () => {
  for (const [list, mode, expected] of table) assert.equal([...parseMappings(list, mode).services], expected, list);
});

mappings('duplicates: first wins, with the reference warning', () => {
  const { services, warnings } = parseMappings('A=1,B=2,A=3', 'source');
  assert.equal([...services.keys()], ['A', 'B']);
  assert.equal(warnings, ['Duplicate mappings, ignore. This mapping already exists: A : 1']);
});

mappings('rejections', () => {
  assert.throws(() => parseMappings('5555,', 'source'), usage('Wrong format for the port mappings! Example: SSH1=5555,SSH2=6666.'));
  assert.throws(() => parseMappings('A=', 'source'), usage('Wrong format for the port mappings: A= .Example: SSH1=5555'));
  assert.throws(() => parseMappings('A=0', 'source'), usage('Port must be between 1 and 65535'));
  assert.throws(() => parseMappings('A=/x', 'source'), usage('not on a path'));
  assert.throws(() => parseMappings('A=[::1]', 'destination'), usage('Endpoint must be PORT or HOST:PORT'));
  assert.throws(() => parseMappings('A=[zz]:1', 'destination'), usage('not a valid bracketed IPv6 address'));
  assert.throws(() => parseMappings('A b=1', 'source'), usage('Service ID must contain only'));
});

const endpoints = suite('endpoints');

endpoints('host[:port], brackets for IPv6, lower-cased', () => {
  assert.equal(parseEndpoint('Data.Example.COM'), { host: 'data.example.com', port: 443 });
  assert.equal(parseEndpoint('h:8443'), { host: 'h', port: 8443 });
  assert.equal(parseEndpoint('[::1]'), { host: '::1', port: 443 });
  assert.equal(parseEndpoint('[FE80::1]:9'), { host: 'fe80::1', port: 9 });
  for (const bad of ['h:', ':1', 'a:b:c', 'h:0', 'h:65536', '[::1', '[::1]x', '[]:1', 'h:1x']) assert.throws(() => parseEndpoint(bad), usage('Invalid endpoint specified'), bad);
});

endpoints('region → endpoint: overrides, then endpoint_format', () => {
  const s = defaultSettings();
  assert.is(regionEndpoint('us-east-1', s), 'data.tunneling.iot.us-east-1.amazonaws.com');
  assert.is(regionEndpoint('cn-north-1', s), 'data.tunneling.iot.cn-north-1.amazonaws.com.cn');
  assert.is(regionEndpoint('x', { ...s, endpointFormat: 'tunnel.%s.example:9' }), 'tunnel.x.example:9');
  assert.throws(() => regionEndpoint('x', { ...s, endpointFormat: 'fixed' }), usage('must contain %s'));
});

const config = suite('--config text');

config('key = value, comments, switches', () => {
  const parsed = parseConfigText('# c\nregion = us-east-1 # where\n\n  access-token=abc \nno-ssl-host-verify = true\nverbose = 6\n');
  assert.equal(Object.fromEntries(parsed), { region: 'us-east-1', 'access-token': 'abc', 'no-ssl-host-verify': true, verbose: '6' });
  assert.equal(Object.fromEntries(parseConfigText('no-ssl-host-verify = false\n')), {});
});

config('a # cuts a value, as in the reference', () => {
  assert.is(parseConfigText('access-token = ab#cd\n').get('access-token'), 'ab');
});

args.run();
mappings.run();
endpoints.run();
config.run();
