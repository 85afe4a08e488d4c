import { once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { PassThrough } from 'node:stream';
import { createServer as createTlsServer } from 'node:tls';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ConnectErrorCode, connectRequest, openProxyTunnel, readConnectResponse, CONNECT_RESPONSE_MAX_BYTES, type ConnectError } from '../../src/transport/index';
import { waitUntil, within } from '../helpers/wait';
import { captureLog, makePki, type Pki } from './fixtures';

/** A fake web proxy: records the request header, answers with `reply` (written in `pieces`), then echoes. */
interface FakeProxy {
  port: number;
  requests: string[];
  close(): Promise<void>;
}

async function startFakeProxy(reply: string | Buffer, options: { pieces?: number; tls?: Pki; answer?: boolean } = {}): Promise<FakeProxy> {
  const sockets = new Set<Socket>();
  const requests: string[] = [];
  const onSocket = (socket: Socket): void => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      socket.off('data', onData);
      requests.push(head.subarray(0, end + 4).toString('latin1'));
      if (options.answer === false) return;
      const bytes = Buffer.from(reply);
      const pieces = options.pieces ?? 1;
      const size = Math.ceil(bytes.length / pieces);
      socket.setNoDelay(true);
      for (let i = 0; i < bytes.length; i += size) socket.write(bytes.subarray(i, i + size));
      socket.pipe(socket);
    };
    socket.on('data', onData);
  };
  const server: Server = options.tls ? createTlsServer({ cert: options.tls.certPem, key: options.tls.keyPem }, onSocket) : createServer(onSocket);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as { port: number }).port,
    requests,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

async function expectFailure(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await within(promise, 10_000, 'proxy tunnel');
  } catch (err) {
    return err as ConnectError;
  }
  throw new Error('the tunnel unexpectedly opened');
}

const target = { host: 'data.tunneling.iot.eu-west-1.amazonaws.com', port: 443 };
const test = suite('HTTP CONNECT');

test('the CONNECT request always carries Host, and Basic auth when configured', () => {
  assert.is(connectRequest(target), `CONNECT ${target.host}:443 HTTP/1.1\r\nHost: ${target.host}:443\r\n\r\n`);
  assert.is(
    connectRequest({ host: '::1', port: 8443 }, 'us@er:p:ss w'),
    'CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\nProxy-Authorization: Basic dXNAZXI6cDpzcyB3\r\n\r\n',
  );
});

test('fixes reference bug 5.4: bytes after the reply header are kept, not dropped', async () => {
  const proxy = await startFakeProxy('HTTP/1.1 200 Connection established\r\nVia: test\r\n\r\nEARLY-BYTES');
  const { log } = captureLog();
  try {
    const socket = await within(openProxyTunnel({ proxy: { protocol: 'http', host: '127.0.0.1', port: proxy.port }, target, log }), 5000, 'tunnel');
    socket.resume();
    const [first] = await within(once(socket, 'data'), 5000, 'leftover bytes');
    assert.is(first.toString(), 'EARLY-BYTES');
    socket.write('echo me');
    const [echoed] = await within(once(socket, 'data'), 5000, 'echo');
    assert.is(echoed.toString(), 'echo me');
    socket.destroy();
    assert.is(proxy.requests[0], connectRequest(target));
  } finally {
    await proxy.close();
  }
});

test('fixes reference bug 5.4: a reply split at every offset is read completely', async () => {
  const reply = Buffer.from('HTTP/1.1 200 OK\r\nProxy-Agent: x\r\n\r\nTAIL');
  for (let cut = 1; cut < reply.length; cut++) {
    const stream = new PassThrough();
    const result = readConnectResponse(stream, 5000);
    stream.write(reply.subarray(0, cut));
    stream.write(reply.subarray(cut));
    const { status, statusLine, leftover } = await within(result, 5000, `reply cut at ${cut}`);
    assert.is(status, 200, `cut at ${cut}`);
    assert.is(statusLine, 'HTTP/1.1 200 OK');
    // What the header read did not take stays in the stream for the next reader.
    const rest = Buffer.concat([leftover, (stream.read() as Buffer | null) ?? Buffer.alloc(0)]);
    assert.is(rest.toString(), 'TAIL', `cut at ${cut}`);
  }
});

