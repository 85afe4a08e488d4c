/**
 * The applications at both ends of a benchmark: one TCP server (behind the destination, or
 * reached directly) and the clients that load it. They live in the benchmark process, so the
 * direct and the tunnelled runs pay exactly the same application costs; the echo-behind-bulk
 * workload hands its echo connection to processes of their own (bench/echo-child.ts, via
 * `AppServer.handNextTo`), so an echo is not timed behind the bulk clients' hashing.
 *
 * The first byte a client sends picks what the server does with the connection:
 *   'E'                echo every byte back
 *   'S' <u64 LE n>     sink n bytes, answer <u64 LE n><sha256 of them>; may repeat ('S' again)
 *   'L' <u32 LE rate>  read at most `rate` bytes/s for ever, checking every byte against the pattern
 *   'D' <u64 LE n>     send n bytes of the pattern (a download; the client checks count and sha256);
 *                      may repeat ('D' again once the client has them all)
 *
 * Uploads carry a deterministic pattern: 256 KiB chunks of one random block, each stamped with its
 * chunk number in its first 8 bytes, so a dropped, repeated or reordered chunk changes the digest.
 */
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { secondsSince } from './stats';

export const CHUNK_BYTES = 256 * 1024;
const BLOCK = randomBytes(CHUNK_BYTES);
const EMPTY: Buffer = Buffer.alloc(0);

function stamp(k: number): Buffer {
  const out = Buffer.alloc(8);
  out.writeBigUInt64LE(BigInt(k), 0);
  return out;
}

/** Chunk k of the pattern, `length` ≤ CHUNK_BYTES bytes long; a fresh buffer (writes are asynchronous). */
function patternChunk(k: number, length: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  BLOCK.copy(out, 0, 0, length);
  stamp(k).copy(out, 0, 0, Math.min(8, length));
  return out;
}

const digests = new Map<number, Buffer>();

/** sha256 of the first `bytes` bytes of the pattern; computed once per size, before any timing. */
export function patternDigest(bytes: number): Buffer {
  const known = digests.get(bytes);
  if (known) return known;
  const hash = createHash('sha256');
  for (let k = 0, left = bytes; left > 0; k++) {
    const length = Math.min(CHUNK_BYTES, left);
    const head = stamp(k);
    hash.update(head.subarray(0, Math.min(8, length)));
    if (length > 8) hash.update(BLOCK.subarray(8, length));
    left -= length;
  }
  const digest = hash.digest();
  digests.set(bytes, digest);
  return digest;
}

