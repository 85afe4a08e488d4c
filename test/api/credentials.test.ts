/**
 * AWS credentials as every AWS tool finds them, for `localproxy tunnel` as a process of the built
 * CLI: a temporary HOME with ~/.aws/credentials and ~/.aws/config, chosen by AWS_PROFILE and
 * --profile, credential_process, the environment; against our relay, which checks SigV4 with its
 * one configured key pair (a profile with another key is refused by it). A missing or expired
 * credential is one line naming the profile tried.
 */
import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { silentLogger } from '../../src/log';
import { startRelay, type Relay } from '../../src/relay/server';
import { CLI } from '../helpers/child';
import { within } from '../helpers/wait';

const RELAY_KEY = { accessKeyId: 'AKIDRELAYPROFILE', secretAccessKey: 'relay-profile-secret' };

interface Ctx { relay: Relay; home: string; ca: string }
const test = suite<Ctx>('localproxy tunnel: AWS credentials from the environment and ~/.aws profiles');

test.before(async (ctx) => {
  ctx.relay = await startRelay({ port: 0, tls: 'self-signed', credentials: RELAY_KEY, log: silentLogger() });
  ctx.home = mkdtempSync(join(tmpdir(), 'localproxy-aws-home-'));
  ctx.ca = join(ctx.home, 'relay.pem');
  writeFileSync(ctx.ca, ctx.relay.caPem!);
  mkdirSync(join(ctx.home, '.aws'));
  // credential_process: a program that prints the credentials as JSON (Version 1), as the AWS CLI runs it.
  const processScript = join(ctx.home, 'creds.js');
  writeFileSync(processScript, `process.stdout.write(JSON.stringify({ Version: 1, AccessKeyId: ${JSON.stringify(RELAY_KEY.accessKeyId)}, SecretAccessKey: ${JSON.stringify(RELAY_KEY.secretAccessKey)}, SessionToken: 'process-session', Expiration: process.argv[2] }));\n`);
  chmodSync(processScript, 0o755);
  const future = new Date(Date.now() + 3_600_000).toISOString();
  const past = new Date(Date.now() - 3_600_000).toISOString();
  writeFileSync(join(ctx.home, '.aws', 'credentials'), [
    '[default]',
    'aws_access_key_id = AKIDDEFAULTWRONG',
    'aws_secret_access_key = not-the-relay-secret',
    '',
    '[lab]',
    `aws_access_key_id = ${RELAY_KEY.accessKeyId}`,
    `aws_secret_access_key = ${RELAY_KEY.secretAccessKey}`,
    '',
    '[other]',
    'aws_access_key_id = AKIDOTHERACCOUNT',
    'aws_secret_access_key = other-secret',
    '',
  ].join('\n'));
  writeFileSync(join(ctx.home, '.aws', 'config'), [
    '[default]',
    'region = us-west-2',
    '',
    '[profile lab]',
    'region = eu-central-1',
    'output = text',
    '',
    '[profile proc]',
    `credential_process = ${process.execPath} ${processScript} ${future}`,
    '',
    '[profile expired]',
    `credential_process = ${process.execPath} ${processScript} ${past}`,
    '',
    '[profile nokeys]',
    'region = eu-west-1',
    '',
  ].join('\n'));
});
test.after(async (ctx) => {
  await ctx.relay.close();
  rmSync(ctx.home, { recursive: true, force: true });
});

interface Run { code: number | null; stdout: string; stderr: string }

/** `localproxy tunnel ARGS` against the relay, with HOME at the test's and only `env` of the AWS variables. */
function tunnel(ctx: Ctx, args: string[], env: Record<string, string> = {}): Promise<Run> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('AWS_')));
  return within(new Promise<Run>((resolve) => {
    execFile(process.execPath, [CLI, 'tunnel', ...args, '--endpoint', `https://127.0.0.1:${ctx.relay.port}`, '--ca', ctx.ca], {
      env: { ...clean, HOME: ctx.home, AWS_EC2_METADATA_DISABLED: 'true', ...env },
    }, (err, stdout, stderr) => resolve({ code: err ? (err as { code?: number }).code ?? 1 : 0, stdout, stderr }));
  }), 20_000, `localproxy tunnel ${args.join(' ')}`);
}

/** The region in the ARN of a tunnel opened with these settings: the relay names the region the request was signed for. */
async function openedRegion(ctx: Ctx, args: string[], env: Record<string, string> = {}): Promise<string> {
  const run = await tunnel(ctx, ['open', '--output', 'json', ...args], env);
  assert.is(run.code, 0, run.stderr);
  return /^arn:aws:iot:([^:]+):/.exec(JSON.parse(run.stdout).tunnelArn)![1];
}

