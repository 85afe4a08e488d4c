/** connectToService and connectWithRetry against our relay (self-signed TLS), not a stand-in. */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startRelay, type Relay } from '../../src/relay/server';
import { connectToService, connectWithRetry, ConnectErrorCode, type ConnectError } from '../../src/transport/index';
import { TestFaults } from '../helpers/faults';
import { within } from '../helpers/wait';
import { captureLog, optionsFor } from './fixtures';

const test = suite('transport against the relay');
let relay: Relay;
const faults = new TestFaults();

test.before(async () => {
  relay = await startRelay({ port: 0, tls: 'self-signed', log: captureLog(0, 'relay').log, faults });
});
test.after(async () => {
  await relay.close();
});

async function refusal(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await within(promise, 10_000, 'attempt');
  } catch (err) {
    return err as ConnectError;
  }
  throw new Error('the relay unexpectedly accepted');
}

test('the relay accepts our handshake: channel id, V3, and V2 when configured', async () => {
  const opened = await relay.openTunnel({ services: ['SSH'] });
  const { log, text } = captureLog();
  const conn = await within(connectToService(optionsFor(relay.port, log, { accessToken: opened.sourceAccessToken, ca: [relay.caPem!], endpoint: { host: 'localhost', port: relay.port } })), 10_000, 'connect');
  assert.ok(conn.channelId.length > 0, 'the relay sends a channel-id');
  assert.is(conn.version, 3);
  assert.match(text(), `[info] Web socket session ID: ${conn.channelId}`);
  conn.ws.terminate();

  const { log: log2 } = captureLog();
  const v2 = await within(connectToService(optionsFor(relay.port, log2, { mode: 'destination', accessToken: opened.destinationAccessToken, ca: [relay.caPem!] }, { subprotocol: 'aws.iot.securetunneling-2.0' })), 10_000, 'connect V2');
  assert.is(v2.version, 2);
  assert.is(v2.subprotocol, 'aws.iot.securetunneling-2.0');
  v2.ws.terminate();
});

test('refusals from the relay carry its reason and the matching hint', async () => {
  const opened = await relay.openTunnel({ services: ['SSH'] });
  const { log } = captureLog();
  const unknown = await refusal(connectToService(optionsFor(relay.port, log, { accessToken: 'not-a-token-of-this-relay', ca: [relay.caPem!] })));
  assert.is(unknown.code, ConnectErrorCode.REFUSED);
  assert.is(unknown.status, 403);
  assert.is(unknown.reason, 'Invalid access token');
  assert.match(unknown.hint ?? '', "tunnel's region");

  const otherMode = await refusal(connectToService(optionsFor(relay.port, log, { mode: 'source', accessToken: opened.destinationAccessToken, ca: [relay.caPem!] })));
  assert.is(otherMode.status, 400);
  assert.match(otherMode.reason ?? '', 'local-proxy-mode=destination');
  assert.match(otherMode.hint ?? '', 'not for source mode');

  const badClientToken = await refusal(connectToService(optionsFor(relay.port, log, { accessToken: opened.sourceAccessToken, clientToken: 'short', ca: [relay.caPem!] })));
  assert.is(badClientToken.status, 400);
  assert.match(badClientToken.hint ?? '', '32-128 characters');
});

test('a relay refusing with 503 twice (injected fault): connectWithRetry connects on the third attempt; too few retries exit 1', async () => {
  const opened = await relay.openTunnel({ services: ['SSH'] });
  faults.set({ rejectHandshakes: { status: 503, count: 2 } });
  const { log, count } = captureLog();
  const options = optionsFor(relay.port, log, { accessToken: opened.sourceAccessToken, ca: [relay.caPem!] });
  const connected = await within(connectWithRetry(options), 10_000, 'connect after 503s');
  assert.is(connected.kind, 'connected');
  if (connected.kind === 'connected') connected.connection.ws.terminate();
  assert.is(count('[error] Proxy server rejected web socket upgrade request: (HTTP/1.1 503 Service Unavailable)'), 2);

  faults.set({ rejectHandshakes: { status: 503, count: 5 } });
  const { log: log2, count: count2 } = captureLog();
  const exhausted = await within(connectWithRetry(optionsFor(relay.port, log2, { accessToken: opened.sourceAccessToken, ca: [relay.caPem!] }, { connectRetryCount: 1 })), 10_000, 'exhausted');
  assert.is(exhausted.kind, 'gave-up');
  assert.is(count2('Attempting to establish'), 2);
  faults.set({ rejectHandshakes: { status: 503, count: 0 } });
});

test.run();
