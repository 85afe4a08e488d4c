/**
 * The eight operations of IoTSecuredTunneling through the AWS SDK for JavaScript v3, with the
 * cases the AWS CLI test runs (test/relay/awscli.slow.test.ts): tags, thing names, paging,
 * rotation with a destination config, the service quota and the error classes the SDK maps.
 */
import { Agent } from 'node:https';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  CloseTunnelCommand, DescribeTunnelCommand, IoTSecureTunnelingClient, LimitExceededException, ListTagsForResourceCommand, ListTunnelsCommand,
  OpenTunnelCommand, ResourceNotFoundException, RotateTunnelAccessTokenCommand, TagResourceCommand, UntagResourceCommand, paginateListTunnels,
} from '@aws-sdk/client-iotsecuretunneling';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { silentLogger } from '../../src/log';
import { MessageType } from '../../src/protocol/message';
import { ManualClock } from '../../src/relay/clock';
import { startRelay, type Relay, type RelayOptions } from '../../src/relay/server';
import { connectPeer, connectReady, type TestPeer } from './peer';

const CREDENTIALS = { accessKeyId: 'AKIDSDKOPS', secretAccessKey: 'sdk-operations-secret' };

interface Ctx { relay: Relay; sdk: IoTSecureTunnelingClient; agent: Agent; clock: ManualClock; peers: TestPeer[] }
const ops = suite<Ctx>('relay management API: every operation through the AWS SDK');

async function start(ctx: Ctx, options: Partial<RelayOptions> = {}, region = 'eu-west-1'): Promise<void> {
  ctx.clock = new ManualClock();
  ctx.relay = await startRelay({ port: 0, tls: 'self-signed', credentials: CREDENTIALS, log: silentLogger(), clock: ctx.clock, ...options });
  ctx.agent = new Agent({ ca: ctx.relay.caPem, keepAlive: false });
  ctx.sdk = new IoTSecureTunnelingClient({ region, endpoint: `https://127.0.0.1:${ctx.relay.port}`, credentials: CREDENTIALS, requestHandler: new NodeHttpHandler({ httpsAgent: ctx.agent }), maxAttempts: 1 });
}

ops.before.each(async (ctx) => {
  ctx.peers = [];
  await start(ctx);
});
ops.after.each(async (ctx) => {
  for (const p of ctx.peers) p.terminate();
  ctx.sdk.destroy();
  ctx.agent.destroy();
  await ctx.relay.close();
});

async function failure(promise: Promise<unknown>): Promise<Error & { $metadata: { httpStatusCode?: number } }> {
  try {
    await promise;
  } catch (err) {
    return err as Error & { $metadata: { httpStatusCode?: number } };
  }
  throw new Error('the call succeeded');
}

ops('OpenTunnel with tags, thing name and description; DescribeTunnel shows them; the ARN names the request\'s region and the account', async (ctx) => {
  const opened = await ctx.sdk.send(new OpenTunnelCommand({ description: 'lab pi', destinationConfig: { thingName: 'pi-1', services: ['SSH', 'HTTP'] }, tags: [{ key: 'env', value: 'lab' }], timeoutConfig: { maxLifetimeTimeoutMinutes: 30 } }));
  assert.is(opened.tunnelArn, `arn:aws:iot:eu-west-1:000000000000:tunnel/${opened.tunnelId}`);
  const { tunnel } = await ctx.sdk.send(new DescribeTunnelCommand({ tunnelId: opened.tunnelId }));
  assert.equal(tunnel!.tags, [{ key: 'env', value: 'lab' }]);
  assert.equal(tunnel!.destinationConfig, { thingName: 'pi-1', services: ['SSH', 'HTTP'] });
  assert.is(tunnel!.description, 'lab pi');
  assert.ok(tunnel!.createdAt instanceof Date && tunnel!.createdAt.getTime() === ctx.clock.now(), 'createdAt from the relay clock');
});

