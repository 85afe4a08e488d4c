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
import { signedPost } from './signed';

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

api('SigV4: any region of the AWS shape (a malformed one is refused: bounds.test.ts), the SDK signing name only, and a clock skew of at most 15 minutes either way', async (ctx) => {
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

api('a request body over 128 KiB gets a 413 with an AWS error body (not a dropped connection)', async (ctx) => {
  for (const size of [140_000, 2_000_000]) {
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
    assert.equal(JSON.parse(res.body), { __type: 'ValidationException', message: 'Request body exceeds 131072 bytes' });
  }
});


api('SigV4: a request that leaves X-Amz-Target (or another x-amz-* header) out of its signature is refused, so a captured request cannot be replayed as another operation (issue 16)', async (ctx) => {
  // A ListTunnels signed without its target, replayed as OpenTunnel: on the old relay it opened a tunnel.
  const replayed = await signedPost(ctx.relay, CREDENTIALS, 'OpenTunnel', '{}', { unsigned: ['x-amz-target'] });
  assert.is(replayed.status, 403);
  assert.equal(replayed.json, { __type: 'IncompleteSignatureException', message: "'x-amz-target' must be a 'SignedHeader' in the AWS Authorization." });
  const extra = await signedPost(ctx.relay, CREDENTIALS, 'ListTunnels', '{}', { extraHeaders: { 'x-amz-meta-added': 'later' } });
  assert.is(extra.status, 403);
  assert.match(extra.json.message!, /'x-amz-meta-added' must be a 'SignedHeader'/);
  const host = await signedPost(ctx.relay, CREDENTIALS, 'ListTunnels', '{}', { unsigned: ['host'] });
  assert.is(host.status, 403);
  assert.is(host.json.__type, 'IncompleteSignatureException');
  assert.is(ctx.relay.stats().openTunnels, 0);
  // The same request signed in full is served.
  assert.is((await signedPost(ctx.relay, CREDENTIALS, 'OpenTunnel', '{}')).status, 200);
});

for (const [operation, body, pattern] of [
  ['ListTunnels', '{"maxResults":true}', /^maxResults must be an integer, not a boolean$/],
  ['ListTunnels', '{"maxResults":"5"}', /^maxResults must be an integer, not a string$/],
  ['ListTunnels', '{"maxResults":[5]}', /^maxResults must be an integer, not a list$/],
  ['ListTunnels', '{"maxResults":2.5}', /^maxResults must be an integer, not a number$/],
  ['ListTunnels', '{"thingName":{"a":1}}', /^thingName must be a string, not an object$/],
  ['OpenTunnel', '{"destinationConfig":"x"}', /^destinationConfig must be an object, not a string$/],
  ['OpenTunnel', '{"destinationConfig":{"services":"SSH"}}', /^destinationConfig\.services must be a list, not a string$/],
  ['OpenTunnel', '{"description":5}', /^description must be a string, not a number$/],
  ['OpenTunnel', '{"timeoutConfig":{"maxLifetimeTimeoutMinutes":"60"}}', /^timeoutConfig\.maxLifetimeTimeoutMinutes must be an integer, not a string$/],
  ['CloseTunnel', '{"tunnelId":"x","delete":"true"}', /^delete must be true or false, not a string$/],
  ['DescribeTunnel', '{"tunnelId":5}', /^tunnelId must be a string, not a number$/],
  ['DescribeTunnel', '[]', /^Request body must be a JSON object$/],
] as Array<[string, string, RegExp]>) {
  api(`a member of the wrong JSON type is a SerializationException, not silently taken (issue 16): ${operation} ${body}`, async (ctx) => {
    const res = await signedPost(ctx.relay, CREDENTIALS, operation, body);
    assert.is(res.status, 400);
    assert.is(res.json.__type, 'SerializationException');
    assert.match(res.json.message!, pattern);
    assert.is(ctx.relay.stats().openTunnels, 0);
  });
}

for (const [operation, input, message] of [
  ['OpenTunnel', { description: 'd'.repeat(2049) }, `1 validation error detected: Value '${'d'.repeat(64)}...' at 'description' failed to satisfy constraint: Member must satisfy regular expression pattern: [^\\p{C}]{1,2048}`],
  ['OpenTunnel', { description: 'line one\nline two' }, "1 validation error detected: Value 'line one\\u000aline two' at 'description' failed to satisfy constraint: Member must satisfy regular expression pattern: [^\\p{C}]{1,2048}"],
  ['OpenTunnel', { description: '', timeoutConfig: { maxLifetimeTimeoutMinutes: 0 } }, "2 validation errors detected: Value '' at 'description' failed to satisfy constraint: Member must satisfy regular expression pattern: [^\\p{C}]{1,2048}; Value '0' at 'timeoutConfig.maxLifetimeTimeoutMinutes' failed to satisfy constraint: Member must have value greater than or equal to 1"],
  ['OpenTunnel', { destinationConfig: { thingName: 'pi\u0000one', services: ['SSH'] } }, "1 validation error detected: Value 'pi\\u0000one' at 'destinationConfig.thingName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9:_-]+"],
  ['OpenTunnel', { destinationConfig: { services: ['SSH', 'x'.repeat(129)] } }, `1 validation error detected: Value '${'x'.repeat(64)}...' at 'destinationConfig.services.2.member' failed to satisfy constraint: Member must have length less than or equal to 128`],
  ['OpenTunnel', { destinationConfig: { thingName: 'pi' } }, "1 validation error detected: Value null at 'destinationConfig.services' failed to satisfy constraint: Member must not be null"],
  ['ListTunnels', { maxResults: 101 }, "1 validation error detected: Value '101' at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to 100"],
  ['ListTunnels', { nextToken: 'not a token!' }, "1 validation error detected: Value 'not a token!' at 'nextToken' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_=-]{1,4096}"],
  ['DescribeTunnel', {}, "1 validation error detected: Value null at 'tunnelId' failed to satisfy constraint: Member must not be null"],
  ['DescribeTunnel', { tunnelId: '../etc' }, "1 validation error detected: Value '../etc' at 'tunnelId' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_\\-+=:]{1,128}"],
] as Array<[string, unknown, string]>) {
  api(`a value outside the service model's constraints is a ValidationException in AWS's wording: ${operation} ${JSON.stringify(input).slice(0, 60)}`, async (ctx) => {
    const res = await signedPost(ctx.relay, CREDENTIALS, operation, JSON.stringify(input));
    assert.is(res.status, 400);
    assert.equal(res.json, { __type: 'ValidationException', message });
    assert.is(ctx.relay.stats().openTunnels, 0);
  });
}

api('members the model does not name are ignored and null is absent, as in the cloud', async (ctx) => {
  const res = await signedPost(ctx.relay, CREDENTIALS, 'OpenTunnel', JSON.stringify({ description: null, extra: { anything: true }, timeoutConfig: { maxLifetimeTimeoutMinutes: 5 } }));
  assert.is(res.status, 200, res.body);
  const described = await signedPost(ctx.relay, CREDENTIALS, 'DescribeTunnel', JSON.stringify({ tunnelId: res.json.tunnelId }));
  const tunnel = described.json.tunnel as { description?: string; timeoutConfig: { maxLifetimeTimeoutMinutes: number } };
  assert.is(tunnel.description, undefined);
  assert.is(tunnel.timeoutConfig.maxLifetimeTimeoutMinutes, 5);
});

api.run();
