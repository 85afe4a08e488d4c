import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { socketOf } from '../../src/flow/writer';
import { connectToService, ConnectErrorCode, deriveClientToken, USER_AGENT, type ConnectError } from '../../src/transport/index';
import { VERSION } from '../../src/version';
import { within } from '../helpers/wait';
import { ACCESS_TOKEN, captureLog, makePki, optionsFor, startFakeService, type FakeService, type Pki } from './fixtures';
import { hostname } from 'node:os';

const test = suite('connectToService');
let pki: Pki;
let service: FakeService;

test.before(async () => {
  pki = makePki();
  service = await startFakeService(pki);
});
test.after(async () => {
  await service.close();
  pki.remove();
});
test.before.each(() => {
  service.behaviour = {};
  service.requests.length = 0;
});

async function expectFailure(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await within(promise, 10_000, 'connect attempt');
  } catch (err) {
    return err as ConnectError;
  }
  throw new Error('the connection unexpectedly succeeded');
}

test('masks client frames with an all-zero key (masking is a no-op for ws on both ends)', async () => {
  const { log } = captureLog();
  const accepted = service.nextConnection();
  const conn = await within(connectToService(optionsFor(service.port, log, { ca: [pki.caPem] })), 10_000, 'connect');
  try {
    const serverSide = socketOf(await within(accepted, 10_000, 'server side'))!;
    const raw = new Promise<Buffer>((resolve) => serverSide.once('data', resolve));
    conn.ws.send(Buffer.from('abcdef'));
    const frame = await within(raw, 10_000, 'raw frame');
    // FIN + binary opcode, MASK bit with length 6, then the 4-byte masking key.
    assert.is(frame[0], 0x82);
    assert.is(frame[1], 0x80 | 6);
    assert.is(frame.subarray(2, 6).toString('hex'), '00000000');
    assert.is(frame.subarray(6, 12).toString(), 'abcdef');
  } finally {
    conn.ws.terminate();
  }
});

test('sends the handshake the service expects and logs the session id', async () => {
  service.behaviour.channelId = 'channel-0123';
  const { log, text } = captureLog();
  const conn = await within(connectToService(optionsFor(service.port, log, { ca: [pki.caPem] })), 10_000, 'connect');
  try {
    assert.is(conn.channelId, 'channel-0123');
    assert.is(conn.subprotocol, 'aws.iot.securetunneling-3.0');
    assert.is(conn.version, 3);
    assert.is(conn.ws.readyState, conn.ws.OPEN);
    assert.is(conn.ws.binaryType, 'nodebuffer');
    const req = service.requests[0];
    assert.is(req.url, '/tunnel?local-proxy-mode=source');
    assert.is(req.headers['access-token'], ACCESS_TOKEN);
    assert.is(req.headers['client-token'], deriveClientToken(ACCESS_TOKEN, hostname()));
    assert.is(req.headers['sec-websocket-protocol'], 'aws.iot.securetunneling-3.0');
    assert.is(req.headers.host, `127.0.0.1:${service.port}`);
    assert.is(req.headers['user-agent'], USER_AGENT);
    assert.ok(USER_AGENT.startsWith(`localproxy/${VERSION} (node `), USER_AGENT);
    assert.is(req.headers['sec-websocket-extensions'], undefined, 'no permessage-deflate');
    assert.is(req.servername, false, 'no SNI for an IP literal');
    const out = text();
    assert.match(out, `[info] Attempting to establish web socket connection with endpoint wss://127.0.0.1:${service.port}`);
    assert.match(out, '[info] Web socket session ID: channel-0123');
    assert.match(out, `[info] Successfully established websocket connection with proxy server: wss://127.0.0.1:${service.port}`);
    assert.not.match(out, ACCESS_TOKEN);
  } finally {
    conn.ws.terminate();
  }
});

