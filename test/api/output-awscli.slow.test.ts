/**
 * `localproxy tunnel --output json|text|table [--query]` byte for byte against the real AWS CLI
 * (/usr/bin/aws, Debian's awscli v2) for the same responses. The responses are our relay's own
 * answers to each operation, captured once and served to both clients by a replay server (the
 * relay cannot give the same OpenTunnel answer twice), plus crafted ones for what the relay does
 * not produce: non-ASCII and wide text, timestamps on whole seconds and rounding edges, a table
 * wider than the terminal. Time zones vary through TZ, for both clients.
 */
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { TunnelApiClient, type Operation } from '../../src/api/client';
import { silentLogger } from '../../src/log';
import { startRelay, type Relay } from '../../src/relay/server';
import { CLI } from '../helpers/child';
import { within } from '../helpers/wait';

const AWS = '/usr/bin/aws';
const KEY = { accessKeyId: 'AKIDOUTPUTTEST', secretAccessKey: 'output-test-secret' };

interface Ctx { relay: Relay; replay: Server; port: number; home: string; responses: Map<string, string> }
const test = suite<Ctx>('localproxy tunnel output vs the AWS CLI');

test.before(async (ctx) => {
  ctx.home = mkdtempSync(join(tmpdir(), 'localproxy-awscli-output-'));
  ctx.relay = await startRelay({ port: 0, tls: 'self-signed', credentials: KEY, log: silentLogger(), accountId: '123456789012' });
  ctx.responses = new Map();
  ctx.replay = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const operation = String(req.headers['x-amz-target']).split('.').pop()!;
      res.writeHead(200, { 'content-type': 'application/x-amz-json-1.1' });
      res.end(ctx.responses.get(operation) ?? '{}');
    });
  });
  ctx.replay.listen(0, '127.0.0.1');
  await once(ctx.replay, 'listening');
  ctx.port = (ctx.replay.address() as { port: number }).port;
});
test.after(async (ctx) => {
  ctx.replay.close();
  await ctx.relay.close();
  rmSync(ctx.home, { recursive: true, force: true });
});

/** The relay's own answers to every operation, as the replay server will serve them. */
async function captureRelay(ctx: Ctx): Promise<void> {
  const client = new TunnelApiClient({ endpoint: ctx.relay.url.replace('wss:', 'https:'), region: 'eu-west-1', credentials: KEY, ca: ctx.relay.caPem });
  const raw = async (operation: Operation, input: object): Promise<Record<string, unknown>> => {
    const response = await client.call(operation, input);
    ctx.responses.set(operation, JSON.stringify(response));
    return response;
  };
  const opened = await raw('OpenTunnel', { description: 'lab pi', destinationConfig: { thingName: 'pi-1', services: ['SSH', 'HTTP'] }, timeoutConfig: { maxLifetimeTimeoutMinutes: 30 }, tags: [{ key: 'env', value: 'lab' }, { key: 'team', value: 'iot' }] });
  await raw('OpenTunnel', { destinationConfig: { services: ['SSH'] } });
  await raw('DescribeTunnel', { tunnelId: opened.tunnelId });
  await raw('ListTunnels', {});
  await raw('ListTagsForResource', { resourceArn: opened.tunnelArn });
  await raw('TagResource', { resourceArn: opened.tunnelArn, tags: [{ key: 'owner', value: 'ops' }] });
  await raw('UntagResource', { resourceArn: opened.tunnelArn, tagKeys: ['owner'] });
  await raw('RotateTunnelAccessToken', { tunnelId: opened.tunnelId, clientMode: 'ALL' });
  await raw('CloseTunnel', { tunnelId: opened.tunnelId });
  // The first OpenTunnel, with everything in it, is the one served.
  ctx.responses.set('OpenTunnel', JSON.stringify({ tunnelId: opened.tunnelId, tunnelArn: opened.tunnelArn, sourceAccessToken: opened.sourceAccessToken, destinationAccessToken: opened.destinationAccessToken }));
}

