/**
 * One relay as a node of a cluster (`--store` with `--node-url`): the peers it holds, with
 * leases in the shared store that it renews, and the bridges to the nodes holding the other
 * peers of its tunnels.
 *
 * Who dials: the node holding a tunnel's source dials the node holding its destination, when
 * it learns where that is: from its own holder record (the store answers with the other
 * holder), from an 'attached' event (the destination connected somewhere), or from a lease
 * renewal (events missed while the store was away). Holders carry a generation that grows with
 * every new holder, so old news never wins over new.
 *
 * A peer is replaced when another connection of the same tunnel and mode is recorded after it,
 * on any node: its node closes it (1008, as a single relay does) when the newer holder's event
 * arrives, or at the next renewal.
 *
 * What the store says about other nodes is believed only when a node of the cluster signed it
 * (holders.ts).
 */
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { LogLevel, type Logger } from '../../log';
import { CLOSE_NORMAL, MAX_WS_MESSAGE_BYTES } from '../../protocol/constants';
import { CLOSE_POLICY, type TunnelLink } from '../link';
import { Peer } from '../peer';
import type { AttachedEvent, Holder, HeldPeer, LeaseStore, LeaseVerdict } from '../store/leases';
import type { PeerMode } from '../store/record';
import { bridgeRequest, signHolder, verifyBridge } from './auth';
import { CLOSE_NODE_STOPPING, CLOSE_PEER_LEFT, dialBridge, RemotePeer } from './bridge';
import { KnownHolders } from './holders';

export { BRIDGE_PATH } from './auth';

export interface ClusterOptions {
  /** How other nodes reach this one (ws:// or wss://, this relay's own port). */
  nodeUrl: string;
  /** Shared by every node (`--cluster-secret-file`, LOCALPROXY_RELAY_CLUSTER_SECRET). */
  secret: Buffer;
  /** PEM CA certificate(s) to trust when dialing other nodes (besides the system ones). */
  ca?: string[];
  /** How long a node's claim on a peer lasts without renewal (default 15 s). */
  leaseMs?: number;
  /** Bridge ping interval (default 5 s). */
  pingMs?: number;
}

/** What the node needs from the relay it is part of. */
export interface ClusterHost {
  link(tunnelId: string): TunnelLink | undefined;
  log: Logger;
  /** Answers an upgrade with an HTTP refusal. */
  refuse(socket: Socket, status: number, reason: string): void;
  /** The socket became a bridge: it no longer counts as a pending connection. */
  promote(socket: Socket): void;
}

export const DEFAULT_LEASE_MS = 15_000;
const REDIAL_BASE_MS = 100;
const REDIAL_CAP_MS = 2000;
/** How long a stopping node waits for its holders to be released. */
const RELEASE_ON_CLOSE_MS = 2000;

interface Held extends HeldPeer {
  link: TunnelLink;
}

interface Dial {
  node: string;
  ws?: WebSocket;
  timer?: NodeJS.Timeout;
}

function otherMode(mode: PeerMode): PeerMode {
  return mode === 'source' ? 'destination' : 'source';
}

export class ClusterNode {
  private readonly store: LeaseStore;
  private readonly host: ClusterHost;
  private readonly options: ClusterOptions;
  private readonly log: Logger;
  private readonly held = new Map<Peer, Held>();
  /** The newest holder known per tunnel (with a link here) and mode. */
  private readonly known: KnownHolders;
  private readonly dialing = new Map<string, Dial>();
  private readonly attempts = new Map<string, number>();
  private readonly bridges = new Set<RemotePeer>();
  private readonly wss: WebSocketServer;
  private readonly renewTimer: NodeJS.Timeout;
  private renewing = false;
  private renewAgain?: string;
  private stopped = false;

  constructor(store: LeaseStore, host: ClusterHost, options: ClusterOptions) {
    this.store = store;
    this.host = host;
    this.options = options;
    this.log = host.log.fork('cluster');
    this.known = new KnownHolders(options.secret, store.nodeUrl, this.log);
    this.wss = new WebSocketServer({ noServer: true, maxPayload: MAX_WS_MESSAGE_BYTES, perMessageDeflate: false, clientTracking: false });
    store.onAttached = (event) => this.onAttached(event);
    store.onReconnected = () => void this.renewAll('the tunnel store is back');
    this.renewTimer = setInterval(() => void this.renewAll(), Math.max(100, Math.floor(store.leaseMs / 3)));
    this.renewTimer.unref();
  }

  get nodeId(): string {
    return this.store.nodeId;
  }

  /** Bridges open now (for stats). */
  get bridgeCount(): number {
    return this.bridges.size;
  }

