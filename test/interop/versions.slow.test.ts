/**
 * The C++ proxy with `-y V1` / `-y V2` (one service) against ours, in both directions: a port
 * check (open and close at once), then real connections one after another, byte-exact.
 *
 * C++ source with -y → our destination without -y: our destination detects the older format.
 * Each connection starts once the C++ source has re-opened its listener ("Listening ..." again:
 * with -y it closes it after every connection and refuses connects until then).
 *
 * Our source → C++ destination with -y: once with the same -y on our source (as the reference's
 * README asks of a source facing an older destination), once without (issue 11; Decisions 6).
 * Each connection starts once ours has closed the previous one: V1/V2 carry one connection per
 * stream. Without -y our source cannot know the destination's format before it has answered
 * anything, and a C++ destination with -y wedges on a CONNECTION_RESET (it closes the connection,
 * sends STREAM_RESET, never re-sets the service, and the next STREAM_START or CONNECTION_START
 * stops its WebSocket reader for good; the reference's own source without -y fails the same way).
 * So a source ends a stream with STREAM_RESET when its only connection closes before the peer
 * sent anything (valid V3 too), and with CONNECTION_RESET once the peer has shown it speaks V3
 * (ours-source-cpp-destination holds that the C++ V3 destination takes both).
 *
 * Towards a C++ V1/V2 destination the application is a sink that hashes uploads, not sshd: when
 * sshd closes while the source's reset for the same connection is on its way, the reference's
 * V1/V2 destination stops reading its WebSocket for good (spec 4.11.4); that happens with the
 * C++ -y V1 source as well (6 runs of 6: ssh then scp never got through). A sink closes only
 * after the tunnel did, and it never sends (a download cut by the port check's STREAM_RESET
 * while the C++ destination still sends it stops that destination too).
 */
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { connectTo, patternSha256, sendPattern, sinkServer, type SinkServer } from '../helpers/apps';
import { cppListening } from '../helpers/cpp';
import { within } from '../helpers/wait';
import { sinkResult, startMixed, type Mixed, type PeerSpec } from './mixed';
import { fileSha256, startSshd, type Sshd } from './sshd';

const MiB = 1024 * 1024;
const versions = suite('interop: the C++ proxy with -y V1 / -y V2');

let sshd: Sshd;
let sink: SinkServer;
let file: { path: string; sha256: string };

versions.before(async () => {
  [sshd, sink] = await Promise.all([startSshd(), sinkServer()]);
  file = await sshd.makeFile('up.bin', 4 * MiB, 7);
});

versions.after(async () => {
  await Promise.all([sshd?.close(), sink?.close()]);
});

/** Resolves once the source is ready for the next connection (see the module comment). */
async function previousConnectionOver(m: Mixed, mark: number): Promise<void> {
  if (m.source.kind === 'ours') await m.source.log.waitFor(/Disconnected from/, { from: mark, what: 'our source closes the connection' });
  else {
    await m.source.log.waitFor(/Listening for new connection on port/, { from: mark, what: 'the C++ source listens again' });
    await Promise.all(Object.values(m.source.ports).map((port) => cppListening(port)));
  }
}

/** A port check, then the source is given time to see it closed. */
async function portCheck(m: Mixed, port: number): Promise<void> {
  const mark = m.source.log.mark();
  const check = await connectTo(port);
  check.destroy();
  await previousConnectionOver(m, mark);
}

async function portCheckThenUploads(clientType: 'V1' | 'V2' | undefined, destination: PeerSpec): Promise<void> {
  const m = await startMixed({ services: ['SSH1'], apps: { SSH1: sink.port }, source: { kind: 'ours', clientType }, destination });
  try {
    await m.run(async () => {
      const port = m.port('SSH1');
      await portCheck(m, port);
      for (const [seed, bytes] of [[1, MiB], [2, MiB], [3, 4 * MiB]] as const) {
        const mark = m.source.log.mark();
        const before = sink.results.length;
        await within(sendPattern(port, bytes, { seed }), 20_000, `upload ${seed}`);
        const received = await sinkResult(sink, before, patternSha256(bytes, seed), `upload ${seed} reaches the sink byte-exact`);
        assert.is(received.bytes, bytes, `upload ${seed}: bytes`);
        await previousConnectionOver(m, mark);
      }
      assert.is(m.destination.log.matches(/Connected to 127\.0\.0\.1/).length, 4, 'the C++ destination connected once per connection');
    });
  } finally {
    await m.close();
  }
}

async function portCheckThenSsh(source: PeerSpec, service: string): Promise<void> {
  const m = await startMixed({ services: ['SSH1'], apps: { SSH1: sshd.port }, source, destination: { kind: 'ours' } });
  const remote = join(sshd.dir, `remote-${source.clientType}.bin`);
  try {
    await m.run(async () => {
      const port = m.port(service);
      await portCheck(m, port);
      let mark = m.source.log.mark();
      assert.is(await sshd.ssh(port, 'echo hello'), 'hello\n', 'ssh right after the port check');
      await previousConnectionOver(m, mark);
      mark = m.source.log.mark();
      await sshd.scp(port, file.path, `root@127.0.0.1:${remote}`);
      assert.is(await fileSha256(remote), file.sha256, 'scp up');
      await previousConnectionOver(m, mark);
      await sshd.scp(port, `root@127.0.0.1:${remote}`, `${remote}.back`);
      assert.is(await fileSha256(`${remote}.back`), file.sha256, 'scp down');
    });
  } finally {
    await m.close();
  }
}

versions('our source -y V1 → C++ destination -y V1 (`-d PORT`): a port check, then three uploads byte-exact', async () => {
  await portCheckThenUploads('V1', { kind: 'cpp', clientType: 'V1', services: { '': sink.port } });
});

versions('our source -y V2 → C++ destination -y V2 (`-d SSH1=PORT`): a port check, then three uploads byte-exact', async () => {
  await portCheckThenUploads('V2', { kind: 'cpp', clientType: 'V2' });
});

versions('issue 11: our source without -y → C++ destination -y V1 (`-d PORT`): a port check, then three uploads byte-exact', async () => {
  await portCheckThenUploads(undefined, { kind: 'cpp', clientType: 'V1', services: { '': sink.port } });
});

versions('issue 11: our source without -y → C++ destination -y V2 (`-d SSH1=PORT`): a port check, then three uploads byte-exact', async () => {
  await portCheckThenUploads(undefined, { kind: 'cpp', clientType: 'V2' });
});

versions('C++ source -y V1 (`-s PORT`) → our destination: a port check, then ssh, scp up, scp down byte-exact', async () => {
  await portCheckThenSsh({ kind: 'cpp', clientType: 'V1', services: { '': 0 } }, '');
});

versions('C++ source -y V2 (`-s SSH1=PORT`) → our destination: a port check, then ssh, scp up, scp down byte-exact', async () => {
  await portCheckThenSsh({ kind: 'cpp', clientType: 'V2' }, 'SSH1');
});

versions.run();
