/**
 * A throw-away OpenSSH server on a free port of 127.0.0.1 (host and client keys generated in a
 * temporary directory, key authentication only), and `ssh`/`scp` runs against a tunnel port.
 * Used by the interop suite and the e2e ssh tests.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pattern, writeAll } from '../helpers/apps';
import { freePort, within } from '../helpers/wait';

export interface Sshd {
  port: number;
  dir: string;
  /** `ssh -p <port> root@127.0.0.1 <command>`; resolves with its stdout. */
  ssh(port: number, command: string, timeoutMs?: number): Promise<string>;
  /** `scp -P <port> <from> <to>` (remote paths as `root@127.0.0.1:<path>`). */
  scp(port: number, from: string, to: string, timeoutMs?: number): Promise<void>;
  /** A file of `bytes` pattern bytes in the server's directory; resolves with its path and sha256. */
  makeFile(name: string, bytes: number, seed: number): Promise<{ path: string; sha256: string }>;
  close(): Promise<void>;
}

function run(command: string, args: string[], timeoutMs: number, log: () => string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { timeout: timeoutMs, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${command} ${args.at(-1)} failed: ${stderr.trim() || err.message}\nsshd said:\n${log()}`));
      else resolve(stdout);
    });
  });
}

export async function fileSha256(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

export async function startSshd(): Promise<Sshd> {
  const dir = mkdtempSync(join(tmpdir(), 'localproxy-interop-ssh-'));
  let output = '';
  const log = () => output;
  // sshd refuses to start without its privilege separation directory.
  mkdirSync('/run/sshd', { recursive: true });
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'host_ed25519')], 10_000, log);
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'id_ed25519')], 10_000, log);
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
  const sshd: ChildProcess = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', join(dir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
  const listening = new Promise<void>((resolve, reject) => {
    sshd.stderr!.on('data', (data: Buffer) => {
      output = (output + data.toString()).slice(-16384);
      if (output.includes('Server listening on 127.0.0.1')) resolve();
    });
    sshd.once('exit', (code) => reject(new Error(`sshd exited with ${code}: ${output}`)));
  });
  await within(listening, 10_000, 'sshd listening');
  const client = ['-F', '/dev/null', '-i', join(dir, 'id_ed25519'), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR'];
  return {
    port,
    dir,
    ssh: (tunnelPort, command, timeoutMs = 30_000) => run('ssh', ['-p', String(tunnelPort), ...client, 'root@127.0.0.1', command], timeoutMs, log),
    scp: async (tunnelPort, from, to, timeoutMs = 60_000) => { await run('scp', ['-P', String(tunnelPort), ...client, from, to], timeoutMs, log); },
    async makeFile(name, bytes, seed) {
      const path = join(dir, name);
      const file = createWriteStream(path);
      await writeAll(file, pattern(bytes, seed));
      file.end();
      await once(file, 'close');
      return { path, sha256: await fileSha256(path) };
    },
    async close() {
      if (sshd.exitCode === null && sshd.signalCode === null) {
        sshd.kill('SIGTERM');
        await once(sshd, 'exit');
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
