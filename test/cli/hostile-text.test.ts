/**
 * Text from outside reaches the terminal escaped and bounded (issue 20 item 3): control
 * characters become `\x1b`-style escapes and a long value is cut, wherever it is printed.
 * The service here is a real `ws` server over TLS (test/tunnel/fake-service.ts) or a raw
 * TLS server answering the upgrade; the proxy is the library's startProxy.
 */
import { once } from 'node:events';
import { createServer, type AddressInfo } from 'node:net';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { printable, printableList } from '../../src/printable';
import { MessageType } from '../../src/protocol/message';
import { generateSelfSigned } from '../../src/relay/certs';
import { connectToService } from '../../src/transport/connect';
import type { ConnectError } from '../../src/transport/errors';
import { startProxy } from '../../src/tunnel/proxy';
import { within } from '../helpers/wait';
import { fakeOptions, startFakeService, type LogCapture } from '../tunnel/fake-service';

const ESCAPES = '\u001b[31mred\u001b]0;title\u0007\r\n\u202e';
const SHOWN = '\\x1b[31mred\\x1b]0;title\\x07\\r\\n\\u202e';
const CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202e]/;

const text = suite('printable');

text('control characters, DEL, C1 and bidirectional overrides are escaped; other text is kept', () => {
  assert.is(printable(ESCAPES), SHOWN);
  assert.is(printable('\u0000\u007f\u009b\u2028'), '\\x00\\x7f\\x9b\\u2028');
  assert.is(printable('SSH1 ünïcödé D:\\certs 🙂'), 'SSH1 ünïcödé D:\\certs 🙂');
});

text('a long value is cut with the count of what is not shown, never inside a surrogate pair', () => {
  assert.is(printable('a'.repeat(65_536)), `${'a'.repeat(200)}…(65336 more characters)`);
  assert.is(printable(`${'a'.repeat(199)}🙂🙂`), `${'a'.repeat(199)}…(4 more characters)`);
  assert.is(printable('abcdef', 3), 'abc…(3 more characters)');
});

text('a list shows at most 20 items, each printable', () => {
  assert.is(printableList(['a', '\u001b']), 'a, \\x1b');
  const many = Array.from({ length: 1000 }, (_, i) => `S${i}`);
  assert.is(printableList(many), `${many.slice(0, 20).join(', ')}, …(980 more)`);
});

function assertClean(capture: LogCapture, extra = ''): void {
  const all = capture.lines.join('') + extra;
  assert.not.match(all, CONTROL, `a control character reached the log:\n${JSON.stringify(all).slice(0, 3000)}`);
  for (const line of all.split('\n')) assert.ok(line.length < 1000, `a log line of ${line.length} characters`);
}

const hostile = suite('a hostile service');

hostile('a 60 KB service id with escapes in SERVICE_IDS: the refusal and the log show it escaped and cut', async () => {
  const service = await startFakeService();
  const options = fakeOptions(service, 'destination', { SSH1: 22 });
  const proxy = startProxy(options);
  try {
    const peer = await service.peer();
    // Near the largest id a frame can carry (65535 bytes for the whole message).
    const id = `${ESCAPES}${'x'.repeat(60_000)}`;
    peer.serviceIds(ESCAPES, ESCAPES, id, 'SSH1');
    const end = await within(proxy.done, 5000, 'the proxy ends');
    assert.is(end.kind, 'refused');
    assert.match(end.message, `the tunnel has service ids [${SHOWN}, ${SHOWN}xx`);
    assert.match(end.message, 'more characters)');
    assert.ok(end.message.length < 1000, `${end.message.length} characters`);
    assertClean(options.capture, end.message);
    assert.ok(options.capture.has(`Duplicate service Id received, ignore: ${SHOWN}`));
  } finally {
    await proxy.close();
    await service.close();
  }
});

hostile('messages for an unknown 60 KB service id and a close reason with escapes: escaped and cut in the log', async () => {
  const service = await startFakeService();
  const options = fakeOptions(service, 'destination', { SSH1: 22 });
  const proxy = startProxy(options);
  try {
    const peer = await service.peer();
    peer.serviceIds('SSH1');
    await within(proxy.ready, 5000, 'ready');
    peer.send({ type: MessageType.STREAM_START, streamId: 1, serviceId: `${ESCAPES}${'y'.repeat(60_000)}` });
    await options.capture.waitFor('Dropping messages for unknown service id');
    assert.ok(options.capture.has(`unknown service id ${SHOWN}yyy`));
    peer.ws.close(1000, 'bye \u001b]0;pwned\u0007');
    const end = await within(proxy.done, 5000, 'the proxy ends');
    assert.is(end.kind, 'tunnel-closed');
    assert.ok(options.capture.has('Reason: bye \\x1b]0;pwned\\x07'), options.capture.lines.join(''));
    assertClean(options.capture, end.message);
  } finally {
    await proxy.close();
    await service.close();
  }
});

hostile('a single-port destination takes its service id from SERVICE_IDS: the id with escapes is escaped in every connection log line', async () => {
  const app = createServer((socket) => socket.end());
  app.listen(0, '127.0.0.1');
  await once(app, 'listening');
  const service = await startFakeService();
  const options = fakeOptions(service, 'destination', { '': (app.address() as AddressInfo).port });
  const proxy = startProxy(options);
  try {
    const peer = await service.peer();
    const id = `${ESCAPES}SSH`;
    peer.serviceIds(id);
    await within(proxy.ready, 5000, 'ready');
    peer.send({ type: MessageType.STREAM_START, streamId: 1, serviceId: id, connectionId: 1 });
    await options.capture.waitFor(`${SHOWN}SSH stream#1 conn#1`);
    await options.capture.waitFor('Received service id');
    assert.ok(options.capture.has(`Received service id : ${SHOWN}SSH`), options.capture.lines.join(''));
    assertClean(options.capture);
  } finally {
    await proxy.close();
    await service.close();
    app.close();
  }
});

hostile('a refusal whose body and status text carry escapes: the error shows them escaped', async () => {
  const cert = generateSelfSigned();
  const server = createTlsServer({ cert: cert.certPem, key: cert.keyPem }, (socket: TLSSocket) => {
    socket.on('error', () => {});
    let head = '';
    socket.on('data', (d: Buffer) => {
      head += d.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      const body = JSON.stringify({ message: `token ${ESCAPES} rejected` });
      socket.end(`HTTP/1.1 403 Forbidden\u001b[2J\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  const options = fakeOptions({ port, caPem: cert.certPem, peers: [], peer: () => Promise.reject(new Error('unused')), close: () => Promise.resolve() }, 'source', { SSH1: 0 });
  try {
    let err: ConnectError | undefined;
    try {
      await within(connectToService({ ...options, ca: [cert.certPem] }), 10_000, 'the refusal');
    } catch (e) {
      err = e as ConnectError;
    }
    assert.ok(err, 'the upgrade was refused');
    assert.is(err!.refused, true, err!.message);
    // One line: the line ends became spaces, the rest is escaped.
    assert.match(err!.message, `"token ${SHOWN.replace('\\r\\n', ' ')} rejected"`);
    assert.match(err!.message, '(HTTP/1.1 403 Forbidden\\x1b[2J)');
    assert.not.match(err!.message, CONTROL);
    assertClean(options.capture);
  } finally {
    server.close();
  }
});

text.run();
hostile.run();
