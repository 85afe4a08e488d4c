import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { runTunnelCli } from '../../src/api/cli';
import { silentLogger } from '../../src/log';
import { startRelay, type Relay } from '../../src/relay/server';
import { inProcess } from '../relay/cli-run';

const CREDENTIALS = { accessKeyId: 'AKIDTUNNELCLI', secretAccessKey: 'tunnel-cli-secret' };
/** Credentials from the environment only: no shared files, no instance metadata. */
const ENV = {
  AWS_ACCESS_KEY_ID: CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey, AWS_SESSION_TOKEN: '', AWS_REGION: 'eu-west-1',
  AWS_PROFILE: '', AWS_CONFIG_FILE: '/nonexistent/config', AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/credentials', AWS_EC2_METADATA_DISABLED: 'true', AWS_DEFAULT_OUTPUT: '',
};
/** The AWS CLI's timestamps: microseconds when not zero, the local offset. */
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?[+-]\d\d:\d\d$/;

interface Ctx { relay: Relay; dir: string; ca: string }
const cli = suite<Ctx>('localproxy tunnel (command line)');

cli.before.each(async (ctx) => {
  ctx.dir = mkdtempSync(join(tmpdir(), 'tunnel-cli-'));
  ctx.relay = await startRelay({ port: 0, tls: 'self-signed', credentials: CREDENTIALS, log: silentLogger() });
  ctx.ca = join(ctx.dir, 'relay.pem');
  writeFileSync(ctx.ca, ctx.relay.caPem!);
});
cli.after.each(async (ctx) => {
  await ctx.relay.close();
  rmSync(ctx.dir, { recursive: true, force: true });
});

async function tunnel(ctx: Ctx, args: string[], env: Record<string, string> = {}) {
  const r = await inProcess(runTunnelCli, [...args, '--endpoint', `https://127.0.0.1:${ctx.relay.port}`, '--ca', ctx.ca], { ...ENV, ...env });
  let json: Record<string, unknown> = {};
  try { json = JSON.parse(r.stdout); } catch { /* an error: nothing on stdout */ }
  return { ...r, json };
}

