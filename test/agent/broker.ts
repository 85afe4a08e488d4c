/**
 * A real MQTT broker for tests: Debian's mosquitto on a free port with a generated config,
 * TLS with certificates from a test CA made with openssl, and client certificates required
 * (`require_certificate true`, the certificate's CN is the user name) — the way AWS IoT Core
 * authenticates devices. Its log (`log_type all`) is what tests wait on.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, within } from '../helpers/wait';

export const MOSQUITTO = '/usr/sbin/mosquitto';

function openssl(args: string[], cwd: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('openssl', args, { cwd, timeout: 20_000 }, (err, _stdout, stderr) => {
      if (err) reject(new Error(`openssl ${args[0]} failed: ${stderr.trim() || err.message}`));
      else resolve();
    });
  });
}

export interface Credential {
  certFile: string;
  keyFile: string;
  cert: string;
  key: string;
}

/** A test CA in a temporary directory; `issue()` makes certificates signed by it. */
export class TestPki {
  readonly dir = mkdtempSync(join(tmpdir(), 'localproxy-pki-'));
  readonly caFile = join(this.dir, 'ca.pem');
  private serial = 1;

  async init(): Promise<this> {
    await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-subj', '/CN=localproxy test CA', '-days', '2'], this.dir);
    return this;
  }

  get caPem(): string {
    return readFileSync(this.caFile, 'utf8');
  }

  /** A certificate for `cn`; `server` adds the names 127.0.0.1 and localhost. */
  async issue(cn: string, options: { server?: boolean } = {}): Promise<Credential> {
    const name = `${cn.replace(/[^a-zA-Z0-9_-]/g, '_')}-${this.serial++}`;
    await openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`], this.dir);
    const ext = join(this.dir, `${name}.ext`);
    writeFileSync(ext, options.server ? 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' : 'extendedKeyUsage=clientAuth\n');
    await openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', String(1000 + this.serial), '-out', `${name}.pem`, '-days', '2', '-extfile', ext], this.dir);
    const certFile = join(this.dir, `${name}.pem`);
    const keyFile = join(this.dir, `${name}.key`);
    return { certFile, keyFile, cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8') };
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export interface BrokerConfigOptions {
  /** Keep sessions and queued messages on disk here, across restarts (`persistence true`). */
  persistenceDir?: string;
  /** More mosquitto.conf lines, before the listeners. */
  extra?: string[];
}

/** mosquitto with TLS and required client certificates (and a plain listener); stop and start again on the same ports. */
export class Broker {
  readonly port: number;
  readonly url: string;
  /** mqtt://127.0.0.1:PORT, anonymous, no TLS. */
  readonly plainUrl: string;
  private child: ChildProcess | undefined;
  private text = '';
  private readonly waiters = new Set<() => void>();
  private readonly config: string;

  private constructor(port: number, plainPort: number, config: string) {
    this.port = port;
    this.url = `mqtts://127.0.0.1:${port}`;
    this.plainUrl = `mqtt://127.0.0.1:${plainPort}`;
    this.config = config;
  }

  static async start(pki: TestPki, options: BrokerConfigOptions = {}): Promise<Broker> {
    const server = await pki.issue('localhost', { server: true });
    const port = await freePort();
    const plainPort = await freePort();
    const config = join(pki.dir, `mosquitto-${port}.conf`);
    writeFileSync(config, [
      // Running as root, mosquitto would switch to its own user, who cannot read the test's files.
      ...(process.getuid?.() === 0 ? ['user root'] : []),
      ...(options.persistenceDir ? ['persistence true', `persistence_location ${options.persistenceDir}/`] : ['persistence false']),
      ...(options.extra ?? []),
      'log_dest stderr',
      'log_type all',
      'log_timestamp false',
      'per_listener_settings true',
      `listener ${port} 127.0.0.1`,
      `cafile ${pki.caFile}`,
      `certfile ${server.certFile}`,
      `keyfile ${server.keyFile}`,
      'require_certificate true',
      'use_identity_as_username true',
      // Plain MQTT for the mqtt:// tests, anonymous as a local test broker would be.
      `listener ${plainPort} 127.0.0.1`,
      'allow_anonymous true',
      '',
    ].join('\n'));
    const broker = new Broker(port, plainPort, config);
    await broker.run();
    return broker;
  }

  /** Everything mosquitto has logged, across restarts. */
  get log(): string {
    return this.text;
  }

  /** Resolves once `pattern` matches the log after offset `from` (e.g. `broker.log.length` taken earlier). */
  waitFor(pattern: RegExp, ms: number, what: string, from = 0): Promise<void> {
    let waiter: (() => void) | undefined;
    const found = new Promise<void>((resolve) => {
      waiter = () => {
        if (pattern.test(this.text.slice(from))) resolve();
      };
      this.waiters.add(waiter);
      waiter();
    });
    return within(found, ms, `${what} (mosquitto log:\n${this.text.slice(-2000)})`).finally(() => this.waiters.delete(waiter!));
  }

  /** Resolves once `text` occurs `count` times in the log after offset `from` (counted as the log grows). */
  waitForCount(text: string, count: number, ms: number, what: string, from = 0): Promise<void> {
    let scanned = from;
    let seen = 0;
    let waiter: (() => void) | undefined;
    const found = new Promise<void>((resolve) => {
      waiter = () => {
        // Up to the last whole line, so a line split between two reads is counted once.
        const end = this.text.lastIndexOf('\n') + 1;
        if (end > scanned) {
          seen += this.text.slice(scanned, end).split(text).length - 1;
          scanned = end;
        }
        if (seen >= count) resolve();
      };
      this.waiters.add(waiter);
      waiter();
    });
    return within(found, ms, `${what} (${count} times; mosquitto log:\n${this.text.slice(-2000)})`).finally(() => this.waiters.delete(waiter!));
  }

  async run(): Promise<void> {
    const from = this.text.length;
    const child = spawn(MOSQUITTO, ['-c', this.config], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child = child;
    child.stderr!.on('data', (data: Buffer) => {
      this.text += data.toString();
      if (process.env.LOCALPROXY_TEST_LOG) process.stderr.write(`mosquitto: ${data}`);
      for (const waiter of this.waiters) waiter();
    });
    const exited = once(child, 'exit').then(([code]) => {
      throw new Error(`mosquitto exited with ${code}:\n${this.text.slice(from)}`);
    });
    exited.catch(() => {});
    await Promise.race([this.waitFor(/mosquitto version [\d.]+ running/, 10_000, 'mosquitto running', from), exited]);
  }

  async stop(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await once(child, 'exit');
    clearTimeout(timer);
  }
}
