/**
 * `slowLink()`: a TCP forwarder on 127.0.0.1 that carries what its upstream sends towards the
 * client at `bytesPerSecond` at most, the way a slow last mile does (a device on a 10 Mbit/s
 * uplink behind a relay on the internet). The other direction is not limited. Like a real
 * link it has a queue in front of it: the upstream's socket send buffer and our receive
 * buffer, several MB once Linux has tuned them, fill while the link drains them.
 */
import net, { type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';

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
    // Towards the client: each chunk arrives once the link has had the time to carry it; the
    // upstream is not read meanwhile, so what follows waits in the socket buffers.
    let busyUntil = 0;
    let timer: NodeJS.Timeout | undefined;
    upstream.on('data', (chunk: Buffer) => {
      upstream.pause();
      const now = performance.now();
      busyUntil = Math.max(busyUntil, now) + (chunk.length * 1000) / bytesPerSecond;
      timer = setTimeout(() => {
        timer = undefined;
        carried += chunk.length;
        if (client.write(chunk)) upstream.resume();
        else client.once('drain', () => upstream.resume());
      }, Math.max(0, busyUntil - now));
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
