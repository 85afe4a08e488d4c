/**
 * Clients that misbehave on purpose, for the relay's hardening tests and bench/relay-hostile.ts:
 * idle TCP connections, slowloris requests, refused upgrades that are never read, from any
 * loopback source address (127.0.0.0/8 is all loopback on Linux, so a test can be many hosts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import type { RelayLimits } from '../../src/relay/limits';
import { within } from '../helpers/wait';

/** Descriptors a process holds now. */
export function fdCount(pid: number | 'self' = 'self'): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** Resident set size of a process in MiB. */
export function rssMiB(pid: number | 'self' = 'self'): number {
  const kib = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return kib ? Number(kib[1]) / 1024 : NaN;
}

/**
 * Re-checks `check` every `everyMs` until it holds, at most `ms`: for state outside this
 * process (another process's descriptors), which sends no event.
 */
export async function until(check: () => boolean, ms: number, what: string, everyMs = 50): Promise<void> {
  if (check()) return;
  await within(new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      if (check()) {
        clearInterval(timer);
        resolve();
      }
    }, everyMs);
    timer.unref();
  }), ms, what);
}

/** A TCP connection from `localAddress` that sends nothing. Errors (a reset by the relay) only close it. */
export async function idleConnection(port: number, localAddress = '127.0.0.1'): Promise<Socket> {
  const socket = netConnect({ port, host: '127.0.0.1', localAddress });
  socket.on('error', () => socket.destroy());
  await Promise.race([once(socket, 'connect'), once(socket, 'close')]);
  return socket;
}

/** A completed TLS handshake (trusting `ca`), then whatever the caller writes. */
export async function tlsConnection(port: number, ca: string | undefined, localAddress = '127.0.0.1'): Promise<Socket> {
  const tcp = netConnect({ port, host: '127.0.0.1', localAddress });
  tcp.on('error', () => tcp.destroy());
  const socket = tlsConnect({ socket: tcp, ca, servername: 'localhost' });
  socket.on('error', () => socket.destroy());
  await Promise.race([once(socket, 'secureConnect'), once(socket, 'close')]);
  return socket;
}

/** An upgrade request that the relay refuses (an unknown token). */
export function badUpgrade(token = 'AQGbogus'): string {
  return `GET /tunnel?local-proxy-mode=source HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: aws.iot.securetunneling-3.0\r\naccess-token: ${token}\r\n\r\n`;
}

export interface RelayChild {
  process: ChildProcess;
  pid: number;
  port: number;
  caPem?: string;
  limits: RelayLimits;
  stderr(): string;
  stop(): Promise<void>;
}

const CHILD = join(__dirname, 'relay-child.ts');

/**
 * The relay in its own process (tsx), started by bash with `ulimit -n` set when given, so
 * that its descriptors can be counted apart from the test's.
 */
export async function startRelayChild(options: Record<string, unknown>, { fdLimit, log = 3 }: { fdLimit?: number; log?: number } = {}): Promise<RelayChild> {
  const command = `${fdLimit ? `ulimit -n ${fdLimit}; ` : ''}exec "${process.execPath}" --import tsx "${CHILD}"`;
  const child = spawn('bash', ['-c', command], { env: { ...process.env, RELAY_CHILD_OPTIONS: JSON.stringify(options), RELAY_CHILD_LOG: String(log) }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-65536); });
  const exited = once(child, 'exit');
  const info = await within(new Promise<{ port: number; caPem?: string; limits: RelayLimits }>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      stdout += d;
      const nl = stdout.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(stdout.slice(0, nl)));
    });
    void exited.then(() => reject(new Error(`relay child exited: ${stderr}`)));
  }), 30_000, 'relay child listening').catch((err) => { child.kill('SIGKILL'); throw err; });
  return {
    process: child,
    pid: child.pid!,
    ...info,
    stderr: () => stderr,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * Each byte of `bytes` as a WebSocket binary message of its own: masked as a client sends it
 * (7 bytes on the wire per byte), or unmasked as a server does (3 bytes).
 */
export function oneBytePerMessage(bytes: Uint8Array, masked: boolean): Buffer {
  const mask = [0x37, 0xfa, 0x21, 0x3d];
  const per = masked ? 7 : 3;
  const out = Buffer.allocUnsafe(bytes.length * per);
  for (let i = 0, o = 0; i < bytes.length; i++, o += per) {
    out[o] = 0x82; // FIN, binary
    if (masked) {
      out[o + 1] = 0x81;
      out[o + 2] = mask[0];
      out[o + 3] = mask[1];
      out[o + 4] = mask[2];
      out[o + 5] = mask[3];
      out[o + 6] = bytes[i] ^ mask[0];
    } else {
      out[o + 1] = 0x01;
      out[o + 2] = bytes[i];
    }
  }
  return out;
}

/**
 * Writes `wire` to `socket` again and again, as fast as the socket takes it, while `running`:
 * the receiver decides the rate. `rounds`: the copies handed over so far.
 */
export class Flood {
  rounds = 0;
  private running = false;

  constructor(private readonly socket: Writable, private readonly wire: Buffer) {
    socket.on('drain', () => this.pump());
  }

  start(): void {
    this.running = true;
    this.pump();
  }

  stop(): void {
    this.running = false;
  }

  private pump(): void {
    while (this.running && !(this.socket as Writable & { destroyed: boolean }).destroyed) {
      this.rounds++;
      if (!this.socket.write(this.wire)) return;
    }
  }
}
