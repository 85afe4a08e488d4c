import { Agent, request } from 'node:https';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  CloseTunnelCommand, DescribeTunnelCommand, IoTSecureTunnelingClient, ListTunnelsCommand, OpenTunnelCommand, RotateTunnelAccessTokenCommand,
} from '@aws-sdk/client-iotsecuretunneling';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { silentLogger } from '../../src/log';
import { MessageType } from '../../src/protocol/message';
import { startRelay, type Relay } from '../../src/relay/server';
import { within } from '../helpers/wait';
import { connectPeer, connectReady } from './peer';

const CREDENTIALS = { accessKeyId: 'AKIDRELAYTEST', secretAccessKey: 'relay-test-secret-key-0123456789' };

interface Ctx { relay: Relay; sdk: IoTSecureTunnelingClient; agent: Agent }
const api = suite<Ctx>('relay management API with the AWS SDK client');

function sdkClient(relay: Relay, agent: Agent, credentials = CREDENTIALS, region = 'eu-west-1') {
  return new IoTSecureTunnelingClient({
    region,
    endpoint: `https://127.0.0.1:${relay.port}`,
    credentials,
    requestHandler: new NodeHttpHandler({ httpsAgent: agent }),
    maxAttempts: 1,
  });
}

api.before.each(async (ctx) => {
  ctx.relay = await startRelay({ port: 0, tls: 'self-signed', credentials: CREDENTIALS, log: silentLogger() });
  ctx.agent = new Agent({ ca: ctx.relay.caPem, keepAlive: false });
  ctx.sdk = sdkClient(ctx.relay, ctx.agent);
});
api.after.each(async (ctx) => {
  ctx.sdk.destroy();
  ctx.agent.destroy();
  await ctx.relay.close();
});

api('OpenTunnel returns tokens that work on the data plane; DescribeTunnel reports connection states', async (ctx) => {
  const opened = await ctx.sdk.send(new OpenTunnelCommand({ destinationConfig: { services: ['SSH', 'HTTP'] }, timeoutConfig: { maxLifetimeTimeoutMinutes: 30 }, description: 'test' }));
  assert.match(opened.tunnelId!, /^[0-9a-f-]{36}$/);
  assert.match(opened.tunnelArn!, new RegExp(`tunnel/${opened.tunnelId}$`));
  const src = await connectReady(ctx.relay, opened.sourceAccessToken!);
  try {
    const { tunnel } = await ctx.sdk.send(new DescribeTunnelCommand({ tunnelId: opened.tunnelId }));
    assert.is(tunnel!.status, 'OPEN');
    assert.is(tunnel!.sourceConnectionState!.status, 'CONNECTED');
    assert.is(tunnel!.destinationConnectionState!.status, 'DISCONNECTED');
    assert.equal(tunnel!.destinationConfig!.services, ['SSH', 'HTTP']);
    assert.is(tunnel!.timeoutConfig!.maxLifetimeTimeoutMinutes, 30);
    assert.is(tunnel!.description, 'test');
    assert.ok(tunnel!.createdAt instanceof Date);
    assert.ok(Math.abs(tunnel!.createdAt!.getTime() - Date.now()) < 60_000);
  } finally {
    src.terminate();
  }
});

api('OpenTunnel defaults the lifetime to 720 minutes and rejects 0 and 721', async (ctx) => {
  const opened = await ctx.sdk.send(new OpenTunnelCommand({}));
  const { tunnel } = await ctx.sdk.send(new DescribeTunnelCommand({ tunnelId: opened.tunnelId }));
  assert.is(tunnel!.timeoutConfig!.maxLifetimeTimeoutMinutes, 720);
  assert.equal(tunnel!.destinationConfig!.services, []);
  for (const minutes of [0, 721]) {
    try {
      await ctx.sdk.send(new OpenTunnelCommand({ timeoutConfig: { maxLifetimeTimeoutMinutes: minutes } }));
      assert.unreachable(`lifetime ${minutes} accepted`);
    } catch (err) {
      assert.is((err as Error).name, 'ValidationException');
    }
  }
});