  /** A local peer was accepted: record this node as its holder, then bridge if the other peer is elsewhere. */
  peerConnected(link: TunnelLink, peer: Peer, tokenHash: string): void {
    const tunnelId = link.tunnel.tunnelId;
    const sig = signHolder(this.options.secret, { tunnelId, mode: peer.mode, node: this.nodeId, url: this.store.nodeUrl, channel: peer.channelId });
    const entry: Held = { tunnelId, mode: peer.mode, channel: peer.channelId, tokenHash, gen: 0, sig, link };
    this.held.set(peer, entry);
    this.store.hold(tunnelId, peer.mode, peer.channelId, tokenHash, sig).then((result) => {
      if (this.held.get(peer) !== entry || peer.life !== 'open') return;
      if (result.kind !== 'held') {
        this.closeLocal(peer, result.kind);
        return;
      }
      entry.gen = result.gen;
      this.learn(tunnelId, peer.mode, { node: this.nodeId, url: this.store.nodeUrl, channel: peer.channelId, gen: result.gen, sig });
      const other = this.known.vet(tunnelId, otherMode(peer.mode), result.other);
      if (other) this.learn(tunnelId, otherMode(peer.mode), other);
      // A newer connection was recorded before our answer came back: this one is replaced.
      const newest = this.known.get(tunnelId, peer.mode);
      if (newest && newest.gen > entry.gen && newest.channel !== entry.channel) return this.closeLocal(peer, 'replaced', newest);
      this.ensureBridge(link);
    }, (err: Error) => {
      // The lease renewal records it once the store answers again.
      this.log.limited(LogLevel.WARNING, 'hold-failed', `tunnel ${tunnelId} ${peer.mode}: could not record this node as its holder (${err.message}); retrying with the lease renewal`);
    });
  }

  /** A local peer was replaced by a newer connection to this node: no longer ours to release. */
  peerReplaced(peer: Peer): void {
    this.held.delete(peer);
  }

  /** A local peer left: release its holder record; a link without local peers closes its bridges. */
  peerGone(link: TunnelLink, peer: Peer): void {
    const entry = this.held.get(peer);
    this.held.delete(peer);
    if (entry) {
      this.store.release(entry.tunnelId, entry.mode, entry.channel).catch((err: Error) => {
        this.log.limited(LogLevel.WARNING, 'release-failed', `tunnel ${entry.tunnelId} ${entry.mode}: could not release its holder record (${err.message}); its lease runs out instead`);
      });
    }
    this.linkMaybeEmpty(link);
  }

  /** Closes the bridges of a link that has no local peer left. */
  linkMaybeEmpty(link: TunnelLink): void {
    const ends = [link.peers.source, link.peers.destination];
    if (ends.some((end) => end instanceof Peer)) return;
    const tunnelId = link.tunnel.tunnelId;
    this.cancelDial(tunnelId);
    this.known.forget(tunnelId);
    this.attempts.delete(tunnelId);
    for (const end of ends) if (end instanceof RemotePeer) end.close(CLOSE_PEER_LEFT, 'the peer left its node');
  }

