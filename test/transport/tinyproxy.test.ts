/**
 * The service connection through a real web proxy: Debian's tinyproxy, started by the test
 * with its own configuration, in front of our relay. Whole tunnels (source and destination
 * built with startProxy) carry data through it.
 */
import { once } from 'node:events';
import { connect as netConnect, type Socket } from 'node:net';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { connectToService, connectWithRetry, ConnectErrorCode, type ConnectError } from '../../src/transport/index';
import type { WebProxy } from '../../src/options';
import { connectTo, echoServer, type AppServer } from '../helpers/apps';
import { proxyOptions, startRelayForTests, type Relay } from '../helpers/tunnel';
import { startProxy } from '../../src/tunnel/proxy';
import { freePort, within } from '../helpers/wait';
import { captureLog, makePki, optionsFor, type Pki } from './fixtures';
import { startTinyproxy, type Tinyproxy } from './tinyproxy';

// tinyproxy's BasicAuth takes [-a-z0-9._] only; the URL still percent-encodes some of it.
const PASSWORD = 'secret-pw.1';
const PASSWORD_IN_URL = 'secret%2Dpw%2E1';

/** A TLS terminator in front of tinyproxy: what an https:// web proxy looks like to us. */
async function startTlsFront(pki: Pki, backendPort: number): Promise<{ port: number; servernames: string[]; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const servernames: string[] = [];
  const server: TlsServer = createTlsServer({ cert: pki.certPem, key: pki.keyPem }, (client) => {
    servernames.push(String((client as unknown as { servername?: string | false }).servername));
    const backend = netConnect(backendPort, '127.0.0.1');
    for (const s of [client, backend]) {
      sockets.add(s);
      s.on('error', () => { client.destroy(); backend.destroy(); });
      s.on('close', () => sockets.delete(s));
    }
    client.pipe(backend).pipe(client);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as { port: number }).port,
    servernames,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Source and destination on `relay`'s new tunnel, both going through `webProxy`. */
async function tunnelVia(webProxy: WebProxy, extraCa: string[] = []): Promise<{ port: number; close(): Promise<void> }> {
  const opened = await relay.openTunnel({ services: ['ECHO'] });
  const ca = [relay.caPem!, ...extraCa];
  const destination = startProxy({ ...proxyOptions(relay, 'destination', opened.destinationAccessToken, { ECHO: echo.port }), webProxy, ca });
  const source = startProxy({ ...proxyOptions(relay, 'source', opened.sourceAccessToken, { ECHO: { kind: 'tcp', port: 0 } }), webProxy, ca });
  const close = async (): Promise<void> => {
    await within(Promise.allSettled([source.close(), destination.close()]), 10_000, 'proxies close');
  };
  try {
    await within(Promise.all([source.ready, destination.ready]), 10_000, 'source and destination ready');
  } catch (err) {
    await close();
    throw err;
  }
  return { port: source.ports().get('ECHO')!, close };
}

async function echoesThrough(port: number, text: string): Promise<void> {
  const socket = await connectTo(port);
  try {
    socket.write(text);
    let received = '';
    await within(new Promise<void>((resolve) => socket.on('data', (d: Buffer) => { received += d.toString(); if (received.length >= text.length) resolve(); })), 10_000, 'echo through the tunnel');
    assert.is(received, text);
  } finally {
    socket.destroy();
  }
}

const test = suite('web proxy: tinyproxy');
let echo: AppServer;
let relay: Relay;
let plain: Tinyproxy;
let authed: Tinyproxy;

test.before(async () => {
  echo = await echoServer();
  relay = await startRelayForTests();
  plain = await startTinyproxy([relay.port]);
  authed = await startTinyproxy([relay.port], { user: 'user', password: PASSWORD });
});
test.after(async () => {
  await Promise.allSettled([plain?.stop(), authed?.stop()]);
  await relay?.close();
  await echo?.close();
});

test('a whole tunnel through tinyproxy without authentication', async () => {
  const webProxy: WebProxy = { protocol: 'http', host: '127.0.0.1', port: plain.port };
  const tunnel = await tunnelVia(webProxy);
  try {
    await echoesThrough(tunnel.port, 'hello through tinyproxy');
  } finally {
    await tunnel.close();
  }
  assert.match(plain.output(), `Established connection to host "127.0.0.1" using file descriptor`);
});

test('a whole tunnel through tinyproxy with Basic auth from a percent-encoded URL', async () => {
  const { parseProxyUrl } = await import('../../src/transport/index');
  const webProxy = parseProxyUrl(`http://user:${PASSWORD_IN_URL}@127.0.0.1:${authed.port}`);
  assert.is(webProxy.auth, `user:${PASSWORD}`);
  const tunnel = await tunnelVia(webProxy);
  try {
    await echoesThrough(tunnel.port, 'hello with credentials');
  } finally {
    await tunnel.close();
  }
});

test('missing or wrong credentials are reported with the proxy status line, and retried like other failures', async () => {
  const tunnel = await relay.openTunnel({ services: ['ECHO'] });
  const { log, text } = captureLog();
  const base = optionsFor(relay.port, log, { accessToken: tunnel.sourceAccessToken, ca: [relay.caPem!] }, { connectRetryCount: 1 });
  const attempt = async (auth?: string): Promise<ConnectError> => {
    try {
      const conn = await within(connectToService({ ...base, webProxy: { protocol: 'http', host: '127.0.0.1', port: authed.port, auth } }), 10_000, 'attempt');
      conn.ws.terminate();
    } catch (e) {
      return e as ConnectError;
    }
    throw new Error('connected through the proxy with bad credentials');
  };
  const missing = await attempt(undefined);
  assert.is(missing.code, ConnectErrorCode.PROXY_REFUSED);
  assert.is(missing.status, 407);
  assert.match(missing.message, 'proxy authentication required (HTTP/1.0 407 Proxy Authentication Required)');
  // tinyproxy answers wrong credentials on a CONNECT with 401.
  const wrong = await attempt('user:wrong-password');
  assert.is(wrong.code, ConnectErrorCode.PROXY_REFUSED);
  assert.is(wrong.status, 401);
  assert.match(wrong.message, 'proxy authentication failed (HTTP/1.0 401 Unauthorized)');
  const outcome = await within(connectWithRetry({ ...base, webProxy: { protocol: 'http', host: '127.0.0.1', port: authed.port, auth: 'user:wrong-password' } }), 10_000, 'retries');
  assert.is(outcome.kind, 'gave-up', 'not connected with a wrong password');
  const message = outcome.kind === 'gave-up' ? outcome.message : '';
  assert.match(message, 'HTTP/1.0 401 Unauthorized');
  assert.match(message, 'gave up after 1 retry');
  assert.is(text().split('[error] Web proxy').length - 1, 2, 'each failed attempt of connectWithRetry is logged');
  assert.not.match(text(), 'wrong-password');
});

test('NO_PROXY lists the service host: connects directly, not through the proxy', async () => {
  const deadPort = await freePort();
  const tunnel = await relay.openTunnel({ services: ['ECHO'] });
  const { log, text } = captureLog();
  const options = optionsFor(relay.port, log, {
    accessToken: tunnel.sourceAccessToken,
    ca: [relay.caPem!],
    webProxy: { protocol: 'http', host: '127.0.0.1', port: deadPort },
    noProxy: 'example.com, 127.0.0.0/8',
  });
  const conn = await within(connectToService(options), 10_000, 'direct connect');
  conn.ws.close(1000);
  assert.match(text(), 'it is listed in NO_PROXY');

  // The same options without the NO_PROXY entry do go to the (dead) proxy.
  let err: unknown;
  try {
    await within(connectToService({ ...options, noProxy: 'example.com' }), 10_000, 'proxied attempt');
  } catch (e) {
    err = e;
  }
  assert.is((err as ConnectError).code, ConnectErrorCode.PROXY);
  assert.match((err as ConnectError).message, `Could not connect to Web Proxy http://127.0.0.1:${deadPort}`);
});

test('an https:// web proxy (TLS to the proxy, SNI for its name, TLS to the service inside)', async () => {
  const pki = makePki('web proxy CA');
  const front = await startTlsFront(pki, plain.port);
  try {
    const webProxy: WebProxy = { protocol: 'https', host: 'localhost', port: front.port };
    const tunnel = await tunnelVia(webProxy, [pki.caPem]);
    try {
      await echoesThrough(tunnel.port, 'hello over TLS in TLS');
    } finally {
      await tunnel.close();
    }
    assert.ok(front.servernames.length >= 2, 'both proxies went through the TLS front');
    assert.ok(front.servernames.every((n) => n === 'localhost'), front.servernames.join(','));
  } finally {
    await front.close();
    pki.remove();
  }
});

test.run();
