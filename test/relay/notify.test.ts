/**
 * The relay's notifier against a real mosquitto (TLS, client certificates): the cloud's payload on
 * the thing's topic with QoS 1, nothing for a thing name that is not one, and a notification made
 * while the broker connection is down is delivered after the reconnect.
 */
import { EventEmitter } from 'node:events';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { connectBroker, type BrokerLink } from '../../src/agent/mqtt';
import { Logger } from '../../src/log';
import { mqttNotifier, type TunnelNotifier } from '../../src/relay/notify';
import { Broker, TestPki, type Credential } from '../agent/broker';
import { Lines } from '../agent/lines';
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
  assert.match(ctx.lines.text.slice(mark), /connected to mqtts:\/\/127\.0\.0\.1:\d+ as relay/);
});

test.run();