cli('every operation: open with tags, describe with ISO 8601 times, list by thing name with paging, rotate with a new destination config, tag, untag, tags, close', async (ctx) => {
  const opened = await tunnel(ctx, ['open', '--services', 'SSH,HTTP', '--thing-name', 'pi-1', '--lifetime', '60', '--description', 'lab pi', '--tags', 'env=lab,owner=ops,empty=']);
  assert.is(opened.code, 0, opened.stderr);
  const id = String(opened.json.tunnelId);
  const arn = String(opened.json.tunnelArn);
  assert.match(arn, /^arn:aws:iot:eu-west-1:000000000000:tunnel\//);

  const { json: { tunnel: t } } = await tunnel(ctx, ['describe', '--tunnel-id', id]) as unknown as { json: { tunnel: Record<string, unknown> } };
  assert.match(String(t.createdAt), ISO);
  assert.match(String(t.lastUpdatedAt), ISO);
  assert.match(String((t.sourceConnectionState as { lastUpdatedAt: string }).lastUpdatedAt), ISO);
  assert.equal(t.tags, [{ key: 'env', value: 'lab' }, { key: 'owner', value: 'ops' }, { key: 'empty', value: '' }]);
  assert.equal(t.destinationConfig, { thingName: 'pi-1', services: ['SSH', 'HTTP'] });

  await tunnel(ctx, ['open', '--services', 'SSH', '--thing-name', 'pi-1']);
  await tunnel(ctx, ['open', '--services', 'SSH', '--thing-name', 'other']);
  const page = await tunnel(ctx, ['list', '--thing-name', 'pi-1', '--max-results', '1']);
  assert.is((page.json.tunnelSummaries as unknown[]).length, 1);
  assert.match(String((page.json.tunnelSummaries as Array<{ createdAt: string }>)[0].createdAt), ISO);
  const rest = await tunnel(ctx, ['list', '--thing-name', 'pi-1', '--next-token', String(page.json.nextToken)]);
  assert.is((rest.json.tunnelSummaries as unknown[]).length, 1);
  assert.is(rest.json.nextToken, undefined);

  const rotated = await tunnel(ctx, ['rotate', '--tunnel-id', id, '--client-mode', 'destination', '--services', 'RDP', '--thing-name', 'pi-2']);
  assert.is(rotated.code, 0, rotated.stderr);
  assert.type(rotated.json.destinationAccessToken, 'string');
  const after = await tunnel(ctx, ['describe', '--tunnel-id', id]);
  assert.equal((after.json.tunnel as { destinationConfig: unknown }).destinationConfig, { thingName: 'pi-2', services: ['RDP'] });

  // Operations that return nothing print nothing, as the AWS CLI.
  assert.equal(await tunnel(ctx, ['tag', '--tunnel-id', id, '--tags', 'env=prod']), { code: 0, stdout: '', stderr: '', json: {} });
  assert.equal(await tunnel(ctx, ['untag', '--resource-arn', arn, '--tag-keys', 'owner,empty']), { code: 0, stdout: '', stderr: '', json: {} });
  assert.equal((await tunnel(ctx, ['tags', '--resource-arn', arn])).json, { tags: [{ key: 'env', value: 'prod' }] });

  assert.equal(await tunnel(ctx, ['close', '--tunnel-id', id, '--delete']), { code: 0, stdout: '', stderr: '', json: {} });
  const gone = await tunnel(ctx, ['tags', '--tunnel-id', id]);
  assert.is(gone.code, 1);
  assert.is(gone.stderr, `localproxy tunnel: ListTagsForResource failed: ResourceNotFoundException: Tunnel ${id} not found\n`);
});

cli('an endpoint without a scheme is a usage error with the https:// it needs (issue 17: "Invalid URL")', async () => {
  for (const [endpoint, message] of [
    ['127.0.0.1:8443', "invalid --endpoint '127.0.0.1:8443': expected a URL such as https://127.0.0.1:8443 (the scheme https:// is missing)"],
    ['relay.example:8443', "invalid --endpoint 'relay.example:8443': expected a URL such as https://relay.example:8443 (the scheme https:// is missing)"],
    ['ftp://relay.example', "invalid --endpoint 'ftp://relay.example': expected a URL such as https://relay.example (https:// or http://, not ftp://)"],
  ]) {
    const r = await inProcess(runTunnelCli, ['list', '--endpoint', endpoint], ENV);
    assert.is(r.code, 2);
    assert.is(r.stderr, `localproxy tunnel: ${message} (try 'localproxy tunnel --help')\n`);
  }
});

cli('a certificate it does not trust: exit 1 and what to give (issue 17: "self-signed certificate" and no hint)', async (ctx) => {
  const r = await inProcess(runTunnelCli, ['list', '--endpoint', `https://127.0.0.1:${ctx.relay.port}`], ENV);
  assert.is(r.code, 1);
  assert.match(r.stderr, /^localproxy tunnel: ListTunnels failed: self[- ]signed certificate.*: the endpoint's certificate is not trusted; give its CA with --ca FILE \(a relay started with --tls-self-signed DIR: --ca DIR\/cert\.pem\)\n$/);
});

cli('https:// to a relay started with --plain: a hint to use http://', async () => {
  const plain = await startRelay({ port: 0, tls: 'plain', credentials: CREDENTIALS, log: silentLogger() });
  try {
    const r = await inProcess(runTunnelCli, ['list', '--endpoint', `https://127.0.0.1:${plain.port}`], ENV);
    assert.is(r.code, 1);
    assert.match(r.stderr, /a relay started with --plain needs http:\/\/\n$/);
    const ok = await inProcess(runTunnelCli, ['list', '--endpoint', `http://127.0.0.1:${plain.port}`], ENV);
    assert.is(ok.code, 0, ok.stderr);
  } finally {
    await plain.close();
  }
});

cli('usage errors: one line, exit 2, nothing sent', async (ctx) => {
  for (const [args, message] of [
    [['open', '--thing-name', 'pi'], '--thing-name needs --services: a destination config names its services'],
    [['open', '--tags', 'novalue'], "invalid --tags entry 'novalue': expected KEY=VALUE (the value may be empty)"],
    [['describe', '--tunnel-id', 'x', '--delete'], "--delete does not apply to 'describe'"],
    [['rotate', '--tunnel-id', 'x', '--client-mode', 'SOURCE', '--services', 'SSH'], '--services and --thing-name replace the destination config: not with --client-mode SOURCE'],
    [['tag', '--tags', 'a=b'], 'give --resource-arn ARN or --tunnel-id ID (one of them)'],
    [['untag', '--tunnel-id', 'x'], '--tag-keys is required'],
    [['list', '--max-results', '101'], "invalid --max-results '101': expected 1-100"],
  ] as Array<[string[], string]>) {
    const r = await tunnel(ctx, args);
    assert.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.is(r.stderr, `localproxy tunnel: ${message} (try 'localproxy tunnel --help')\n`);
  }
  assert.is(ctx.relay.stats().openTunnels, 0);
});

cli.run();