/** True when `data` equals the pattern from stream offset `offset` on. */
function matchesPattern(data: Buffer, offset: number): boolean {
  let at = 0;
  while (at < data.length) {
    const k = Math.floor((offset + at) / CHUNK_BYTES);
    const within = (offset + at) % CHUNK_BYTES;
    const take = Math.min(CHUNK_BYTES - within, data.length - at);
    const expected = patternChunk(k, CHUNK_BYTES).subarray(within, within + take);
    if (!expected.equals(data.subarray(at, at + take))) return false;
    at += take;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Server

/** What the server saw on a rate-limited ('L') connection. */
export interface SlowReader {
  bytes: number;
  ok: boolean;
  startedNs: bigint;
  /** The application gives up: closes its end (a tunnel then drops what it still holds for it). */
  close(): void;
}

const MODE = 0;
const ECHO = 1;
const SINK_HEADER = 2;
const SINK_BODY = 3;
const SLOW_HEADER = 4;
const SLOW_BODY = 5;
const SEND_HEADER = 6;

class AppConnection {
  private state = MODE;
  private pending = EMPTY;
  private remaining = 0;
  private segmentBytes = 0;
  private hash = createHash('sha256');
  private slow: SlowReader | undefined;
  private rate = 0;
  private resumeTimer: NodeJS.Timeout | undefined;
  private waitingForDrain = false;

  /**
   * `slowReaders` receives the record of an 'L' connection; `onMode` hears the mode byte (the
   * echo process reports it, so the benchmark knows it was handed the right connection).
   */
  constructor(private readonly socket: net.Socket, private readonly slowReaders: SlowReader[], private readonly onMode?: (mode: string) => void) {
    socket.setNoDelay(true);
    socket.on('data', (data: Buffer) => this.onData(data));
    socket.on('error', () => {});
    socket.on('close', () => clearTimeout(this.resumeTimer));
  }

  private onData(data: Buffer): void {
    let buf = this.pending.length > 0 ? Buffer.concat([this.pending, data]) : data;
    this.pending = EMPTY;
    while (buf.length > 0) {
      switch (this.state) {
        case MODE: {
          const mode = String.fromCharCode(buf[0]);
          buf = buf.subarray(1);
          this.onMode?.(mode);
          if (mode === 'E') this.state = ECHO;
          else if (mode === 'S') this.state = SINK_HEADER;
          else if (mode === 'L') this.state = SLOW_HEADER;
          else if (mode === 'D') this.state = SEND_HEADER;
          else return void this.socket.destroy();
          break;
        }
        case ECHO:
          this.echo(buf);
          buf = EMPTY;
          break;
        case SINK_HEADER:
          if (buf.length < 8) {
            this.pending = buf;
            return;
          }
          this.segmentBytes = Number(buf.readBigUInt64LE(0));
          this.remaining = this.segmentBytes;
          this.hash = createHash('sha256');
          buf = buf.subarray(8);
          this.state = SINK_BODY;
          if (this.remaining === 0) this.finishSegment();
          break;
        case SINK_BODY: {
          const take = Math.min(this.remaining, buf.length);
          this.hash.update(buf.subarray(0, take));
          this.remaining -= take;
          buf = buf.subarray(take);
          if (this.remaining === 0) this.finishSegment();
          break;
        }
        case SLOW_HEADER:
          if (buf.length < 4) {
            this.pending = buf;
            return;
          }
          this.rate = buf.readUInt32LE(0);
          this.slow = { bytes: 0, ok: true, startedNs: process.hrtime.bigint(), close: () => this.socket.destroy() };
          this.slowReaders.push(this.slow);
          buf = buf.subarray(4);
          this.state = SLOW_BODY;
          break;
        case SLOW_BODY:
          this.readSlowly(buf);
          buf = EMPTY;
          break;
        case SEND_HEADER:
          if (buf.length < 8) {
            this.pending = buf;
            return;
          }
          void sendPattern(this.socket, Number(buf.readBigUInt64LE(0))).catch(() => this.socket.destroy());
          buf = EMPTY;
          this.state = MODE;
          break;
      }
    }
  }

  private echo(data: Buffer): void {
    if (this.socket.write(data) || this.waitingForDrain) return;
    this.waitingForDrain = true;
    this.socket.pause();
    this.socket.once('drain', () => {
      this.waitingForDrain = false;
      this.socket.resume();
    });
  }

  private finishSegment(): void {
    const reply = Buffer.alloc(40);
    reply.writeBigUInt64LE(BigInt(this.segmentBytes), 0);
    this.hash.digest().copy(reply, 8);
    this.socket.write(reply);
    this.state = MODE;
  }

  private readSlowly(data: Buffer): void {
    const slow = this.slow!;
    if (slow.ok && !matchesPattern(data, slow.bytes)) slow.ok = false;
    slow.bytes += data.length;
    // Pause until the rate allows what was already read: a reader that is simply slow.
    const allowed = this.rate * secondsSince(slow.startedNs);
    if (slow.bytes > allowed) {
      this.socket.pause();
      this.resumeTimer = setTimeout(() => this.socket.resume(), ((slow.bytes - allowed) / this.rate) * 1000);
    }
  }
}

/** Serves one connection in this process (the mode byte decides how); it must be paused or fresh. */
export function serveConnection(socket: net.Socket, slowReaders: SlowReader[], onMode?: (mode: string) => void): void {
  new AppConnection(socket, slowReaders, onMode);
  socket.resume();
}

export class AppServer {
  readonly slowReaders: SlowReader[] = [];
  private readonly sockets = new Set<net.Socket>();
  private handOff: ((socket: net.Socket) => void) | undefined;
  private constructor(private readonly server: net.Server, readonly port: number) {}

  /** Open connections served in this process (a handed-off one is not counted). */
  get openConnections(): number {
    return this.sockets.size;
  }

  /**
   * The next connection accepted goes to `take` before a byte of it is read (the server pauses
   * every connection on accept), e.g. to another process with `ChildProcess.send(msg, socket)`;
   * undefined: serve it here, as every other one.
   */
  handNextTo(take: ((socket: net.Socket) => void) | undefined): void {
    this.handOff = take;
  }

  static async start(): Promise<AppServer> {
    // Paused on accept: a connection can be handed to another process with nothing read here.
    const server = net.createServer({ pauseOnConnect: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // A large backlog so a burst of simultaneous connections is not refused by the kernel.
      server.listen({ host: '127.0.0.1', port: 0, backlog: 1024 }, resolve);
    });
    const app = new AppServer(server, (server.address() as net.AddressInfo).port);
    server.on('connection', (socket) => {
      const take = app.handOff;
      app.handOff = undefined;
      if (take) return take(socket);
      app.sockets.add(socket);
      socket.on('close', () => app.sockets.delete(socket));
      serveConnection(socket, app.slowReaders);
    });
    return app;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

// ---------------------------------------------------------------------------------------------
// Clients

function connect(port: number): net.Socket {
  const socket = net.connect({ host: '127.0.0.1', port, noDelay: true });
  return socket;
}

/** A reply that did not come within its bound: how the path behaved, not a broken connection. */
export class NoReplyError extends Error {
  constructor(readonly limitMs: number) {
    super(`no reply within ${limitMs} ms`);
  }
}

/** The next 'data' chunk; rejects if the socket closes or fails first, or after `limitMs` (NoReplyError). */
function nextData(socket: net.Socket, limitMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => finish(new NoReplyError(limitMs)), limitMs);
    const onData = (data: Buffer) => finish(undefined, data);
    const onClose = () => finish(new Error('connection closed before the reply'));
    const onError = (err: Error) => finish(new Error(`connection failed: ${err.message}`));
    function finish(err?: Error, data?: Buffer): void {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.off('error', onError);
      if (err) reject(err);
      else resolve(data!);
    }
    socket.on('data', onData);
    socket.on('close', onClose);
    socket.on('error', onError);
  });
}

/** Writes the first `bytes` bytes of the pattern, waiting for 'drain' whenever the socket is full. */
async function sendPattern(socket: net.Socket, bytes: number): Promise<void> {
  for (let k = 0, left = bytes; left > 0 && !socket.destroyed; k++) {
    const length = Math.min(CHUNK_BYTES, left);
    left -= length;
    if (!socket.write(patternChunk(k, length))) await drainOrClose(socket);
  }
}

function drainOrClose(socket: net.Socket): Promise<void> {
  return new Promise((resolve, reject) => {
    const onDrain = () => finish();
    const onClose = () => finish(new Error('connection closed while sending'));
    function finish(err?: Error): void {
      socket.off('drain', onDrain);
      socket.off('close', onClose);
      if (err) reject(err);
      else resolve();
    }
    socket.on('drain', onDrain);
    socket.on('close', onClose);
  });
}

export interface UploadResult {
  /** Bytes whose digest the server confirmed. */
  bytes: number;
  seconds: number;
  /** False when `limitMs` ran out first (a stalled transfer) or the signal ended it; confirmed bytes still count. */
  completed: boolean;
  /** What ended it: all of it confirmed, `limitMs` ran out, or the signal. */
  ended: 'done' | 'limit' | 'aborted';
}

export interface UploadOptions {
  /** Bytes in total; with `until`, the most to send. */
  bytes: number;
  /** Bytes per confirmed segment (the server answers each with its digest). */
  segmentBytes?: number;
  /** Checked between segments: stop early when it returns true. */
  until?: () => boolean;
  /** Called with the bytes confirmed so far, after each confirmed segment. */
  onSegment?: (confirmedBytes: number) => void;
  /** Ends the transfer at once (the connection is destroyed); resolves with what was confirmed, completed false. */
  signal?: AbortSignal;
  limitMs: number;
}

/**
 * Uploads the pattern in segments, each confirmed by the server's byte count and sha256; the time
 * runs from the connect call to the last confirmation. A wrong count or digest rejects.
 */
export function upload(port: number, options: UploadOptions): Promise<UploadResult> {
  const segmentBytes = Math.min(options.segmentBytes ?? options.bytes, options.bytes);
  const expected = patternDigest(segmentBytes);
  const startedNs = process.hrtime.bigint();
  const socket = connect(port);
  let replies = EMPTY;
  let segmentsSent = 0;
  let segmentsConfirmed = 0;
  let sendingDone = false;
  return new Promise<UploadResult>((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => settle(undefined, 'limit'), options.limitMs);
    function settle(err: Error | undefined, ended: UploadResult['ended'] = 'done'): void {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve({ bytes: segmentsConfirmed * segmentBytes, seconds: secondsSince(startedNs), completed: ended === 'done', ended });
    }
    options.signal?.addEventListener('abort', () => settle(undefined, 'aborted'));
    socket.on('error', (err) => settle(new Error(`upload connection failed: ${err.message}`)));
    socket.on('close', () => settle(new Error(`upload connection closed after ${segmentsConfirmed} of ${segmentsSent} segments were confirmed`)));
    socket.on('data', (data: Buffer) => {
      replies = replies.length > 0 ? Buffer.concat([replies, data]) : data;
      while (replies.length >= 40) {
        const count = Number(replies.readBigUInt64LE(0));
        const digest = replies.subarray(8, 40);
        if (count !== segmentBytes || !digest.equals(expected)) {
          return settle(new Error(`integrity: server confirmed ${count} bytes with sha256 ${digest.toString('hex').slice(0, 16)}…, sent ${segmentBytes} bytes with ${expected.toString('hex').slice(0, 16)}…`));
        }
        segmentsConfirmed++;
        replies = replies.subarray(40);
        options.onSegment?.(segmentsConfirmed * segmentBytes);
      }
      if (sendingDone && segmentsConfirmed === segmentsSent) settle(undefined);
    });
    void (async () => {
      const header = Buffer.alloc(9);
      header.write('S', 0);
      header.writeBigUInt64LE(BigInt(segmentBytes), 1);
      for (let sent = 0; sent + segmentBytes <= options.bytes && !settled; sent += segmentBytes) {
        if (options.until?.() && segmentsSent > 0) break;
        socket.write(header);
        for (let k = 0, left = segmentBytes; left > 0 && !settled; k++) {
          const length = Math.min(CHUNK_BYTES, left);
          left -= length;
          if (!socket.write(patternChunk(k, length))) await drainOrClose(socket);
        }
        segmentsSent++;
      }
      sendingDone = true;
      if (segmentsConfirmed === segmentsSent) settle(undefined);
    })().catch((err: Error) => settle(err));
  });
}

