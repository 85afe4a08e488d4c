/**
 * Issue 14: the inbound budget counts what is retained, not payload lengths. A scripted peer
 * (the test's fake service, over TLS) sends a destination proxy — a process of the built CLI,
 * without the credit extension — 4,000 WebSocket messages, each carrying 1 byte for an
 * application that does not read and 60 KB for one that does. Each 1-byte payload is a view into
 * its 60 KB message: kept as such, the 4,000 of them pin 229 MiB while the budget counts 4 KB.
 * The proxy's peak RSS must stay flat, and every byte must still arrive.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { Relay } from '../../src/index';
import { encodeFrame } from '../../src/protocol/framing';
import { MessageType as T } from '../../src/protocol/message';
import { hashUntilClose, type Received } from '../helpers/apps';
import { caDir, spawnProxy, type ChildProxy } from '../helpers/child';
import { within } from '../helpers/wait';
import { startFakeService, type FakeService } from '../tunnel/fake-service';

const MESSAGES = 4000;
const LARGE = 60 * 1024;
const PEAK_RSS_BOUND_MIB = 150;
/** More than loopback's socket buffers take for a reader that does not read; less than the inbound budget. */
const FILL_BYTES = 12 * 1024 * 1024;

const retained = suite('e2e: memory retained for an app that does not read is counted (issue 14)');

/** An application server whose accepted connection is handed to the test, paused. */
async function app(): Promise<{ server: Server; port: number; accepted: Promise<Socket> }> {
  let onAccept!: (s: Socket) => void;
  const accepted = new Promise<Socket>((resolve) => { onAccept = resolve; });
  const server = createServer({ pauseOnConnect: true }, (s) => onAccept(s));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as { port: number }).port, accepted };
}

retained(`4,000 messages of 1 byte for a stalled app and ${LARGE / 1024} KB for a reading one: peak RSS under ${PEAK_RSS_BOUND_MIB} MiB, every byte delivered`, async () => {
  let service: FakeService | undefined;
  let proxy: ChildProxy | undefined;
  const stalledApp = await app();
  const readingApp = await app();
  service = await startFakeService();
  // spawnProxy needs the endpoint's port and the certificate to trust: the fake service has both.
  const endpoint = { port: service.port, caPem: service.caPem } as unknown as Relay;
  const ca = caDir(endpoint);
  try {
    proxy = await spawnProxy({ relay: endpoint, ca, mode: 'destination', accessToken: 'retained-memory-test-token', services: { STALL: stalledApp.port, READ: readingApp.port } });
    const peer = await service.peer(0, 15_000);
    peer.serviceIds('STALL', 'READ');
    await proxy.ready;
    peer.send({ type: T.STREAM_START, serviceId: 'STALL', streamId: 1, connectionId: 1 }, { type: T.STREAM_START, serviceId: 'READ', streamId: 1, connectionId: 1 });
    const stalled = await within(stalledApp.accepted, 10_000, 'the stalled app accepts');
    const reading = await within(readingApp.accepted, 10_000, 'the reading app accepts');
    const readingDone: Promise<Received> = hashUntilClose(reading);
    reading.resume();

    // First the stalled app's kernel buffers fill up (its share of the budget): from then on the
    // proxy keeps what that app is sent.
    const fill = Buffer.alloc(63 * 1024, 0xee);
    const fillMessage = encodeFrame({ type: T.DATA, serviceId: 'STALL', streamId: 1, connectionId: 1, payload: fill });
    for (let sent = 0; sent < FILL_BYTES; sent += fill.length) {
      await new Promise<void>((resolve, reject) => peer.ws.send(fillMessage, (err) => (err ? reject(err) : resolve())));
    }
    const large = Buffer.alloc(LARGE);
    const expected = createHash('sha256');
    const tiny = Buffer.alloc(MESSAGES);
    for (let i = 0; i < MESSAGES; i++) {
      large.fill(i & 0xff);
      tiny[i] = (i * 7) & 0xff;
      expected.update(large);
      const message = Buffer.concat([
        encodeFrame({ type: T.DATA, serviceId: 'STALL', streamId: 1, connectionId: 1, payload: tiny.subarray(i, i + 1) }),
        encodeFrame({ type: T.DATA, serviceId: 'READ', streamId: 1, connectionId: 1, payload: large }),
      ]);
      // One message at a time on the wire: what the proxy does not read waits in this process.
      await new Promise<void>((resolve, reject) => peer.ws.send(message, (err) => (err ? reject(err) : resolve())));
    }
    peer.send({ type: T.STREAM_RESET, serviceId: 'READ', streamId: 1 });
    const got = await within(readingDone, 60_000, 'the reading app receives everything');
    assert.is(got.bytes, MESSAGES * LARGE);
    assert.is(got.sha256, expected.digest('hex'), 'byte-exact');

    const rss = proxy.peakRssMiB();
    console.log(`destination peak RSS: ${rss.toFixed(1)} MiB`);
    assert.ok(rss < PEAK_RSS_BOUND_MIB, `peak RSS ${rss.toFixed(1)} MiB (the 1-byte payloads must not pin their messages)`);

    const stalledDone = hashUntilClose(stalled);
    peer.send({ type: T.STREAM_RESET, serviceId: 'STALL', streamId: 1 });
    stalled.resume();
    const small = await within(stalledDone, 30_000, 'the stalled app reads its bytes');
    const fillCount = Math.ceil(FILL_BYTES / fill.length);
    assert.is(small.bytes, fillCount * fill.length + MESSAGES);
    const stalledExpected = createHash('sha256');
    for (let i = 0; i < fillCount; i++) stalledExpected.update(fill);
    assert.is(small.sha256, stalledExpected.update(tiny).digest('hex'), 'in order');
  } finally {
    await proxy?.stop();
    await service?.close();
    ca.remove();
    stalledApp.server.close();
    readingApp.server.close();
  }
});

retained.run();