test('AWS_PROFILE picks the profile (and its region from ~/.aws/config); another profile\'s key is refused, naming that profile', async (ctx) => {
  assert.is(await openedRegion(ctx, [], { AWS_PROFILE: 'lab' }), 'eu-central-1');
  const other = await tunnel(ctx, ['list'], { AWS_PROFILE: 'other' });
  assert.is(other.code, 1);
  assert.is(other.stderr, "localproxy tunnel: ListTunnels failed: UnrecognizedClientException: The security token included in the request is invalid. (credentials from profile 'other')\n");
});

test('--profile wins over AWS_PROFILE; --region over the profile\'s region', async (ctx) => {
  assert.is(await openedRegion(ctx, ['--profile', 'lab'], { AWS_PROFILE: 'other' }), 'eu-central-1');
  assert.is(await openedRegion(ctx, ['--profile', 'lab', '--region', 'ap-south-1'], { AWS_PROFILE: 'other' }), 'ap-south-1');
  const refused = await tunnel(ctx, ['list', '--profile', 'other'], { AWS_PROFILE: 'lab' });
  assert.is(refused.code, 1);
  assert.match(refused.stderr, /\(credentials from profile 'other'\)\n$/);
});

test('the environment\'s keys (with a session token) win over the default profile; the default profile\'s region applies', async (ctx) => {
  assert.is(await openedRegion(ctx, [], { AWS_ACCESS_KEY_ID: RELAY_KEY.accessKeyId, AWS_SECRET_ACCESS_KEY: RELAY_KEY.secretAccessKey, AWS_SESSION_TOKEN: 'FwoGZXIvYXdzEXAMPLE' }), 'us-west-2');
  const wrong = await tunnel(ctx, ['list'], {});
  assert.is(wrong.code, 1);
  assert.match(wrong.stderr, /UnrecognizedClientException.*\(credentials from profile 'default'\)\n$/);
});

test('credential_process: its credentials sign the request; expired ones are one line naming the profile', async (ctx) => {
  assert.is(await openedRegion(ctx, ['--profile', 'proc']), 'us-east-1');
  const expired = await tunnel(ctx, ['list', '--profile', 'expired']);
  assert.is(expired.code, 2);
  assert.is(expired.stderr, "localproxy tunnel: no usable AWS credentials from profile 'expired': Profile expired credential_process returned expired credentials. (try 'localproxy tunnel --help')\n");
});

test('a profile that does not exist, one without keys, and no credentials at all: one line each, exit 2, naming the profile', async (ctx) => {
  const missing = await tunnel(ctx, ['list', '--profile', 'nope']);
  assert.is(missing.code, 2);
  assert.is(missing.stderr, "localproxy tunnel: no usable AWS credentials from profile 'nope': no such profile in ~/.aws/credentials or ~/.aws/config (try 'localproxy tunnel --help')\n");
  const nokeys = await tunnel(ctx, ['list'], { AWS_PROFILE: 'nokeys' });
  assert.is(nokeys.code, 2);
  assert.match(nokeys.stderr, /^localproxy tunnel: no usable AWS credentials from profile 'nokeys': [^\n]+\n$/);
  const empty = mkdtempSync(join(tmpdir(), 'localproxy-empty-home-'));
  try {
    const none = await tunnel(ctx, ['list'], { HOME: empty });
    assert.is(none.code, 2);
    assert.is(none.stderr, "localproxy tunnel: no AWS credentials: none in the environment and no profile 'default' in ~/.aws/credentials or ~/.aws/config; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give --profile NAME (try 'localproxy tunnel --help')\n");
  } finally {
    rmSync(empty, { recursive: true, force: true });
  }
});

test('the profile\'s output setting is the default format; AWS_DEFAULT_OUTPUT and --output win', async (ctx) => {
  const text = await tunnel(ctx, ['tags', '--tunnel-id', (await ctx.relay.openTunnel({ services: ['SSH'], tags: [{ key: 'env', value: 'lab' }] })).tunnelId], { AWS_PROFILE: 'lab' });
  assert.is(text.stdout, 'TAGS\tenv\tlab\n', text.stderr);
  const id = (await ctx.relay.openTunnel({ services: ['SSH'], tags: [{ key: 'k', value: 'v' }] })).tunnelId;
  const json = await tunnel(ctx, ['tags', '--tunnel-id', id], { AWS_PROFILE: 'lab', AWS_DEFAULT_OUTPUT: 'json' });
  assert.is(json.stdout, '{\n    "tags": [\n        {\n            "key": "k",\n            "value": "v"\n        }\n    ]\n}\n', json.stderr);
  const table = await tunnel(ctx, ['tags', '--tunnel-id', id, '--output', 'table', '--query', 'tags[0].key'], { AWS_PROFILE: 'lab', AWS_DEFAULT_OUTPUT: 'json' });
  assert.is(table.stdout, '---------------------\n|ListTagsForResource|\n+-------------------+\n');
});

test.run();
