/**
 * The link table: the link of each tunnel with a peer here, the sockets of those peers and the
 * token each connected with, and what becomes of them when a peer leaves, a tunnel closes or a
 * token is rotated (the store's events, on whichever node the change was made).
 */
import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';
import type { Logger } from '../log';
import { CLOSE_NORMAL } from '../protocol/constants';
import type { ClusterNode } from './cluster/node';
import type { RelayFaults } from './faults';
import type { Accepted } from './handshake';
import { TunnelLink, type LinkEnd, type PeerEvent } from './link';
import { Peer } from './peer';
import type { DirectoryEvents, TunnelDirectory } from './store/directory';
import type { PeerMode, TunnelRecord } from './store/record';

/** TCP keepalive on peer sockets, so a peer that vanished without a FIN is noticed. */
const KEEPALIVE_DELAY_MS = 30_000;

export interface LinkTableOptions {
  log: Logger;
  tunnels: TunnelDirectory;
  /** This relay as a node of a cluster, once it exists (with a shared store). */
  cluster: () => ClusterNode | undefined;
  onEvent?: (event: PeerEvent) => void;
  bandwidth?: number;
  pace: boolean;
  faults: RelayFaults;
}

export class LinkTable {
  private readonly links = new Map<string, TunnelLink>();
  private readonly sockets = new Set<Socket>();
  /** The access token hash each local peer connected with (a rotation closes only those with the old one). */
  private readonly tokens = new WeakMap<Peer, string>();

  constructor(private readonly options: LinkTableOptions) {}

  /** What the store tells this relay: a tunnel closed, a token was rotated. */
  readonly events: DirectoryEvents = {
    onClosed: (tunnelId, reason) => this.onTunnelClosed(tunnelId, reason),
    onTokenRevoked: (tunnelId, mode, oldTokenHash) => this.onTokenRevoked(tunnelId, mode, oldTokenHash),
  };

  get(tunnelId: string): TunnelLink | undefined {
    return this.links.get(tunnelId);
  }

  /** Connected tunnel peers. */
  get peerCount(): number {
    return this.sockets.size;
  }

  /**
   * A peer the store accepted joins its tunnel's link (made now if it has none), replacing a
   * peer of its mode; `tunnel`: the record as the store now has it.
   */
  attach(ws: WebSocket, socket: Socket, accepted: Accepted, channelId: string, tunnel: TunnelRecord): void {
    const { mode, auth } = accepted;
    const tunnelId = auth.tunnel.tunnelId;
    this.sockets.add(socket);
    socket.setKeepAlive(true, KEEPALIVE_DELAY_MS);
    socket.setNoDelay(true);
    socket.once('close', () => this.sockets.delete(socket));
    let link = this.links.get(tunnelId);
    if (!link) {
      const made: TunnelLink = new TunnelLink(tunnel, (end) => this.onPeerGone(made, end));
      link = made;
      this.links.set(tunnelId, link);
    } else if (link.tunnel !== tunnel) {
      // From a shared store: the record as it is now (a rotation may have changed the services).
      Object.assign(link.tunnel, tunnel);
    }
    const log = this.options.log.fork(`tunnel ${tunnelId} ${mode}`);
    const previous = link.peers[mode];
    const replacing = previous !== undefined;
    log.info(`${replacing ? 'reconnected, replacing the previous connection' : 'connected'} (channel ${channelId}, ${accepted.subprotocol}, from ${socket.remoteAddress})`);
    const cluster = this.options.cluster();
    if (previous instanceof Peer) cluster?.peerReplaced(previous);
    const { onEvent, bandwidth, pace, faults } = this.options;
    const peer = new Peer(link, { ws, socket, mode, version: accepted.version, channelId, log, extensions: accepted.extensions, onEvent, bandwidth, pace, faults });
    link.install(peer, `channel ${channelId}`);
    peer.start();
    this.tokens.set(peer, auth.tokenHash);
    ws.resume();
    cluster?.peerConnected(link, peer, auth.tokenHash);
    onEvent?.({ type: 'connected', tunnelId, mode, channelId, replacing });
  }

  /**
   * The relay stops: peer sockets are dropped without a close frame (a proxy takes a close
   * frame as "tunnel closed" and exits, while a dropped connection makes it reconnect, which is
   * what a relay restart with --state should look like). Returns how many there were.
   */
  dropPeers(): number {
    const dropped = this.sockets.size;
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    return dropped;
  }

  clear(): void {
    this.links.clear();
  }

  /** An end of `link` left: the store learns it; a link without local peers is forgotten. */
  private onPeerGone(link: TunnelLink, end: LinkEnd): void {
    if (end instanceof Peer) {
      const cluster = this.options.cluster();
      if (cluster) cluster.peerGone(link, end);
      else if (link.tunnel.status === 'OPEN') this.options.tunnels.setConnected(link.tunnel.tunnelId, end.mode, false);
    }
    const local = [link.peers.source, link.peers.destination].some((p) => p instanceof Peer);
    if (!local && this.links.get(link.tunnel.tunnelId) === link) this.links.delete(link.tunnel.tunnelId);
  }

  private onTunnelClosed(tunnelId: string, reason: string): void {
    this.options.log.info(`tunnel ${tunnelId} closed: ${reason}`);
    const link = this.links.get(tunnelId);
    if (!link) return;
    link.tunnel.status = 'CLOSED';
    link.tunnel.source.connected = false;
    link.tunnel.destination.connected = false;
    link.closeAll(CLOSE_NORMAL, reason);
  }

  /** A rotation: the peer of `mode` connected with the old token (any, if not known) is closed. */
  private onTokenRevoked(tunnelId: string, mode: PeerMode, oldTokenHash?: string): void {
    const link = this.links.get(tunnelId);
    // A rotation may replace the services: the peer staying here checks its messages against the
    // new ones. The local store's link holds the store's own record; a shared store's, a copy.
    if (link && this.options.cluster()) {
      this.options.tunnels.get(tunnelId).then((fresh) => {
        link.tunnel.services = fresh.services;
      }, () => {});
    }
    const peer = link?.peers[mode];
    if (!(peer instanceof Peer) || peer.life !== 'open') return;
    if (oldTokenHash !== undefined && this.tokens.get(peer) !== oldTokenHash) return;
    peer.log.info('access token rotated: disconnecting');
    peer.close(CLOSE_NORMAL, 'access token rotated');
  }
}