api('CloseTunnel closes connected peers; DescribeTunnel then says CLOSED; delete removes it', async (ctx) => {
  const opened = await ctx.sdk.send(new OpenTunnelCommand({ destinationConfig: { services: ['SSH'] } }));
  const dst = await connectReady(ctx.relay, opened.destinationAccessToken!, { mode: 'destination' });
  await ctx.sdk.send(new CloseTunnelCommand({ tunnelId: opened.tunnelId }));
  assert.is((await dst.waitClosed()).code, 1000);
  const { tunnel } = await ctx.sdk.send(new DescribeTunnelCommand({ tunnelId: opened.tunnelId }));
  assert.is(tunnel!.status, 'CLOSED');
  await ctx.sdk.send(new CloseTunnelCommand({ tunnelId: opened.tunnelId, delete: true }));
  try {
    await ctx.sdk.send(new DescribeTunnelCommand({ tunnelId: opened.tunnelId }));
    assert.unreachable('deleted tunnel described');
  } catch (err) {
    assert.is((err as Error).name, 'ResourceNotFoundException');
  }
});

api('ListTunnels pages newest first', async (ctx) => {
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) {
    ids.push((await ctx.sdk.send(new OpenTunnelCommand({}))).tunnelId!);
    // createdAt has millisecond resolution: make the order observable without sleeping.
    const until = Date.now() + 2;
    while (Date.now() < until) { /* spin 2 ms */ }
  }
  const seen: string[] = [];
  let nextToken: string | undefined;
  let pages = 0;
  do {
    const page = await ctx.sdk.send(new ListTunnelsCommand({ maxResults: 2, nextToken }));
    assert.ok(page.tunnelSummaries!.length <= 2);
    for (const s of page.tunnelSummaries!) {
      assert.is(s.status, 'OPEN');
      seen.push(s.tunnelId!);
    }
    nextToken = page.nextToken;
    pages++;
  } while (nextToken);
  assert.is(pages, 3);
  assert.equal(seen, [...ids].reverse());
});

api('RotateTunnelAccessToken: the old token stops working, the connected peer is disconnected', async (ctx) => {
  const opened = await ctx.sdk.send(new OpenTunnelCommand({ destinationConfig: { services: ['SSH'] } }));
  const src = await connectReady(ctx.relay, opened.sourceAccessToken!);
  const dst = await connectReady(ctx.relay, opened.destinationAccessToken!, { mode: 'destination' });
  const rotated = await ctx.sdk.send(new RotateTunnelAccessTokenCommand({ tunnelId: opened.tunnelId, clientMode: 'ALL' }));
  assert.is(rotated.tunnelArn, opened.tunnelArn);
  await Promise.all([src.waitClosed(), dst.waitClosed()]);
  try {
    await connectPeer(ctx.relay, opened.sourceAccessToken!);
    assert.unreachable('old token accepted');
  } catch (err) {
    assert.match((err as Error).message, /^HTTP 403/);
  }
  const src2 = await connectReady(ctx.relay, rotated.sourceAccessToken!);
  const dst2 = await connectReady(ctx.relay, rotated.destinationAccessToken!, { mode: 'destination' });
  src2.send({ type: MessageType.STREAM_START, streamId: 1, serviceId: 'SSH' });
  assert.is((await dst2.next()).type, MessageType.STREAM_START);
  src2.terminate();
  dst2.terminate();
});

api('wrong secret, unknown key and unsigned requests get 403 with an AWS error body', async (ctx) => {
  const wrong = sdkClient(ctx.relay, ctx.agent, { ...CREDENTIALS, secretAccessKey: 'not-the-secret' });
  const unknown = sdkClient(ctx.relay, ctx.agent, { ...CREDENTIALS, accessKeyId: 'AKIDOTHER' });
  try {
    for (const [client, name] of [[wrong, 'InvalidSignatureException'], [unknown, 'UnrecognizedClientException']] as const) {
      try {
        await client.send(new ListTunnelsCommand({}));
        assert.unreachable(`${name} not raised`);
      } catch (err) {
        assert.is((err as Error).name, name);
        assert.is((err as { $metadata: { httpStatusCode: number } }).$metadata.httpStatusCode, 403);
      }
    }
  } finally {
    wrong.destroy();
    unknown.destroy();
  }
  const res = await within(new Promise<{ status: number; body: string }>((resolve, reject) => {
    request({ host: '127.0.0.1', port: ctx.relay.port, path: '/', method: 'POST', ca: ctx.relay.caPem, headers: { 'x-amz-target': 'IoTSecuredTunneling.ListTunnels', 'content-type': 'application/x-amz-json-1.1' } }, (r) => {
      let body = '';
      r.on('data', (d: Buffer) => { body += d; });
      r.on('end', () => resolve({ status: r.statusCode ?? 0, body }));
    }).on('error', reject).end('{}');
  }), 5000, 'unsigned request');
  assert.is(res.status, 403);
  assert.equal(JSON.parse(res.body), { __type: 'MissingAuthenticationTokenException', message: 'Missing Authentication Token' });
});

