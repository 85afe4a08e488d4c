/**
 * How a mixed pair ends and comes back: CloseTunnel, token rotation, a relay restart with
 * `--state`, and a V1-form mapping against a tunnel of several services. Both kinds of proxy run
 * as processes through our relay over TLS; each case runs its tunnels side by side.
 *
 * What each is documented to do: the C++ proxy exits 0 on a close frame and on an HTTP 4xx
 * (spec 3.4, 3.9); ours exits 0 when the service closes the tunnel and 3 when it refuses
 * (README "Exit codes").
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { connectTo, hashUntilClose, patternSha256, sendPattern, sinkServer, type SinkServer } from '../helpers/apps';
import { cppListening, withLogs } from '../helpers/cpp';
import { within } from '../helpers/wait';
import { sinkResult, spawnPeer, startInteropRelay, startMixed, type Mixed, type Peer } from './mixed';

const MiB = 1024 * 1024;
const lifecycle = suite('interop: CloseTunnel, token rotation, relay restart, V1-form mapping');

let sink: SinkServer;

lifecycle.before(async () => {
  sink = await sinkServer();
});

lifecycle.after(async () => {
  await sink?.close();
});

/** 1 MiB uploaded through the pair, checked at the sink (each seed is used once in the file). */
async function uploaded(m: Mixed, seed: number, what: string): Promise<void> {
  const before = sink.results.length;
  await within(sendPattern(m.port('SSH1'), MiB, { seed }), 20_000, what);
  const received = await sinkResult(sink, before, patternSha256(MiB, seed), `${what}: the sink receives it byte-exact`);
  assert.is(received.bytes, MiB, `${what}: bytes`);
}

async function exitCode(peer: Peer, what: string): Promise<number | null> {
  const { code, signal } = await within(peer.exited, 15_000, what);
  assert.is(signal, null, `${what}: not killed by a signal`);
  return code;
}

/** Both orientations: ours source ↔ C++ destination and C++ source ↔ ours destination. */
function bothPairs(extra: { state?: boolean; cppClientToken?: string } = {}): Promise<Mixed[]> {
  const cpp = { kind: 'cpp' as const, clientToken: extra.cppClientToken };
  return Promise.all([
    startMixed({ services: ['SSH1'], apps: { SSH1: sink.port }, source: { kind: 'ours' }, destination: cpp, state: extra.state }),
    startMixed({ services: ['SSH1'], apps: { SSH1: sink.port }, source: cpp, destination: { kind: 'ours' }, state: extra.state }),
  ]);
}

async function closeAll(pairs: Mixed[]): Promise<void> {
  await Promise.all(pairs.map((m) => m.close()));
}

lifecycle('CloseTunnel: the C++ proxy and ours both exit 0 (either mode), and an open connection is closed', async () => {
  const pairs = await bothPairs();
  try {
    await withLogs(pairs.flatMap((m) => m.logs()), async () => {
      await Promise.all(pairs.map(async (m) => {
        const open = await connectTo(m.port('SSH1'));
        open.write('hello');
        const ended = hashUntilClose(open);
        await m.destination.log.waitFor(/Connected to/, { what: `${m.destination.kind} destination connected` });
        await m.relay.closeTunnel(m.tunnel.tunnelId);
        for (const peer of [m.source, m.destination]) assert.is(await exitCode(peer, `${peer.kind} ${peer.mode} exits`), 0, `${peer.kind} ${peer.mode} exit code`);
        await within(ended, 10_000, 'the open connection is closed');
        assert.ok(m.source.kind !== 'cpp' || m.source.log.matches(/Web socket close received\. Code: 1000/).length === 1, 'the C++ source saw the close frame');
        assert.ok(m.destination.kind !== 'cpp' || m.destination.log.matches(/Web socket close received\. Code: 1000/).length === 1, 'the C++ destination saw the close frame');
      }));
    });
  } finally {
    await closeAll(pairs);
  }
});

lifecycle('token rotation (ALL): both proxies exit 0 (either mode); restarted with the new tokens, the next connection is byte-exact', async () => {
  const pairs = await bothPairs();
  try {
    await withLogs(pairs.flatMap((m) => m.logs()), async () => {
      await Promise.all(pairs.map(async (m, i) => {
        await uploaded(m, 1 + i, 'before the rotation');
        const tokens = await m.relay.rotateAccessToken(m.tunnel.tunnelId, 'ALL');
        for (const peer of [m.source, m.destination]) assert.is(await exitCode(peer, `${peer.kind} ${peer.mode} exits`), 0, `${peer.kind} ${peer.mode} exit code`);
        await m.start('destination', { accessToken: tokens.destinationAccessToken });
        await m.start('source', { accessToken: tokens.sourceAccessToken });
        await uploaded(m, 3 + i, 'with the rotated tokens');
      }));
    });
  } finally {
    await closeAll(pairs);
  }
});

