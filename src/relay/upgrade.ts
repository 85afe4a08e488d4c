/**
 * A WebSocket upgrade to `/tunnel`, from request to peer: the handshake checked against the
 * service's rules (handshake.ts), its token authorized by the store, the upgrade completed, the
 * token spent or bound (checked again: another node may have taken it meanwhile), and the peer
 * handed to the link table. Every refusal is an HTTP status and one line, or, once upgraded,
 * a close frame.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { LogLevel, type Logger } from '../log';
import { CLOSE_NORMAL, MAX_WS_MESSAGE_BYTES } from '../protocol/constants';
import { EXTENSIONS_HEADER } from '../protocol/extension';
import type { RelayFaults } from './faults';
import { endGracefully, type ConnectionGuard } from './guard';
import { checkHandshake, isRefusal, type Accepted } from './handshake';
import { refuse } from './http';
import { CLOSE_POLICY, fitCloseReason } from './link';
import type { LinkTable } from './links';
import { StoreUnavailableError, type TunnelDirectory } from './store/directory';
import { GONE_MEANWHILE } from './store/local';

export interface UpgradeOptions {
  log: Logger;
  tunnels: TunnelDirectory;
  links: LinkTable;
  guard: ConnectionGuard;
  lingerMs: number;
  faults: RelayFaults;
}

/** An upgrade request on its way, with what the `headers` and `handleProtocols` hooks of ws read back. */
type Upgrading = IncomingMessage & { accepted?: Accepted; channelId?: string };

export class Upgrades {
  private readonly wss: WebSocketServer;

  constructor(private readonly options: UpgradeOptions) {
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: MAX_WS_MESSAGE_BYTES,
      perMessageDeflate: false,
      // Pings are answered by Peer, one pong at a time (pings.ts).
      autoPong: false,
      clientTracking: false,
      handleProtocols: (_protocols, req) => (req as Upgrading).accepted?.subprotocol ?? false,
    });
    this.wss.on('headers', (headers, req) => {
      const { channelId, accepted } = req as Upgrading;
      if (channelId) headers.push(`channel-id: ${channelId}`);
      if (accepted?.extensions.length) headers.push(`${EXTENSIONS_HEADER}: ${accepted.extensions.join(', ')}`);
    });
  }

  async upgrade(req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
    const accepted = await this.authorize(req, socket);
    if (accepted && !socket.destroyed) this.complete(req, socket, head, accepted);
  }

  /** The handshake's token, authorized by the store; undefined once refused. */
  private async authorize(req: IncomingMessage, socket: Socket): Promise<Accepted | undefined> {
    const { log, tunnels, faults } = this.options;
    const injected = faults.rejectUpgrade();
    if (injected !== undefined) {
      log.info(`refusing upgrade with HTTP ${injected} (injected fault)`);
      refuse(socket, injected, 'Injected fault: handshake rejected', this.options.lingerMs);
      return undefined;
    }
    const request = checkHandshake(req);
    if (isRefusal(request)) return this.refuse(socket, request.status, request.reason);
    const health = tunnels.health();
    if (!health.ready) return this.refuse(socket, 503, `Service unavailable: ${health.reason ?? 'starting'}`);
    let auth;
    try {
      auth = await tunnels.authorize(request.accessToken, request.mode, request.clientToken);
    } catch (err) {
      if (err instanceof StoreUnavailableError) return this.refuse(socket, 503, 'Service unavailable: tunnel store unreachable');
      throw err;
    }
    if (isRefusal(auth)) return this.refuse(socket, auth.status, auth.reason);
    return { ...request, auth };
  }

  /** ws answers the upgrade; the peer is accepted once the socket is a WebSocket. */
  private complete(req: IncomingMessage, socket: Socket, head: Buffer, accepted: Accepted): void {
    const channelId = randomUUID();
    Object.assign(req, { accepted, channelId });
    let upgraded = false;
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      upgraded = true;
      // Nothing is read until the store has accepted the handshake (frames would find no listener).
      ws.pause();
      // An error before the peer exists (or after a refusal) must not go unhandled; Peer logs its own.
      ws.on('error', () => {});
      this.accept(ws, socket, accepted, channelId).catch((err: unknown) => {
        this.options.log.error(`internal error accepting a peer from ${socket.remoteAddress}: ${(err as Error)?.message ?? String(err)}`);
        socket.destroy();
      });
    });
    // ws answered with a refusal of its own and ended the socket: bound how long it may stay.
    if (!upgraded) endGracefully(socket, this.options.lingerMs);
  }

  /** The store spends or binds the token, checked again; then the peer joins its link. */
  private async accept(ws: WebSocket, socket: Socket, accepted: Accepted, channelId: string): Promise<void> {
    const { log, tunnels, lingerMs } = this.options;
    const { mode, auth } = accepted;
    const tunnelId = auth.tunnel.tunnelId;
    let tunnel;
    try {
      tunnel = await tunnels.accept(auth, accepted.clientToken);
    } catch (err) {
      if (!(err instanceof StoreUnavailableError)) throw err;
      log.limited(LogLevel.WARNING, 'accept-store-down', `tunnel ${tunnelId} ${mode}: closing a connection just accepted: ${err.message}`);
      ws.close(1011, 'tunnel store unreachable');
      endGracefully(socket, lingerMs);
      return;
    }
    if (isRefusal(tunnel)) {
      // The tunnel may have closed, the token been rotated or taken by another client meanwhile.
      log.info(`tunnel ${tunnelId} ${mode}: closing a connection just accepted: ${tunnel.reason}`);
      if (tunnel.reason === GONE_MEANWHILE || tunnel.status === 410) ws.close(CLOSE_NORMAL, 'tunnel closed');
      else ws.close(CLOSE_POLICY, fitCloseReason(tunnel.reason));
      endGracefully(socket, lingerMs);
      return;
    }
    if (socket.destroyed || ws.readyState !== ws.OPEN) {
      // Gone while the store answered: it counts as connected and left at once.
      tunnels.setConnected(tunnelId, mode, false);
      return;
    }
    this.options.guard.promote(socket);
    this.options.links.attach(ws, socket, accepted, channelId, tunnel);
  }

  private refuse(socket: Socket, status: number, reason: string): undefined {
    this.options.log.limited(LogLevel.INFO, 'refused-upgrade', `refused upgrade from ${socket.remoteAddress}: HTTP ${status} ${reason}`);
    refuse(socket, status, reason, this.options.lingerMs);
    return undefined;
  }
}
