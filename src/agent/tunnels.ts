/**
 * The agent's tunnels: each a destination proxy (startProxy) in this process, started from a
 * notification or resumed from the state file.
 *
 *   offer ──► pending (the newest --max-tunnels) ──► room? ──► running ──► ends by itself
 *                                                      │          │
 *                                                      │          └─ replaced / rotated / agent stops
 *                                                      │                       ▼
 *                                                      └── waits while ── closing (at most MAX_CLOSING_TUNNELS)
 *
 * A new tunnel always wins when there is no room: tunnels live up to 12 hours, and a forgotten
 * one must not lock the device out of the next. Everything is bounded however fast
 * notifications come: pending by --max-tunnels, running by --max-tunnels, closing by
 * MAX_CLOSING_TUNNELS, starts by TUNNEL_START_INTERVAL_MS. A closing tunnel stops its connect
 * attempt, CA loading included, at once.
 */
import { formatTarget } from '../cli/service-spec';
import { exitCodeOf } from '../exit';
import { LogLevel, type Logger } from '../log';
import type { DestinationTarget, ProxyOptions } from '../options';
import type { Settings } from '../settings';
import { startProxy, type LocalProxy, type ProxyOutcome } from '../tunnel/proxy';
import type { KeptTunnel } from './state';
import type { TunnelLog } from './tunnel-log';

/** Tunnels closed but not yet ended; past it, the next start waits (each takes at most the close handshake). */
export const MAX_CLOSING_TUNNELS = 4;
/**
 * At most one start per interval: a burst of notifications starts the newest, not one tunnel
 * (with its TLS handshake and CA loading) each.
 */
export const TUNNEL_START_INTERVAL_MS = 50;
/** Tunnel ids whose token the service rotated before the new one came, remembered to name what comes next. */
const MAX_ROTATED_REMEMBERED = 16;

export interface TunnelsOptions {
  maxTunnels: number;
  services: ReadonlyMap<string, DestinationTarget>;
  settings: Settings;
  caPath?: string;
  ca?: string[];
  insecure?: boolean;
  log: TunnelLog;
  /** What is kept changed without a notification (a tunnel ended by itself, or was dropped). */
  onChange: () => void;
}

/** A tunnel to start: what is kept of it, and where its endpoint is. */
export interface Offer {
  kept: KeptTunnel;
  endpoint: { host: string; port: number };
  resumed?: boolean;
}

interface Waiting extends Offer {
  label: string;
}

interface Tunnel {
  kept: KeptTunnel;
  label: string;
  log: Logger;
  proxy: LocalProxy;
  /** Set when our side closes it: what is kept is then already decided. */
  retired?: 'replaced' | 'rotated' | 'stopping';
}

function hostPort(endpoint: { host: string; port: number }): string {
  return `${endpoint.host.includes(':') ? `[${endpoint.host}]` : endpoint.host}:${endpoint.port}`;
}

/** The service's close says the token was rotated (our relay: "access token rotated"). */
function isRotation(outcome: ProxyOutcome): boolean {
  return outcome.kind === 'tunnel-closed' && /rotated/i.test(outcome.message);
}

export class Tunnels {
  private pending: Waiting[] = [];
  private running: Tunnel[] = [];
  private readonly closing = new Set<Tunnel>();
  private count = 0;
  private stopping = false;
  private lastStart = -Infinity;
  private readonly rotatedAway = new Set<string>();
  private pumpTimer: NodeJS.Timeout | undefined;

  constructor(private readonly options: TunnelsOptions) {}

  /** Tunnels running now. */
  size(): number {
    return this.running.length;
  }

  /** Tunnels and their offers waiting to start: what the state file keeps. */
  kept(): KeptTunnel[] {
    return [...this.running.map((t) => t.kept), ...this.pending.map((o) => o.kept)];
  }

  /** The label of the running or waiting tunnel with this token, if any. */
  holding(accessToken: string): string | undefined {
    const running = this.running.find((t) => t.kept.accessToken === accessToken);
    if (running) return running.label;
    return this.pending.find((o) => o.kept.accessToken === accessToken)?.label;
  }

  /** Queues a tunnel to start; the newest --max-tunnels offers are kept. */
  offer(offer: Offer): void {
    if (this.stopping) return;
    const { tunnelId } = offer.kept;
    // A rotation that comes before its tunnel started replaces the waiting offer.
    if (tunnelId !== undefined) this.pending = this.pending.filter((o) => o.kept.tunnelId !== tunnelId);
    this.pending.push({ ...offer, label: tunnelId ?? `#${++this.count}` });
    while (this.pending.length > this.options.maxTunnels) {
      const dropped = this.pending.shift()!;
      this.options.log.root.limited(LogLevel.WARNING, 'tunnel dropped', `tunnel ${dropped.label}: dropped before it started: newer notifications came faster than tunnels could be started`);
    }
    this.pump();
  }