ops('--region and --account-id of the relay win over the request\'s region; China and GovCloud regions get their partitions', async (ctx) => {
  await ctx.relay.close();
  ctx.sdk.destroy();
  await start(ctx, { region: 'ap-south-1', accountId: '123456789012' });
  const mine = await ctx.sdk.send(new OpenTunnelCommand({}));
  assert.is(mine.tunnelArn, `arn:aws:iot:ap-south-1:123456789012:tunnel/${mine.tunnelId}`);
  await ctx.relay.close();
  ctx.sdk.destroy();
  await start(ctx, {}, 'cn-north-1');
  const cn = await ctx.sdk.send(new OpenTunnelCommand({}));
  assert.match(cn.tunnelArn!, /^arn:aws-cn:iot:cn-north-1:000000000000:tunnel\//);
});

ops('TagResource adds and replaces, UntagResource removes, ListTagsForResource lists; an unknown ARN is a ResourceNotFoundException (404)', async (ctx) => {
  const { tunnelArn } = await ctx.sdk.send(new OpenTunnelCommand({ tags: [{ key: 'a', value: '1' }] }));
  await ctx.sdk.send(new TagResourceCommand({ resourceArn: tunnelArn, tags: [{ key: 'a', value: '2' }, { key: 'b', value: '' }] }));
  await ctx.sdk.send(new UntagResourceCommand({ resourceArn: tunnelArn, tagKeys: ['b', 'never-there'] }));
  assert.equal((await ctx.sdk.send(new ListTagsForResourceCommand({ resourceArn: tunnelArn }))).tags, [{ key: 'a', value: '2' }]);
  const missing = await failure(ctx.sdk.send(new ListTagsForResourceCommand({ resourceArn: `${tunnelArn}x` })));
  assert.instance(missing, ResourceNotFoundException);
  assert.is(missing.$metadata.httpStatusCode, 404);
});

ops('tag rules: key and value lengths, the reserved aws: prefix, duplicate keys, 50 tags per tunnel', async (ctx) => {
  const { tunnelArn } = await ctx.sdk.send(new OpenTunnelCommand({}));
  const cases: Array<[Array<{ key: string; value: string }>, RegExp]> = [
    [[{ key: 'k'.repeat(129), value: 'v' }], /at 'tags\.1\.member\.key' failed to satisfy constraint: Member must have length less than or equal to 128/],
    [[{ key: 'k', value: 'v'.repeat(257) }], /at 'tags\.1\.member\.value' failed to satisfy constraint: Member must have length less than or equal to 256/],
    [[{ key: 'tab\there', value: 'v' }], /at 'tags\.1\.member\.key' failed to satisfy constraint: Member must satisfy regular expression pattern/],
    [[{ key: 'aws:owner', value: 'me' }], /Tag keys starting with 'aws:' are reserved/],
    [[{ key: 'same', value: '1' }, { key: 'same', value: '2' }], /Duplicate tag keys/],
    [Array.from({ length: 51 }, (_, i) => ({ key: `k${i}`, value: '' })), /at most 50 tags/],
    [Array.from({ length: 201 }, (_, i) => ({ key: `k${i}`, value: '' })), /at 'tags' failed to satisfy constraint: Member must have length less than or equal to 200/],
  ];
  for (const [tags, pattern] of cases) {
    const err = await failure(ctx.sdk.send(new TagResourceCommand({ resourceArn: tunnelArn, tags })));
    assert.is(err.name, 'ValidationException');
    assert.is(err.$metadata.httpStatusCode, 400);
    assert.match(err.message, pattern);
  }
  // 50 is allowed, over several calls too.
  await ctx.sdk.send(new TagResourceCommand({ resourceArn: tunnelArn, tags: Array.from({ length: 30 }, (_, i) => ({ key: `k${i}`, value: '' })) }));
  await ctx.sdk.send(new TagResourceCommand({ resourceArn: tunnelArn, tags: Array.from({ length: 20 }, (_, i) => ({ key: `j${i}`, value: '' })) }));
  const over = await failure(ctx.sdk.send(new TagResourceCommand({ resourceArn: tunnelArn, tags: [{ key: 'one-more', value: '' }] })));
  assert.match(over.message, /at most 50 tags/);
  assert.is((await ctx.sdk.send(new ListTagsForResourceCommand({ resourceArn: tunnelArn }))).tags!.length, 50);
});

ops('ListTunnels pages newest first with maxResults and nextToken, filters by thing name, and the SDK paginator sees every tunnel once even when tunnels open between pages', async (ctx) => {
  const ids: string[] = [];
  for (let i = 0; i < 7; i++) {
    ids.push((await ctx.sdk.send(new OpenTunnelCommand({ destinationConfig: { thingName: i % 2 ? 'odd' : 'even', services: ['SSH'] } }))).tunnelId!);
    ctx.clock.advance(1000);
  }
  const seen: string[] = [];
  let opened = false;
  for await (const page of paginateListTunnels({ client: ctx.sdk, pageSize: 2 }, {})) {
    assert.ok(page.tunnelSummaries!.length <= 2);
    seen.push(...page.tunnelSummaries!.map((s) => s.tunnelId!));
    if (!opened) {
      // A tunnel opened after the first page is newer than every one listed: it does not shift the pages.
      opened = true;
      await ctx.sdk.send(new OpenTunnelCommand({}));
    }
  }
  assert.equal(seen, [...ids].reverse());
  const odd = await ctx.sdk.send(new ListTunnelsCommand({ thingName: 'odd' }));
  assert.equal(odd.tunnelSummaries!.map((s) => s.tunnelId), [ids[5], ids[3], ids[1]]);
  assert.is(odd.nextToken, undefined);
});

ops('services per tunnel: 3 by default as the cloud, more with the limit raised; a ValidationException (the SDKs retry LimitExceededException)', async (ctx) => {
  const four = { destinationConfig: { services: ['A', 'B', 'C', 'D'] } };
  const err = await failure(ctx.sdk.send(new OpenTunnelCommand(four)));
  assert.is(err.name, 'ValidationException');
  assert.match(err.message, /at most 3 services/);
  assert.ok((await ctx.sdk.send(new OpenTunnelCommand({ destinationConfig: { services: ['A', 'B', 'C'] } }))).tunnelId);
  await ctx.relay.close();
  ctx.sdk.destroy();
  await start(ctx, { limits: { maxServicesPerTunnel: 4 } });
  assert.ok((await ctx.sdk.send(new OpenTunnelCommand(four))).tunnelId);
});

ops('LimitExceededException only for the open-tunnel quota', async (ctx) => {
  await ctx.relay.close();
  ctx.sdk.destroy();
  await start(ctx, { limits: { maxOpenTunnels: 1 } });
  await ctx.sdk.send(new OpenTunnelCommand({}));
  const err = await failure(ctx.sdk.send(new OpenTunnelCommand({})));
  assert.instance(err, LimitExceededException);
});

ops('RotateTunnelAccessToken with a destination config replaces services and thing name: the destination is disconnected and its next SERVICE_IDS carries them; SOURCE cannot carry one', async (ctx) => {
  const opened = await ctx.sdk.send(new OpenTunnelCommand({ destinationConfig: { thingName: 'pi-1', services: ['SSH'] } }));
  const src = await connectReady(ctx.relay, opened.sourceAccessToken!);
  const dst = await connectReady(ctx.relay, opened.destinationAccessToken!, { mode: 'destination' });
  ctx.peers.push(src, dst);
  const rotated = await ctx.sdk.send(new RotateTunnelAccessTokenCommand({ tunnelId: opened.tunnelId, clientMode: 'DESTINATION', destinationConfig: { thingName: 'pi-2', services: ['RDP', 'VNC'] } }));
  assert.is(rotated.sourceAccessToken, undefined);
  assert.is((await dst.waitClosed()).code, 1000);
  assert.is(src.closeCode, undefined, 'the source (not rotated) stays');
  const dst2 = await connectPeerServiceIds(ctx, rotated.destinationAccessToken!);
  assert.equal(dst2.ids, ['RDP', 'VNC']);
  src.send({ type: MessageType.STREAM_START, streamId: 1, serviceId: 'VNC' });
  assert.is((await dst2.peer.next()).serviceId, 'VNC');
  const { tunnel } = await ctx.sdk.send(new DescribeTunnelCommand({ tunnelId: opened.tunnelId }));
  assert.equal(tunnel!.destinationConfig, { thingName: 'pi-2', services: ['RDP', 'VNC'] });
  assert.equal((await ctx.sdk.send(new ListTunnelsCommand({ thingName: 'pi-2' }))).tunnelSummaries!.map((s) => s.tunnelId), [opened.tunnelId]);
  const err = await failure(ctx.sdk.send(new RotateTunnelAccessTokenCommand({ tunnelId: opened.tunnelId, clientMode: 'SOURCE', destinationConfig: { services: ['SSH'] } })));
  assert.is(err.name, 'ValidationException');
  assert.match(err.message, /destinationConfig cannot be used with clientMode SOURCE/);
});

async function connectPeerServiceIds(ctx: Ctx, token: string): Promise<{ peer: TestPeer; ids: string[] }> {
  const peer = await connectPeer(ctx.relay, token, { mode: 'destination' });
  ctx.peers.push(peer);
  const first = await peer.next();
  assert.is(first.type, MessageType.SERVICE_IDS);
  return { peer, ids: first.availableServiceIds };
}

ops('CloseTunnel with delete forgets the tunnel; closing a closed tunnel is fine; closed tunnels stay listed', async (ctx) => {
  const a = await ctx.sdk.send(new OpenTunnelCommand({}));
  const b = await ctx.sdk.send(new OpenTunnelCommand({}));
  await ctx.sdk.send(new CloseTunnelCommand({ tunnelId: a.tunnelId }));
  await ctx.sdk.send(new CloseTunnelCommand({ tunnelId: a.tunnelId }));
  await ctx.sdk.send(new CloseTunnelCommand({ tunnelId: b.tunnelId, delete: true }));
  const list = await ctx.sdk.send(new ListTunnelsCommand({}));
  assert.equal(list.tunnelSummaries!.map((s) => [s.tunnelId, s.status]), [[a.tunnelId, 'CLOSED']]);
  const err = await failure(ctx.sdk.send(new DescribeTunnelCommand({ tunnelId: b.tunnelId })));
  assert.instance(err, ResourceNotFoundException);
});

ops.run();
