/**
 * The library entry point as a user of the package sees it: everything below comes from
 * src/index.ts only (plus Node built-ins) — relay, options, logger and startProxy.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { once } from 'node:events';
import { createServer, connect, type Server, type Socket } from 'node:net';
import {
  defaultSettings, silentLogger, startProxy, startRelay,
  type LocalProxy, type ProxyOptions, type Relay, type ServiceTarget,
} from '../../src/index';

const library = suite('library entry point (src/index.ts only)');

/** Fails instead of hanging when `promise` does not settle in time. */
function bounded<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms); });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function options(relay: Relay, mode: ProxyOptions['mode'], accessToken: string, services: Map<string, ServiceTarget>): ProxyOptions {
  return {
    mode,
    accessToken,
    endpoint: { host: '127.0.0.1', port: relay.port },
    services,
    ca: relay.caPem ? [relay.caPem] : [],
    settings: defaultSettings(),
    log: silentLogger(),
  };
}

async function upperCaseServer(): Promise<Server> {
  const server = createServer((socket: Socket) => socket.on('data', (chunk: Buffer) => socket.write(chunk.toString().toUpperCase())));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return server;
}

library('a source and a destination run in-process through the relay over TLS; close() ends both as closed', async () => {
  const app = await upperCaseServer();
  const relay = await startRelay({ port: 0, tls: 'self-signed', log: silentLogger() });
  const tunnel = await relay.openTunnel({ services: ['SSH1', 'HTTP1'] });
  const appPort = (app.address() as { port: number }).port;
  const destination: LocalProxy = startProxy(options(relay, 'destination', tunnel.destinationAccessToken, new Map<string, ServiceTarget>([
    ['SSH1', { kind: 'tcp', host: '127.0.0.1', port: appPort }],
    ['HTTP1', { kind: 'tcp', host: '127.0.0.1', port: appPort }],
  ])));
  const source: LocalProxy = startProxy(options(relay, 'source', tunnel.sourceAccessToken, new Map<string, ServiceTarget>([
    ['SSH1', { kind: 'tcp', host: '127.0.0.1', port: 0 }],
    ['HTTP1', { kind: 'tcp', host: '127.0.0.1', port: 0 }],
  ])));
  const clients: Socket[] = [];
  try {
    await bounded(Promise.all([source.ready, destination.ready]), 10_000, 'both proxies ready');
    const ports = source.ports();
    assert.equal([...ports.keys()].sort(), ['HTTP1', 'SSH1']);
    for (const id of ['SSH1', 'HTTP1']) {
      const client = connect(ports.get(id)!, '127.0.0.1');
      clients.push(client);
      await bounded(once(client, 'connect'), 5000, `connect to ${id}`);
      client.write(`hello ${id}`);
      let reply = '';
      while (reply.length < `hello ${id}`.length) reply += (await bounded(once(client, 'data'), 5000, `reply on ${id}`))[0].toString();
      assert.is(reply, `HELLO ${id}`);
    }
    const closed = bounded(once(clients[0], 'close'), 5000, 'local connection reset by close()');
    await bounded(Promise.all([source.close(), destination.close()]), 5000, 'close()');
    await closed;
    const [s, d] = await Promise.all([source.done, destination.done]);
    assert.is(s.kind, 'closed', s.message);
    assert.is(d.kind, 'closed', d.message);
    assert.is(source.ports().size, 0, 'listeners unbound after close()');
  } finally {
    for (const c of clients) c.destroy();
    await Promise.allSettled([source.close(), destination.close()]);
    await relay.close();
    app.close();
  }
});

library('ready rejects and done reports refused when the tunnel\'s services do not match the mapping', async () => {
  const relay = await startRelay({ port: 0, tls: 'self-signed', log: silentLogger() });
  const tunnel = await relay.openTunnel({ services: ['SSH1'] });
  const source = startProxy(options(relay, 'source', tunnel.sourceAccessToken, new Map<string, ServiceTarget>([['RDP1', { kind: 'tcp', port: 0 }]])));
  try {
    const err = await bounded(source.ready.then(() => undefined, (e: Error) => e), 10_000, 'ready settles');
    assert.ok(err instanceof Error, 'ready rejects');
    const outcome = await bounded(source.done, 5000, 'done');
    assert.is(outcome.kind, 'refused');
    assert.match(outcome.message, /SSH1/);
    assert.match(outcome.message, /RDP1/);
  } finally {
    await source.close();
    await relay.close();
  }
});

library.run();
