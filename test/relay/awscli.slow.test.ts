/**
 * The relay's management API as people script it: the real AWS CLI v2 (Debian's `awscli`,
 * /usr/bin/aws) with `--endpoint-url https://127.0.0.1:PORT`, the relay's certificate in
 * AWS_CA_BUNDLE (or --no-verify-ssl), credentials from the environment and no config files.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { silentLogger } from '../../src/log';
import { MessageType } from '../../src/protocol/message';
import { ManualClock } from '../../src/relay/clock';
import { startRelay, type Relay } from '../../src/relay/server';
import { within } from '../helpers/wait';
import { connectReady } from './peer';

const AWS = '/usr/bin/aws';
const CREDENTIALS = { accessKeyId: 'AKIDAWSCLITEST', secretAccessKey: 'aws-cli-test-secret' };
const ISO_8601 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/;

interface Ctx { relay: Relay; dir: string; caFile: string; clock: ManualClock }
const cli = suite<Ctx>('relay management API with the AWS CLI v2');

cli.before(async (ctx) => {
  ctx.dir = mkdtempSync(join(tmpdir(), 'relay-awscli-'));
  ctx.clock = new ManualClock();
  ctx.relay = await startRelay({ port: 0, tls: 'self-signed', credentials: CREDENTIALS, log: silentLogger(), accountId: '123456789012', clock: ctx.clock });
  ctx.caFile = join(ctx.dir, 'relay.pem');
  writeFileSync(ctx.caFile, ctx.relay.caPem!);
});
cli.after(async (ctx) => {
  await ctx.relay.close();
  rmSync(ctx.dir, { recursive: true, force: true });
});

interface Run { code: number | null; stdout: string; stderr: string; json: Record<string, unknown> }

/** `aws iotsecuretunneling ARGS` against the relay; resolves with its exit code and output. */
function aws(ctx: Ctx, args: string[], options: { tls?: 'bundle' | 'no-verify' | 'system'; secret?: string } = {}): Promise<Run> {
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: ctx.dir,
    AWS_ACCESS_KEY_ID: CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: options.secret ?? CREDENTIALS.secretAccessKey,
    AWS_CONFIG_FILE: join(ctx.dir, 'no-config'),
    AWS_SHARED_CREDENTIALS_FILE: join(ctx.dir, 'no-credentials'),
    AWS_PAGER: '',
  };
  const tls = options.tls ?? 'bundle';
  if (tls === 'bundle') env.AWS_CA_BUNDLE = ctx.caFile;
  const all = ['iotsecuretunneling', ...args, '--endpoint-url', `https://127.0.0.1:${ctx.relay.port}`, '--region', 'eu-west-1', '--output', 'json'];
  if (tls === 'no-verify') all.push('--no-verify-ssl');
  return within(new Promise<Run>((resolve) => {
    execFile(AWS, all, { env, timeout: 60_000 }, (err, stdout, stderr) => {
      let json = {};
      try { json = JSON.parse(stdout); } catch { /* errors print nothing on stdout */ }
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr, json });
    });
  }), 90_000, `aws ${args.join(' ')}`);
}

function ok(run: Run): Record<string, unknown> {
  assert.is(run.code, 0, run.stderr);
  return run.json;
}

cli('it is the AWS CLI v2', async () => {
  const version = await within(new Promise<string>((resolve, reject) => execFile(AWS, ['--version'], (err, stdout) => (err ? reject(err) : resolve(stdout)))), 30_000, 'aws --version');
  assert.match(version, /^aws-cli\/2\./);
});

