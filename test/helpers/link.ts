/**
 * `slowLink()`: a TCP forwarder on 127.0.0.1 that carries what its upstream sends towards the
 * client at `bytesPerSecond` at most, the way a slow last mile does (a device on a 10 Mbit/s
 * uplink behind a relay on the internet). The other direction is not limited. Like a real
 * link it has a queue in front of it: the upstream's socket send buffer and our receive
 * buffer, several MB once Linux has tuned them, fill while the link drains them.
 */
import net, { type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';

/** What the link carries at a time. */
const SLICE_BYTES = 4 * 1024;

export interface SlowLink {
  port: number;
  /** Bytes carried towards the clients so far. */
  readonly carried: number;
  close(): Promise<void>;
}

export async function slowLink(upstreamPort: number, bytesPerSecond: number): Promise<SlowLink> {
  const sockets = new Set<Socket>();
  let carried = 0;
  const server = net.createServer((client) => {
    const upstream = net.connect(upstreamPort, '127.0.0.1');
    // A router forwards packets as they come: no Nagle delay on either side of it.
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.on('end', () => client.end());
    // Towards the client: each slice of what the upstream sent arrives once the link has had the
    // time to carry it (a real link's unit is a packet; a slice of 4 KiB keeps the timers few);
    // the upstream is not read meanwhile, so what follows waits in the socket buffers.
    let busyUntil = 0;
    let timer: NodeJS.Timeout | undefined;
    const slices: Buffer[] = [];
    const next = (): void => {
      timer = undefined;
      const slice = slices.shift();
      if (!slice) return;
      carried += slice.length;
      const drained = client.write(slice);
      if (slices.length > 0) schedule();
      else if (drained) upstream.resume();
      else client.once('drain', () => upstream.resume());
    };
    const schedule = (): void => {
      const now = performance.now();
      busyUntil = Math.max(busyUntil, now) + (slices[0].length * 1000) / bytesPerSecond;
      timer = setTimeout(next, Math.max(0, busyUntil - now));
    };
    upstream.on('data', (chunk: Buffer) => {
      upstream.pause();
      for (let at = 0; at < chunk.length; at += SLICE_BYTES) slices.push(chunk.subarray(at, at + SLICE_BYTES));
      if (!timer) schedule();
    });
    upstream.on('close', () => clearTimeout(timer));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    get carried() {
      return carried;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
