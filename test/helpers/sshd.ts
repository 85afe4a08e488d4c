/**
 * A real OpenSSH server on 127.0.0.1 for end-to-end tests: fresh host and client keys in a
 * temporary directory, key authentication only, `internal-sftp` for scp. `run()` runs ssh/scp
 * with the client options and a bound; failures carry sshd's log.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, within } from './wait';

export interface Sshd {
  port: number;
  /** The temporary directory (keys, config; a place for test files). */
  dir: string;
  /** `-F /dev/null -i KEY` and options for a non-interactive, non-verifying client. */
  clientOptions(): string[];
  /** Runs `command args` (ssh, scp), resolving with stdout; rejects after `timeoutMs` or on failure. */
  run(command: string, args: string[], timeoutMs: number): Promise<string>;
  stop(): Promise<void>;
}

export async function fileSha256(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

export async function startSshd(): Promise<Sshd> {
  const dir = mkdtempSync(join(tmpdir(), 'localproxy-sshd-'));
  const log: string[] = [];
  const run = (command: string, args: string[], timeoutMs: number): Promise<string> => new Promise((resolve, reject) => {
    execFile(command, args, { timeout: timeoutMs, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${command} failed: ${stderr.trim() || err.message}\nsshd said:\n${log.join('')}`));
      else resolve(stdout);
    });
  });
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
  const sshd: ChildProcess = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', join(dir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
  const listening = new Promise<void>((resolve, reject) => {
    sshd.stderr!.on('data', (data: Buffer) => {
      log.push(data.toString());
      if (log.join('').includes('Server listening on 127.0.0.1')) resolve();
    });
    sshd.once('exit', (code) => reject(new Error(`sshd exited with ${code}: ${log.join('')}`)));
  });
  try {
    await within(listening, 10_000, 'sshd listening');
  } catch (err) {
    sshd.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    port,
    dir,
    clientOptions: () => ['-F', '/dev/null', '-i', join(dir, 'id_ed25519'), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR'],
    run,
    async stop() {
      if (sshd.exitCode === null && sshd.signalCode === null) {
        sshd.kill('SIGTERM');
        await once(sshd, 'exit');
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