cli('all eight operations: open with thing name, services, description, timeout and tags; describe; list; rotate with a new destination config; tag, list tags, untag; close and delete', async (ctx) => {
  const opened = ok(await aws(ctx, ['open-tunnel', '--destination-config', 'thingName=pi-1,services=SSH,HTTP', '--timeout-config', 'maxLifetimeTimeoutMinutes=30', '--description', 'lab pi', '--tags', 'key=env,value=lab', 'key=team,value=iot']));
  const tunnelId = String(opened.tunnelId);
  assert.is(opened.tunnelArn, `arn:aws:iot:eu-west-1:123456789012:tunnel/${tunnelId}`);
  assert.type(opened.sourceAccessToken, 'string');

  const { tunnel } = ok(await aws(ctx, ['describe-tunnel', '--tunnel-id', tunnelId])) as { tunnel: Record<string, unknown> };
  assert.is(tunnel.status, 'OPEN');
  assert.is(tunnel.description, 'lab pi');
  assert.equal(tunnel.destinationConfig, { thingName: 'pi-1', services: ['SSH', 'HTTP'] });
  assert.equal(tunnel.timeoutConfig, { maxLifetimeTimeoutMinutes: 30 });
  assert.equal(tunnel.tags, [{ key: 'env', value: 'lab' }, { key: 'team', value: 'iot' }]);
  assert.match(String(tunnel.createdAt), ISO_8601);
  assert.is((tunnel.sourceConnectionState as { status: string }).status, 'DISCONNECTED');

  const listed = ok(await aws(ctx, ['list-tunnels', '--thing-name', 'pi-1'])) as { tunnelSummaries: Array<{ tunnelId: string; description: string }> };
  assert.equal(listed.tunnelSummaries.map((s) => [s.tunnelId, s.description]), [[tunnelId, 'lab pi']]);

  // A destination connected with the old token is disconnected; the new one gets the new services.
  const dst = await connectReady(ctx.relay, String(opened.destinationAccessToken), { mode: 'destination' });
  const rotated = ok(await aws(ctx, ['rotate-tunnel-access-token', '--tunnel-id', tunnelId, '--client-mode', 'DESTINATION', '--destination-config', 'thingName=pi-2,services=RDP']));
  assert.is(rotated.tunnelArn, opened.tunnelArn);
  assert.type(rotated.destinationAccessToken, 'string');
  assert.is(rotated.sourceAccessToken, undefined);
  assert.is((await dst.waitClosed()).code, 1000);
  const dst2 = await connectReady(ctx.relay, String(rotated.destinationAccessToken), { mode: 'destination' });
  const src = await connectReady(ctx.relay, String(opened.sourceAccessToken));
  src.send({ type: MessageType.STREAM_START, streamId: 1, serviceId: 'RDP' });
  assert.is((await dst2.next()).serviceId, 'RDP');
  src.terminate();
  dst2.terminate();
  const after = ok(await aws(ctx, ['describe-tunnel', '--tunnel-id', tunnelId])) as { tunnel: { destinationConfig: unknown } };
  assert.equal(after.tunnel.destinationConfig, { thingName: 'pi-2', services: ['RDP'] });

  const arn = String(opened.tunnelArn);
  ok(await aws(ctx, ['tag-resource', '--resource-arn', arn, '--tags', 'key=env,value=prod', 'key=owner,value=ops']));
  ok(await aws(ctx, ['untag-resource', '--resource-arn', arn, '--tag-keys', 'team']));
  const tags = ok(await aws(ctx, ['list-tags-for-resource', '--resource-arn', arn]));
  assert.equal(tags.tags, [{ key: 'env', value: 'prod' }, { key: 'owner', value: 'ops' }]);

  ok(await aws(ctx, ['close-tunnel', '--tunnel-id', tunnelId]));
  assert.is((ok(await aws(ctx, ['describe-tunnel', '--tunnel-id', tunnelId])) as { tunnel: { status: string } }).tunnel.status, 'CLOSED');
  ok(await aws(ctx, ['close-tunnel', '--tunnel-id', tunnelId, '--delete']));
  const gone = await aws(ctx, ['describe-tunnel', '--tunnel-id', tunnelId]);
  assert.is(gone.code, 254);
  assert.match(gone.stderr, /An error occurred \(ResourceNotFoundException\) when calling the DescribeTunnel operation: Tunnel \S+ not found/);
});

