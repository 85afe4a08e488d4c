/**
 * Small local applications for end-to-end tests, on real sockets at 127.0.0.1 port 0:
 * - `echoServer()`   writes back everything it reads;
 * - `sinkServer()`   hashes what each connection sends until it closes;
 * - `blastServer(n)` sends n pattern bytes to each connection, then closes it;
 * - `sendPattern()`  connects, sends n pattern bytes (and optionally checks the echo);
 * - `receiveAll()`   connects and hashes everything until the peer closes.
 * Pattern bytes are a seeded 1 MiB pseudo-random block repeated with a block counter in its
 * first 8 bytes: generating 1 GiB costs memcpy, not crypto, and a shifted or repeated block
 * changes the sha256.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { Writable } from 'node:stream';

const BLOCK_BYTES = 1024 * 1024;

/** xorshift32: deterministic per seed, fast enough to fill one block. */
function randomBlock(seed: number): Buffer {
  const block = Buffer.allocUnsafe(BLOCK_BYTES);
  let x = seed >>> 0 || 0x9e3779b9;
  for (let i = 0; i < BLOCK_BYTES; i += 4) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    block.writeUInt32LE(x, i);
  }
  return block;
}

const blocks = new Map<number, Buffer>();

/** Yields `bytes` pattern bytes for `seed` in chunks of at most 1 MiB (each a fresh buffer). */
export function* pattern(bytes: number, seed = 1): Generator<Buffer> {
  let block = blocks.get(seed);
  if (!block) {
    block = randomBlock(seed);
    blocks.set(seed, block);
  }
  for (let offset = 0, counter = 0; offset < bytes; offset += BLOCK_BYTES, counter++) {
    const chunk = Buffer.from(block.subarray(0, Math.min(BLOCK_BYTES, bytes - offset)));
    if (chunk.length >= 8) chunk.writeBigUInt64LE(BigInt(counter), 0);
    yield chunk;
  }
}

/** sha256 (hex) of `pattern(bytes, seed)`. */
export function patternSha256(bytes: number, seed = 1): string {
  const hash = createHash('sha256');
  for (const chunk of pattern(bytes, seed)) hash.update(chunk);
  return hash.digest('hex');
}

export interface Received {
  bytes: number;
  sha256: string;
  /** True when the connection ended with an error (e.g. ECONNRESET) instead of a FIN. */
  reset: boolean;
}

/** Writes `chunks` to a socket or file stream honouring backpressure; resolves after the last write is queued. */
export async function writeAll(socket: Writable, chunks: Iterable<Buffer>): Promise<void> {
  for (const chunk of chunks) {
    if (socket.destroyed) throw new Error('socket closed while writing');
    if (!socket.write(chunk)) {
      await new Promise<void>((resolve, reject) => {
        const onDrain = () => { socket.off('close', onClose); resolve(); };
        const onClose = () => { socket.off('drain', onDrain); reject(new Error('socket closed while writing')); };
        socket.once('drain', onDrain);
        socket.once('close', onClose);
      });
    }
  }
}

/** Hashes everything `socket` delivers; resolves when it closes. Never rejects. */
export function hashUntilClose(socket: Socket, onData?: (chunk: Buffer) => void): Promise<Received> {
  const hash = createHash('sha256');
  let bytes = 0;
  let reset = false;
  socket.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
    hash.update(chunk);
    onData?.(chunk);
  });
  socket.on('error', () => { reset = true; });
  return new Promise((resolve) => socket.once('close', () => resolve({ bytes, sha256: hash.digest('hex'), reset })));
}

export interface AppServer {
  server: Server;
  port: number;
  /** Connections accepted so far. */
  accepted: number;
  /** Destroys open connections and closes the listener. */
  close(): Promise<void>;
}

async function listen(server: Server): Promise<AppServer> {
  const sockets = new Set<Socket>();
  const app: AppServer = {
    server,
    port: 0,
    accepted: 0,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      if (server.listening) await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  server.on('connection', (socket: Socket) => {
    app.accepted++;
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  app.port = (server.address() as { port: number }).port;
  return app;
}

/** Echoes every byte back on the same connection. */
export function echoServer(): Promise<AppServer> {
  return listen(createServer((socket) => {
    socket.on('error', () => socket.destroy());
    socket.pipe(socket);
  }));
}

export interface SinkServer extends AppServer {
  /** What each finished connection delivered, in the order they closed. */
  results: Received[];
  /** Resolves with the first `count` results once that many connections have closed. */
  waitFor(count: number): Promise<Received[]>;
}

/** Hashes what each connection sends until the connection closes. */
export async function sinkServer(): Promise<SinkServer> {
  const results: Received[] = [];
  const waiters: { count: number; resolve: (r: Received[]) => void }[] = [];
  const server = createServer((socket) => {
    void hashUntilClose(socket).then((received) => {
      results.push(received);
      for (const waiter of waiters.filter((w) => results.length >= w.count)) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(results.slice(0, waiter.count));
      }
    });
  });
  const app = await listen(server);
  return Object.assign(app, {
    results,
    waitFor(count: number): Promise<Received[]> {
      if (results.length >= count) return Promise.resolve(results.slice(0, count));
      return new Promise<Received[]>((resolve) => waiters.push({ count, resolve }));
    },
  });
}

/** Sends `bytes` pattern bytes (seed) to every connection, then ends it. */
export function blastServer(bytes: number, seed = 1): Promise<AppServer> {
  return listen(createServer((socket) => {
    socket.on('error', () => socket.destroy());
    writeAll(socket, pattern(bytes, seed)).then(() => socket.end(), () => socket.destroy());
  }));
}

/** Connects to 127.0.0.1:port; resolves once connected. */
export async function connectTo(port: number): Promise<Socket> {
  const socket = connect(port, '127.0.0.1');
  socket.setNoDelay(true);
  await once(socket, 'connect');
  return socket;
}

export interface SendOptions {
  seed?: number;
  /** Read back and hash the echo until `bytes` have come back, then close. */
  expectEcho?: boolean;
}

export interface SendResult {
  /** sha256 of what was sent. */
  sha256: string;
  bytes: number;
  /** With `expectEcho`: what came back. */
  echo?: Received;
}

/**
 * Connects, sends `bytes` pattern bytes and ends the connection (the tunnel has no half-close,
 * so the far application sees the close only after every byte). With `expectEcho` it keeps
 * reading until as many bytes came back and closes then.
 */
export async function sendPattern(port: number, bytes: number, options: SendOptions = {}): Promise<SendResult> {
  const socket = await connectTo(port);
  const hash = createHash('sha256');
  const chunks = (function* hashed() {
    for (const chunk of pattern(bytes, options.seed)) {
      hash.update(chunk);
      yield chunk;
    }
  })();
  if (!options.expectEcho) {
    const closed = once(socket, 'close');
    socket.on('error', () => {});
    await writeAll(socket, chunks);
    socket.end();
    await closed;
    return { sha256: hash.digest('hex'), bytes };
  }
  let seen = 0;
  const echo = hashUntilClose(socket, (chunk) => {
    seen += chunk.length;
    if (seen >= bytes) socket.end();
  });
  await writeAll(socket, chunks).catch(() => {});
  return { sha256: hash.digest('hex'), bytes, echo: await echo };
}

/** Connects and hashes everything until the far side closes. */
export async function receiveAll(port: number): Promise<Received> {
  return hashUntilClose(await connectTo(port));
}
