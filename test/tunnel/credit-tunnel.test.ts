/**
 * Per-connection credit end to end (issue 14), in-process: our relay over TLS and our two
 * proxies at default settings (credit on by negotiation). One connection's application reads
 * nothing while another connection of the tunnel moves more than the inbound budget; it must
 * complete, and the stalled connection's bytes must all arrive once its application reads.
 * Without credit, the stalled bytes fill the shared inbound budget (16 MiB) and the WebSocket
 * reader pauses for everyone: the bulk transfer then never completes within its bound.
 */
import { once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { defaultSettings } from '../../src/index';
import { connectTo, hashUntilClose, pattern, patternSha256, receiveAll, sendPattern, sinkServer, writeAll, blastServer, type AppServer, type Received, type SinkServer } from '../helpers/apps';
import { startTunnel, type Tunnel } from '../helpers/tunnel';
import { within } from '../helpers/wait';

const MiB = 1024 * 1024;
/** Past the default inbound budget, so that without credit the tunnel would stall. */
const STALL_BYTES = defaultSettings().inboundBudgetBytes + 8 * MiB;
const BULK_BYTES = 64 * MiB;

const tunnelCredit = suite('tunnel: per-connection credit through our relay');

/** A destination application that accepts connections and reads nothing until `read()`. */
async function stalledApp(): Promise<{ port: number; accepted: Promise<Socket>; read(): void; received: Promise<Received>; close(): void }> {
  let onAccept!: (s: Socket) => void;
  const accepted = new Promise<Socket>((resolve) => { onAccept = resolve; });
  let socket: Socket | undefined;
  let received!: Promise<Received>;
  const server: Server = createServer({ pauseOnConnect: true }, (s) => {
    socket = s;
    received = hashUntilClose(s);
    s.pause();
    onAccept(s);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as { port: number }).port,
    accepted,
    read: () => socket?.resume(),
    get received() { return accepted.then(() => received); },
    close: () => { socket?.destroy(); server.close(); },
  };
}

let t: Tunnel;
let stall: Awaited<ReturnType<typeof stalledApp>>;
let sink: SinkServer;
let blast: AppServer;
let stallSource: AppServer;

tunnelCredit.before(async () => {
  stall = await stalledApp();
  sink = await sinkServer();
  blast = await blastServer(BULK_BYTES, 33);
  stallSource = await blastServer(STALL_BYTES, 34);
  t = await startTunnel({ destinationMap: { STALL: stall.port, FAST: sink.port, DOWN: blast.port, STALLDOWN: stallSource.port } });
});

tunnelCredit.after(async () => {
  await t?.close();
  stall?.close();
  for (const app of [sink, blast, stallSource]) await app?.close();
});

tunnelCredit('upload: a destination app that reads nothing does not hold up another connection; its bytes all arrive once it reads', async () => {
  const client = await connectTo(t.port('STALL'));
  client.on('error', () => {});
  const closed = once(client, 'close');
  const writing = writeAll(client, pattern(STALL_BYTES, 31)).then(() => client.end());
  await within(stall.accepted, 10_000, 'the stalled app accepts');
  const bulk = await within(sendPattern(t.port('FAST'), BULK_BYTES, { seed: 32 }), 60_000, `${BULK_BYTES / MiB} MiB through another connection while one app reads nothing`);
  const [got] = await within(sink.waitFor(1), 10_000, 'the sink closes');
  assert.is(got.bytes, BULK_BYTES);
  assert.is(got.sha256, bulk.sha256, 'byte-exact');
  stall.read();
  await within(writing, 60_000, 'the stalled connection takes all its bytes once its app reads');
  const stalled = await within(stall.received, 60_000, 'the stalled app receives everything');
  await within(closed, 10_000, 'the client sees the close');
  assert.is(stalled.bytes, STALL_BYTES);
  assert.is(stalled.sha256, patternSha256(STALL_BYTES, 31), 'in order');
});

tunnelCredit('download: a source-side client that reads nothing does not hold up another download; its bytes all arrive once it reads', async () => {
  const slow = await connectTo(t.port('STALLDOWN'));
  slow.pause();
  const slowReceived = hashUntilClose(slow);
  const loaded = await within(receiveAll(t.port('DOWN')), 60_000, `${BULK_BYTES / MiB} MiB download while another client reads nothing`);
  assert.is(loaded.bytes, BULK_BYTES);
  assert.is(loaded.sha256, patternSha256(BULK_BYTES, 33));
  slow.resume();
  const got = await within(slowReceived, 60_000, 'the stalled client receives everything');
  assert.is(got.bytes, STALL_BYTES);
  assert.is(got.sha256, patternSha256(STALL_BYTES, 34));
});

tunnelCredit.run();