const ARN = 'arn:aws:iot:eu-west-1:123456789012:tunnel/x';
/** Each operation as the AWS CLI and as `localproxy tunnel` spell it. */
const COMMANDS: Record<string, [string[], string[]]> = {
  OpenTunnel: [['open-tunnel'], ['open']],
  CloseTunnel: [['close-tunnel', '--tunnel-id', 'x'], ['close', '--tunnel-id', 'x']],
  DescribeTunnel: [['describe-tunnel', '--tunnel-id', 'x'], ['describe', '--tunnel-id', 'x']],
  ListTunnels: [['list-tunnels'], ['list']],
  RotateTunnelAccessToken: [['rotate-tunnel-access-token', '--tunnel-id', 'x', '--client-mode', 'ALL'], ['rotate', '--tunnel-id', 'x', '--client-mode', 'ALL']],
  TagResource: [['tag-resource', '--resource-arn', ARN, '--tags', 'key=a,value=b'], ['tag', '--resource-arn', ARN, '--tags', 'a=b']],
  UntagResource: [['untag-resource', '--resource-arn', ARN, '--tag-keys', 'a'], ['untag', '--resource-arn', ARN, '--tag-keys', 'a']],
  ListTagsForResource: [['list-tags-for-resource', '--resource-arn', ARN], ['tags', '--resource-arn', ARN]],
};

interface Run { code: number | null; stdout: string; stderr: string }

function run(command: string, args: string[], env: NodeJS.ProcessEnv, input?: string): Promise<Run> {
  return within(new Promise<Run>((resolve) => {
    const child = execFile(command, args, { env, timeout: 240_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => resolve({ code: err ? (err as { code?: number }).code ?? 1 : 0, stdout, stderr }));
    child.stdin!.end(input ?? '');
  }), 300_000, `${command} ${args.join(' ')}`);
}

/** Ends each command's output in the batch: a record separator never appears in the outputs compared. */
const MARK = '\x1e<<end of command, exit ';
/**
 * The AWS CLI's own entry point (what /usr/bin/aws runs) for a list of commands in one Python
 * process: its start-up costs seconds here, which 60 separate runs would pay each.
 */
const BATCH = `
import json, os, sys
if os.environ.get('LC_CTYPE', '') == 'UTF-8':
    os.environ['LC_CTYPE'] = 'en_US.UTF-8'
from awscli.clidriver import AWSCLIEntryPoint
for args in json.load(sys.stdin):
    rc = AWSCLIEntryPoint().main(args)
    sys.stdout.flush()
    sys.stdout.write(${JSON.stringify(MARK)} + str(rc) + '>>\\n')
    sys.stdout.flush()
`;

interface Case { operation: string; output: string; query?: string; tz: string }

function environment(ctx: Ctx, tz: string): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH, HOME: ctx.home, TZ: tz, AWS_ACCESS_KEY_ID: KEY.accessKeyId, AWS_SECRET_ACCESS_KEY: KEY.secretAccessKey,
    AWS_CONFIG_FILE: join(ctx.home, 'none'), AWS_SHARED_CREDENTIALS_FILE: join(ctx.home, 'none'), AWS_PAGER: '', AWS_DEFAULT_REGION: 'eu-west-1', AWS_EC2_METADATA_DISABLED: 'true',
  };
}

function what(c: Case): string {
  return `${c.operation} --output ${c.output}${c.query === undefined ? '' : ` --query '${c.query}'`} TZ=${c.tz}`;
}

/** The AWS CLI's stdout for each case (one Python process per time zone). */
async function awsOutputs(ctx: Ctx, cases: Case[]): Promise<string[]> {
  const outputs: string[] = new Array(cases.length);
  for (const tz of new Set(cases.map((c) => c.tz))) {
    const mine = cases.map((c, i) => [c, i] as const).filter(([c]) => c.tz === tz);
    const commands = mine.map(([c]) => ['iotsecuretunneling', ...COMMANDS[c.operation][0], '--endpoint-url', `http://127.0.0.1:${ctx.port}`, '--output', c.output, ...(c.query === undefined ? [] : ['--query', c.query])]);
    const batch = await run('/usr/bin/python3', ['-c', BATCH], environment(ctx, tz), JSON.stringify(commands));
    assert.is(batch.code, 0, batch.stderr);
    const parts = batch.stdout.split(MARK);
    assert.is(parts.length, mine.length + 1, batch.stderr);
    mine.forEach(([c, i], n) => {
      const body = n === 0 ? parts[0] : parts[n].slice(parts[n].indexOf('>>\n') + 3);
      assert.ok(parts[n + 1].startsWith('0>>'), `aws: ${what(c)} exited ${parts[n + 1].slice(0, 4)}: ${batch.stderr}`);
      outputs[i] = body;
    });
  }
  return outputs;
}

