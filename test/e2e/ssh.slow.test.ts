import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, mkdirSync, mkdtempSync, rmSync, writeFileSync, createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { pattern, writeAll } from '../helpers/apps';
import { startTunnel, type Tunnel } from '../helpers/tunnel';
import { freePort, within } from '../helpers/wait';

const MiB = 1024 * 1024;
const ssh = suite('e2e: real OpenSSH server and client through the tunnel');

let dir: string;
let sshd: ChildProcess;
let tunnel: Tunnel;
const sshdLog: string[] = [];

function run(command: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { timeout: timeoutMs, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${command} failed: ${stderr.trim() || err.message}\nsshd said:\n${sshdLog.join('')}`));
      else resolve(stdout);
    });
  });
}

async function fileSha256(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function clientOptions(): string[] {
  return ['-F', '/dev/null', '-i', join(dir, 'id_ed25519'), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR'];
}

ssh.before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'localproxy-ssh-'));
  // sshd refuses to start without its privilege separation directory.
  mkdirSync('/run/sshd', { recursive: true });
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'host_ed25519')], 10_000);
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'id_ed25519')], 10_000);
  const port = await freePort();
  writeFileSync(join(dir, 'sshd_config'), [
    `Port ${port}`,
    'ListenAddress 127.0.0.1',
    `HostKey ${join(dir, 'host_ed25519')}`,
    `AuthorizedKeysFile ${join(dir, 'id_ed25519.pub')}`,
    `PidFile ${join(dir, 'sshd.pid')}`,
    'StrictModes no',
    'UsePAM no',
    'PermitRootLogin prohibit-password',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    // scp speaks SFTP by default since OpenSSH 9.0.
    'Subsystem sftp internal-sftp',
    '',
  ].join('\n'));
  sshd = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', join(dir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
  const listening = new Promise<void>((resolve, reject) => {
    sshd.stderr!.on('data', (data: Buffer) => {
      sshdLog.push(data.toString());
      if (sshdLog.join('').includes('Server listening on 127.0.0.1')) resolve();
    });
    sshd.once('exit', (code) => reject(new Error(`sshd exited with ${code}: ${sshdLog.join('')}`)));
  });
  await within(listening, 10_000, 'sshd listening');
  tunnel = await startTunnel({ destinationMap: { SSH: port } });

  const file = createWriteStream(join(dir, 'local.bin'));
  await writeAll(file, pattern(100 * MiB, 42));
  file.end();
  await once(file, 'close');
});

ssh.after(async () => {
  await tunnel?.close();
  if (sshd && sshd.exitCode === null) {
    sshd.kill('SIGTERM');
    await once(sshd, 'exit');
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

ssh('ssh runs a command through the tunnel', async () => {
  const out = await run('ssh', ['-p', String(tunnel.port('SSH')), ...clientOptions(), 'root@127.0.0.1', 'echo hello'], 30_000);
  assert.is(out, 'hello\n');
});

ssh('scp copies 100 MiB up and back down with matching sha256', async () => {
  const port = String(tunnel.port('SSH'));
  const expected = await fileSha256(join(dir, 'local.bin'));
  await run('scp', ['-P', port, ...clientOptions(), join(dir, 'local.bin'), `root@127.0.0.1:${join(dir, 'remote.bin')}`], 90_000);
  assert.is(await fileSha256(join(dir, 'remote.bin')), expected, 'uploaded file');
  await run('scp', ['-P', port, ...clientOptions(), `root@127.0.0.1:${join(dir, 'remote.bin')}`, join(dir, 'back.bin')], 90_000);
  assert.is(await fileSha256(join(dir, 'back.bin')), expected, 'downloaded file');
});

ssh.run();
