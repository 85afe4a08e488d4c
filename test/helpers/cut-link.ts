/**
 * `cutLink()`: a TCP forwarder on 127.0.0.1 between a proxy and the relay that a test can break
 * the ways a real link breaks:
 * - `cut()`: every connection through it is reset at once (RST to both sides), as when a NAT
 *   forgets a mapping or a router drops state; new connections are forwarded again at once;
 * - `blackHole()`: from now on nothing crosses in either direction and nobody is told, as when
 *   a cellular link goes away. Like TCP over a dead route, nothing is lost either: bytes wait
 *   unread (the senders' buffers fill), and a side that gives up and closes is not heard of on
 *   the other side. New connections are accepted (user space cannot leave a SYN unanswered) and
 *   get nothing through. `restore()` ends it as the route coming back does: a connection whose
 *   two sides are still there carries on; a side whose other side gave up meanwhile, and every
 *   connection made during the hole, is reset.
 * `connections` counts the connections accepted so far (each reconnect makes one).
 */
import net, { type Socket } from 'node:net';

export interface CutLink {
  port: number;
  /** Connections accepted so far. */
  readonly connections: number;
  /** Resets every connection through the link now. */
  cut(): void;
  /** Nothing crosses, and no close is passed on, until `restore()`. */
  blackHole(): void;
  restore(): void;
  close(): Promise<void>;
}

interface Pair {
  client: Socket;
  upstream?: Socket;
  /** One side closed while the link was a black hole: the other is reset on restore. */
  broken: boolean;
}

export async function cutLink(upstreamPort: number, upstreamHost = '127.0.0.1'): Promise<CutLink> {
  const pairs = new Set<Pair>();
  let holed = false;
  let accepted = 0;

  const reset = (pair: Pair): void => {
    if (!pairs.delete(pair)) return;
    pair.client.resetAndDestroy();
    pair.upstream?.resetAndDestroy();
  };
  /** One side is gone: the other learns it at once, unless the link is a black hole. */
  const sideGone = (pair: Pair): void => {
    if (holed) pair.broken = true;
    else reset(pair);
  };
  const pause = (pair: Pair): void => {
    pair.client.pause();
    pair.upstream?.pause();
  };

  const server = net.createServer((client) => {
    accepted++;
    const pair: Pair = { client, broken: false };
    pairs.add(pair);
    client.setNoDelay(true);
    client.on('error', () => sideGone(pair));
    client.on('close', () => sideGone(pair));
    if (holed) {
      // Made during the hole: nothing goes through, and it is reset when the hole ends.
      pair.broken = true;
      client.pause();
      return;
    }
    const upstream = net.connect(upstreamPort, upstreamHost);
    pair.upstream = upstream;
    upstream.setNoDelay(true);
    upstream.on('error', () => sideGone(pair));
    upstream.on('close', () => sideGone(pair));
    client.pipe(upstream);
    upstream.pipe(client);
  });
  server.listen(0, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  const port = (server.address() as net.AddressInfo).port;

  return {
    port,
    get connections() {
      return accepted;
    },
    cut() {
      for (const pair of [...pairs]) reset(pair);
    },
    blackHole() {
      holed = true;
      for (const pair of pairs) {
        // pipe() resumes a source on its destination's drain: hold both sides for good.
        pair.client.unpipe();
        pair.upstream?.unpipe();
        pause(pair);
      }
    },
    restore() {
      holed = false;
      for (const pair of [...pairs]) {
        if (pair.broken || !pair.upstream) {
          reset(pair);
          continue;
        }
        pair.client.pipe(pair.upstream);
        pair.upstream.pipe(pair.client);
      }
    },
    close() {
      for (const pair of [...pairs]) reset(pair);
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
