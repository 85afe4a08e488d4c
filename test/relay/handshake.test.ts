import { request } from 'node:https';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import WebSocket from 'ws';
import { silentLogger } from '../../src/log';
import { SUBPROTOCOL_V1, SUBPROTOCOL_V2, SUBPROTOCOL_V3 } from '../../src/protocol/constants';
import { startRelay, type Relay } from '../../src/relay/server';
import { TestFaults } from '../helpers/faults';
import { within } from '../helpers/wait';
import { connectPeer, TestPeer, tunnelUrl } from './peer';

interface Ctx { relay: Relay; peers: TestPeer[]; faults: TestFaults }
const handshake = suite<Ctx>('relay data plane: handshake');

handshake.before.each(async (ctx) => {
  ctx.faults = new TestFaults();
  ctx.relay = await startRelay({ port: 0, tls: 'self-signed', log: silentLogger(), faults: ctx.faults });
  ctx.peers = [];
});
handshake.after.each(async (ctx) => {
  for (const p of ctx.peers) p.terminate();
  await ctx.relay.close();
});

const CLIENT_TOKEN = 'a'.repeat(20) + '-0123456789abcdef';

async function refused(promise: Promise<unknown>, status: number, body?: RegExp | string): Promise<void> {
  try {
    await promise;
  } catch (err) {
    const text = (err as Error).message;
    assert.match(text, new RegExp(`^HTTP ${status}:`));
    if (typeof body === 'string') assert.is(text, `HTTP ${status}: ${body}`);
    else if (body) assert.match(text, body);
    return;
  }
  assert.unreachable(`expected HTTP ${status}`);
}

/** A raw HTTPS GET, for requests ws would not make. */
function rawGet(relay: Relay, path: string, headers: Record<string, string>): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  return within(new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port: relay.port, path, ca: relay.caPem, headers }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    }).on('error', reject).end();
  }), 5000, `GET ${path}`);
}

handshake('GET /health answers 200', async (ctx) => {
  const res = await rawGet(ctx.relay, '/health', {});
  assert.is(res.status, 200);
});

