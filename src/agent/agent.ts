/**
 * `startAgent`: the device side of "open a tunnel for thing foo". Subscribed to the thing's
 * notification topic in a persistent MQTT session (notifications sent while it was away come
 * when it is back), it runs a destination proxy in this process for each tunnel notification,
 * with the services mapped to local targets.
 *
 *   broker ──notification──► parse ──► mapped? ──► endpoint? ──► Tunnels.offer ──► state saved ──► PUBACK
 *                              │          │            │
 *                              └──────────┴────────────┴──► one log line, ignored
 *
 * The tunnels it serves are kept in a state file and resumed at the next start, with the same
 * client token, so a restart or a crash does not lose them.
 */
import { formatTarget } from '../cli/service-spec';
import { parseEndpoint, regionEndpoint } from '../cli/endpoint';
import { Logger, LogLevel, type LoggerOptions } from '../log';
import type { BrokerConfig } from '../mqtt/broker';
import { connectBroker, type BrokerLink } from '../mqtt/link';
import { isBadNotification, notificationTopic, parseNotification, RELAY_REGION, type TunnelNotification } from '../mqtt/notification';
import type { DestinationTarget } from '../options';
import { printable } from '../printable';
import { defaultSettings, type Settings } from '../settings';
import { deriveClientToken } from '../transport/client-token';
import { StateFile, type KeptTunnel } from './state';
import { TunnelLog } from './tunnel-log';
import { Tunnels } from './tunnels';
import { PRODUCT, VERSION } from '../version';

/** As the AWS IoT Device Client: one tunnel at a time unless told otherwise. */
export const DEFAULT_MAX_TUNNELS = 1;

export interface AgentOptions {
  /** The broker; its session is persistent unless `persistentSession` is false. */
  broker: BrokerConfig;
  thingName: string;
  /** Service id → where its connections go on this device. Notified services not in it are refused. */
  services: ReadonlyMap<string, DestinationTarget>;
  maxTunnels?: number;
  /** A self-hosted relay; without it the notification's region selects the cloud endpoint. */
  endpoint?: { host: string; port: number };
  /** `-c`, extra CA certificates (PEM) and `-k` for the tunnel endpoint, as the proxy. */
  caPath?: string;
  ca?: string[];
  insecure?: boolean;
  settings?: Settings;
  /** Where the state file is kept (created if missing); without it nothing is resumed after a restart. */
  stateDir?: string;
  /**
   * Level and sink of the lines. The tunnels log through one logger made from them, with one
   * budget of lines, where each tunnel's tokens are redacted while it runs.
   */
  logging?: LoggerOptions;
}

export interface Agent {
  /** Tunnels running now. */
  tunnels(): number;
  /** Stops listening for notifications, then closes every tunnel (each its close handshake); what is kept stays. */
  close(): Promise<void>;
}

function describeServices(services: ReadonlyMap<string, DestinationTarget>): string {
  return [...services].map(([id, target]) => `${id} = ${formatTarget(target)}`).join(', ');
}

class DeviceAgent implements Agent {
  private readonly log: Logger;
  private readonly settings: Settings;
  private readonly tunnelLog: TunnelLog;
  private readonly state: StateFile | undefined;
  private readonly tunnelSet: Tunnels;
  private readonly broker: BrokerLink;
  private closed: Promise<void> | undefined;

  constructor(private readonly options: AgentOptions) {
    this.log = new Logger(options.logging);
    this.settings = options.settings ?? defaultSettings();
    const maxTunnels = options.maxTunnels ?? DEFAULT_MAX_TUNNELS;
    this.tunnelLog = new TunnelLog(options.logging ?? {}, this.log);
    this.state = options.stateDir === undefined ? undefined : new StateFile(options.stateDir, options.thingName, this.log);
    this.tunnelSet = new Tunnels({
      maxTunnels, services: options.services, settings: this.settings, caPath: options.caPath, ca: options.ca, insecure: options.insecure,
      log: this.tunnelLog, onChange: () => this.save(),
    });
    const where = this.state ? `state in ${printable(this.state.path)}` : 'no state directory: tunnels are not resumed after a restart';
    this.log.info(`${PRODUCT} ${VERSION} agent for thing ${options.thingName}: services ${describeServices(options.services)}; at most ${maxTunnels} tunnel${maxTunnels === 1 ? '' : 's'} at once; ${where}`);
    this.resume();
    this.broker = connectBroker({ ...options.broker, persistentSession: options.broker.persistentSession ?? true, log: this.log.fork('mqtt') }, {
      subscribe: [notificationTopic(options.thingName)],
      onMessage: (_topic, payload) => this.onNotification(payload),
    });
  }