/** Downloads `bytes` bytes of the pattern; the time runs from the connect call to the last byte, checked by count and sha256. */
export function download(port: number, bytes: number, limitMs: number): Promise<UploadResult> {
  const expected = patternDigest(bytes);
  const startedNs = process.hrtime.bigint();
  const socket = connect(port);
  const hash = createHash('sha256');
  let received = 0;
  return new Promise<UploadResult>((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => settle(new Error(`download of ${bytes} bytes not done within ${limitMs} ms (${received} received)`)), limitMs);
    function settle(err?: Error): void {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve({ bytes: received, seconds: secondsSince(startedNs), completed: true, ended: 'done' });
    }
    socket.on('error', (err) => settle(new Error(`download connection failed: ${err.message}`)));
    socket.on('close', () => settle(new Error(`download connection closed after ${received} of ${bytes} bytes`)));
    socket.on('data', (data: Buffer) => {
      received += data.length;
      if (received > bytes) return settle(new Error(`integrity: received ${received} bytes, expected ${bytes}`));
      hash.update(data);
      if (received < bytes) return;
      const digest = hash.digest();
      if (!digest.equals(expected)) return settle(new Error(`integrity: download sha256 ${digest.toString('hex').slice(0, 16)}…, expected ${expected.toString('hex').slice(0, 16)}…`));
      settle();
    });
    const header = Buffer.alloc(9);
    header.write('D', 0);
    header.writeBigUInt64LE(BigInt(bytes), 1);
    socket.write(header);
  });
}