/** Both clients, each case: the same bytes on stdout. Returns ours. */
async function same(ctx: Ctx, cases: Case[]): Promise<string[]> {
  const theirs = await awsOutputs(ctx, cases);
  const ours: string[] = new Array(cases.length);
  let next = 0;
  // Three of ours at a time.
  await Promise.all([0, 1, 2].map(async () => {
    for (let i = next++; i < cases.length; i = next++) {
      const c = cases[i];
      const [, ourArgs] = COMMANDS[c.operation];
      const mine = await run(process.execPath, [CLI, 'tunnel', ...ourArgs, '--endpoint', `http://127.0.0.1:${ctx.port}`, '--output', c.output, ...(c.query === undefined ? [] : ['--query', c.query])], environment(ctx, c.tz));
      assert.is(mine.code, 0, `ours: ${what(c)}: ${mine.stderr}`);
      ours[i] = mine.stdout;
    }
  }));
  cases.forEach((c, i) => assert.fixture(ours[i], theirs[i], what(c)));
  return ours;
}

const FORMATS = ['json', 'text', 'table'];

test('it is the AWS CLI v2 that /usr/bin/aws runs', async () => {
  const version = await run(AWS, ['--version'], { PATH: process.env.PATH });
  assert.match(version.stdout, /^aws-cli\/2\./);
});

test('every operation, json, text and table: the relay\'s own responses', async (ctx) => {
  await captureRelay(ctx);
  const cases = Object.keys(COMMANDS).flatMap((operation) => FORMATS.map((output) => ({ operation, output, tz: 'UTC' })));
  const printed = await same(ctx, cases);
  cases.forEach((c, i) => {
    if (['CloseTunnel', 'TagResource', 'UntagResource'].includes(c.operation)) assert.is(printed[i], '', `${c.operation} prints nothing`);
  });
});

test('--query: scalars, lists, projections, functions and a miss, in each format', async (ctx) => {
  const queries: Array<[string, string]> = [
    ['DescribeTunnel', 'tunnel.[tunnelId,status]'],
    ['DescribeTunnel', 'tunnel.tags'],
    ['DescribeTunnel', 'tunnel.destinationConfig.services'],
    ['DescribeTunnel', 'tunnel.nothing'],
    ['ListTunnels', 'tunnelSummaries[].{id:tunnelId,created:createdAt}'],
    ['ListTunnels', 'length(tunnelSummaries)'],
    ['ListTunnels', 'sort_by(tunnelSummaries, &createdAt)[-1].tunnelId'],
  ];
  await same(ctx, queries.flatMap(([operation, query]) => FORMATS.map((output) => ({ operation, output, query, tz: 'UTC' }))));
});

test('crafted responses: wide and non-ASCII text, whole seconds and rounding edges of timestamps, in three time zones, a table wider than 80 columns', async (ctx) => {
  const state = (status: string, at: number) => ({ status, lastUpdatedAt: at });
  ctx.responses.set('DescribeTunnel', JSON.stringify({
    tunnel: {
      // Members out of the model's order, one it does not know and a null: botocore drops and reorders.
      lastUpdatedAt: 1795976762.9999996,
      tunnelId: 'b7e3f0c1-2d4a-4c9e-8f1b-0a6d5e4c3b2a',
      unknownMember: 'dropped',
      description: 'Gerät im Flur — 設備の説明 — ¡Ünïcödé! with a description long enough to make the table wider than a terminal',
      tunnelArn: 'arn:aws:iot:eu-west-1:123456789012:tunnel/b7e3f0c1-2d4a-4c9e-8f1b-0a6d5e4c3b2a',
      status: 'OPEN',
      sourceConnectionState: state('CONNECTED', 1795976762),
      destinationConnectionState: state('DISCONNECTED', 1795976762.0000005),
      destinationConfig: { services: ['SSH', 'HTTP', 'VNC'], thingName: 'pi-東京' },
      timeoutConfig: { maxLifetimeTimeoutMinutes: 720 },
      tags: [{ key: 'env', value: 'ünïcode' }, { key: 'empty', value: '' }],
      createdAt: 1795976762.181,
      extra: null,
    },
  }));
  ctx.responses.set('ListTunnels', JSON.stringify({
    tunnelSummaries: [
      { tunnelId: 'a', status: 'CLOSED', createdAt: 1795976000.5, lastUpdatedAt: 1795976001 },
      { tunnelId: 'bb', status: 'OPEN', description: '说明', createdAt: 1795976100.25, lastUpdatedAt: 1795976102.123456 },
    ],
    nextToken: 'MTc5NTk3NjEwMC4yNS9iYg',
  }));
  const cases: Case[] = [];
  for (const tz of ['UTC', 'Asia/Kolkata', 'America/St_Johns']) {
    for (const output of FORMATS) for (const operation of ['DescribeTunnel', 'ListTunnels']) cases.push({ operation, output, tz });
  }
  await same(ctx, cases);
});

test.run();