handshake('accepts a source with the access-token header: 3.0 negotiated, channel-id is a UUID', async (ctx) => {
  const t = await ctx.relay.openTunnel({ services: ['SSH'] });
  let channelId = '';
  const ws = new WebSocket(tunnelUrl(ctx.relay, 'source'), [SUBPROTOCOL_V1, SUBPROTOCOL_V3, SUBPROTOCOL_V2], { headers: { 'access-token': t.sourceAccessToken }, ca: ctx.relay.caPem });
  ws.on('upgrade', (res) => { channelId = String(res.headers['channel-id']); });
  const opened = new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  ctx.peers.push(new TestPeer(ws));
  await within(opened, 5000, 'open');
  assert.is(ws.protocol, SUBPROTOCOL_V3);
  assert.match(channelId, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
});

handshake('negotiates the highest offered version: 2.0 and 1.0', async (ctx) => {
  const t = await ctx.relay.openTunnel();
  const src = await connectPeer(ctx.relay, t.sourceAccessToken, { protocols: [SUBPROTOCOL_V1, SUBPROTOCOL_V2], clientToken: CLIENT_TOKEN });
  ctx.peers.push(src);
  assert.is(src.ws.protocol, SUBPROTOCOL_V2);
  const dst = await connectPeer(ctx.relay, t.destinationAccessToken, { mode: 'destination', protocols: [SUBPROTOCOL_V1] });
  ctx.peers.push(dst);
  assert.is(dst.ws.protocol, SUBPROTOCOL_V1);
});

handshake('refuses with 400 when none of our subprotocols is offered', async (ctx) => {
  const t = await ctx.relay.openTunnel();
  await refused(connectPeer(ctx.relay, t.sourceAccessToken, { protocols: ['aws.iot.securetunneling-4.0'] }), 400, /Sec-WebSocket-Protocol/);
});

handshake('accepts the awsiot-tunnel-token cookie instead of the header', async (ctx) => {
  const t = await ctx.relay.openTunnel();
  const peer = await connectPeer(ctx.relay, undefined, { headers: { cookie: `foo=bar; awsiot-tunnel-token=${t.sourceAccessToken}` } });
  ctx.peers.push(peer);
  assert.is(peer.ws.protocol, SUBPROTOCOL_V3);
});

handshake('refuses both a header and a cookie (400), and no token at all (401)', async (ctx) => {
  const t = await ctx.relay.openTunnel();
  await refused(connectPeer(ctx.relay, t.sourceAccessToken, { headers: { cookie: `awsiot-tunnel-token=${t.sourceAccessToken}` } }), 400, /not both/);
  await refused(connectPeer(ctx.relay, undefined), 401, 'Missing access token');
});

handshake('refuses an unknown token with 403 and a token of the other mode with 400', async (ctx) => {
  const t = await ctx.relay.openTunnel();
  await refused(connectPeer(ctx.relay, 'AQGnot-a-token'), 403, 'Invalid access token');
  await refused(connectPeer(ctx.relay, t.destinationAccessToken, { mode: 'source' }), 400, /local-proxy-mode=destination, not source/);
});

handshake('refuses a handshake request over 4 KiB with 400', async (ctx) => {
  const t = await ctx.relay.openTunnel();
  await refused(connectPeer(ctx.relay, t.sourceAccessToken, { headers: { 'x-padding': 'p'.repeat(4096) } }), 400, /exceeds 4096 bytes/);
});

handshake('upgrades only on /tunnel with local-proxy-mode=source|destination', async (ctx) => {
  const t = await ctx.relay.openTunnel();
  const headers = { 'access-token': t.sourceAccessToken, connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-protocol': SUBPROTOCOL_V3 };
  const wrongPath = await rawGet(ctx.relay, '/other?local-proxy-mode=source', headers);
  assert.is(wrongPath.status, 400);
  assert.match(wrongPath.body, /only served on GET \/tunnel/);
  const wrongMode = await rawGet(ctx.relay, '/tunnel?local-proxy-mode=sideways', headers);
  assert.is(wrongMode.status, 400);
  assert.match(wrongMode.body, /local-proxy-mode/);
  // The token was not consumed by the refused attempts.
  const peer = await connectPeer(ctx.relay, t.sourceAccessToken);
  ctx.peers.push(peer);
});

handshake('an upgrade whose request target is not a valid URL is refused with 400; the relay keeps serving', async (ctx) => {
  const t = await ctx.relay.openTunnel();
  const headers = { 'access-token': t.sourceAccessToken, connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-protocol': SUBPROTOCOL_V3 };
  for (const target of ['http://[', 'http://x:99999/tunnel?local-proxy-mode=source']) {
    const res = await rawGet(ctx.relay, target, headers);
    assert.is(res.status, 400, target);
    assert.match(res.body, /Invalid request target/);
  }
  const peer = await connectPeer(ctx.relay, t.sourceAccessToken);
  ctx.peers.push(peer);
});

handshake('a token used without a client token is consumed by its first handshake', async (ctx) => {
  const t = await ctx.relay.openTunnel();
  const first = await connectPeer(ctx.relay, t.sourceAccessToken);
  ctx.peers.push(first);
  first.terminate();
  await first.waitClosed();
  await refused(connectPeer(ctx.relay, t.sourceAccessToken), 400, 'Invalid access token: The access token was previously used and cannot be used again');
  await refused(connectPeer(ctx.relay, t.sourceAccessToken, { clientToken: CLIENT_TOKEN }), 400, 'Invalid access token: The access token was previously used and cannot be used again');
});

handshake('with a client token the access token may reconnect any number of times, only with the same client token', async (ctx) => {
  const t = await ctx.relay.openTunnel();
  for (let i = 0; i < 3; i++) {
    const peer = await connectPeer(ctx.relay, t.sourceAccessToken, { clientToken: CLIENT_TOKEN });
    ctx.peers.push(peer);
    peer.terminate();
    await peer.waitClosed();
  }
  const mismatch = 'The provided client token does not match the client token that was previously set.';
  await refused(connectPeer(ctx.relay, t.sourceAccessToken, { clientToken: 'b'.repeat(40) }), 400, `Invalid client token: ${mismatch}`);
  await refused(connectPeer(ctx.relay, t.sourceAccessToken), 400, `Invalid client token: ${mismatch}`);
  await refused(connectPeer(ctx.relay, t.sourceAccessToken, { clientToken: 'short' }), 400, /Invalid client token/);
});

handshake('an injected fault rejectHandshakes answers the next N upgrades with the given status, then accepts', async (ctx) => {
  const t = await ctx.relay.openTunnel();
  ctx.faults.set({ rejectHandshakes: { status: 503, count: 3 } });
  for (let i = 0; i < 3; i++) await refused(connectPeer(ctx.relay, t.sourceAccessToken, { clientToken: CLIENT_TOKEN }), 503);
  const peer = await connectPeer(ctx.relay, t.sourceAccessToken, { clientToken: CLIENT_TOKEN });
  ctx.peers.push(peer);
});

handshake('refuses tokens of a closed tunnel', async (ctx) => {
  const t = await ctx.relay.openTunnel();
  await ctx.relay.closeTunnel(t.tunnelId);
  await refused(connectPeer(ctx.relay, t.sourceAccessToken), 403, 'Invalid access token');
});

handshake('an upgrade without a valid Sec-WebSocket-Key, version 13 or Upgrade: websocket is refused with 400 by the relay itself', async (ctx) => {
  const t = await ctx.relay.openTunnel();
  const base = { 'access-token': t.sourceAccessToken, connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-protocol': SUBPROTOCOL_V3 };
  for (const [change, pattern] of [
    [{ 'sec-websocket-key': 'short' }, /Sec-WebSocket-Key/],
    [{ 'sec-websocket-version': '8' }, /Sec-WebSocket-Version/],
    [{ upgrade: 'h2c' }, /Only WebSocket upgrades/],
  ] as Array<[Record<string, string>, RegExp]>) {
    const res = await rawGet(ctx.relay, '/tunnel?local-proxy-mode=source', { ...base, ...change });
    assert.is(res.status, 400);
    assert.match(res.body, pattern);
  }
  // None of them spent the token.
  ctx.peers.push(await connectPeer(ctx.relay, t.sourceAccessToken));
});

handshake.run();
