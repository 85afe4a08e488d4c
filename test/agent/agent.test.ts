/**
 * `startAgent` against a real mosquitto (TLS, client certificates required) and our relay:
 * notifications published over MQTT start destination proxies in-process; bad ones are logged
 * once and ignored; a broker restart is survived.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startAgent, type Agent, type AgentOptions } from '../../src/agent/agent';
import { connectBroker, type BrokerLink } from '../../src/mqtt/link';
import { encodeNotification, notificationTopic } from '../../src/mqtt/notification';
import { Logger } from '../../src/log';
import { startProxy } from '../../src/tunnel/proxy';
import { echoServer, sendPattern, type AppServer } from '../helpers/apps';
import { proxyOptions, startRelayForTests, type LocalProxy, type Relay } from '../helpers/tunnel';
import { within } from '../helpers/wait';
import { Broker, TestPki, type Credential } from './broker';
import { Lines } from './lines';

const TOPIC = notificationTopic('pi1');

interface Ctx {
  pki: TestPki;
  broker: Broker;
  relay: Relay;
  echo: AppServer;
  deviceCert: Credential;
  publisher: BrokerLink;
  agent?: Agent;
  lines: Lines;
  /** A client id (so a persistent session) per test: what one test left queued never reaches the next. */
  clientId: string;
  sessions: number;
  sources: LocalProxy[];
  tokens: string[];
}

const test = suite<Ctx>('agent: notifications over a real MQTT broker start destination proxies');

function agentOptions(ctx: Ctx, extra: Partial<AgentOptions> = {}): AgentOptions {
  return {
    broker: { url: ctx.broker.url, clientId: ctx.clientId, cert: ctx.deviceCert.cert, key: ctx.deviceCert.key, ca: ctx.pki.caPem },
    thingName: 'pi1',
    services: new Map([['SSH', { kind: 'tcp', host: '127.0.0.1', port: ctx.echo.port }]]),
    endpoint: { host: '127.0.0.1', port: ctx.relay.port },
    ca: [ctx.relay.caPem!],
    logging: { level: 4, sink: ctx.lines.sink, limitWindowMs: 600_000 },
    ...extra,
  };
}

async function startSubscribed(ctx: Ctx, extra: Partial<AgentOptions> = {}): Promise<Agent> {
  const agent = startAgent(agentOptions(ctx, extra));
  ctx.agent = agent;
  await ctx.lines.waitFor(/subscribed to \$aws\/things\/pi1\/tunnels\/notify/, 15_000, 'agent subscribed');
  return agent;
}

async function openTunnel(ctx: Ctx, services = ['SSH']) {
  const tunnel = await ctx.relay.openTunnel({ services });
  ctx.tokens.push(tunnel.destinationAccessToken, tunnel.sourceAccessToken);
  return tunnel;
}

function notify(ctx: Ctx, token: string, fields: Record<string, unknown> = {}): Promise<void> {
  return ctx.publisher.publish(TOPIC, JSON.stringify({ ...JSON.parse(encodeNotification({ clientAccessToken: token, clientMode: 'destination', region: 'local', services: ['SSH'] })), ...fields }));
}

/** A source for `token`; 64 KiB through it come back from the echo server behind the agent. */
async function echoThrough(ctx: Ctx, token: string): Promise<void> {
  const source = startProxy(proxyOptions(ctx.relay, 'source', token, { SSH: { kind: 'tcp', port: 0 } }));
  ctx.sources.push(source);
  await within(source.ready, 10_000, 'source ready');
  const result = await within(sendPattern(source.ports().get('SSH')!, 64 * 1024, { expectEcho: true }), 15_000, 'echo through the tunnel');
  assert.is(result.echo!.bytes, 64 * 1024);
  assert.is(result.echo!.sha256, result.sha256);
}

test.before(async (ctx) => {
  ctx.pki = await new TestPki().init();
  ctx.broker = await Broker.start(ctx.pki);
  ctx.relay = await startRelayForTests();
  ctx.echo = await echoServer();
  ctx.deviceCert = await ctx.pki.issue('pi1');
  const publisherCert = await ctx.pki.issue('relay');
  ctx.tokens = [];
  ctx.sessions = 0;
  const log = new Logger({ level: Number(process.env.LOCALPROXY_TEST_LOG ?? 0) });
  ctx.publisher = connectBroker({ url: ctx.broker.url, clientId: 'test-publisher', cert: publisherCert.cert, key: publisherCert.key, ca: ctx.pki.caPem, log });
  await ctx.broker.waitFor(/as test-publisher/, 10_000, 'publisher connected');
});

