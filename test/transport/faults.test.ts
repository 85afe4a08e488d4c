/**
 * Fault injection with whole proxies (startProxy) and our relay behind a CA-signed
 * certificate: the relay restarting mid-transfer, refusing handshakes, going silent,
 * closing tunnels, and tokens that were rotated, consumed or bound to another client.
 */
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect as netConnect, createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import WebSocket from 'ws';
import { defaultSettings, exitCodeOf, type ProxyOptions, type Settings } from '../../src/index';
import { startRelay, type Relay } from '../../src/relay/server';
import { startProxy, type LocalProxy } from '../../src/tunnel/proxy';
import { connectTo, echoServer, type AppServer } from '../helpers/apps';
import { TestFaults } from '../helpers/faults';
import { within } from '../helpers/wait';
import { ACCESS_TOKEN, captureLog, makePki, startFakeService, type CapturedLog, type Pki } from './fixtures';

const FAST: Partial<Settings> = { retryDelayMs: 50, retryMaxDelayMs: 200, pingPeriodMs: 1000, maxMissedPings: 3 };
const ESTABLISHED = 'Successfully established websocket connection with proxy server: wss://';

let pki: Pki;
let echo: AppServer;
let stateDir: string;
const cleanups: Array<() => Promise<void> | void> = [];

interface Side {
  proxy: LocalProxy;
  logs: CapturedLog;
  options: ProxyOptions;
}

function sideOptions(relay: Relay, mode: 'source' | 'destination', accessToken: string, logs: CapturedLog, settings: Partial<Settings> = {}, extra: Partial<ProxyOptions> = {}): ProxyOptions {
  return {
    mode,
    accessToken,
    endpoint: { host: 'localhost', port: relay.port },
    services: new Map([['ECHO', mode === 'source' ? { kind: 'tcp', host: '127.0.0.1', port: 0 } : { kind: 'tcp', host: '127.0.0.1', port: echo.port }]]),
    ca: [pki.caPem],
    settings: { ...defaultSettings(), ...FAST, ...settings },
    log: logs.log,
    ...extra,
  };
}

function start(relay: Relay, mode: 'source' | 'destination', accessToken: string, settings: Partial<Settings> = {}, extra: Partial<ProxyOptions> = {}, level = 5): Side {
  const logs = captureLog(level, mode);
  const options = sideOptions(relay, mode, accessToken, logs, settings, extra);
  const proxy = startProxy(options);
  cleanups.push(() => within(proxy.close(), 10_000, `${mode} close`).catch(() => {}));
  return { proxy, logs, options };
}

async function relayAt(port = 0, statePath?: string, faults?: TestFaults): Promise<Relay> {
  const relay = await startRelay({ port, tls: { cert: pki.certPem, key: pki.keyPem }, statePath, log: captureLog(0, 'relay').log, faults });
  cleanups.push(() => relay.close());
  return relay;
}

async function pair(relay: Relay, settings: Partial<Settings> = {}): Promise<{ source: Side; destination: Side; tunnelId: string; port: number }> {
  const opened = await relay.openTunnel({ services: ['ECHO'] });
  const destination = start(relay, 'destination', opened.destinationAccessToken, settings);
  const source = start(relay, 'source', opened.sourceAccessToken, settings);
  await within(Promise.all([source.proxy.ready, destination.proxy.ready]), 10_000, 'both proxies ready');
  return { source, destination, tunnelId: opened.tunnelId, port: source.proxy.ports().get('ECHO')! };
}

async function echoes(port: number, text: string): Promise<void> {
  const socket = await connectTo(port);
  try {
    let received = '';
    const all = new Promise<void>((resolve, reject) => {
      socket.on('data', (d: Buffer) => {
        received += d.toString();
        if (received.length >= text.length) resolve();
      });
      socket.once('close', () => reject(new Error(`connection closed after ${received.length} of ${text.length} echoed bytes`)));
    });
    socket.write(text);
    await within(all, 10_000, 'echo through the tunnel');
    assert.is(received, text);
  } finally {
    socket.destroy();
  }
}

function closed(socket: Socket): Promise<void> {
  socket.on('error', () => {});
  return socket.destroyed ? Promise.resolve() : once(socket, 'close').then(() => {});
}

const faults = suite('faults');

faults.before(async () => {
  pki = makePki('relay CA');
  echo = await echoServer();
  stateDir = mkdtempSync(join(tmpdir(), 'lp-faults-'));
});
faults.after.each(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});
faults.after(async () => {
  await echo.close();
  pki.remove();
  rmSync(stateDir, { recursive: true, force: true });
});

