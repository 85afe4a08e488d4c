/**
 * `startAgent`: the device side of "open a tunnel for thing foo". Subscribed to the thing's
 * notification topic, it starts a destination proxy in this process (startProxy) for each
 * tunnel notification, with the services mapped to local targets.
 *
 *   broker ──notification──► parse ──► mapped? ──► room? (else close the oldest) ──► startProxy
 *                              │          │
 *                              └──────────┴──► one log line, ignored
 *
 * A new notification always wins over a running tunnel when there is no room left: tunnels
 * live up to 12 hours, and a forgotten one must not lock the device out of the next.
 */
import { createHash } from 'node:crypto';
import { formatTarget } from '../cli/service-spec';
import { parseEndpoint, regionEndpoint } from '../cli/endpoint';
import { exitCodeOf } from '../exit';
import { Logger, LogLevel, type LoggerOptions } from '../log';
import type { DestinationTarget, ProxyOptions } from '../options';
import { defaultSettings, type Settings } from '../settings';
import { deriveClientToken } from '../transport/client-token';
import { startProxy, type LocalProxy } from '../tunnel/proxy';
import type { BrokerConfig } from '../mqtt/broker';
import { connectBroker, type BrokerLink } from '../mqtt/link';
import { isBadNotification, notificationTopic, parseNotification, type TunnelNotification } from '../mqtt/notification';

/** As the AWS IoT Device Client: one tunnel at a time unless told otherwise. */
export const DEFAULT_MAX_TUNNELS = 1;

export interface AgentOptions {
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
  /**
   * Level and sink of the lines. Each tunnel gets a logger of its own made from them, so its
   * token is redacted there and forgotten when the tunnel ends.
   */
  logging?: LoggerOptions;
}

export interface Agent {
  /** Tunnels running now. */
  tunnels(): number;
  /** Stops listening for notifications, then closes every tunnel (each its close handshake). */
  close(): Promise<void>;
}

interface Running {
  id: number;
  proxy: LocalProxy;
  tokenHash: string;
}

function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

export function startAgent(options: AgentOptions): Agent {
  const log = new Logger(options.logging);
  const settings = options.settings ?? defaultSettings();
  const maxTunnels = options.maxTunnels ?? DEFAULT_MAX_TUNNELS;
  const topic = notificationTopic(options.thingName);
  const running: Running[] = [];
  let count = 0;
  let closing = false;

  function remove(session: Running): void {
    const at = running.indexOf(session);
    if (at !== -1) running.splice(at, 1);
  }

  function resolveEndpoint(n: TunnelNotification): { host: string; port: number } | undefined {
    if (options.endpoint) return options.endpoint;
    try {
      return parseEndpoint(regionEndpoint(n.region, settings));
    } catch (err) {
      log.limited(LogLevel.ERROR, 'notification endpoint', `refused a tunnel in region ${n.region}: ${(err as Error).message}`);
      return undefined;
    }
  }

  function start(n: TunnelNotification, endpoint: { host: string; port: number }, tokenHash: string): void {
    const id = ++count;
    const tlog = new Logger(options.logging, `tunnel ${id}: `);
    tlog.redact(n.clientAccessToken);
    tlog.redact(deriveClientToken(n.clientAccessToken));
    const mapping = new Map<string, DestinationTarget>(n.services.map((service) => [service, options.services.get(service)!]));
    const proxyOptions: ProxyOptions = { mode: 'destination', accessToken: n.clientAccessToken, endpoint, services: mapping, settings, log: tlog };
    if (options.caPath !== undefined) proxyOptions.caPath = options.caPath;
    if (options.ca !== undefined) proxyOptions.ca = options.ca;
    if (options.insecure) proxyOptions.insecure = true;
    const host = endpoint.host.includes(':') ? `[${endpoint.host}]` : endpoint.host;
    const targets = [...mapping].map(([service, target]) => `${service} = ${formatTarget(target)}`).join(', ');
    log.info(`tunnel ${id}: starting for ${targets} through ${host}:${endpoint.port}`);
    let proxy: LocalProxy;
    try {
      proxy = startProxy(proxyOptions);
    } catch (err) {
      log.error(`tunnel ${id}: cannot start: ${tlog.scrub((err as Error).message)}`);
      return;
    }
    const session: Running = { id, proxy, tokenHash };
    running.push(session);
    proxy.done.then((outcome) => {
      remove(session);
      // The proxy has already logged a failure through tlog; this line says the slot is free.
      log.info(`tunnel ${id}: ended (exit code ${exitCodeOf(outcome)}: ${tlog.scrub(outcome.message)})`);
    });
  }

  function onNotification(payload: Buffer): void {
    if (closing) return;
    const n = parseNotification(payload, options.endpoint === undefined);
    if (isBadNotification(n)) {
      log.limited(LogLevel.WARNING, `notification ${n.kind}`, `ignored a notification: ${n.reason}`);
      return;
    }
    const tokenHash = hashToken(n.clientAccessToken);
    const same = running.find((r) => r.tokenHash === tokenHash);
    if (same) {
      // QoS 1 is at least once: the broker may deliver a notification again.
      log.limited(LogLevel.INFO, 'notification repeated', `ignored a repeated notification for tunnel ${same.id}`);
      return;
    }
    const unmapped = n.services.filter((service) => !options.services.has(service));
    if (unmapped.length > 0) {
      // The destination answers for every service of its tunnel (the proxy refuses a partial mapping).
      log.limited(LogLevel.WARNING, 'notification unmapped', `refused a tunnel for ${n.services.join(', ')}: ${unmapped.join(', ')} ${unmapped.length === 1 ? 'is' : 'are'} not mapped (give --service ${unmapped[0]}=PORT or a --config-dir file)`);
      return;
    }
    const endpoint = resolveEndpoint(n);
    if (!endpoint) return;
    while (running.length >= maxTunnels) {
      const oldest = running.shift()!;
      log.info(`tunnel ${oldest.id}: closing it for a new tunnel (at most ${maxTunnels} at once)`);
      void oldest.proxy.close();
    }
    start(n, endpoint, tokenHash);
  }

  log.info(`agent for thing ${options.thingName}: services ${[...options.services].map(([id, t]) => `${id} = ${formatTarget(t)}`).join(', ')}; at most ${maxTunnels} tunnel${maxTunnels === 1 ? '' : 's'} at once`);
  const broker: BrokerLink = connectBroker({ ...options.broker, log: log.fork('mqtt') }, {
    subscribe: [topic],
    onMessage: (_topic, payload) => onNotification(payload),
  });

  return {
    tunnels: () => running.length,
    async close() {
      if (closing) return;
      closing = true;
      const sessions = running.splice(0);
      await Promise.all([broker.close(), ...sessions.map((s) => s.proxy.close())]);
      log.flushLimited();
    },
  };
}
