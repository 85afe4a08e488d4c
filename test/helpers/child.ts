/**
 * Proxies as separate processes, for peak-RSS and kill tests: the built CLI
 * (`node dist/localproxy.cjs -e 127.0.0.1:<relay port> -c <dir with the relay cert> -s|-d ...`,
 * token in AWSIOT_TUNNEL_ACCESS_TOKEN), at `-v 4` so the readiness lines ("Listening for new
 * connection on port", "Successfully established websocket connection") can be awaited.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultSettings, exportSettings, type Settings } from '../../src/index';
import { freePort, within } from './wait';
import { startRelayForTests, type Relay } from './tunnel';

const root = new URL('../..', import.meta.url).pathname;
export const CLI = join(root, 'dist/localproxy.cjs');

/** A directory holding the relay's self-signed certificate, for `-c`. Removed by the returned function. */
export function caDir(relay: Relay): { dir: string; file: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'localproxy-ca-'));
  const file = join(dir, 'relay.pem');
  writeFileSync(file, relay.caPem ?? '');
  return { dir, file, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Peak resident set size (VmHWM) of a live process in MiB, from /proc/<pid>/status. */
export function peakRssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = /^VmHWM:\s+(\d+) kB/m.exec(status);
  if (!kib) throw new Error(`no VmHWM in /proc/${pid}/status`);
  return Number(kib[1]) / 1024;
}

export interface ChildSpec {
  relay: Relay;
  ca: { dir: string; file: string };
  mode: 'source' | 'destination';
  accessToken: string;
  /** Service id → port ("" = V1 form). Source port 0 is replaced by a free port. */
  services: Record<string, number>;
  clientType?: 'V1' | 'V2';
  /** Over the defaults; the CLI gets them as a `--settings-json` file next to the certificate. */
  settings?: Partial<Settings>;
  extraArgs?: string[];
  /** `-v` (at least 4, for the readiness lines); default 4. */
  verbose?: number;
}

export interface ChildProxy {
  process: ChildProcess;
  /** Source: service id → listening port. */
  ports: Record<string, number>;
  /** Resolves when the proxy is ready (bounded by 15 s); rejects if it exits first. */
  ready: Promise<void>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The last 64 KiB of its stderr and stdout. */
  output(): string;
  peakRssMiB(): number;
  /** SIGTERM (or the given signal) and wait for the exit, bounded; SIGKILL after 5 s. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export async function spawnProxy(spec: ChildSpec): Promise<ChildProxy> {
  const ports: Record<string, number> = {};
  for (const [id, port] of Object.entries(spec.services)) ports[id] = spec.mode === 'source' && port === 0 ? await freePort() : port;
  const mapping = Object.entries(ports).map(([id, port]) => (id === '' ? String(port) : `${id}=${port}`)).join(',');
  const env = { ...process.env, AWSIOT_TUNNEL_ACCESS_TOKEN: spec.accessToken };
  const args = [CLI, '-e', `127.0.0.1:${spec.relay.port}`, '-c', spec.ca.dir, spec.mode === 'source' ? '-s' : '-d', mapping, '-v', String(spec.verbose ?? 4)];
  if (spec.clientType) args.push('-y', spec.clientType);
  if (spec.settings) {
    const file = join(spec.ca.dir, `settings-${spec.mode}.json`);
    writeFileSync(file, exportSettings({ ...defaultSettings(), ...spec.settings }));
    args.push('--settings-json', file);
  }
  const child: ChildProcess = spawn(process.execPath, [...args, ...(spec.extraArgs ?? [])], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const exited = once(child, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null }));
  const ready = new Promise<void>((resolve, reject) => {
    const wanted = spec.mode === 'source' ? Object.keys(ports).length : 1;
    const onOutput = (data: Buffer) => {
      output = (output + data.toString()).slice(-65536);
      if (process.env.LOCALPROXY_TEST_LOG) process.stderr.write(data);
      const seen = spec.mode === 'source'
        ? (output.match(/Listening for new connection on port \d+/g) ?? []).length
        : (output.match(/Successfully established websocket connection/g) ?? []).length;
      if (seen >= wanted) resolve();
    };
    child.stdout!.on('data', onOutput);
    child.stderr!.on('data', onOutput);
    void exited.then(({ code, signal }) => reject(new Error(`${spec.mode} exited (${code ?? signal}) before ready:\n${output}`)));
  });
  // A child that is expected to exit (and never become ready) must not leave a rejection unhandled.
  const boundedReady = within(ready, 15_000, `${spec.mode} child ready`);
  boundedReady.catch(() => {});
  return {
    process: child,
    ports,
    ready: boundedReady,
    exited,
    output: () => output,
    peakRssMiB: () => peakRssMiB(child.pid!),
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

export interface ChildTunnel {
  relay: Relay;
  tunnel: Awaited<ReturnType<Relay['openTunnel']>>;
  source: ChildProxy;
  destination: ChildProxy;
  /** Starts (again) the source or destination process with the same token and mapping. */
  restart(side: 'source' | 'destination'): Promise<ChildProxy>;
  close(): Promise<void>;
}

/**
 * An in-process relay with a source and a destination as child processes (see `spawnProxy`).
 * `destinationMap`: service id → application port on 127.0.0.1; the source listens on free ports.
 */
export async function startChildTunnel(destinationMap: Record<string, number>, options: { settings?: Partial<Settings> } = {}): Promise<ChildTunnel> {
  const relay = await startRelayForTests();
  const tunnel = await relay.openTunnel({ services: Object.keys(destinationMap) });
  const ca = caDir(relay);
  const sourceMap = Object.fromEntries(Object.keys(destinationMap).map((id) => [id, 0]));
  const start = async (side: 'source' | 'destination') => {
    const child = await spawnProxy({
      relay, ca, mode: side,
      accessToken: side === 'source' ? tunnel.sourceAccessToken : tunnel.destinationAccessToken,
      services: side === 'source' ? sourceMap : destinationMap,
      settings: options.settings,
    });
    await child.ready;
    return child;
  };
  const result: ChildTunnel = {
    relay,
    tunnel,
    source: undefined as unknown as ChildProxy,
    destination: undefined as unknown as ChildProxy,
    async restart(side) {
      const child = await start(side);
      result[side] = child;
      return child;
    },
    async close() {
      await Promise.allSettled([result.source?.stop(), result.destination?.stop()]);
      await relay.close();
      ca.remove();
    },
  };
  try {
    await result.restart('destination');
    await result.restart('source');
  } catch (err) {
    await result.close();
    throw err;
  }
  return result;
}