  /** `GET /cluster/bridge`: another node, holding the source, bridges to the destination held here. */
  async acceptBridge(req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
    const checked = verifyBridge(this.options.secret, req, this.nodeId, Date.now());
    if ('status' in checked) {
      this.log.limited(LogLevel.WARNING, 'bridge-refused', `refused a bridge request from ${socket.remoteAddress}: ${checked.reason}`);
      return this.host.refuse(socket, checked.status, checked.reason);
    }
    const { tunnelId, from } = checked;
    const holdsDestination = (): TunnelLink | undefined => {
      const link = this.host.link(tunnelId);
      const dest = link?.peers.destination;
      return link && dest instanceof Peer && dest.life === 'open' ? link : undefined;
    };
    if (!holdsDestination()) return this.host.refuse(socket, 409, `This node does not hold the destination of tunnel ${tunnelId}`);
    let source: Holder | undefined;
    try {
      source = this.known.vet(tunnelId, 'source', await this.store.holder(tunnelId, 'source'));
    } catch {
      return this.host.refuse(socket, 503, 'Tunnel store unreachable');
    }
    if (!source || source.node !== from) return this.host.refuse(socket, 409, `Node ${from} does not hold the source of tunnel ${tunnelId}`);
    if (socket.destroyed) return;
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on('error', () => {});
      const link = holdsDestination();
      if (!link || this.stopped) {
        ws.close(CLOSE_PEER_LEFT, 'the destination left this node');
        return;
      }
      this.host.promote(socket);
      socket.setNoDelay(true);
      this.learn(tunnelId, 'source', source);
      this.install(link, ws, 'source', from);
      this.log.info(`tunnel ${tunnelId}: bridge from node ${from}, which holds the source, is up`);
    });
  }

  /** Stops: bridges closed, holders released (bounded), timers off. */
  async close(): Promise<void> {
    this.stopped = true;
    clearInterval(this.renewTimer);
    for (const tunnelId of [...this.dialing.keys()]) this.cancelDial(tunnelId);
    for (const bridge of this.bridges) bridge.close(CLOSE_NODE_STOPPING, 'node stopping');
    const releases = [...this.held.values()].map((e) => this.store.release(e.tunnelId, e.mode, e.channel).catch(() => {}));
    this.held.clear();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(releases), new Promise<void>((resolve) => { timer = setTimeout(resolve, RELEASE_ON_CLOSE_MS); })]);
    clearTimeout(timer);
    for (const bridge of this.bridges) bridge.terminate();
    this.bridges.clear();
  }

  // ------------------------------------------------------------------------------------------

  private onAttached(event: AttachedEvent): void {
    const link = this.host.link(event.tunnelId);
    if (!link || this.stopped || !this.known.vet(event.tunnelId, event.mode, event.holder)) return;
    this.learn(event.tunnelId, event.mode, event.holder);
    const local = link.peers[event.mode];
    if (local instanceof Peer && local.life === 'open') {
      const entry = this.held.get(local);
      // Recorded after ours: a newer connection of the same peer, here or on another node.
      if (entry && entry.gen > 0 && event.holder.gen > entry.gen && event.holder.channel !== entry.channel) this.closeLocal(local, 'replaced', event.holder);
    }
    this.ensureBridge(link);
  }

  /** Keeps the newest holder per mode, for tunnels with a link here; returns whether `holder` is it. */
  private learn(tunnelId: string, mode: PeerMode, holder: Holder): boolean {
    return this.host.link(tunnelId) !== undefined && this.known.learn(tunnelId, mode, holder);
  }

  private closeLocal(peer: Peer, why: LeaseVerdict | 'closed', by?: Holder): void {
    if (peer.life !== 'open') return;
    this.held.delete(peer);
    if (why === 'replaced') {
      peer.log.info(`replaced by a new connection (channel ${by?.channel ?? 'unknown'}${by && by.node !== this.nodeId ? ` on node ${by.node}` : ''})`);
      peer.replace();
    } else if (why === 'revoked') {
      peer.log.info('access token rotated: disconnecting');
      peer.close(CLOSE_NORMAL, 'access token rotated');
    } else if (why !== 'ok') {
      peer.log.info('tunnel closed: disconnecting');
      peer.close(CLOSE_NORMAL, 'tunnel closed');
    }
  }

  /** On the source's node: a bridge to the destination's node when that is another node. */
  private ensureBridge(link: TunnelLink): void {
    if (this.stopped) return;
    const tunnelId = link.tunnel.tunnelId;
    const source = link.peers.source;
    if (!(source instanceof Peer) || source.life !== 'open' || link.tunnel.status !== 'OPEN' || this.host.link(tunnelId) !== link) return;
    const target = this.known.get(tunnelId, 'destination');
    const current = link.peers.destination;
    if (current instanceof Peer && current.life === 'open') return;
    if (!target || target.node === this.nodeId) return;
    if (current instanceof RemotePeer && current.life === 'open') {
      if (current.node === target.node) return;
      current.log.info(`the destination moved to node ${target.node}`);
      current.close(CLOSE_PEER_LEFT, 'the destination moved to another node');
    }
    const dial = this.dialing.get(tunnelId);
    if (dial?.node === target.node) return;
    if (dial) this.cancelDial(tunnelId);
    this.dial(link, target);
  }

  private dial(link: TunnelLink, target: Holder): void {
    const tunnelId = link.tunnel.tunnelId;
    const { path, headers } = bridgeRequest(this.options.secret, { tunnelId, from: this.nodeId, to: target.node, time: Date.now() });
    const dial: Dial = { node: target.node };
    dial.ws = dialBridge(`${target.url.replace(/\/+$/, '')}${path}`, headers, this.options.ca, (result) => {
      const wanted = this.dialing.get(tunnelId) === dial;
      if (wanted) this.dialing.delete(tunnelId);
      if ('failed' in result) {
        if (!wanted) return;
        this.log.limited(LogLevel.WARNING, 'bridge-dial', `tunnel ${tunnelId}: cannot bridge to node ${target.node} (${target.url}): ${result.failed}; retrying`);
        this.redial(link);
        return;
      }
      const source = link.peers.source;
      if (!wanted) {
        result.ws.close(CLOSE_PEER_LEFT, 'not needed any more');
      } else if (!(source instanceof Peer) || source.life !== 'open' || this.host.link(tunnelId) !== link || this.stopped) {
        result.ws.close(CLOSE_PEER_LEFT, 'the source left this node');
      } else {
        this.attempts.delete(tunnelId);
        this.install(link, result.ws, 'destination', target.node);
        this.log.info(`tunnel ${tunnelId}: bridge to node ${target.node}, which holds the destination, is up`);
      }
    });
    this.dialing.set(tunnelId, dial);
  }

  private install(link: TunnelLink, ws: WebSocket, mode: PeerMode, node: string): void {
    const end = new RemotePeer({
      link, ws, mode, node,
      log: this.host.log.fork(`tunnel ${link.tunnel.tunnelId} ${mode} (node ${node})`),
      pingMs: this.options.pingMs,
      onClosed: (gone, code) => this.bridgeClosed(gone, code),
    });
    this.bridges.add(end);
    link.install(end, `bridge to node ${node}`);
    end.start();
  }

  private bridgeClosed(end: RemotePeer, code: number): void {
    this.bridges.delete(end);
    const link = end.link;
    const tunnelId = link.tunnel.tunnelId;
    if (this.stopped || end.life === 'replaced') return;
    end.log.info(`bridge closed (code ${code}): received ${end.bytesIn} bytes, sent ${end.bytesOut} bytes`);
    // The far peer left, was replaced or closed, or its node stops: the next holder's event says where it went.
    if (code === CLOSE_PEER_LEFT || code === CLOSE_NODE_STOPPING || code === CLOSE_NORMAL || code === CLOSE_POLICY) {
      this.known.forget(tunnelId, end.mode, (holder) => holder.node !== end.node);
      return;
    }
    // Lost (the far node died, or the network between us): dial again while it still holds the peer.
    if (end.mode === 'destination') this.redial(link);
  }

  /** Dials again after a backoff, once the store says who holds the destination now. */
  private redial(link: TunnelLink): void {
    const tunnelId = link.tunnel.tunnelId;
    if (this.stopped || this.dialing.has(tunnelId)) return;
    const attempt = this.attempts.get(tunnelId) ?? 0;
    this.attempts.set(tunnelId, attempt + 1);
    const dial: Dial = { node: '' };
    dial.timer = setTimeout(() => {
      if (this.dialing.get(tunnelId) === dial) this.dialing.delete(tunnelId);
      this.store.holder(tunnelId, 'destination').then((stored) => {
        const holder = this.known.vet(tunnelId, 'destination', stored);
        if (holder) this.learn(tunnelId, 'destination', holder);
        else this.known.forget(tunnelId, 'destination');
        this.ensureBridge(link);
      }, () => this.redial(link));
    }, Math.min(REDIAL_CAP_MS, REDIAL_BASE_MS * 2 ** attempt));
    dial.timer.unref();
    this.dialing.set(tunnelId, dial);
  }

  private cancelDial(tunnelId: string): void {
    const dial = this.dialing.get(tunnelId);
    if (!dial) return;
    this.dialing.delete(tunnelId);
    clearTimeout(dial.timer);
    dial.ws?.terminate();
  }

  /** Renews every lease; closes the peers the store says are replaced, revoked or closed. */
  private async renewAll(why?: string): Promise<void> {
    if (this.stopped) return;
    if (this.renewing) {
      // After an outage the check must not be skipped: it runs once the renewal under way is done.
      if (why) this.renewAgain = why;
      return;
    }
    this.renewing = true;
    const entries = [...this.held.entries()];
    try {
      const verdicts = entries.length > 0 ? await this.store.renew(entries.map(([, e]) => e)) : [];
      entries.forEach(([peer, entry], i) => {
        const answer = verdicts[i];
        if (!answer || this.held.get(peer) !== entry || peer.life !== 'open') return;
        if (answer.verdict !== 'ok') return this.closeLocal(peer, answer.verdict);
        if (answer.gen !== undefined) {
          entry.gen = answer.gen;
          this.learn(entry.tunnelId, entry.mode, { node: this.nodeId, url: this.store.nodeUrl, channel: entry.channel, gen: answer.gen, sig: entry.sig });
        }
        const other = otherMode(entry.mode);
        const holder = this.known.vet(entry.tunnelId, other, answer.other);
        if (holder) this.learn(entry.tunnelId, other, holder);
        else this.known.forget(entry.tunnelId, other, (h) => h.node === this.nodeId);
        this.ensureBridge(entry.link);
      });
      if (why) this.log.info(`${why}: the leases of ${entries.length} peer(s) held here are renewed`);
    } catch (err) {
      this.log.limited(LogLevel.WARNING, 'renew-failed', `lease renewal failed (${(err as Error).message}); the peers held here stay connected, retrying`);
    } finally {
      this.renewing = false;
      const again = this.renewAgain;
      this.renewAgain = undefined;
      if (again) void this.renewAll(again);
    }
  }
}
