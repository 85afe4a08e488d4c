/**
 * What a cluster node believes about who holds the peers of its tunnels: the newest holder per
 * tunnel and mode (generations order them, so old news never wins over new), learned only from
 * records a node of this cluster signed with the cluster secret (auth.ts `signHolder`) and that
 * name an address over the cluster's own scheme. A record someone wrote into Redis cannot make
 * a node dial an address of their choosing, nor a wss:// cluster send anything in clear.
 */
import { LogLevel, type Logger } from '../../log';
import { printable } from '../../printable';
import type { PeerMode } from '../store/record';
import { isSignedHolder } from './auth';
import type { Holder } from '../store/leases';

export class KnownHolders {
  private readonly newest = new Map<string, { source?: Holder; destination?: Holder }>();
  private readonly secret: Buffer;
  /** ws: or wss:, as this node's own URL. */
  private readonly scheme: string;
  private readonly log: Logger;

  constructor(secret: Buffer, nodeUrl: string, log: Logger) {
    this.secret = secret;
    this.scheme = new URL(nodeUrl).protocol;
    this.log = log;
  }

  /** `holder` if a node of this cluster signed it and it is reached over the cluster's scheme; else undefined, logged. */
  vet(tunnelId: string, mode: PeerMode, holder: Holder | undefined): Holder | undefined {
    if (!holder) return undefined;
    let why: string | undefined;
    if (!isSignedHolder(this.secret, { tunnelId, mode, node: holder.node, url: holder.url, channel: holder.channel }, holder.sig)) why = 'it is not signed with the cluster secret';
    else if (!URL.canParse(holder.url) || new URL(holder.url).protocol !== this.scheme) why = `the cluster's nodes are reached over ${this.scheme}// only`;
    if (!why) return holder;
    this.log.limited(LogLevel.WARNING, 'holder-untrusted', `tunnel ${tunnelId}: ignored a record in the tunnel store naming node ${printable(holder.node, 80)} at ${printable(holder.url, 120)} as the holder of its ${mode}: ${why}`);
    return undefined;
  }

  get(tunnelId: string, mode: PeerMode): Holder | undefined {
    return this.newest.get(tunnelId)?.[mode];
  }

  /** Keeps the newest holder per mode (the caller vetted it); returns whether `holder` is it. */
  learn(tunnelId: string, mode: PeerMode, holder: Holder): boolean {
    let entry = this.newest.get(tunnelId);
    if (!entry) this.newest.set(tunnelId, (entry = {}));
    const current = entry[mode];
    if (current && current.gen > holder.gen) return false;
    if (current && current.gen === holder.gen && current.channel === holder.channel) return true;
    entry[mode] = holder;
    return true;
  }

  /** Forgets the holder of `mode` (when `unless` says so, or always), or everything about the tunnel. */
  forget(tunnelId: string, mode?: PeerMode, unless?: (holder: Holder) => boolean): void {
    if (mode === undefined) {
      this.newest.delete(tunnelId);
      return;
    }
    const entry = this.newest.get(tunnelId);
    const holder = entry?.[mode];
    if (entry && holder && !unless?.(holder)) delete entry[mode];
  }
}