test('sends SNI for a host name, the destination mode, and an explicit client token', async () => {
  const { log } = captureLog();
  const clientToken = 'explicit-client-token-0123456789abcdef';
  const conn = await within(
    connectToService(optionsFor(service.port, log, { ca: [pki.caPem], mode: 'destination', clientToken, endpoint: { host: 'localhost', port: service.port } })),
    10_000,
    'connect',
  );
  conn.ws.terminate();
  const req = service.requests[0];
  assert.is(req.servername, 'localhost');
  assert.is(req.url, '/tunnel?local-proxy-mode=destination');
  assert.is(req.headers['client-token'], clientToken);
  assert.is(req.headers.host, `localhost:${service.port}`);
});

test('an IPv6 literal endpoint: bracketed in the URL and Host, certificate checked against the IP', async () => {
  const v6 = await startFakeService(pki, {}, '::1');
  try {
    const { log, text } = captureLog();
    const conn = await within(connectToService(optionsFor(v6.port, log, { ca: [pki.caPem], endpoint: { host: '::1', port: v6.port } })), 10_000, 'connect');
    conn.ws.terminate();
    assert.is(v6.requests[0].headers.host, `[::1]:${v6.port}`);
    assert.is(v6.requests[0].servername, false);
    assert.match(text(), `with proxy server: wss://[::1]:${v6.port}`);
  } finally {
    await v6.close();
  }
});

test('derived client token: 64 hex characters, stable per token and host', () => {
  const a = deriveClientToken('token-a', 'pi');
  assert.match(a, /^[0-9a-f]{64}$/);
  assert.match(a, /^[a-zA-Z0-9-]{32,128}$/);
  assert.is(deriveClientToken('token-a', 'pi'), a);
  assert.is.not(deriveClientToken('token-a', 'other-host'), a);
  assert.is.not(deriveClientToken('token-b', 'pi'), a);
});

test('negotiates V2 when the service picks the V2 subprotocol', async () => {
  service.behaviour.subprotocol = 'aws.iot.securetunneling-2.0';
  const { log } = captureLog();
  const options = optionsFor(service.port, log, { ca: [pki.caPem] });
  options.settings.subprotocol = 'aws.iot.securetunneling-2.0';
  const conn = await within(connectToService(options), 10_000, 'connect');
  conn.ws.terminate();
  assert.is(conn.version, 2);
});

test('a subprotocol that is not ours is a retryable error naming it', async () => {
  service.behaviour.subprotocol = 'something-else';
  const { log } = captureLog();
  const err = await expectFailure(connectToService(optionsFor(service.port, log, { ca: [pki.caPem] })));
  assert.is(err.code, ConnectErrorCode.SUBPROTOCOL);
  assert.is(err.refused, false);
  assert.match(err.message, '"something-else"');
});

test('a missing subprotocol is a retryable error', async () => {
  service.behaviour.subprotocol = 'none';
  const { log } = captureLog();
  const err = await expectFailure(connectToService(optionsFor(service.port, log, { ca: [pki.caPem] })));
  assert.is(err.code, ConnectErrorCode.SUBPROTOCOL);
  assert.match(err.message, 'No websocket subprotocol returned');
});

test('HTTP 4xx is refused, with the status, the body as reason and a hint', async () => {
  service.behaviour.reject = { status: 403, text: 'Forbidden', body: 'Access token was previously used\nby another client' };
  const { log } = captureLog();
  const err = await expectFailure(connectToService(optionsFor(service.port, log, { ca: [pki.caPem] })));
  assert.is(err.code, ConnectErrorCode.REFUSED);
  assert.is(err.refused, true);
  assert.is(err.status, 403);
  assert.is(err.reason, 'Access token was previously used by another client');
  assert.match(err.message, '(HTTP/1.1 403 Forbidden) "Access token was previously used by another client"');
  assert.match(err.hint ?? '', 'already used');
});