api('a request signed with a tampered body is refused', async (ctx) => {
  // Sign a ListTunnels request with the SDK's signer, then change the body in flight.
  const { SignatureV4 } = await import('@smithy/signature-v4');
  const { Hash } = await import('@smithy/hash-node');
  const signer = new SignatureV4({ credentials: CREDENTIALS, region: 'us-east-1', service: 'IoTSecuredTunneling', sha256: Hash.bind(null, 'sha256') });
  const host = `127.0.0.1:${ctx.relay.port}`;
  const signed = await signer.sign({ method: 'POST', protocol: 'https:', hostname: '127.0.0.1', port: ctx.relay.port, path: '/', query: {}, headers: { host, 'content-type': 'application/x-amz-json-1.1', 'x-amz-target': 'IoTSecuredTunneling.OpenTunnel' }, body: '{}' });
  const send = (body: string) => within(new Promise<number>((resolve, reject) => {
    request({ host: '127.0.0.1', port: ctx.relay.port, path: '/', method: 'POST', ca: ctx.relay.caPem, headers: signed.headers }, (r) => {
      r.resume();
      resolve(r.statusCode ?? 0);
    }).on('error', reject).end(body);
  }), 5000, 'request');
  assert.is(await send('{}'), 200);
  assert.is(await send('{"destinationConfig":{"services":["X"]}}'), 403);
});

api('SigV4: any region, the SDK signing name only, and a clock skew of at most 15 minutes either way', async (ctx) => {
  const { SignatureV4 } = await import('@smithy/signature-v4');
  const { Hash } = await import('@smithy/hash-node');
  const host = `127.0.0.1:${ctx.relay.port}`;
  const call = async (opts: { region?: string; service?: string; skewMs?: number }) => {
    const signer = new SignatureV4({ credentials: CREDENTIALS, region: opts.region ?? 'us-east-1', service: opts.service ?? 'IoTSecuredTunneling', sha256: Hash.bind(null, 'sha256') });
    const signed = await signer.sign(
      { method: 'POST', protocol: 'https:', hostname: '127.0.0.1', port: ctx.relay.port, path: '/', query: {}, headers: { host, 'content-type': 'application/x-amz-json-1.1', 'x-amz-target': 'IoTSecuredTunneling.ListTunnels' }, body: '{}' },
      { signingDate: new Date(Date.now() + (opts.skewMs ?? 0)) },
    );
    return within(new Promise<{ status: number; body: string }>((resolve, reject) => {
      request({ host: '127.0.0.1', port: ctx.relay.port, path: '/', method: 'POST', ca: ctx.relay.caPem, headers: signed.headers }, (r) => {
        let body = '';
        r.on('data', (d: Buffer) => { body += d; });
        r.on('end', () => resolve({ status: r.statusCode ?? 0, body }));
      }).on('error', reject).end('{}');
    }), 5000, 'signed request');
  };
  for (const region of ['us-east-1', 'cn-north-1', 'my-lab-1']) assert.is((await call({ region })).status, 200, `region ${region}`);
  const otherService = await call({ service: 'iot' });
  assert.is(otherService.status, 403);
  assert.match(JSON.parse(otherService.body).message, /scoped to correct service: 'IoTSecuredTunneling'/);
  for (const skewMs of [-14 * 60_000, 14 * 60_000]) assert.is((await call({ skewMs })).status, 200, `skew ${skewMs} ms accepted`);
  for (const skewMs of [-16 * 60_000, 16 * 60_000]) {
    const res = await call({ skewMs });
    assert.is(res.status, 403, `skew ${skewMs} ms refused`);
    assert.equal(JSON.parse(res.body).__type, 'InvalidSignatureException');
    assert.match(JSON.parse(res.body).message, /Signature expired/);
  }
});

api('a request body over 64 KiB gets a 413 with an AWS error body (not a dropped connection)', async (ctx) => {
  for (const size of [70_000, 2_000_000]) {
    const res = await within(new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: ctx.relay.port, path: '/', method: 'POST', ca: ctx.relay.caPem, headers: { 'content-length': size, 'x-amz-target': 'IoTSecuredTunneling.ListTunnels' } }, (r) => {
        let body = '';
        r.on('data', (d: Buffer) => { body += d; });
        r.on('end', () => resolve({ status: r.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end(Buffer.alloc(size, 0x20));
    }), 10_000, `${size}-byte request`);
    assert.is(res.status, 413, `${size} bytes`);
    assert.equal(JSON.parse(res.body), { __type: 'ValidationException', message: 'Request body exceeds 65536 bytes' });
  }
});

api.run();
