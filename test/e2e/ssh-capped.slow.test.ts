/**
 * Issue 13 as a user meets it: a terminal beside a copy. Real `ssh` commands through a tunnel
 * whose relay holds each direction to 800 kB/s (`--bandwidth`, the cloud's class of limit)
 * while `scp` copies 8 MiB through the same tunnel. Without pacing each ssh round trip waited
 * seconds behind the copy's megabytes in the socket buffers, and a command (a handful of round
 * trips: connect, key exchange, authentication, the command) took tens of seconds.
 */
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { fileSha256, startSshd, type Sshd } from '../interop/sshd';
import { startTunnel, type Tunnel } from '../helpers/tunnel';

const MiB = 1024 * 1024;
const ssh = suite('e2e: ssh commands through a tunnel capped at 800 kB/s while scp copies 8 MiB');

let sshd: Sshd;
let tunnel: Tunnel;

ssh.before(async () => {
  sshd = await startSshd();
  tunnel = await startTunnel({ destinationMap: { SSH: sshd.port }, bandwidth: 800_000 });
});

ssh.after(async () => {
  await tunnel?.close();
  await sshd?.close();
});

ssh('each ssh command answers in under 10 s while the copy runs, and the copy arrives byte-exact', async () => {
  const port = tunnel.port('SSH');
  const file = await sshd.makeFile('local.bin', 8 * MiB, 13);
  const remote = join(sshd.dir, 'remote.bin');
  let copying = true;
  const started = performance.now();
  const copy = sshd.scp(port, file.path, `root@127.0.0.1:${remote}`, 120_000).finally(() => { copying = false; });
  const times: number[] = [];
  for (let i = 0; copying; i++) {
    const t0 = performance.now();
    const out = await sshd.ssh(port, `echo command ${i}`, 60_000);
    times.push(performance.now() - t0);
    assert.is(out, `command ${i}\n`);
  }
  await copy;
  const seconds = (performance.now() - started) / 1000;
  assert.is(await fileSha256(remote), file.sha256, 'the copy');
  assert.ok(times.length >= 3, `${times.length} commands during a ${seconds.toFixed(1)} s copy`);
  assert.ok(Math.max(...times) < 10_000, `ssh commands took ${times.map((t) => (t / 1000).toFixed(1)).join(', ')} s`);
});

ssh.run();