test('a reply written byte by byte over a real socket is read completely: the tunnel then carries only the application bytes', async () => {
  // Header lines after the status line, one byte per write: a reader that stopped at the
  // first chunk or the first line would leave the rest of the header in the tunnel.
  const reply = 'HTTP/1.0 200 Connection established\r\nProxy-Agent: byte-by-byte\r\nVia: 1.0 test\r\n\r\n';
  const proxy = await startFakeProxy(reply, { pieces: reply.length });
  const { log, lines } = captureLog();
  try {
    const socket = await within(openProxyTunnel({ proxy: { protocol: 'http', host: '127.0.0.1', port: proxy.port }, target, log }), 5000, 'tunnel');
    let received = '';
    socket.on('data', (d: Buffer) => { received += d.toString('latin1'); });
    socket.resume();
    socket.write('echo me');
    await waitUntil(socket, 'data', () => received.length >= 'echo me'.length, 5000, 'the echo through the tunnel');
    assert.is(received, 'echo me');
    assert.ok(lines.some((l) => l.includes('TCP tunnel established successfully')), lines.join(''));
    socket.destroy();
  } finally {
    await proxy.close();
  }
});

test('control characters in the proxy reply are escaped in the error, and a long reason is cut', async () => {
  const proxy = await startFakeProxy(`HTTP/1.1 403 \u001b[31mForbidden\u001b]0;title\u0007 ${'x'.repeat(5000)}\r\n\r\n`);
  const { log } = captureLog();
  try {
    const err = await expectFailure(openProxyTunnel({ proxy: { protocol: 'http', host: '127.0.0.1', port: proxy.port }, target, log }));
    assert.is(err.code, ConnectErrorCode.PROXY_REFUSED);
    assert.match(err.message, 'refused the CONNECT (HTTP/1.1 403 \\x1b[31mForbidden\\x1b]0;title\\x07 xxx');
    assert.not.match(err.message, /[\u0000-\u001f]/);
    assert.ok(err.message.length < 600, `${err.message.length} characters`);
  } finally {
    await proxy.close();
  }
});

test('407 is reported with the proxy status line and is not "refused" (it is retried)', async () => {
  const proxy = await startFakeProxy('HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="x"\r\nContent-Length: 0\r\n\r\n');
  const { log } = captureLog();
  try {
    const err = await expectFailure(openProxyTunnel({ proxy: { protocol: 'http', host: '127.0.0.1', port: proxy.port, auth: 'user:wrong' }, target, log }));
    assert.is(err.code, ConnectErrorCode.PROXY_REFUSED);
    assert.is(err.refused, false);
    assert.is(err.status, 407);
    assert.match(err.message, 'proxy authentication required (HTTP/1.1 407 Proxy Authentication Required)');
    assert.not.match(err.message, 'wrong');
    assert.match(proxy.requests[0], 'Proxy-Authorization: Basic dXNlcjp3cm9uZw==\r\n');
  } finally {
    await proxy.close();
  }
});

test('other refusals name the status line and a hint', async () => {
  const cases: Array<[string, string]> = [
    ['HTTP/1.1 403 Forbidden\r\n\r\n', 'configured properly'],
    ['HTTP/1.1 502 Bad Gateway\r\n\r\n', "server's logs"],
    ['HTTP/1.1 301 Moved\r\nLocation: x\r\n\r\n', 'correct Web proxy address'],
  ];
  const { log } = captureLog();
  for (const [reply, hint] of cases) {
    const proxy = await startFakeProxy(reply);
    try {
      const err = await expectFailure(openProxyTunnel({ proxy: { protocol: 'http', host: '127.0.0.1', port: proxy.port }, target, log }));
      assert.is(err.code, ConnectErrorCode.PROXY_REFUSED);
      assert.match(err.message, reply.split('\r\n')[0]);
      assert.match(err.message, hint);
    } finally {
      await proxy.close();
    }
  }
});