faults('relay stopped and restarted mid-transfer: connections reset, proxies reconnect, listener kept, next connection works', async () => {
  const statePath = join(stateDir, 'restart.json');
  const relay1 = await relayAt(0, statePath);
  const { source, destination, port } = await pair(relay1);
  await echoes(port, 'before the restart');

  // Mid-transfer: data is flowing through the tunnel when the relay goes away.
  const socket = await connectTo(port);
  const gone = closed(socket);
  let echoed = 0;
  const flowing = new Promise<void>((resolve) => socket.on('data', (d: Buffer) => {
    echoed += d.length;
    if (echoed >= 64 * 1024) resolve();
  }));
  socket.write(Buffer.alloc(8 * 1024 * 1024, 0x61));
  await within(flowing, 10_000, 'data flowing');
  await relay1.close();
  await within(gone, 10_000, 'local connection reset after the relay went away');
  await within(Promise.all([source.logs.waitFor('reconnecting'), destination.logs.waitFor('reconnecting')]), 10_000, 'both proxies notice the loss');

  const relay2 = await relayAt(relay1.port, statePath);
  await within(Promise.all([source.logs.waitForCount(ESTABLISHED, 2), destination.logs.waitForCount(ESTABLISHED, 2)]), 15_000, 'both proxies reconnected');
  assert.is(source.proxy.ports().get('ECHO'), port, 'the source listener kept its port');
  await echoes(port, 'after the restart');
  // Same access tokens, same derived client tokens: the relay accepted the reconnects.
  assert.is(source.logs.count('Proxy server rejected'), 0);
  assert.is(relay2.port, relay1.port);
});

faults('relay answering 503 three times, then accepting: the proxy retries and connects', async () => {
  const injected = new TestFaults();
  const relay = await relayAt(0, undefined, injected);
  const opened = await relay.openTunnel({ services: ['ECHO'] });
  injected.set({ rejectHandshakes: { status: 503, count: 3 } });
  const destination = start(relay, 'destination', opened.destinationAccessToken);
  await within(destination.proxy.ready, 10_000, 'destination ready');
  assert.is(destination.logs.count('(HTTP/1.1 503 Service Unavailable) "Injected fault: handshake rejected"'), 3);
  assert.is(destination.logs.count('Retrying connection to'), 3);
  const source = start(relay, 'source', opened.sourceAccessToken);
  await within(source.proxy.ready, 10_000, 'source ready');
  await echoes(source.proxy.ports().get('ECHO')!, 'after three 503s');
});

faults('relay accepting but never answering pings: the dead peer is detected within the bound and the proxy reconnects', async () => {
  const injected = new TestFaults();
  const relay = await relayAt(0, undefined, injected);
  const periodMs = 150;
  const { source, destination, port } = await pair(relay, { pingPeriodMs: periodMs, maxMissedPings: 3 });
  injected.set({ answerPings: false });
  const silentSince = Date.now();
  await source.logs.waitFor('No pong for 3 pings', 10_000);
  const detectedAfter = Date.now() - silentSince;
  injected.set({ answerPings: true });
  // 3 missed pings take 3 periods, plus up to one period for the ping already in flight.
  assert.ok(detectedAfter <= 4 * periodMs + 1000, `dead peer detected after ${detectedAfter} ms`);
  // Both proxies lost the silent relay; the echo needs both back (either may return first).
  await within(Promise.all([source.logs.waitForCount(ESTABLISHED, 2), destination.logs.waitForCount(ESTABLISHED, 2)]), 10_000, 'both proxies reconnected');
  await echoes(port, 'after a dead peer');
});