/**
 * Downloads the pattern in segments of `segmentBytes` ('D' again after each), each checked by
 * count and sha256, until `until()` says so between segments; the time runs from the connect
 * call to the last byte of the last segment.
 */
export function downloadSegments(port: number, options: Required<Pick<UploadOptions, 'segmentBytes' | 'until' | 'limitMs'>> & Pick<UploadOptions, 'onSegment' | 'signal'>): Promise<UploadResult> {
  const { segmentBytes } = options;
  const expected = patternDigest(segmentBytes);
  const startedNs = process.hrtime.bigint();
  const socket = connect(port);
  const header = Buffer.alloc(9);
  header.write('D', 0);
  header.writeBigUInt64LE(BigInt(segmentBytes), 1);
  let hash = createHash('sha256');
  let received = 0;
  let confirmed = 0;
  return new Promise<UploadResult>((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => settle(undefined, 'limit'), options.limitMs);
    function settle(err?: Error, ended: UploadResult['ended'] = 'done'): void {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve({ bytes: confirmed, seconds: secondsSince(startedNs), completed: ended === 'done', ended });
    }
    options.signal?.addEventListener('abort', () => settle(undefined, 'aborted'));
    socket.on('error', (err) => settle(new Error(`download connection failed: ${err.message}`)));
    socket.on('close', () => settle(new Error(`download connection closed after ${confirmed + received} bytes`)));
    socket.on('data', (data: Buffer) => {
      received += data.length;
      if (received > segmentBytes) return settle(new Error(`integrity: received ${received} bytes in a segment of ${segmentBytes}`));
      hash.update(data);
      if (received < segmentBytes) return;
      if (!hash.digest().equals(expected)) return settle(new Error('integrity: a downloaded segment has the wrong sha256'));
      confirmed += segmentBytes;
      received = 0;
      hash = createHash('sha256');
      options.onSegment?.(confirmed);
      if (options.until()) return settle();
      socket.write(header);
    });
    socket.write(header);
  });
}

