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
import { spawnProxy, type ChildProxy } from '../helpers/child';
import { LogWatch, spawnCpp, withLogs, type CppProxy } from '../helpers/cpp';
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
  tunnel: ReturnType<Relay['openTunnel']>;
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

function oursPeer(child: ChildProxy, mode: Mode): Peer {
  const log = new LogWatch(`ours-${mode}`).follow(child.process);
  return { kind: 'ours', mode, log, ports: child.ports, ready: child.ready, exited: child.exited, stop: () => child.stop() };
}

function cppPeer(child: CppProxy, mode: Mode): Peer {
  return { kind: 'cpp', mode, log: child.log, ports: child.ports, ready: child.ready, exited: child.exited, stop: () => child.stop() };
}

export async function startMixed(spec: MixedSpec): Promise<Mixed> {
  const dir = mkdtempSync(join(tmpdir(), 'localproxy-interop-'));
  const certDir = join(dir, 'certs');
  const statePath = spec.state ? join(dir, 'state.json') : undefined;
  const relayLog = testLogger('relay');
  let relay: Relay = await startRelay({ port: 0, selfSignedDir: certDir, statePath, log: relayLog });
  const tunnel = relay.openTunnel({ services: spec.services });
  const peers: Partial<Record<Mode, Peer>> = {};
  const oldLogs: LogWatch[] = [];

  const start = async (mode: Mode, override: Partial<PeerSpec> = {}): Promise<Peer> => {
    const peerSpec = { ...spec[mode], ...override };
    const services = peerSpec.services
      ?? Object.fromEntries(spec.services.map((id) => [id, mode === 'source' ? (peers.source?.ports[id] ?? 0) : spec.apps[id]!]));
    const accessToken = mode === 'source' ? tunnel.sourceAccessToken : tunnel.destinationAccessToken;
    const previous = peers[mode];
    if (previous) oldLogs.push(previous.log);
    let peer: Peer;
    if (peerSpec.kind === 'cpp') {
      peer = cppPeer(await spawnCpp({
        relayPort: relay.port, caDir: certDir, mode, accessToken, services,
        clientType: peerSpec.clientType, clientToken: peerSpec.clientToken, settings: peerSpec.cppSettings,
        label: `cpp-${mode}`,
      }), mode);
    } else {
      peer = oursPeer(await spawnProxy({
        relay, ca: { dir: certDir, file: join(certDir, 'cert.pem') }, mode, accessToken, services,
        clientType: peerSpec.clientType, settings: peerSpec.settings,
        verbose: Number(process.env.LOCALPROXY_OURS_VERBOSE ?? 4),
      }), mode);
    }
    peers[mode] = peer;
    await peer.ready;
    return peer;
  };

  const mixed: Mixed = {
    get relay() { return relay; },
    tunnel,
    certDir,
    get source() { return peers.source!; },
    get destination() { return peers.destination!; },
    port(service) {
      const port = peers.source?.ports[service];
      if (port === undefined) throw new Error(`the source has no port for ${service}`);
      return port;
    },
    start,
    async restartRelay() {
      const port = relay.port;
      await relay.close();
      relay = await startRelay({ port, selfSignedDir: certDir, statePath, log: relayLog });
    },
    logs: () => [...oldLogs, ...Object.values(peers).map((p) => p.log)],
    run: (fn) => withLogs(mixed.logs(), fn),
    async close() {
      await within(Promise.allSettled(Object.values(peers).map((p) => p.stop())), 10_000, 'peers stop');
      await relay.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    // The destination first: a STREAM_START reaching the relay before it is answered with a reset.
    await start('destination');
    await start('source');
  } catch (err) {
    const logs = mixed.logs().map((l) => l.text()).join('\n');
    await mixed.close();
    throw Object.assign(err as Error, { message: `${(err as Error).message}\n${logs}` });
  }
  return mixed;
}