faults('fixes reference bug 3.7 (Decisions 2): a session that breaks right after being established reconnects with growing backoff, never in a tight loop', async () => {
  const service = await startFakeService(pki);
  cleanups.push(() => service.close());
  const baseMs = 10;
  const capMs = 5000;
  const logs = captureLog(4, 'source');
  const proxy = startProxy({
    mode: 'source',
    accessToken: ACCESS_TOKEN,
    endpoint: { host: '127.0.0.1', port: service.port },
    services: new Map([['ECHO', { kind: 'tcp', host: '127.0.0.1', port: 0 }]]),
    ca: [pki.caPem],
    settings: { ...defaultSettings(), ...FAST, retryDelayMs: baseMs, retryMaxDelayMs: capMs },
    log: logs.log,
  });
  cleanups.push(() => within(proxy.close(), 10_000, 'source close').catch(() => {}));
  // Every session is accepted and then dropped at once, as by a service that is failing.
  const upgradesAt: number[] = [];
  for (let i = 0; i < 9; i++) {
    const ws = await within(service.nextConnection(), 15_000, `upgrade ${i + 1}`);
    upgradesAt.push(Date.now());
    ws.terminate();
  }
  const waits = logs.lines.map((l) => /\[info\] Reconnecting to wss:\/\/127\.0\.0\.1:\d+ in (\d+) ms/.exec(l)?.[1]).filter((w) => w !== undefined).map(Number);
  assert.ok(waits.length >= 8, `a logged wait before each reconnect:\n${logs.text()}`);
  for (let k = 0; k < 8; k++) {
    assert.ok(waits[k] <= Math.min(capMs, baseMs * 2 ** k), `wait ${k + 1} (${waits[k]} ms) within the backoff ceiling`);
    const gap = upgradesAt[k + 1] - upgradesAt[k];
    assert.ok(gap >= waits[k] - 1, `reconnect ${k + 1} came ${gap} ms after the previous session, before its ${waits[k]} ms wait`);
  }
  // Full jitter may draw small waits, but not eight in a row once the ceiling has doubled seven times.
  assert.ok(Math.max(...waits.slice(0, 8)) > baseMs, `the backoff grew: ${waits.join(', ')}`);
  assert.is(logs.count('the service connection was lost'), logs.count('Reconnecting to wss://'), 'each loss is logged before its reconnect');
});

faults('a sender the relay holds back for a stalled reader keeps its session past the keepalive window, though its last writes fitted in socket buffers', async () => {
  const relayLogs = captureLog(5, 'relay');
  const relay = await startRelay({ port: 0, tls: { cert: pki.certPem, key: pki.keyPem }, log: relayLogs.log });
  cleanups.push(() => relay.close());
  // The destination's application writes until the relay holds the destination back, then
  // stops: what it wrote last fits in socket buffers, so no write of the destination stays
  // pending and its pings leave at once - into a socket the relay does not read.
  let written = 0;
  let writing = true;
  const app: NetServer = createNetServer((socket) => {
    socket.on('error', () => {});
    const chunk = Buffer.alloc(64 * 1024, 7);
    const write = () => {
      while (writing && socket.write(chunk)) written += chunk.length;
      if (writing) {
        written += chunk.length;
        socket.once('drain', write);
      }
    };
    write();
  });
  app.listen(0, '127.0.0.1');
  await once(app, 'listening');
  cleanups.push(() => new Promise<void>((resolve) => app.close(() => resolve())));
  const appPort = (app.address() as { port: number }).port;
  // Without per-connection credit (issue 14), as with a peer that lacks it: the held bytes then
  // reach the relay, which holds the sender back.
  const settings: Partial<Settings> = { pingPeriodMs: 300, maxMissedPings: 3, creditExtension: 'off' };
  const opened = await relay.openTunnel({ services: ['HOLD'] });
  const destination = start(relay, 'destination', opened.destinationAccessToken, settings, { services: new Map([['HOLD', { kind: 'tcp', host: '127.0.0.1', port: appPort }]]) }, 6);
  const source = start(relay, 'source', opened.sourceAccessToken, settings, { services: new Map([['HOLD', { kind: 'tcp', host: '127.0.0.1', port: 0 }]]) });
  await within(Promise.all([source.proxy.ready, destination.proxy.ready]), 10_000, 'both proxies ready');
  const reader = await connectTo(source.proxy.ports().get('HOLD')!);
  cleanups.push(() => {
    reader.destroy();
  });
  reader.pause();
  await relayLogs.waitFor('destination: paused reading', 30_000);
  writing = false;
  // Twelve ping periods, four times the keepalive window, counted by the destination's own pings.
  const pingsBefore = destination.logs.count('Sent ping data');
  await destination.logs.waitForCount('Sent ping data', pingsBefore + 12, 20_000);
  assert.is(destination.logs.count('No pong'), 0, destination.logs.lines.filter((l) => l.includes('No pong')).join(''));
  assert.is(destination.logs.count(ESTABLISHED), 1, `the destination kept its first session:\n${destination.logs.lines.filter((l) => /\[(error|warning|info)\]/.test(l)).join('')}`);
  let received = 0;
  const all = new Promise<void>((resolve, reject) => {
    reader.on('data', (d: Buffer) => {
      received += d.length;
      if (!writing && received === written) resolve();
    });
    reader.once('close', () => reject(new Error(`the held connection closed after ${received} of ${written} bytes`)));
  });
  reader.resume();
  await within(all, 30_000, 'every byte written reaches the stalled reader once it reads');
  reader.destroy();
});