  /** Starts waiting offers while there is room to close what they replace. */
  private pump(): void {
    while (!this.stopping && this.pending.length > 0 && this.closing.size < MAX_CLOSING_TUNNELS) {
      const wait = this.lastStart + TUNNEL_START_INTERVAL_MS - performance.now();
      if (wait > 0) {
        this.pumpTimer ??= setTimeout(() => {
          this.pumpTimer = undefined;
          this.pump();
        }, wait);
        return;
      }
      this.lastStart = performance.now();
      const offer = this.pending.shift()!;
      const { tunnelId } = offer.kept;
      const rotated = tunnelId === undefined ? undefined : this.running.find((t) => t.kept.tunnelId === tunnelId);
      if (rotated) {
        rotated.log.info('access token rotated: closing the connection that uses the old one');
        this.retire(rotated, 'rotated');
      }
      // The service may close the old connection before the new token's notification comes.
      const rotation = rotated !== undefined || (tunnelId !== undefined && this.rotatedAway.delete(tunnelId));
      while (this.running.length >= this.options.maxTunnels) {
        const oldest = this.running[0]!;
        oldest.log.info(`closing it for tunnel ${offer.label} (at most ${this.options.maxTunnels} at once)`);
        this.retire(oldest, 'replaced');
      }
      this.start(offer, rotation);
    }
  }

  private retire(tunnel: Tunnel, why: 'replaced' | 'rotated' | 'stopping'): void {
    const at = this.running.indexOf(tunnel);
    if (at !== -1) this.running.splice(at, 1);
    tunnel.retired = why;
    this.closing.add(tunnel);
    void tunnel.proxy.close();
  }

  /** Labelled with the tunnel id when the notification named it (our relay), else a number of this agent's. */
  private start(offer: Waiting, rotation: boolean): void {
    const { kept, endpoint, label } = offer;
    const log = this.options.log.root.fork(`tunnel ${label}`);
    log.redact(kept.accessToken);
    log.redact(kept.clientToken);
    const mapping = new Map<string, DestinationTarget>(kept.services.map((service) => [service, this.options.services.get(service)!]));
    const targets = [...mapping].map(([service, target]) => `${service} = ${formatTarget(target)}`).join(', ');
    const how = rotation ? ' with the rotated access token' : offer.resumed ? ' (resumed from the state file)' : '';
    log.info(`starting${how} for ${targets} through ${hostPort(endpoint)}`);
    const { settings, caPath, ca, insecure } = this.options;
    const proxyOptions: ProxyOptions = { mode: 'destination', accessToken: kept.accessToken, clientToken: kept.clientToken, endpoint, services: mapping, settings, log };
    if (caPath !== undefined) proxyOptions.caPath = caPath;
    if (ca !== undefined) proxyOptions.ca = ca;
    if (insecure) proxyOptions.insecure = true;
    let proxy: LocalProxy;
    try {
      proxy = startProxy(proxyOptions);
    } catch (err) {
      log.error(`cannot start: ${log.scrub((err as Error).message)}`);
      this.forget(kept);
      this.options.onChange();
      return;
    }
    const tunnel: Tunnel = { kept, label, log, proxy };
    this.running.push(tunnel);
    void proxy.done.then((outcome) => this.ended(tunnel, outcome));
  }

  private ended(tunnel: Tunnel, outcome: ProxyOutcome): void {
    const at = this.running.indexOf(tunnel);
    if (at !== -1) this.running.splice(at, 1);
    this.closing.delete(tunnel);
    const { log } = tunnel;
    // The proxy has already logged a failure; this line says the slot is free.
    if (isRotation(outcome)) {
      log.info('ended: its access token was rotated; the new one comes in a notification');
      if (tunnel.kept.tunnelId !== undefined) this.rememberRotated(tunnel.kept.tunnelId);
    } else log.info(`ended (exit code ${exitCodeOf(outcome)}: ${log.scrub(outcome.message)})`);
    this.forget(tunnel.kept);
    // Ended by itself (closed by the service, refused, failed): no longer kept.
    if (tunnel.retired === undefined && !this.stopping) this.options.onChange();
    this.pump();
  }

  private rememberRotated(tunnelId: string): void {
    this.rotatedAway.add(tunnelId);
    if (this.rotatedAway.size > MAX_ROTATED_REMEMBERED) this.rotatedAway.delete(this.rotatedAway.values().next().value as string);
  }

  /** The tokens are no longer redacted once no tunnel or offer holds them. */
  private forget(kept: KeptTunnel): void {
    const live = [...this.running, ...this.closing].some((t) => t.kept.accessToken === kept.accessToken) || this.pending.some((o) => o.kept.accessToken === kept.accessToken);
    if (live) return;
    this.options.log.root.forget(kept.accessToken);
    this.options.log.root.forget(kept.clientToken);
  }

  /** Closes every tunnel (each its close handshake); what is kept stays for the next start. */
  async close(): Promise<void> {
    this.stopping = true;
    this.pending = [];
    clearTimeout(this.pumpTimer);
    for (const tunnel of [...this.running]) this.retire(tunnel, 'stopping');
    await Promise.all([...this.closing].map((t) => t.proxy.done));
  }
}
