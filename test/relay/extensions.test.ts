/**
 * The relay and localproxy's protocol extensions (issue 14): a peer declares credit/1 in its
 * upgrade request; the relay answers with it and forwards the extension's messages only to
 * V2/V3 peers that declared it. No extension message reaches a peer that did not ask (the C++
 * reference never does), and other unknown ignorable types are not forwarded at all.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { SUBPROTOCOL_V1, SUBPROTOCOL_V2 } from '../../src/protocol/constants';
import { CREDIT_EXTENSION, encodeHello, encodeWindow, ExtensionType } from '../../src/protocol/extension';
import { MessageType, type MessageInit } from '../../src/protocol/message';
import { silentLogger } from '../../src/log';
import { startRelay, type Relay } from '../../src/relay/server';
import { connectPeer, type TestPeer } from './peer';

const { DATA, STREAM_START, SERVICE_IDS } = MessageType;
const { CREDIT_HELLO, CREDIT_WINDOW } = ExtensionType;

interface Ctx { relay: Relay; peers: TestPeer[] }
const ext = suite<Ctx>('relay: extension declaration and forwarding');

ext.before.each(async (ctx) => {
  ctx.relay = await startRelay({ port: 0, tls: 'self-signed', log: silentLogger() });
  ctx.peers = [];
});
ext.after.each(async (ctx) => {
  for (const p of ctx.peers) p.terminate();
  await ctx.relay.close();
});

interface Side { declare?: string; protocol?: string }

async function pair(ctx: Ctx, source: Side, destination: Side) {
  const t = await ctx.relay.openTunnel({ services: ['SSH'] });
  const headers = (s: Side): Record<string, string> => (s.declare ? { 'localproxy-extensions': s.declare } : {});
  const src = await connectPeer(ctx.relay, t.sourceAccessToken, { mode: 'source', headers: headers(source), protocols: source.protocol ? [source.protocol] : undefined });
  const dst = await connectPeer(ctx.relay, t.destinationAccessToken, { mode: 'destination', headers: headers(destination), protocols: destination.protocol ? [destination.protocol] : undefined });
  ctx.peers.push(src, dst);
  for (const [p, side] of [[src, source], [dst, destination]] as const) {
    if (side.protocol !== SUBPROTOCOL_V1) assert.is((await p.next()).type, SERVICE_IDS);
  }
  return { src, dst };
}

const hello: MessageInit = { type: CREDIT_HELLO, ignorable: true, serviceId: 'SSH', payload: encodeHello('0102030405060708') };
const window: MessageInit = { type: CREDIT_WINDOW, ignorable: true, serviceId: 'SSH', streamId: 1, connectionId: 1, payload: encodeWindow({ limit: 4096, ack: true }) };
const start: MessageInit = { type: STREAM_START, serviceId: 'SSH', streamId: 1, connectionId: 1 };
const data: MessageInit = { type: DATA, serviceId: 'SSH', streamId: 1, connectionId: 1, payload: Buffer.from('after') };

ext('the response names credit/1 to a V2/V3 peer that declared it, among unknown names; not to one that did not, nor to a V1 peer', async (ctx) => {
  const { src, dst } = await pair(ctx, { declare: 'other/7, Credit/1' }, {});
  assert.is(src.responseHeaders['localproxy-extensions'], CREDIT_EXTENSION);
  assert.is(dst.responseHeaders['localproxy-extensions'], undefined);
  const t = await ctx.relay.openTunnel({ services: ['SSH'] });
  const v1 = await connectPeer(ctx.relay, t.destinationAccessToken, { mode: 'destination', headers: { 'localproxy-extensions': CREDIT_EXTENSION }, protocols: [SUBPROTOCOL_V1] });
  ctx.peers.push(v1);
  assert.is(v1.responseHeaders['localproxy-extensions'], undefined);
  const v2 = await connectPeer(ctx.relay, t.sourceAccessToken, { mode: 'source', headers: { 'localproxy-extensions': CREDIT_EXTENSION }, protocols: [SUBPROTOCOL_V2] });
  ctx.peers.push(v2);
  assert.is(v2.responseHeaders['localproxy-extensions'], CREDIT_EXTENSION);
});

ext('both declared: HELLO and WINDOW are forwarded both ways, intact and in order', async (ctx) => {
  const { src, dst } = await pair(ctx, { declare: CREDIT_EXTENSION }, { declare: CREDIT_EXTENSION });
  src.send(hello, start, window, data);
  const got = [await dst.next(), await dst.next(), await dst.next(), await dst.next()];
  assert.equal(got.map((m) => m.type), [CREDIT_HELLO, STREAM_START, CREDIT_WINDOW, DATA]);
  assert.ok(got[0].ignorable);
  assert.equal([...got[0].payload], [...hello.payload!]);
  assert.equal([got[2].serviceId, got[2].streamId, got[2].connectionId, [...got[2].payload]], ['SSH', 1, 1, [...window.payload!]]);
  dst.send(hello, { ...window, payload: encodeWindow({ limit: 1, ack: false }) });
  assert.equal([(await src.next()).type, (await src.next()).type], [CREDIT_HELLO, CREDIT_WINDOW]);
});

ext('toward a peer that did not declare it, or a V1 peer, extension messages are stripped; the rest flows', async (ctx) => {
  for (const destination of [{}, { declare: CREDIT_EXTENSION, protocol: SUBPROTOCOL_V1 }, { declare: 'other/1' }] as Side[]) {
    const { src, dst } = await pair(ctx, { declare: CREDIT_EXTENSION }, destination);
    const v1 = destination.protocol === SUBPROTOCOL_V1;
    src.send(hello, start, window, data);
    const got = [await dst.next(), await dst.next()];
    assert.equal(got.map((m) => m.type), [STREAM_START, DATA], `to ${JSON.stringify(destination)}`);
    assert.is(got[1].serviceId, v1 ? '' : 'SSH');
    // Forwarding depends on the receiver only: what that destination sends reaches the declared source.
    if (!v1) {
      dst.send(hello, data);
      const back = await src.next();
      assert.is(back.type, CREDIT_HELLO, 'the source declared it: what the destination sends reaches it');
    }
  }
});

ext('other unknown ignorable types are not forwarded, even to a peer that declared an extension', async (ctx) => {
  const { src, dst } = await pair(ctx, { declare: CREDIT_EXTENSION }, { declare: CREDIT_EXTENSION });
  src.send({ type: 42, ignorable: true, serviceId: 'SSH', streamId: 1 }, { type: 0x4c5f, ignorable: true, serviceId: 'SSH' }, start);
  assert.is((await dst.next()).type, STREAM_START);
  assert.is(src.closeCode, undefined, 'not a violation');
});

ext.run();