faults('CloseTunnel: both proxies end with exit 0, local connections are reset', async () => {
  const relay = await relayAt();
  const { source, destination, tunnelId, port } = await pair(relay);
  const socket = await connectTo(port);
  socket.write('x');
  await within(once(socket, 'data'), 10_000, 'echo');
  const gone = closed(socket);
  await relay.closeTunnel(tunnelId);
  const [s, d] = await within(Promise.all([source.proxy.done, destination.proxy.done]), 10_000, 'both proxies done');
  assert.is(exitCodeOf(s), 0, s.message);
  assert.is(exitCodeOf(d), 0, d.message);
  assert.match(s.message, 'closed the tunnel');
  await within(gone, 5000, 'local connection closed');
  assert.match(source.logs.text(), 'Web socket close received. Code: 1000');
  // The listener is gone too: nothing accepts on the port any more.
  const refused = netConnect(port, '127.0.0.1');
  const [err] = await within(once(refused, 'error'), 5000, 'connection refused');
  assert.is((err as NodeJS.ErrnoException).code, 'ECONNREFUSED');
});

faults('a rotated token: the connected proxy is closed (exit 0), a restart with the old token exits 3 with the reason', async () => {
  const relay = await relayAt();
  const { source, tunnelId } = await pair(relay);
  const oldToken = source.options.accessToken;
  await relay.rotateAccessToken(tunnelId, 'SOURCE');
  const ended = await within(source.proxy.done, 10_000, 'source done after rotation');
  assert.is(exitCodeOf(ended), 0, ended.message);
  const again = start(relay, 'source', oldToken);
  const outcome = await within(again.proxy.done, 10_000, 'restart with the old token');
  assert.is(exitCodeOf(outcome), 3, outcome.message);
  assert.match(outcome.message, 'Invalid access token');
  assert.match(outcome.message, "tunnel's region");
  assert.is(again.logs.count('Attempting to establish'), 1, 'a 4xx is not retried');
  assert.not.match(again.logs.text(), oldToken);
});

faults('a consumed token (used before without a client token) exits 3 with the reason and a hint', async () => {
  const relay = await relayAt();
  const opened = await relay.openTunnel({ services: ['ECHO'] });
  // A client like the reference without -i: no client token, so the service spends the token.
  const first = new WebSocket(`wss://localhost:${relay.port}/tunnel?local-proxy-mode=destination`, ['aws.iot.securetunneling-3.0'], {
    headers: { 'access-token': opened.destinationAccessToken },
    ca: [pki.caPem],
  });
  await within(once(first, 'open'), 10_000, 'first client connected');
  first.close(1000);
  await within(once(first, 'close'), 10_000, 'first client closed');
  const destination = start(relay, 'destination', opened.destinationAccessToken);
  const outcome = await within(destination.proxy.done, 10_000, 'destination done');
  assert.is(exitCodeOf(outcome), 3, outcome.message);
  assert.match(outcome.message, 'previously used');
  assert.match(outcome.message, 'already used by another client');
});

faults('a restarted proxy reuses its access token (derived client token); another client token is refused with exit 3', async () => {
  const relay = await relayAt();
  const { source, port } = await pair(relay);
  const token = source.options.accessToken;
  await within(source.proxy.close(), 10_000, 'source close');
  assert.is(exitCodeOf(await source.proxy.done), 0);

  const restarted = start(relay, 'source', token);
  await within(restarted.proxy.ready, 10_000, 'restarted source ready');
  await echoes(restarted.proxy.ports().get('ECHO')!, 'after a restart with the same token');
  assert.ok(port > 0);
  await within(restarted.proxy.close(), 10_000, 'restarted source close');

  const stranger = start(relay, 'source', token, {}, { clientToken: 'another-client-token-0123456789abcdef' });
  const outcome = await within(stranger.proxy.done, 10_000, 'stranger done');
  assert.is(exitCodeOf(outcome), 3, outcome.message);
  assert.match(outcome.message, 'does not match');
  assert.match(outcome.message, 'same -i value');
});

faults.run();