/**
 * Round-trip times in microseconds of `rounds` 1-byte echoes on one connection (stops early when
 * `until` says so; `signal` closes the connection, so a round waiting for its reply rejects).
 */
export async function echoRounds(port: number, rounds: number, until?: () => boolean, signal?: AbortSignal): Promise<number[]> {
  const socket = connect(port);
  signal?.addEventListener('abort', () => socket.destroy(), { once: true });
  try {
    socket.write('E');
    const rtts: number[] = [];
    for (let i = 0; i < rounds && !until?.(); i++) {
      const byte = Buffer.of(i & 0xff);
      const reply = nextData(socket, 30_000);
      const startedNs = process.hrtime.bigint();
      socket.write(byte);
      const data = await reply;
      const micros = Number(process.hrtime.bigint() - startedNs) / 1000;
      if (!data.equals(byte)) throw new Error(`integrity: echo round ${i} sent ${byte.toString('hex')}, got ${data.toString('hex')}`);
      rtts.push(micros);
    }
    return rtts;
  } finally {
    socket.destroy();
  }
}

/** Milliseconds from the connect call to the first echoed byte, on a fresh connection. */
export async function connectToFirstByte(port: number): Promise<number> {
  const startedNs = process.hrtime.bigint();
  const socket = connect(port);
  try {
    const reply = nextData(socket, 30_000);
    socket.write('Ex');
    const data = await reply;
    const ms = Number(process.hrtime.bigint() - startedNs) / 1e6;
    if (data.toString() !== 'x') throw new Error(`integrity: first byte ${data.toString('hex')}, expected 78`);
    return ms;
  } finally {
    socket.end();
  }
}

export interface BurstResult {
  served: number;
  /** Seconds from opening the first connection until the last served one had its echo. */
  seconds: number;
  /** Why the others were not served, with counts. */
  failures: Map<string, number>;
}

/** Opens `count` connections in one synchronous loop; each sends 8 bytes and expects them back. */
export function burst(port: number, count: number, limitMs: number): Promise<BurstResult> {
  const startedNs = process.hrtime.bigint();
  const failures = new Map<string, number>();
  let served = 0;
  let lastServedNs = startedNs;
  const one = (id: number): Promise<void> => new Promise((resolve) => {
    const socket = connect(port);
    const message = Buffer.alloc(9);
    message.write('E', 0);
    message.writeBigUInt64LE(BigInt(id) * 0x9e3779b97f4an, 1);
    let got = EMPTY;
    let done = false;
    const timer = setTimeout(() => fail('no echo in time'), limitMs);
    function fail(reason: string): void {
      if (done) return;
      done = true;
      clearTimeout(timer);
      failures.set(reason, (failures.get(reason) ?? 0) + 1);
      socket.destroy();
      resolve();
    }
    socket.on('data', (data: Buffer) => {
      got = Buffer.concat([got, data]);
      if (got.length < 8 || done) return;
      if (!got.subarray(0, 8).equals(message.subarray(1))) return fail('wrong bytes echoed');
      done = true;
      clearTimeout(timer);
      served++;
      lastServedNs = process.hrtime.bigint();
      socket.end();
      resolve();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => fail(err.code ?? err.message));
    socket.on('close', () => fail('closed before the echo'));
    socket.write(message);
  });
  const all: Promise<void>[] = [];
  for (let i = 0; i < count; i++) all.push(one(i));
  return Promise.all(all).then(() => ({ served, seconds: Number(lastServedNs - startedNs) / 1e9, failures }));
}

/** A connection that pushes the pattern as fast as the path takes it, to a reader limited to `rate` bytes/s. */
export interface SlowWriter {
  sent(): number;
  stop(): void;
}

export function slowConsumer(port: number, rate: number, maxBytes: number): SlowWriter {
  const socket = connect(port);
  let sent = 0;
  let stopped = false;
  socket.on('error', () => {});
  const header = Buffer.alloc(5);
  header.write('L', 0);
  header.writeUInt32LE(rate, 1);
  socket.write(header);
  void (async () => {
    for (let k = 0; sent < maxBytes && !stopped; k++) {
      const length = Math.min(CHUNK_BYTES, maxBytes - sent);
      sent += length;
      if (!socket.write(patternChunk(k, length))) await drainOrClose(socket);
    }
  })().catch(() => {});
  return {
    sent: () => sent,
    stop: () => {
      stopped = true;
      socket.destroy();
    },
  };
}
