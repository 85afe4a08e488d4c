/**
 * The relay's tunnels as the server and the management API see them, whatever keeps them:
 * the in-memory registry with its `--state` journal (local.ts), or Redis shared by the nodes of
 * a cluster (redis.ts). Every operation is asynchronous and atomic: a shared store applies it
 * in one transaction, so two nodes rotating, closing or spending a token at once cannot lose an
 * update or bring a closed tunnel back.
 */
import type { ClientMode, DestinationConfig, OpenedTunnel, RotatedTokens, Tag } from '../../api/model';
import type { PeerMode, TunnelRecord } from './record';
import type { OpenTunnelRequest } from './rules';

/** An upgrade the relay refuses: the HTTP status and a one-line reason for the client. */
export interface Refusal {
  status: number;
  reason: string;
}

/** A token that may connect now (the client-token rule checked, nothing changed yet). */
export interface Authorized {
  tunnel: TunnelRecord;
  mode: PeerMode;
  tokenHash: string;
}

/** ListTunnels: the position after the last tunnel of a page (newest first, ties by id). */
export interface ListPosition {
  createdAt: number;
  tunnelId: string;
}

export interface TunnelPage {
  tunnels: TunnelRecord[];
  /** The last one shown, when more follow. */
  next?: ListPosition;
}

/** The store cannot be reached (shared store down): the operation did not happen. */
export class StoreUnavailableError extends Error {
  /** What a client is told: never the store's address, nor anything of its credentials (`message` is for the log). */
  readonly publicMessage: string;
  constructor(message: string, publicMessage = 'the tunnel store is unreachable') {
    super(message);
    this.name = 'StoreUnavailableError';
    this.publicMessage = publicMessage;
  }
}

/** Told to the server, on whichever node the change was made. */
export interface DirectoryEvents {
  /** The tunnel closed (CloseTunnel or lifetime): its peers here are closed with `reason`. */
  onClosed(tunnelId: string, reason: string): void;
  /** `mode`'s token was replaced: a peer here connected with `oldTokenHash` (any, if not given) is closed. */
  onTokenRevoked(tunnelId: string, mode: PeerMode, oldTokenHash?: string): void;
}

export interface TunnelDirectory {
  /** Whether operations can run now; `reason` says why not, to clients (never the store's address). */
  health(): { ready: boolean; reason?: string };
  open(req: OpenTunnelRequest, region?: string): Promise<OpenedTunnel>;
  get(tunnelId: string): Promise<TunnelRecord>;
  getByArn(arn: string): Promise<TunnelRecord>;
  list(filter: { thingName?: string; after?: ListPosition; max: number }): Promise<TunnelPage>;
  close(tunnelId: string, options?: { delete?: boolean }): Promise<void>;
  rotate(tunnelId: string, mode: ClientMode, destination?: DestinationConfig): Promise<RotatedTokens>;
  tag(arn: string, tags: Tag[]): Promise<void>;
  untag(arn: string, keys: string[]): Promise<void>;
  /** Open tunnels (for stats: the last count known, on a shared store). */
  openTunnels(): number;
  /** Who `accessToken` belongs to, if `mode` may connect with it and `clientToken` now. */
  authorize(accessToken: string, mode: PeerMode, clientToken: string | undefined): Promise<Authorized | Refusal>;
  /**
   * The upgrade of an authorized handshake completed: the token is spent or bound to the client
   * token, checked again in the same atomic step (another node may have taken it meanwhile).
   * Resolves with the tunnel as it now is.
   */
  accept(auth: Authorized, clientToken: string | undefined): Promise<TunnelRecord | Refusal>;
  /** A peer connected or left (the local store's connection state; a cluster keeps leases instead). */
  setConnected(tunnelId: string, mode: PeerMode, connected: boolean): void;
  /** Resolves once every change so far is durable; rejects if the write carrying the last one failed. */
  flush(): Promise<void>;
  dispose(): Promise<void>;
}

export function isRefusal(value: object): value is Refusal {
  return 'status' in value && 'reason' in value;
}