  tunnels(): number {
    return this.tunnelSet.size();
  }

  close(): Promise<void> {
    this.closed ??= (async () => {
      // The broker first: a notification that comes now is not acknowledged, so it comes again next time.
      await Promise.all([this.broker.close(), this.tunnelSet.close()]);
      this.tunnelLog.flush();
      this.tunnelLog.root.flushLimited();
      this.log.flushLimited();
    })();
    return this.closed;
  }

  private save(): void {
    this.state?.save(this.tunnelSet.kept());
  }

  private resolveEndpoint(region: string): { host: string; port: number } | undefined {
    if (this.options.endpoint) return this.options.endpoint;
    if (region === RELAY_REGION && this.settings.regionEndpointOverrides[region] === undefined) {
      this.log.limited(LogLevel.ERROR, 'notification endpoint', `refused a tunnel: its notification comes from a localproxy relay (region "${RELAY_REGION}"), whose address only you know: give -e/--proxy-endpoint HOST:PORT of that relay`);
      return undefined;
    }
    try {
      return parseEndpoint(regionEndpoint(region, this.settings));
    } catch (err) {
      this.log.limited(LogLevel.ERROR, 'notification endpoint', `refused a tunnel in region ${region}: ${(err as Error).message}`);
      return undefined;
    }
  }

  private unmappedOf(services: string[]): string[] {
    return services.filter((service) => !this.options.services.has(service));
  }

  /** Returns once what is kept includes the tunnel, so the broker's copy is acknowledged only then. */
  private onNotification(payload: Buffer): void {
    const { log } = this;
    const n = parseNotification(payload, this.options.endpoint === undefined);
    if (isBadNotification(n)) return log.limited(LogLevel.WARNING, `notification ${n.kind}`, `ignored a notification: ${n.reason}`);
    const held = this.tunnelSet.holding(n.clientAccessToken);
    // QoS 1 is at least once: the broker may deliver a notification again.
    if (held !== undefined) return log.limited(LogLevel.INFO, 'notification repeated', `ignored a repeated notification for tunnel ${held}`);
    const unmapped = this.unmappedOf(n.services);
    if (unmapped.length > 0) {
      // The destination answers for every service of its tunnel (the proxy refuses a partial mapping).
      return log.limited(LogLevel.WARNING, 'notification unmapped', `refused a tunnel for ${n.services.join(', ')}: ${unmapped.join(', ')} ${unmapped.length === 1 ? 'is' : 'are'} not mapped (give --service ${unmapped[0]}=PORT or a --config-dir file)`);
    }
    const endpoint = this.resolveEndpoint(n.region);
    if (!endpoint) return;
    this.tunnelSet.offer({ kept: keep(n), endpoint });
    this.save();
  }

  private resume(): void {
    const kept = this.state?.load() ?? [];
    if (kept.length === 0) return;
    this.log.info(`resuming ${kept.length} tunnel${kept.length === 1 ? '' : 's'} kept in ${printable(this.state!.path)}`);
    for (const entry of kept) {
      const unmapped = this.unmappedOf(entry.services);
      if (unmapped.length > 0) {
        this.log.warn(`not resuming tunnel ${entry.tunnelId ?? `for ${entry.services.join(', ')}`}: ${unmapped.join(', ')} no longer mapped`);
        continue;
      }
      const endpoint = this.resolveEndpoint(entry.region);
      if (endpoint) this.tunnelSet.offer({ kept: entry, endpoint, resumed: true });
    }
    this.save();
  }
}

/** Connects to the broker and starts resuming the kept tunnels at once. */
export function startAgent(options: AgentOptions): Agent {
  return new DeviceAgent(options);
}

/** What is kept of a notified tunnel: the client token is derived once, and kept with it. */
function keep(n: TunnelNotification): KeptTunnel {
  const kept: KeptTunnel = { accessToken: n.clientAccessToken, clientToken: deriveClientToken(n.clientAccessToken), region: n.region, services: n.services };
  if (n.tunnelId !== undefined) kept.tunnelId = n.tunnelId;
  return kept;
}
