/**
 * Tunnel lifetime expiry: the service closes the tunnel when its lifetime ends, and both
 * proxies stop with exit 0 (behaviour spec 7). Lifetimes are whole minutes: the relay runs on
 * a manual clock, so the minute passes at once (the proxies run on real time throughout).
 */
import { once } from 'node:events';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { defaultSettings, exitCodeOf, type ProxyOptions } from '../../src/index';
import { ManualClock } from '../../src/relay/clock';
import { startRelay } from '../../src/relay/server';
import { startProxy } from '../../src/tunnel/proxy';
import { connectTo, echoServer } from '../helpers/apps';
import { within } from '../helpers/wait';
import { captureLog, makePki } from './fixtures';

const test = suite('lifetime expiry');

test('a tunnel that reaches its lifetime: both proxies exit 0 and local connections close', async () => {
  const pki = makePki('relay CA');
  const echo = await echoServer();
  const clock = new ManualClock();
  const relay = await startRelay({ port: 0, tls: { cert: pki.certPem, key: pki.keyPem }, log: captureLog(0, 'relay').log, clock });
  try {
    const opened = await relay.openTunnel({ services: ['ECHO'], lifetimeMinutes: 1 });
    const options = (mode: 'source' | 'destination', token: string): ProxyOptions => ({
      mode,
      accessToken: token,
      endpoint: { host: '127.0.0.1', port: relay.port },
      services: new Map([['ECHO', { kind: 'tcp', host: '127.0.0.1', port: mode === 'source' ? 0 : echo.port }]]),
      ca: [pki.caPem],
      settings: { ...defaultSettings(), retryDelayMs: 50, retryMaxDelayMs: 200 },
      log: captureLog(4, mode).log,
    });
    const destination = startProxy(options('destination', opened.destinationAccessToken));
    const source = startProxy(options('source', opened.sourceAccessToken));
    await within(Promise.all([source.ready, destination.ready]), 10_000, 'both proxies ready');
    const socket = await connectTo(source.ports().get('ECHO')!);
    socket.on('error', () => {});
    const socketClosed = once(socket, 'close');
    // Expiry timers run inside advance(): a millisecond short of the minute, the tunnel is open.
    clock.advance(59_999);
    assert.is(relay.stats().openTunnels, 1, 'ended before its lifetime');
    clock.advance(1);
    assert.is(relay.stats().openTunnels, 0, 'still open at its lifetime');
    const [s, d] = await within(Promise.all([source.done, destination.done]), 10_000, 'both proxies done at expiry');
    assert.is(exitCodeOf(s), 0, s.message);
    assert.is(exitCodeOf(d), 0, d.message);
    await within(socketClosed, 5000, 'local connection closed');
  } finally {
    await relay.close();
    await echo.close();
    pki.remove();
  }
});

test.run();
