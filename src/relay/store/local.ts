/**
 * The single-node directory: the in-memory registry (tunnels.ts), kept in the `--state` journal
 * when there is one. Every operation completes synchronously in memory; the promise resolves
 * once the journal has it on disk.
 */
import { hashToken, RegistryError, type TunnelRegistry } from '../tunnels';
import type { ClientMode, DestinationConfig, OpenedTunnel, OpenTunnelRequest, PeerMode, RotatedTokens, Tag, TunnelRecord } from '../record';
import type { Authorized, ListPosition, Refusal, TunnelDirectory, TunnelPage } from './directory';

/** Said to a peer whose handshake was accepted while its tunnel closed or its token was rotated. */
export const GONE_MEANWHILE = 'the tunnel closed or its token was rotated meanwhile';

export class LocalDirectory implements TunnelDirectory {
  readonly registry: TunnelRegistry;

  constructor(registry: TunnelRegistry) {
    this.registry = registry;
  }

  health(): { ready: boolean } {
    return { ready: true };
  }

  async open(req: OpenTunnelRequest, region?: string): Promise<OpenedTunnel> {
    const opened = this.registry.open(req, region);
    try {
      await this.registry.durable();
    } catch (err) {
      // Nobody will ever hold these tokens: the tunnel is taken back rather than left unknown.
      this.registry.discard(opened.tunnelId);
      throw err;
    }
    return opened;
  }

  async get(tunnelId: string): Promise<TunnelRecord> {
    return this.registry.get(tunnelId);
  }

  async getByArn(arn: string): Promise<TunnelRecord> {
    return this.registry.getByArn(arn);
  }

  async list(filter: { thingName?: string; after?: ListPosition; max: number }): Promise<TunnelPage> {
    const all = this.registry.list({ thingName: filter.thingName });
    const after = filter.after;
    // Newest first, ties by id ascending: skip everything up to and including the position's tunnel.
    let start = 0;
    if (after) {
      start = all.findIndex((t) => t.createdAt < after.createdAt || (t.createdAt === after.createdAt && t.tunnelId > after.tunnelId));
      if (start < 0) start = all.length;
    }
    const tunnels = all.slice(start, start + filter.max);
    const last = tunnels[tunnels.length - 1];
    return { tunnels, ...(start + filter.max < all.length && last ? { next: { createdAt: last.createdAt, tunnelId: last.tunnelId } } : {}) };
  }

  async close(tunnelId: string, options: { delete?: boolean } = {}): Promise<void> {
    this.registry.close(tunnelId, options);
    await this.registry.durable();
  }

  async rotate(tunnelId: string, mode: ClientMode, destination?: DestinationConfig): Promise<RotatedTokens> {
    const tokens = this.registry.rotate(tunnelId, mode, destination);
    await this.registry.durable();
    return tokens;
  }

  async tag(arn: string, tags: Tag[]): Promise<void> {
    this.registry.tag(this.registry.getByArn(arn), tags);
    await this.registry.durable();
  }

  async untag(arn: string, keys: string[]): Promise<void> {
    this.registry.untag(this.registry.getByArn(arn), keys);
    await this.registry.durable();
  }

  openTunnels(): number {
    return this.registry.openTunnels;
  }

  async authorize(accessToken: string, mode: PeerMode, clientToken: string | undefined): Promise<Authorized | Refusal> {
    const owner = this.registry.lookup(accessToken);
    if (!owner) return { status: 403, reason: 'Invalid access token' };
    if (owner.mode !== mode) return { status: 400, reason: `Invalid access token: the token is for local-proxy-mode=${owner.mode}, not ${mode}` };
    const refused = this.registry.checkClientToken(owner, clientToken);
    if (refused) return { status: 400, reason: refused };
    return { tunnel: owner.tunnel, mode, tokenHash: hashToken(accessToken) };
  }

  async accept(auth: Authorized, clientToken: string | undefined): Promise<TunnelRecord | Refusal> {
    const tunnel = auth.tunnel;
    // The tunnel may have closed or the token rotated while the upgrade completed.
    if (tunnel.status !== 'OPEN' || tunnel[auth.mode].tokenHash !== auth.tokenHash) return { status: 410, reason: GONE_MEANWHILE };
    const owner = { tunnel, mode: auth.mode };
    const refused = this.registry.checkClientToken(owner, clientToken);
    if (refused) return { status: 400, reason: refused };
    this.registry.accept(owner, clientToken);
    return tunnel;
  }

  setConnected(tunnelId: string, mode: PeerMode, connected: boolean): void {
    try {
      const tunnel = this.registry.get(tunnelId);
      if (tunnel.status === 'OPEN') this.registry.setConnected({ tunnel, mode }, connected);
    } catch (err) {
      // Forgotten meanwhile (CloseTunnel with delete): nothing to record.
      if (!(err instanceof RegistryError)) throw err;
    }
  }

  flush(): Promise<void> {
    return this.registry.durable();
  }

  dispose(): Promise<void> {
    return this.registry.dispose();
  }
}