cli('paging: --max-results gives a page and a nextToken, --next-token the rest, newest first', async (ctx) => {
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) {
    ids.push((await ctx.relay.openTunnel({ thingName: 'pager', services: ['SSH'] })).tunnelId);
    ctx.clock.advance(1000);
  }
  const seen: string[] = [];
  let token: string | undefined;
  let pages = 0;
  do {
    const page = ok(await aws(ctx, ['list-tunnels', '--thing-name', 'pager', '--max-results', '2', ...(token ? ['--next-token', token] : [])])) as { tunnelSummaries: Array<{ tunnelId: string }>; nextToken?: string };
    assert.ok(page.tunnelSummaries.length <= 2);
    seen.push(...page.tunnelSummaries.map((s) => s.tunnelId));
    token = page.nextToken;
    pages++;
  } while (token);
  assert.is(pages, 3);
  assert.equal(new Set(seen), new Set(ids));
  assert.equal(seen, [...ids].reverse());
});

cli('validation errors come back as the CLI shows AWS errors (exit 254), and the CLI does not retry them', async (ctx) => {
  for (const [args, pattern] of [
    [['open-tunnel', '--timeout-config', 'maxLifetimeTimeoutMinutes=721'], /\(ValidationException\) when calling the OpenTunnel operation: 1 validation error detected: Value '721' at 'timeoutConfig\.maxLifetimeTimeoutMinutes' failed to satisfy constraint: Member must have value less than or equal to 720/],
    [['open-tunnel', '--destination-config', 'services=A,B,C,D'], /\(ValidationException\) when calling the OpenTunnel operation: A tunnel may have at most 3 services/],
    [['open-tunnel', '--destination-config', 'thingName=bad!name,services=SSH'], /\(ValidationException\).*Value 'bad!name' at 'destinationConfig\.thingName' failed to satisfy constraint: Member must satisfy regular expression pattern: \[a-zA-Z0-9:_-\]\+/],
    [['list-tunnels', '--max-results', '101'], /\(ValidationException\) when calling the ListTunnels operation: 1 validation error detected: Value '101' at 'maxResults'/],
    [['tag-resource', '--resource-arn', 'arn:aws:iot:eu-west-1:123456789012:tunnel/none', '--tags', 'key=a,value=b'], /\(ResourceNotFoundException\) when calling the TagResource operation/],
    [['rotate-tunnel-access-token', '--tunnel-id', 'none', '--client-mode', 'SOURCE'], /\(ResourceNotFoundException\) when calling the RotateTunnelAccessToken operation: Tunnel none not found/],
  ] as Array<[string[], RegExp]>) {
    const run = await aws(ctx, args);
    assert.is(run.code, 254, `${args.join(' ')}: ${run.stderr}`);
    assert.ok(pattern.test(run.stderr), `${args.join(' ')}: ${run.stderr}`);
    // With the CLI's default retry mode, a retried error says "(reached max retries: 2)".
    assert.not.match(run.stderr, /reached max retries/);
  }
  // A rotation of SOURCE cannot carry a destination config, as in the cloud.
  const t = await ctx.relay.openTunnel({ services: ['SSH'] });
  const source = await aws(ctx, ['rotate-tunnel-access-token', '--tunnel-id', t.tunnelId, '--client-mode', 'SOURCE', '--destination-config', 'services=SSH']);
  assert.is(source.code, 254);
  assert.match(source.stderr, /\(ValidationException\).*destinationConfig cannot be used with clientMode SOURCE/);
});

cli('--no-verify-ssl instead of the CA bundle; without either the certificate is refused; a wrong secret is refused', async (ctx) => {
  const unverified = await aws(ctx, ['list-tunnels', '--max-results', '1'], { tls: 'no-verify' });
  assert.is(unverified.code, 0, unverified.stderr);
  const untrusted = await aws(ctx, ['list-tunnels'], { tls: 'system' });
  assert.is(untrusted.code, 255);
  assert.match(untrusted.stderr, /SSL validation failed/);
  const wrong = await aws(ctx, ['list-tunnels'], { secret: 'not-the-secret' });
  assert.is(wrong.code, 254);
  assert.match(wrong.stderr, /\(InvalidSignatureException\)/);
});

cli.run();
