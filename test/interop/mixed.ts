/**
 * A tunnel through our relay (TLS, certificate in a hashed CA directory written by
 * `--tls-self-signed DIR`) with one proxy of each kind as processes: the C++ reference
 * (test/helpers/cpp.ts) on one side, ours (`node dist/localproxy.cjs`, test/helpers/child.ts)
 * on the other — or any other combination.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRelay, type Settings } from '../../src/index';
import type { Received, SinkServer } from '../helpers/apps';
import { spawnProxy } from '../helpers/child';
import { LogWatch, spawnCpp, withLogs } from '../helpers/cpp';
import { testLogger, type Relay } from '../helpers/tunnel';
import { within } from '../helpers/wait';

export type Mode = 'source' | 'destination';

export interface PeerSpec {
  kind: 'ours' | 'cpp';
  /** Service id → port ("" = V1 form). Default: the tunnel's services; source ports free, destination ports from `apps`. */
  services?: Record<string, number>;
  clientType?: 'V1' | 'V2';
  /** C++ only: `-i` (ours derives one from the access token, README). */
  clientToken?: string;
  /** C++ only: its `--settings-json` content. */
  cppSettings?: Record<string, unknown>;
  /** Ours only: settings over the defaults. */
  settings?: Partial<Settings>;
  /** Ours only: `-v` (default $LOCALPROXY_OURS_VERBOSE or 4). */
  verbose?: number;
  /** Default: the tunnel's token for that side (a rotated one after `RotateTunnelAccessToken`). */
  accessToken?: string;
}

/** One proxy process of either kind. */
export interface Peer {
  kind: 'ours' | 'cpp';
  mode: Mode;
  log: LogWatch;
  ports: Record<string, number>;
  ready: Promise<void>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stop(): Promise<void>;
}

export interface MixedSpec {
  /** Service ids of the tunnel (SERVICE_IDS). */
  services: string[];
  /** Service id → the application's port on 127.0.0.1 (destination side). */
  apps: Record<string, number>;
  source: PeerSpec;
  destination: PeerSpec;
  /** Relay state file (`--state`), so `restartRelay()` keeps the tunnel. */
  state?: boolean;
}

