/**
 * Admission of TCP connections, before TLS or HTTP see them. A connection is *pending* from
 * accept until it becomes a tunnel peer: TLS handshake, HTTP request, management API and
 * /health calls all count. Pending connections are bounded per source address (a flood from
 * one address is refused at once) and in total (the oldest pending connection is dropped to
 * make room, so idle connections cannot keep a newcomer out). Tunnel peers are bounded by
 * the tunnels there are, and only by `maxConnections` (the server's own limit).
 *
 * Every way the relay gives up on a connection goes through `endGracefully` or `destroy`, so
 * that no socket outlives its purpose: a client that neither reads nor closes loses its socket
 * `lingerMs` after the relay's last byte.
 */
import type { Socket } from 'node:net';

export interface GuardOptions {
  maxPendingPerAddress: number;
  maxPendingConnections: number;
  lingerMs: number;
  /** A connection refused or dropped here (`why` is a kind, for a rate-limited log line). */
  onRefused?: (why: 'per-address' | 'evicted', address: string) => void;
}

interface Entry {
  socket: Socket;
  address: string;
}

/** `address|port` of a socket: the same for the raw TCP socket and the TLS socket over it. */
export function connectionKey(socket: Socket): string | undefined {
  if (socket.remoteAddress === undefined || socket.remotePort === undefined) return undefined;
  return `${socket.remoteAddress}|${socket.remotePort}`;
}

/**
 * Ends a socket after writing `data` (if any), and destroys it `lingerMs` later unless the
 * client closed it first: a client that never reads or never sends its FIN cannot hold it.
 */
export function endGracefully(socket: Socket, lingerMs: number, data?: string): void {
  if (socket.destroyed) return;
  const timer = setTimeout(() => socket.destroy(), lingerMs);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
  // Already ended by someone else (ws refusing an upgrade): only the deadline is added.
  if (socket.writableEnded) return;
  if (data === undefined) socket.end();
  else socket.end(data);
}

export class ConnectionGuard {
  /** Pending connections, oldest first (Map order). */
  private readonly pending = new Map<string, Entry>();
  private readonly perAddress = new Map<string, number>();
  private readonly options: GuardOptions;

  constructor(options: GuardOptions) {
    this.options = options;
  }

  /** A TCP connection was accepted: refuses it, or tracks it until it closes or becomes a peer. */
  admit(socket: Socket): void {
    const key = connectionKey(socket);
    const address = socket.remoteAddress;
    if (key === undefined || address === undefined) {
      socket.destroy();
      return;
    }
    const count = this.perAddress.get(address) ?? 0;
    if (count >= this.options.maxPendingPerAddress) {
      this.options.onRefused?.('per-address', address);
      socket.destroy();
      return;
    }
    if (this.pending.size >= this.options.maxPendingConnections) {
      const [oldestKey, oldest] = this.pending.entries().next().value as [string, Entry];
      this.release(oldestKey);
      this.options.onRefused?.('evicted', oldest.address);
      oldest.socket.destroy();
    }
    this.pending.set(key, { socket, address });
    this.perAddress.set(address, count + 1);
    socket.once('close', () => {
      if (this.pending.get(key)?.socket === socket) this.release(key);
    });
  }

  /** The connection became a tunnel peer: it no longer counts as pending. */
  promote(socket: Socket): void {
    const key = connectionKey(socket);
    if (key !== undefined) this.release(key);
  }

  /** Drops every pending connection (the relay is closing). */
  destroyAll(): void {
    for (const { socket } of [...this.pending.values()]) socket.destroy();
  }

  get pendingCount(): number {
    return this.pending.size;
  }

  private release(key: string): void {
    const entry = this.pending.get(key);
    if (!entry) return;
    this.pending.delete(key);
    const left = (this.perAddress.get(entry.address) ?? 1) - 1;
    if (left > 0) this.perAddress.set(entry.address, left);
    else this.perAddress.delete(entry.address);
  }
}