test.before.each((ctx) => {
  ctx.lines = new Lines();
  ctx.clientId = `pi1-t${++ctx.sessions}`;
  ctx.sources = [];
});

test.after.each(async (ctx) => {
  await Promise.all(ctx.sources.map((s) => s.close()));
  await ctx.agent?.close();
  ctx.agent = undefined;
  for (const token of ctx.tokens) assert.not.ok(ctx.lines.text.includes(token), 'no token in the agent log');
});

test.after(async (ctx) => {
  await ctx.publisher?.close();
  await ctx.broker?.stop();
  await ctx.relay?.close();
  await ctx.echo?.close();
  ctx.pki?.remove();
});

test('a notification starts a destination for its token: bytes go through the tunnel, and the broker saw a client-certificate login', async (ctx) => {
  await startSubscribed(ctx);
  assert.match(ctx.broker.log, /New client connected from 127\.0\.0\.1:\d+ as pi1-t\d+ \([^)]*u'pi1'\)/);
  const tunnel = await openTunnel(ctx);
  await notify(ctx, tunnel.destinationAccessToken);
  await ctx.lines.waitFor(/tunnel #1: Successfully established websocket connection/, 15_000, 'tunnel 1 connected');
  assert.match(ctx.lines.text, /tunnel #1: starting for SSH = 127\.0\.0\.1:\d+ through 127\.0\.0\.1:\d+/);
  await echoThrough(ctx, tunnel.sourceAccessToken);
  assert.is(ctx.agent!.tunnels(), 1);
});

test('bad notifications (not JSON, wrong mode, unknown service, 1 MB) are each logged once and ignored; the next good one works', async (ctx) => {
  await startSubscribed(ctx);
  const tunnel = await openTunnel(ctx);
  const secretish = tunnel.destinationAccessToken;
  // Unquoted, so that JSON.parse's message would quote the start of the token.
  await ctx.publisher.publish(TOPIC, `{"clientAccessToken": ${secretish}, "clientMode": "destination"}`);
  await notify(ctx, secretish, { clientMode: 'source' });
  await notify(ctx, secretish, { services: ['VNC'] });
  await ctx.publisher.publish(TOPIC, JSON.stringify({ clientAccessToken: secretish, clientMode: 'destination', region: 'local', services: ['SSH'], padding: 'x'.repeat(1 << 20) }));
  await notify(ctx, tunnel.destinationAccessToken);
  await ctx.lines.waitFor(/tunnel #1: Successfully established websocket connection/, 15_000, 'tunnel 1 connected after the bad notifications');
  assert.is(ctx.lines.count('ignored a notification: a notification of'), 2, 'not JSON and too large');
  assert.is(ctx.lines.count('is not JSON'), 1);
  assert.is(ctx.lines.count('bytes is over the 65536-byte limit'), 1);
  assert.is(ctx.lines.count('ignored a notification: clientMode is "source", not "destination"'), 1);
  assert.is(ctx.lines.count('refused a tunnel for VNC: VNC is not mapped (give --service VNC=PORT or a --config-dir file)'), 1);
  assert.is(ctx.lines.count('tunnel #1: starting'), 1, 'only the good notification started a tunnel');
  assert.not.match(ctx.lines.text, /tunnel 2/);
  await echoThrough(ctx, tunnel.sourceAccessToken);
  for (let i = 0; i + 8 <= secretish.length; i++) assert.not.ok(ctx.lines.text.includes(secretish.slice(i, i + 8)), 'not even 8 characters of the token are logged');
});

test('a flood of bad notifications is rate-limited: 5 lines, and the agent keeps working', async (ctx) => {
  await startSubscribed(ctx);
  for (let i = 0; i < 20; i++) await ctx.publisher.publish(TOPIC, 'not json');
  const tunnel = await openTunnel(ctx);
  await notify(ctx, tunnel.destinationAccessToken);
  await ctx.lines.waitFor(/tunnel #1: Successfully established websocket connection/, 15_000, 'tunnel 1 connected after the flood');
  assert.is(ctx.lines.count('is not JSON'), 5);
  await echoThrough(ctx, tunnel.sourceAccessToken);
});

test('a repeated notification (QoS 1 redelivery) is ignored; a new one replaces the running tunnel at --max-tunnels 1', async (ctx) => {
  await startSubscribed(ctx);
  const first = await openTunnel(ctx);
  await notify(ctx, first.destinationAccessToken);
  await ctx.lines.waitFor(/tunnel #1: Successfully established websocket connection/, 15_000, 'tunnel 1 connected');
  await notify(ctx, first.destinationAccessToken);
  await ctx.lines.waitFor(/ignored a repeated notification for tunnel #1/, 10_000, 'repeat ignored');
  const second = await openTunnel(ctx);
  await notify(ctx, second.destinationAccessToken);
  await ctx.lines.waitFor(/tunnel #2: Successfully established websocket connection/, 15_000, 'tunnel 2 connected');
  await ctx.lines.waitFor(/tunnel #1: ended \(exit code 0/, 10_000, 'tunnel 1 ended');
  assert.match(ctx.lines.text, /tunnel #1: closing it for tunnel #2 \(at most 1 at once\)/);
  assert.is(ctx.agent!.tunnels(), 1);
  await echoThrough(ctx, second.sourceAccessToken);
});

test('--max-tunnels 2: two tunnels run at once', async (ctx) => {
  await startSubscribed(ctx, { maxTunnels: 2 });
  const first = await openTunnel(ctx);
  const second = await openTunnel(ctx);
  await notify(ctx, first.destinationAccessToken);
  await notify(ctx, second.destinationAccessToken);
  await ctx.lines.waitFor(/tunnel #2: Successfully established websocket connection/, 15_000, 'tunnel 2 connected');
  await ctx.lines.waitFor(/tunnel #1: Successfully established websocket connection/, 15_000, 'tunnel 1 connected');
  assert.is(ctx.agent!.tunnels(), 2);
  await echoThrough(ctx, first.sourceAccessToken);
  await echoThrough(ctx, second.sourceAccessToken);
  assert.not.match(ctx.lines.text, /closing it for tunnel/);
});

test('without --proxy-endpoint the region picks the endpoint, and a notification without one is refused', async (ctx) => {
  // region_endpoint_overrides sends region "local" to this relay, the way a user maps a region of their own.
  const { defaultSettings } = await import('../../src/settings');
  const settings = { ...defaultSettings(), regionEndpointOverrides: { local: `127.0.0.1:${ctx.relay.port}` } };
  await startSubscribed(ctx, { endpoint: undefined, settings });
  const tunnel = await openTunnel(ctx);
  await notify(ctx, tunnel.destinationAccessToken, { region: undefined });
  await ctx.lines.waitFor(/ignored a notification: region is missing or empty \(give --proxy-endpoint/, 10_000, 'missing region refused');
  await notify(ctx, tunnel.destinationAccessToken);
  await ctx.lines.waitFor(/tunnel #1: Successfully established websocket connection/, 15_000, 'tunnel 1 connected');
  await echoThrough(ctx, tunnel.sourceAccessToken);
});

test('broker restart: the agent retries while it is down, subscribes again once it is back, and the next notification works', async (ctx) => {
  await startSubscribed(ctx);
  const agentMark = ctx.lines.text.length;
  const brokerMark = ctx.broker.log.length;
  await ctx.broker.stop();
  await ctx.lines.waitFor(/connection to mqtts:\/\/127\.0\.0\.1:\d+ lost; reconnecting in \d+ ms/, 10_000, 'agent noticed the broker is gone', agentMark);
  // At least one attempt fails while the broker is down, so the retry path is the one tested.
  await ctx.lines.waitFor(/cannot connect to mqtts:\/\/127\.0\.0\.1:\d+ as pi1-t\d+: .*ECONNREFUSED/, 10_000, 'a refused attempt', agentMark);
  await ctx.broker.run();
  await ctx.broker.waitFor(/pi1-t\d+ 1 \$aws\/things\/pi1\/tunnels\/notify/, 30_000, 'agent subscribed again (broker side)', brokerMark);
  await ctx.lines.waitFor(/subscribed to \$aws\/things\/pi1\/tunnels\/notify/, 10_000, 'agent subscribed again', agentMark);
  const tunnel = await openTunnel(ctx);
  await notify(ctx, tunnel.destinationAccessToken);
  await ctx.lines.waitFor(/tunnel #1: Successfully established websocket connection/, 30_000, 'tunnel 1 connected after the restart');
  await echoThrough(ctx, tunnel.sourceAccessToken);
});

test.run();
