/**
 * The relay's notifier against a real mosquitto (TLS, client certificates): the cloud's payload on
 * the thing's topic with QoS 1, nothing for a thing name that is not one, a notification made
 * while the broker connection is down delivered after the reconnect; and the relay calling it on
 * OpenTunnel and RotateTunnelAccessToken through the management API (AWS SDK).
 */
import { spawn } from 'node:child_process';
import { EventEmitter, once } from 'node:events';
import { Agent } from 'node:https';
import { IoTSecureTunnelingClient, OpenTunnelCommand, RotateTunnelAccessTokenCommand } from '@aws-sdk/client-iotsecuretunneling';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { connectBroker, type BrokerLink } from '../../src/mqtt/link';
import { Logger } from '../../src/log';
import { mqttNotifier, type TunnelNotifier } from '../../src/relay/notify';
import { startRelay } from '../../src/relay/server';
import { Broker, TestPki, type Credential } from '../agent/broker';
import { Lines } from '../agent/lines';
import { CLI } from '../helpers/child';
import { waitUntil, within } from '../helpers/wait';

interface Ctx {
  pki: TestPki;
  broker: Broker;
  relayCert: Credential;
  subscriber: BrokerLink;
  received: Array<{ topic: string; payload: string }>;
  notifier?: TunnelNotifier;
  lines: Lines;
}

const CREDENTIALS = { accessKeyId: 'AKIDNOTIFYTEST', secretAccessKey: 'notify-test-secret-key-0123456789' };

const test = suite<Ctx>('relay notifier: tunnel notifications over MQTT');

const arrivals = new EventEmitter();

function nextMessage(ctx: Ctx, count: number): Promise<void> {
  return waitUntil(arrivals, 'message', () => ctx.received.length >= count, 15_000, `message ${count} at the subscriber`);
}

test.before(async (ctx) => {
  ctx.pki = await new TestPki().init();
  ctx.broker = await Broker.start(ctx.pki);
  ctx.relayCert = await ctx.pki.issue('relay');
  const device = await ctx.pki.issue('device');
  ctx.received = [];
  let subscribed!: () => void;
  const ready = new Promise<void>((resolve) => { subscribed = resolve; });
  ctx.subscriber = connectBroker(
    { url: ctx.broker.url, clientId: 'device', cert: device.cert, key: device.key, ca: ctx.pki.caPem, log: new Logger({ level: 0 }) },
    { subscribe: ['$aws/things/+/tunnels/notify'], onReady: subscribed, onMessage: (topic, payload) => {
      ctx.received.push({ topic, payload: payload.toString() });
      arrivals.emit('message');
    } },
  );
  await within(ready, 10_000, 'subscriber ready');
});

test.before.each(async (ctx) => {
  ctx.lines = new Lines();
  ctx.received.length = 0;
  const log = new Logger({ level: 4, sink: ctx.lines.sink });
  ctx.notifier = mqttNotifier({ url: ctx.broker.url, clientId: 'relay', cert: ctx.relayCert.cert, key: ctx.relayCert.key, ca: ctx.pki.caPem, log });
  await ctx.lines.waitFor(/connected to mqtts:\/\/127\.0\.0\.1:\d+ as relay/, 10_000, 'notifier connected');
});

test.after.each(async (ctx) => {
  await ctx.notifier?.close();
});

test.after(async (ctx) => {
  await ctx.subscriber?.close();
  await ctx.broker?.stop();
  ctx.pki?.remove();
});