test('a reply header over the size bound is refused', async () => {
  const huge = `HTTP/1.1 200 OK\r\n${'X-Filler: yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\r\n'.repeat(Math.ceil(CONNECT_RESPONSE_MAX_BYTES / 50) + 10)}\r\n`;
  const proxy = await startFakeProxy(huge);
  const { log } = captureLog();
  try {
    const err = await expectFailure(openProxyTunnel({ proxy: { protocol: 'http', host: '127.0.0.1', port: proxy.port }, target, log }));
    assert.is(err.code, ConnectErrorCode.PROXY_REFUSED);
    assert.match(err.message, `longer than ${CONNECT_RESPONSE_MAX_BYTES} bytes`);
  } finally {
    await proxy.close();
  }
});

test('a proxy that never answers is given up on after the time bound', async () => {
  const proxy = await startFakeProxy('', { answer: false });
  const { log } = captureLog();
  try {
    const err = await expectFailure(openProxyTunnel({ proxy: { protocol: 'http', host: '127.0.0.1', port: proxy.port }, target, log, responseTimeoutMs: 200 }));
    assert.is(err.code, ConnectErrorCode.PROXY_REFUSED);
    assert.match(err.message, 'did not answer the CONNECT request within 0.2 s');
  } finally {
    await proxy.close();
  }
});

test('a malformed reply and a closed connection are reported', async () => {
  const { log } = captureLog();
  const ssh = await startFakeProxy('SSH-2.0-OpenSSH_9.2\r\n\r\n');
  try {
    const err = await expectFailure(openProxyTunnel({ proxy: { protocol: 'http', host: '127.0.0.1', port: ssh.port }, target, log }));
    assert.match(err.message, 'malformed reply: "SSH-2.0-OpenSSH_9.2"');
  } finally {
    await ssh.close();
  }
  const closer = createServer((socket) => socket.once('data', () => socket.end()));
  closer.listen(0, '127.0.0.1');
  await once(closer, 'listening');
  try {
    const err = await expectFailure(openProxyTunnel({ proxy: { protocol: 'http', host: '127.0.0.1', port: (closer.address() as { port: number }).port }, target, log }));
    assert.match(err.message, 'closed the connection before answering');
  } finally {
    closer.close();
  }
});

test('an unreachable proxy is a retryable proxy error', async () => {
  const proxy = await startFakeProxy('');
  const port = proxy.port;
  await proxy.close();
  const { log } = captureLog();
  const err = await expectFailure(openProxyTunnel({ proxy: { protocol: 'http', host: '127.0.0.1', port }, target, log }));
  assert.is(err.code, ConnectErrorCode.PROXY);
  assert.match(err.message, `Could not connect to Web Proxy http://127.0.0.1:${port}`);
  assert.match(err.message, 'ECONNREFUSED');
});

test('an https:// proxy: TLS to the proxy verified with the CA, SNI for its name', async () => {
  const pki = makePki('proxy CA');
  const proxy = await startFakeProxy('HTTP/1.1 200 OK\r\n\r\n', { tls: pki });
  const { log, text } = captureLog();
  try {
    const socket = await within(openProxyTunnel({ proxy: { protocol: 'https', host: 'localhost', port: proxy.port }, target, log, ca: [pki.caPem] }), 5000, 'tunnel');
    socket.resume();
    socket.write('ping');
    const [echoed] = await within(once(socket, 'data'), 5000, 'echo through TLS proxy');
    assert.is(echoed.toString(), 'ping');
    assert.is((socket as unknown as { servername?: string }).servername, 'localhost');
    socket.destroy();

    const err = await expectFailure(openProxyTunnel({ proxy: { protocol: 'https', host: 'localhost', port: proxy.port }, target, log }));
    assert.is(err.code, ConnectErrorCode.PROXY);
    assert.match(err.message, 'Could not perform SSL handshake with Web Proxy https://localhost:');
    assert.match(err.message, 'certificate not accepted');

    const insecure = await within(openProxyTunnel({ proxy: { protocol: 'https', host: 'localhost', port: proxy.port }, target, log, insecure: true }), 5000, 'insecure tunnel');
    insecure.destroy();
    assert.match(text(), 'SECURITY WARNING: SSL host verification is disabled for web proxy');
  } finally {
    await proxy.close();
    pki.remove();
  }
});

test.run();
