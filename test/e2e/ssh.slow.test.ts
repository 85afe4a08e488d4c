import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startTunnel, type Tunnel } from '../helpers/tunnel';
import { fileSha256, startSshd, type Sshd } from '../interop/sshd';

const MiB = 1024 * 1024;
const ssh = suite('e2e: real OpenSSH server and client through the tunnel');

let sshd: Sshd;
let tunnel: Tunnel;
let local: { path: string; sha256: string };

ssh.before(async () => {
  sshd = await startSshd();
  tunnel = await startTunnel({ destinationMap: { SSH: sshd.port } });
  local = await sshd.makeFile('local.bin', 100 * MiB, 42);
});

ssh.after(async () => {
  await tunnel?.close();
  await sshd?.close();
});

ssh('ssh runs a command through the tunnel', async () => {
  const out = await sshd.ssh(tunnel.port('SSH'), 'echo hello', 30_000);
  assert.is(out, 'hello\n');
});

ssh('scp copies 100 MiB up and back down with matching sha256', async () => {
  const port = tunnel.port('SSH');
  await sshd.scp(port, local.path, `root@127.0.0.1:${join(sshd.dir, 'remote.bin')}`, 90_000);
  assert.is(await fileSha256(join(sshd.dir, 'remote.bin')), local.sha256, 'uploaded file');
  await sshd.scp(port, `root@127.0.0.1:${join(sshd.dir, 'remote.bin')}`, join(sshd.dir, 'back.bin'), 90_000);
  assert.is(await fileSha256(join(sshd.dir, 'back.bin')), local.sha256, 'downloaded file');
});

ssh.run();
