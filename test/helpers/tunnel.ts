/**
 * `startTunnel()`: a whole tunnel on this machine, in-process — our relay with a self-signed
 * certificate on port 0, a tunnel opened on it, a destination and a source built with
 * `startProxy` (the library surface of src/index.ts) trusting the relay's certificate.
 * Logs are silent unless `LOCALPROXY_TEST_LOG=<0-6>` is set.
 */
import { defaultSettings, Logger, startProxy, startRelay, type ProxyOptions, type ServiceTarget, type Settings } from '../../src/index';
import { within } from './wait';

export type Relay = Awaited<ReturnType<typeof startRelay>>;
export type LocalProxy = ReturnType<typeof startProxy>;

/** A port (TCP on 127.0.0.1) or a full target. */
export type TargetSpec = number | ServiceTarget;

export interface TunnelSpec {
  /** Service ids the tunnel is opened with (what SERVICE_IDS carries). Default: the destination map's ids. */
  services?: string[];
  /** Destination: service id → application. "" is the V1 form (`-d 22`). */
  destinationMap: Record<string, TargetSpec>;
  /** Source: service id → listen port. Default: each of `services` on port 0. */
  sourceMap?: Record<string, TargetSpec>;
  /** Settings for both proxies, over `defaultSettings()`. */
  settings?: Partial<Settings>;
  sourceOptions?: Partial<ProxyOptions>;
  destOptions?: Partial<ProxyOptions>;
  /** Bound for both proxies' `ready`; default 10 s. */
  readyTimeoutMs?: number;
  /** The relay's `bandwidth` (bytes per second per tunnel direction, `--bandwidth`); default unlimited. */
  bandwidth?: number;
  /** The relay's `pace` (`--no-pacing` when false); default on. */
  pace?: boolean;
  /** The destination reaches the relay through this (given the relay's port, returns the port to connect to): a slow link, say. */
  destinationVia?: (relayPort: number) => Promise<number>;
}

export interface Tunnel {
  relay: Relay;
  tunnel: Awaited<ReturnType<Relay['openTunnel']>>;
  source: LocalProxy;
  destination: LocalProxy;
  /** The source's listening port for a service id ("" for the V1 form). */
  port(service?: string): number;
  /** Closes source, destination and relay (bounded; safe to call twice). */
  close(): Promise<void>;
}

export function testLogger(id: string): Logger {
  return new Logger({ level: Number(process.env.LOCALPROXY_TEST_LOG ?? 0), id });
}

function toTarget(spec: TargetSpec): ServiceTarget {
  return typeof spec === 'number' ? { kind: 'tcp', host: '127.0.0.1', port: spec } : spec;
}

/** ProxyOptions for one side of a tunnel on `relay`, as the CLI would build them. */
export function proxyOptions(relay: Relay, mode: ProxyOptions['mode'], accessToken: string, services: Record<string, TargetSpec>, settings?: Partial<Settings>): ProxyOptions {
  return {
    mode,
    accessToken,
    endpoint: { host: '127.0.0.1', port: relay.port },
    services: new Map(Object.entries(services).map(([id, spec]) => [id, toTarget(spec)])),
    ca: relay.caPem ? [relay.caPem] : [],
    settings: { ...defaultSettings(), ...settings },
    log: testLogger(mode),
  };
}

export async function startRelayForTests(options: { bandwidth?: number; pace?: boolean } = {}): Promise<Relay> {
  // Some tunnels here carry four services, one more than the cloud's (and the relay's) default quota.
  return startRelay({ port: 0, tls: 'self-signed', log: testLogger('relay'), limits: { maxServicesPerTunnel: 8 }, ...options });
}

export async function startTunnel(spec: TunnelSpec): Promise<Tunnel> {
  const relay = await startRelayForTests({ bandwidth: spec.bandwidth, pace: spec.pace });
  const destinationPort = spec.destinationVia ? await spec.destinationVia(relay.port) : relay.port;
  const services = spec.services ?? Object.keys(spec.destinationMap).filter((id) => id !== '');
  const tunnel = await relay.openTunnel({ services });
  const sourceMap = spec.sourceMap ?? Object.fromEntries((services.length > 0 ? services : ['']).map((id) => [id, { kind: 'tcp', port: 0 } as ServiceTarget]));
  const destinationOptions = proxyOptions(relay, 'destination', tunnel.destinationAccessToken, spec.destinationMap, spec.settings);
  destinationOptions.endpoint = { ...destinationOptions.endpoint, port: destinationPort };
  const destination = startProxy({ ...destinationOptions, ...spec.destOptions });
  const source = startProxy({ ...proxyOptions(relay, 'source', tunnel.sourceAccessToken, sourceMap, spec.settings), ...spec.sourceOptions });
  let closed: Promise<void> | undefined;
  const close = () => {
    closed ??= within(Promise.allSettled([source.close(), destination.close()]).then(() => relay.close()), 10_000, 'tunnel close');
    return closed;
  };
  try {
    const bound = spec.readyTimeoutMs ?? 10_000;
    await within(Promise.all([destination.ready, source.ready]), bound, 'source and destination ready');
  } catch (err) {
    await close().catch(() => {});
    throw err;
  }
  return {
    relay,
    tunnel,
    source,
    destination,
    port(service = services[0] ?? '') {
      const ports = source.ports();
      const port = ports.get(service) ?? (ports.size === 1 ? [...ports.values()][0] : undefined);
      if (port === undefined) throw new Error(`source has no port for service '${service}' (has ${[...ports.keys()].join(', ')})`);
      return port;
    },
    close,
  };
}
