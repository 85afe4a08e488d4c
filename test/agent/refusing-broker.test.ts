/**
 * A broker that refuses the subscription (SUBACK 0x80, what AWS IoT Core answers when the
 * thing's policy lacks iot:Subscribe), or the connection itself (CONNACK "not authorized").
 * mosquitto cannot play it: it grants every SUBSCRIBE and applies its ACL when delivering. So
 * this is a minimal MQTT 3.1.1 server on a real socket, speaking through mqtt-packet (MQTT.js's
 * own codec): refusals for the first attempts, and a grant after that.
 */
import { once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import mqttPacket from 'mqtt-packet';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startAgent, type Agent } from '../../src/agent/agent';
import { Lines } from './lines';

const REFUSALS = 2;

interface Ctx {
  server: Server;
  port: number;
  sockets: Set<Socket>;
  subscribes: number;
  connects: number;
  /** Connections refused with CONNACK 5 (not authorized) before one is accepted. */
  connackRefusals: number;
  agent?: Agent;
}

const test = suite<Ctx>('agent: a broker that refuses the subscription');

test.before(async (ctx) => {
  ctx.sockets = new Set();
  ctx.subscribes = 0;
  ctx.connects = 0;
  ctx.connackRefusals = 0;
  ctx.server = createServer((socket) => {
    ctx.sockets.add(socket);
    socket.on('close', () => ctx.sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    const send = (packet: mqttPacket.Packet) => socket.write(mqttPacket.generate(packet, { protocolVersion: 4 }));
    parser.on('packet', (packet) => {
      if (packet.cmd === 'connect') {
        ctx.connects++;
        if (ctx.connects <= ctx.connackRefusals) {
          send({ cmd: 'connack', returnCode: 5, sessionPresent: false });
          socket.end();
          return;
        }
        send({ cmd: 'connack', returnCode: 0, sessionPresent: false });
      }
      else if (packet.cmd === 'subscribe') {
        ctx.subscribes++;
        send({ cmd: 'suback', messageId: packet.messageId, granted: [ctx.subscribes <= REFUSALS ? 128 : 1] });
      } else if (packet.cmd === 'pingreq') send({ cmd: 'pingresp' });
    });
    socket.on('data', (chunk: Buffer) => parser.parse(chunk));
  });
  ctx.server.listen(0, '127.0.0.1');
  await once(ctx.server, 'listening');
  ctx.port = (ctx.server.address() as { port: number }).port;
});

test.after.each(async (ctx) => {
  await ctx.agent?.close();
  ctx.agent = undefined;
});

test.after(async (ctx) => {
  for (const socket of ctx.sockets) socket.destroy();
  ctx.server.close();
});

test('a refused subscription is logged and retried on a new connection, with backoff, until it is granted', async (ctx) => {
  const lines = new Lines();
  ctx.agent = startAgent({
    broker: { url: `mqtt://127.0.0.1:${ctx.port}`, clientId: 'pi1' },
    thingName: 'pi1',
    services: new Map([['SSH', { kind: 'tcp', port: 22 }]]),
    endpoint: { host: '127.0.0.1', port: 9 },
    logging: { level: 4, sink: lines.sink },
  });
  await lines.waitFor(/subscribed to \$aws\/things\/pi1\/tunnels\/notify/, 20_000, 'subscribed after the refusals');
  assert.is(lines.count('the broker refused the subscription to $aws/things/pi1/tunnels/notify (does the policy of pi1 allow it?); reconnecting'), REFUSALS);
  assert.is(lines.count('connected to mqtt://127.0.0.1'), REFUSALS + 1, 'one connection per attempt');
  assert.is(ctx.subscribes, REFUSALS + 1);
});

test('a refused connection (CONNACK not authorized) is retried with backoff until accepted, one line per refusal', async (ctx) => {
  ctx.connects = 0;
  ctx.connackRefusals = 2;
  ctx.subscribes = REFUSALS;
  const lines = new Lines();
  ctx.agent = startAgent({
    broker: { url: `mqtt://127.0.0.1:${ctx.port}`, clientId: 'pi1' },
    thingName: 'pi1',
    services: new Map([['SSH', { kind: 'tcp', port: 22 }]]),
    endpoint: { host: '127.0.0.1', port: 9 },
    logging: { level: 4, sink: lines.sink },
  });
  await lines.waitFor(/subscribed to \$aws\/things\/pi1\/tunnels\/notify/, 20_000, 'subscribed after the refused connections');
  assert.is(lines.count('cannot connect to mqtt://127.0.0.1'), 2, lines.text);
  assert.match(lines.text, /as pi1: Connection refused: Not authorized/);
  assert.is(ctx.connects, 3, 'a new connection after each refusal');
});

test.run();