export interface Mixed {
  relay: Relay;
  tunnel: Awaited<ReturnType<Relay['openTunnel']>>;
  /** The relay's certificate directory, given to both proxies as `-c`. */
  certDir: string;
  source: Peer;
  destination: Peer;
  /** The source's listening port for a service. */
  port(service: string): number;
  /** Starts `mode` (again) with its spec and the tunnel's token for that side; waits until ready. */
  start(mode: Mode, override?: Partial<PeerSpec>): Promise<Peer>;
  /** Closes the relay and starts it again on the same port with the same state file and certificate. */
  restartRelay(): Promise<void>;
  /** Logs of everything, for failure messages. */
  logs(): { text(): string }[];
  /** Runs a test body with both proxies' logs appended to its failure. */
  run<T>(fn: () => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** Our relay over TLS with its certificate in a hashed CA directory, as `localproxy relay --tls-self-signed DIR [--state FILE]`. */
export interface InteropRelay {
  readonly relay: Relay;
  /** The relay's certificate directory, given to every proxy as `-c`. */
  certDir: string;
  /** Closes the relay and starts it again on the same port with the same state file and certificate. */
  restart(): Promise<void>;
  close(): Promise<void>;
}

export async function startInteropRelay(options: { state?: boolean } = {}): Promise<InteropRelay> {
  const dir = mkdtempSync(join(tmpdir(), 'localproxy-interop-'));
  const certDir = join(dir, 'certs');
  const statePath = options.state ? join(dir, 'state.json') : undefined;
  const log = testLogger('relay');
  // Four services per tunnel, as the shared test relay allows (the cloud's default quota is 3).
  const limits = { maxServicesPerTunnel: 8 };
  let relay: Relay = await startRelay({ port: 0, selfSignedDir: certDir, statePath, log, limits });
  return {
    get relay() { return relay; },
    certDir,
    async restart() {
      const port = relay.port;
      await relay.close();
      relay = await startRelay({ port, selfSignedDir: certDir, statePath, log, limits });
    },
    async close() {
      await relay.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Starts one proxy of either kind on `relay`, not waiting for it to be ready. */
export async function spawnPeer(relay: InteropRelay, mode: Mode, spec: PeerSpec & { services: Record<string, number>; accessToken: string }): Promise<Peer> {
  if (spec.kind === 'cpp') {
    const child = await spawnCpp({
      relayPort: relay.relay.port, caDir: relay.certDir, mode, accessToken: spec.accessToken, services: spec.services,
      clientType: spec.clientType, clientToken: spec.clientToken, settings: spec.cppSettings, label: `cpp-${mode}`,
    });
    return { kind: 'cpp', mode, log: child.log, ports: child.ports, ready: child.ready, exited: child.exited, stop: () => child.stop() };
  }
  const child = await spawnProxy({
    relay: relay.relay, ca: { dir: relay.certDir, file: join(relay.certDir, 'cert.pem') }, mode, accessToken: spec.accessToken, services: spec.services,
    clientType: spec.clientType, settings: spec.settings, verbose: spec.verbose ?? Number(process.env.LOCALPROXY_OURS_VERBOSE ?? 4),
  });
  const log = new LogWatch(`ours-${mode}`).follow(child.process);
  return { kind: 'ours', mode, log, ports: child.ports, ready: child.ready, exited: child.exited, stop: () => child.stop() };
}

export async function startMixed(spec: MixedSpec): Promise<Mixed> {
  const relay = await startInteropRelay({ state: spec.state });
  const tunnel = await relay.relay.openTunnel({ services: spec.services });
  const peers: Partial<Record<Mode, Peer>> = {};
  const oldLogs: LogWatch[] = [];

  const start = async (mode: Mode, override: Partial<PeerSpec> = {}): Promise<Peer> => {
    const peerSpec = { ...spec[mode], ...override };
    const services = peerSpec.services
      ?? Object.fromEntries(spec.services.map((id) => [id, mode === 'source' ? (peers.source?.ports[id] ?? 0) : spec.apps[id]!]));
    const accessToken = peerSpec.accessToken ?? (mode === 'source' ? tunnel.sourceAccessToken : tunnel.destinationAccessToken);
    const previous = peers[mode];
    if (previous) oldLogs.push(previous.log);
    const peer = await spawnPeer(relay, mode, { ...peerSpec, services, accessToken });
    peers[mode] = peer;
    await peer.ready;
    return peer;
  };

  const mixed: Mixed = {
    get relay() { return relay.relay; },
    tunnel,
    certDir: relay.certDir,
    get source() { return peers.source!; },
    get destination() { return peers.destination!; },
    port(service) {
      const port = peers.source?.ports[service];
      if (port === undefined) throw new Error(`the source has no port for ${service}`);
      return port;
    },
    start,
    restartRelay: () => relay.restart(),
    logs: () => [...oldLogs, ...Object.values(peers).map((p) => p.log)],
    run: (fn) => withLogs(mixed.logs(), fn),
    async close() {
      await within(Promise.allSettled(Object.values(peers).map((p) => p.stop())), 10_000, 'peers stop');
      await relay.close();
    },
  };
  try {
    // The destination first: the relay answers a STREAM_START with a reset while it is absent.
    await start('destination');
    await start('source');
  } catch (err) {
    const logs = mixed.logs().map((l) => l.text()).join('\n');
    await mixed.close();
    throw Object.assign(err as Error, { message: `${(err as Error).message}\n${logs}` });
  }
  return mixed;
}

/**
 * The result of the connection to `sink` (after its first `from` results) whose bytes hash to
 * `sha256`: port checks and other cases' connections end at the same sink in any order.
 * Each wait for one more finished connection is bounded by `ms`.
 */
export async function sinkResult(sink: SinkServer, from: number, sha256: string, what: string, ms = 10_000): Promise<Received> {
  for (let count = from + 1; ; count++) {
    const results = await within(sink.waitFor(count), ms, `${what} (SINK has ${sink.results.length - from} new results: ${sink.results.slice(from).map((r) => r.bytes).join(', ')} bytes)`);
    const hit = results.slice(from).find((r) => r.sha256 === sha256);
    if (hit) return hit;
  }
}
