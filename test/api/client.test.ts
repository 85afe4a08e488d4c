import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ApiError, defaultEndpoint, TunnelApiClient } from '../../src/api/client';
import { silentLogger } from '../../src/log';
import { startRelay, type Relay } from '../../src/relay/server';

const CREDENTIALS = { accessKeyId: 'AKIDAPICLIENT', secretAccessKey: 'api-client-secret' };

interface Ctx { relay: Relay; client: TunnelApiClient }
const client = suite<Ctx>('tunnel API client against the relay');

client.before.each(async (ctx) => {
  ctx.relay = await startRelay({ port: 0, tls: 'self-signed', credentials: CREDENTIALS, log: silentLogger() });
  ctx.client = new TunnelApiClient({ endpoint: ctx.relay.url.replace('wss:', 'https:'), region: 'ap-south-1', credentials: CREDENTIALS, ca: ctx.relay.caPem });
});
client.after.each(async (ctx) => {
  await ctx.relay.close();
});

client('open, describe, list, rotate and close round-trip', async (ctx) => {
  const opened = await ctx.client.call<{ tunnelId: string; sourceAccessToken: string }>('OpenTunnel', { destinationConfig: { services: ['SSH'] }, timeoutConfig: { maxLifetimeTimeoutMinutes: 5 } });
  assert.type(opened.sourceAccessToken, 'string');
  const described = await ctx.client.call<{ tunnel: { status: string; timeoutConfig: { maxLifetimeTimeoutMinutes: number } } }>('DescribeTunnel', { tunnelId: opened.tunnelId });
  assert.is(described.tunnel.status, 'OPEN');
  assert.is(described.tunnel.timeoutConfig.maxLifetimeTimeoutMinutes, 5);
  const listed = await ctx.client.call<{ tunnelSummaries: Array<{ tunnelId: string }> }>('ListTunnels', {});
  assert.equal(listed.tunnelSummaries.map((s) => s.tunnelId), [opened.tunnelId]);
  const rotated = await ctx.client.call<{ sourceAccessToken?: string; destinationAccessToken?: string }>('RotateTunnelAccessToken', { tunnelId: opened.tunnelId, clientMode: 'SOURCE' });
  assert.type(rotated.sourceAccessToken, 'string');
  assert.is(rotated.destinationAccessToken, undefined);
  assert.equal(await ctx.client.call('CloseTunnel', { tunnelId: opened.tunnelId }), {});
});

client('signs temporary credentials (session token) the way the relay verifies them', async (ctx) => {
  const temp = new TunnelApiClient({ endpoint: ctx.relay.url.replace('wss:', 'https:'), region: 'us-east-1', credentials: { ...CREDENTIALS, sessionToken: 'FwoGZXIvYXdzEXAMPLE' }, ca: ctx.relay.caPem });
  const listed = await temp.call<{ tunnelSummaries: unknown[] }>('ListTunnels', {});
  assert.equal(listed.tunnelSummaries, []);
});

client('API errors carry the AWS error type and status', async (ctx) => {
  try {
    await ctx.client.call('DescribeTunnel', { tunnelId: 'missing' });
    assert.unreachable();
  } catch (err) {
    assert.instance(err, ApiError);
    assert.is((err as ApiError).type, 'ResourceNotFoundException');
    assert.is((err as ApiError).status, 404);
  }
  try {
    // As in the cloud, the request is validated before the tunnel is looked up.
    await ctx.client.call('RotateTunnelAccessToken', { tunnelId: 'missing', clientMode: 'SIDEWAYS' });
    assert.unreachable();
  } catch (err) {
    assert.is((err as ApiError).type, 'ValidationException');
    assert.is((err as ApiError).status, 400);
    assert.match((err as ApiError).message, /Value 'SIDEWAYS' at 'clientMode' failed to satisfy constraint: Member must satisfy enum value set: \[SOURCE, DESTINATION, ALL\]/);
  }
  try {
    await ctx.client.call('OpenTunnel', { destinationConfig: { services: ['bad id!'] } });
    assert.unreachable();
  } catch (err) {
    assert.is((err as ApiError).type, 'ValidationException');
    assert.match((err as ApiError).message, /Value 'bad id!' at 'destinationConfig\.services\.1\.member' failed to satisfy constraint/);
  }
});

client('refuses a relay certificate it does not trust (TLS verification is on)', async (ctx) => {
  const untrusting = new TunnelApiClient({ endpoint: ctx.relay.url.replace('wss:', 'https:'), region: 'us-east-1', credentials: CREDENTIALS });
  try {
    await untrusting.call('ListTunnels', {});
    assert.unreachable();
  } catch (err) {
    assert.match((err as NodeJS.ErrnoException).code ?? '', /SELF_SIGNED|UNABLE_TO_VERIFY|DEPTH_ZERO/);
  }
});

client('the default endpoint is the cloud API for the region', () => {
  assert.is(defaultEndpoint('eu-central-1'), 'https://api.tunneling.iot.eu-central-1.amazonaws.com');
  assert.is(defaultEndpoint('cn-north-1'), 'https://api.tunneling.iot.cn-north-1.amazonaws.com.cn');
});

client.run();