lifecycle('relay restart with --state: the C++ proxy (with -i) and ours reconnect in either mode and the next connection is byte-exact; the C++ proxy without -i exits 0', async () => {
  // Without -i the C++ proxy sends no client token, so its access token is spent by the first
  // handshake and its reconnect is refused (spec 3.7: a 4xx, then exit 0). -i makes the relay
  // accept the same token again as long as the client token matches; ours derives a client
  // token from the access token and the host name (README), so it needs nothing.
  const clientToken = 'interop-client-token-0123456789abcdef';
  const pairs = await bothPairs({ state: true, cppClientToken: clientToken });
  const spent = await startMixed({ services: ['SSH1'], apps: { SSH1: sink.port }, source: { kind: 'ours' }, destination: { kind: 'cpp' }, state: true });
  try {
    await withLogs([...pairs, spent].flatMap((m) => m.logs()), async () => {
      await Promise.all(pairs.map((m, i) => uploaded(m, 5 + i, 'before the restart')));
      const marks = pairs.map((m) => [m.source.log.mark(), m.destination.log.mark()]);
      await Promise.all([...pairs, spent].map((m) => m.restartRelay()));
      await Promise.all(pairs.map(async (m, i) => {
        // Reconnected: a new WebSocket on both sides, and the C++ source listening again (it
        // closes its listeners with the session; ours keep theirs). The C++ proxy retries
        // every 2.5 s (spec 3.6), ours with backoff from 2.5 s.
        const [sourceMark, destinationMark] = marks[i]!;
        await m.destination.log.waitFor(/Successfully established websocket connection/, { from: destinationMark, what: `${m.destination.kind} destination reconnects` });
        await m.source.log.waitFor(m.source.kind === 'cpp' ? /Listening for new connection/ : /Successfully established websocket connection/, { from: sourceMark, what: `${m.source.kind} source reconnects` });
        if (m.source.kind === 'cpp') await Promise.all(Object.values(m.source.ports).map((port) => cppListening(port)));
        await uploaded(m, 7 + i, 'after the restart');
      }));
      assert.is(await exitCode(spent.destination, 'the C++ destination without -i exits'), 0, 'its exit code');
      assert.is(spent.destination.log.matches(/Proxy server rejected web socket upgrade request: \(HTTP\/1\.1 40\d/).length, 1, 'it was refused once');
    });
  } finally {
    await closeAll([...pairs, spent]);
  }
});

lifecycle('a V1-form mapping (-s PORT / -d PORT) against a tunnel of two services: ours exits 3 with one line naming the services (not 0 after the session breaks)', async () => {
  const relay = await startInteropRelay();
  const tunnels = [await relay.relay.openTunnel({ services: ['SSH1', 'HTTP1'] }), await relay.relay.openTunnel({ services: ['SSH1', 'HTTP1'] })];
  const peers: Peer[] = [];
  try {
    // Each of ours faces a C++ peer with the full mapping on the other side of its tunnel.
    peers.push(await spawnPeer(relay, 'destination', { kind: 'cpp', accessToken: tunnels[0]!.destinationAccessToken, services: { SSH1: sink.port, HTTP1: sink.port } }));
    peers.push(await spawnPeer(relay, 'source', { kind: 'cpp', accessToken: tunnels[1]!.sourceAccessToken, services: { SSH1: 0, HTTP1: 0 } }));
    await Promise.all(peers.map((p) => p.ready));
    const ours = [
      await spawnPeer(relay, 'source', { kind: 'ours', accessToken: tunnels[0]!.sourceAccessToken, services: { '': 0 } }),
      await spawnPeer(relay, 'destination', { kind: 'ours', accessToken: tunnels[1]!.destinationAccessToken, services: { '': sink.port } }),
    ];
    peers.push(...ours);
    await withLogs(peers.map((p) => p.log), async () => {
      for (const [peer, flag] of [[ours[0]!, '-s'], [ours[1]!, '-d']] as const) {
        assert.is(await exitCode(peer, `ours ${peer.mode} exits`), 3, `ours ${peer.mode} exit code`);
        const problems = peer.log.matches(/\[(error|fatal)\]/);
        assert.is(problems.length, 1, `one error line from ours ${peer.mode}: ${problems.join(' / ')}`);
        assert.match(problems[0]!, new RegExp(`several services \\[SSH1, HTTP1\\] but ${flag} \\S+ names none`));
        assert.is(peer.log.matches(/^\s+at /).length, 0, 'no stack trace');
        assert.is(peer.log.matches(/Listening for new connection|Connected to/).length, 0, 'nothing bound or connected');
      }
    });
  } finally {
    await Promise.allSettled(peers.map((p) => p.stop()));
    await relay.close();
  }
});

lifecycle.run();