test('publishes the cloud\'s payload on $aws/things/<thing>/tunnels/notify with QoS 1; the token is not logged', async (ctx) => {
  const token = 'AQGAAXhTOKEN0123456789abcdefghijklmnopqrstuvwxyz';
  ctx.notifier!.notify('pi1', token, ['SSH', 'HTTP']);
  await nextMessage(ctx, 1);
  assert.is(ctx.received[0].topic, '$aws/things/pi1/tunnels/notify');
  assert.equal(JSON.parse(ctx.received[0].payload), { clientAccessToken: token, clientMode: 'destination', region: 'local', services: ['SSH', 'HTTP'] });
  await ctx.broker.waitFor(/Received PUBLISH from relay \(d0, q1, r0, m\d+, '\$aws\/things\/pi1\/tunnels\/notify'/, 5000, 'a QoS 1 publish');
  await ctx.lines.waitFor(/notified thing pi1/, 5000, 'notified line');
  assert.not.ok(ctx.lines.text.includes(token));
});

test('a thing name that would be a wildcard or another topic level is not published, with one line', async (ctx) => {
  ctx.notifier!.notify('pi1/#', 'AQGtoken-one', ['SSH']);
  ctx.notifier!.notify('+', 'AQGtoken-two', ['SSH']);
  ctx.notifier!.notify('pi2', 'AQGtoken-three', ['SSH']);
  await nextMessage(ctx, 1);
  assert.equal(ctx.received.map((m) => m.topic), ['$aws/things/pi2/tunnels/notify']);
  assert.is(ctx.lines.count('not notifying thing "pi1/#"'), 1);
  assert.is(ctx.lines.count('not notifying thing "+"'), 1);
});

test('a notification made while the broker connection is down is delivered after the reconnect', async (ctx) => {
  // Another client with the relay's client id makes the broker drop the notifier's connection.
  const mark = ctx.lines.text.length;
  const impostor = connectBroker({ url: ctx.broker.url, clientId: 'relay', cert: ctx.relayCert.cert, key: ctx.relayCert.key, ca: ctx.pki.caPem, log: new Logger({ level: 0 }) });
  await ctx.lines.waitFor(/connection to mqtts:\/\/127\.0\.0\.1:\d+ lost; reconnecting/, 10_000, 'notifier disconnected', mark);
  // Still in the turn that logged the loss: the reconnect timer cannot have run yet.
  ctx.notifier!.notify('pi3', 'AQGtoken-offline', ['SSH']);
  await impostor.close();
  await nextMessage(ctx, 1);
  assert.is(ctx.received[0].topic, '$aws/things/pi3/tunnels/notify');
  assert.is(JSON.parse(ctx.received[0].payload).clientAccessToken, 'AQGtoken-offline');
  // MQTT.js sends what it queued on CONNACK, which can reach the subscriber before the line is written.
  await ctx.lines.waitFor(/connected to mqtts:\/\/127\.0\.0\.1:\d+ as relay/, 5000, 'the reconnect line', mark);
});

test('the relay notifies on OpenTunnel with a thing name and on destination rotations, not otherwise', async (ctx) => {
  const relay = await startRelay({ port: 0, tls: 'self-signed', credentials: CREDENTIALS, log: new Logger({ level: 0 }), notifier: ctx.notifier });
  const agent = new Agent({ ca: relay.caPem, keepAlive: false });
  const sdk = new IoTSecureTunnelingClient({
    region: 'us-east-1', endpoint: `https://127.0.0.1:${relay.port}`, credentials: CREDENTIALS, maxAttempts: 1,
    requestHandler: new NodeHttpHandler({ httpsAgent: agent }),
  });
  try {
    // Messages from one publisher arrive in order: each awaited one shows nothing came before it.
    await sdk.send(new OpenTunnelCommand({ destinationConfig: { services: ['SSH'] } }));
    const opened = await sdk.send(new OpenTunnelCommand({ destinationConfig: { thingName: 'pi1', services: ['SSH', 'VNC'] } }));
    await nextMessage(ctx, 1);
    assert.is(ctx.received[0].topic, '$aws/things/pi1/tunnels/notify');
    assert.equal(JSON.parse(ctx.received[0].payload), { clientAccessToken: opened.destinationAccessToken, clientMode: 'destination', region: 'local', services: ['SSH', 'VNC'], tunnelId: opened.tunnelId });

    await sdk.send(new RotateTunnelAccessTokenCommand({ tunnelId: opened.tunnelId, clientMode: 'SOURCE' }));
    const rotated = await sdk.send(new RotateTunnelAccessTokenCommand({ tunnelId: opened.tunnelId, clientMode: 'DESTINATION' }));
    await nextMessage(ctx, 2);
    assert.is(ctx.received[1].topic, '$aws/things/pi1/tunnels/notify');
    assert.is(JSON.parse(ctx.received[1].payload).clientAccessToken, rotated.destinationAccessToken);
    assert.is(JSON.parse(ctx.received[1].payload).tunnelId, opened.tunnelId, 'a rotation names the tunnel it belongs to');
    assert.not.equal(rotated.destinationAccessToken, opened.destinationAccessToken);

    // RotateTunnelAccessToken's destinationConfig names the thing (and services) to notify.
    const moved = await sdk.send(new RotateTunnelAccessTokenCommand({ tunnelId: opened.tunnelId, clientMode: 'ALL', destinationConfig: { thingName: 'pi2', services: ['SSH'] } }));
    await nextMessage(ctx, 3);
    assert.is(ctx.received[2].topic, '$aws/things/pi2/tunnels/notify');
    assert.equal(JSON.parse(ctx.received[2].payload), { clientAccessToken: moved.destinationAccessToken, clientMode: 'destination', region: 'local', services: ['SSH'], tunnelId: opened.tunnelId });
    assert.is(ctx.received.length, 3);
  } finally {
    sdk.destroy();
    agent.destroy();
    await relay.close();
  }
});

test('`localproxy relay` refuses bad --mqtt-* flags with one line and exit 2', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['--mqtt-cert', '/etc/hostname'], /localproxy relay: --mqtt-cert needs --mqtt-url \(try 'localproxy relay --help'\)/],
    [['--mqtt-url', 'http://broker'], /the scheme must be mqtts:\/\//],
    [['--mqtt-url', 'mqtts://broker', '--mqtt-key', '/etc/hostname'], /--mqtt-cert and --mqtt-key must be given together/],
    [['--mqtt-url', 'mqtts://broker', '--mqtt-ca', '/nonexistent.pem'], /cannot read --mqtt-ca '\/nonexistent\.pem': ENOENT/],
  ];
  for (const [args, expected] of cases) {
    const child = spawn(process.execPath, [CLI, 'relay', '--listen', '127.0.0.1:0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => { stderr += d; });
    const [code] = await within(once(child, 'close'), 15_000, `relay ${args.join(' ')}`);
    assert.is(code, 2, `${args.join(' ')}: ${stderr}`);
    assert.match(stderr, expected);
    assert.is(stderr.trim().split('\n').length, 1, stderr);
  }
});

test.run();