test('HTTP 4xx whose body never completes is still refused at once with what arrived (not a retried timeout)', async () => {
  service.behaviour.reject = { status: 403, text: 'Forbidden', body: 'Invalid access token', stall: true };
  const { log } = captureLog();
  const started = Date.now();
  const err = await expectFailure(connectToService(optionsFor(service.port, log, { ca: [pki.caPem] }), undefined, { timeoutMs: 20_000 }));
  assert.is(err.code, ConnectErrorCode.REFUSED, err.message);
  assert.is(err.reason, 'Invalid access token');
  assert.ok(Date.now() - started < 9000, `took ${Date.now() - started} ms`);
});

test('HTTP 4xx hints: client token mismatch, other mode, wrong region', async () => {
  const { log } = captureLog();
  const cases: Array<[number, string, string]> = [
    [400, 'client-token does not match', 'client token does not match'],
    [403, 'token is not valid for destination mode', 'not for source mode'],
    [401, 'Unauthorized', 'region'],
    [403, '{"message":"Invalid access token"}', 'region'],
  ];
  for (const [status, body, hint] of cases) {
    service.behaviour.reject = { status, body };
    const err = await expectFailure(connectToService(optionsFor(service.port, log, { ca: [pki.caPem] })));
    assert.is(err.refused, true, body);
    assert.match(err.hint ?? '', hint, body);
  }
  assert.is(service.requests.length, cases.length);
});

test('HTTP 5xx is retryable, not refused', async () => {
  service.behaviour.reject = { status: 503, text: 'Service Unavailable', body: 'try later' };
  const { log } = captureLog();
  const err = await expectFailure(connectToService(optionsFor(service.port, log, { ca: [pki.caPem] })));
  assert.is(err.code, ConnectErrorCode.HTTP_STATUS);
  assert.is(err.refused, false);
  assert.is(err.status, 503);
  assert.match(err.message, '(HTTP/1.1 503 Service Unavailable) "try later"');
});

test('a closed port is a retryable TCP error', async () => {
  const closed = await startFakeService(pki);
  const port = closed.port;
  await closed.close();
  const { log } = captureLog();
  const err = await expectFailure(connectToService(optionsFor(port, log, { ca: [pki.caPem] })));
  assert.is(err.code, ConnectErrorCode.TCP);
  assert.match(err.message, 'Could not connect to proxy server:');
  assert.match(err.message, 'ECONNREFUSED');
});

test('an unknown host name is a retryable DNS error', async () => {
  const { log } = captureLog();
  const err = await expectFailure(connectToService(optionsFor(443, log, { endpoint: { host: 'no-such-host.invalid', port: 443 } })));
  assert.is(err.code, ConnectErrorCode.DNS);
  assert.match(err.message, 'no-such-host.invalid');
});

test('abort rejects with the signal reason and leaves nothing open', async () => {
  const { log } = captureLog();
  const controller = new AbortController();
  const reason = new Error('stopped by test');
  service.behaviour.reject = { status: 503 };
  const attempt = connectToService(optionsFor(service.port, log, { ca: [pki.caPem] }), controller.signal);
  controller.abort(reason);
  const err = await expectFailure(attempt);
  assert.is(err as unknown, reason);
});

test('an attempt that gets no answer times out with the stage named', async () => {
  const { createServer } = await import('node:net');
  const mute = createServer(() => {});
  mute.listen(0, '127.0.0.1');
  await new Promise((resolve) => mute.once('listening', resolve));
  const port = (mute.address() as { port: number }).port;
  const { log } = captureLog();
  try {
    // The bound covers the steps before the TLS handshake (trust store, TCP connect on loopback):
    // wide, so that a busy machine still reaches the handshake that never completes.
    const err = await expectFailure(connectToService(optionsFor(port, log), undefined, { timeoutMs: 1500 }));
    assert.is(err.code, ConnectErrorCode.TIMEOUT);
    assert.match(err.message, 'TLS handshake');
  } finally {
    mute.close();
  }
});

test.run();
