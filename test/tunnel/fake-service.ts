/**
 * A scripted tunneling service for focused tunnel tests: a real `ws` server over TLS (our
 * self-signed certificate) on port 0. Each proxy connection becomes a `FakePeer` whose
 * received messages are decoded and queued, and to which tests send hand-made frames —
 * several frames in one WebSocket message when they want to test coalescing.
 */
import { EventEmitter, once } from 'node:events';
import { createServer, type Server } from 'node:https';
import type { Socket } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { defaultSettings, Logger, type ProxyOptions, type ServiceTarget, type Settings } from '../../src/index';
import { encodeFrame, FrameDecoder } from '../../src/protocol/framing';
import { MessageType, typeName, type Message, type MessageInit } from '../../src/protocol/message';
import { generateSelfSigned } from '../../src/relay/certs';
import { waitUntil, within } from '../helpers/wait';

const cert = generateSelfSigned();

export class FakePeer {
  readonly messages: Message[] = [];
  /** Every message received, in order (`take` does not remove from it). */
  readonly received: Message[] = [];
  closeCode?: number;
  readonly closed: Promise<number>;
  private readonly decoder = new FrameDecoder();
  private waiters: Array<() => void> = [];

  constructor(readonly ws: WebSocket, readonly headers: Record<string, string | string[] | undefined>) {
    ws.on('message', (data: Buffer) => {
      this.decoder.push(data, (msg) => { this.messages.push(msg); this.received.push(msg); }, (err) => { throw err; });
      this.wake();
    });
    this.closed = new Promise((resolve) => ws.on('close', (code: number) => {
      this.closeCode = code;
      this.wake();
      resolve(code);
    }));
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  /** Sends the frames of all `msgs` in ONE WebSocket message. */
  send(...msgs: MessageInit[]): void {
    this.ws.send(Buffer.concat(msgs.map((m) => encodeFrame(m))));
  }

  serviceIds(...ids: string[]): void {
    this.send({ type: MessageType.SERVICE_IDS, availableServiceIds: ids });
  }

  /** Waits for (and removes) the first queued message matching `pred`; earlier ones stay queued. */
  async take(pred: (m: Message) => boolean = () => true, ms = 5000, what = 'a message'): Promise<Message> {
    const deadline = Date.now() + ms;
    for (;;) {
      const at = this.messages.findIndex(pred);
      if (at >= 0) return this.messages.splice(at, 1)[0];
      if (this.closeCode !== undefined) throw new Error(`proxy connection closed (${this.closeCode}) while waiting for ${what}; queued: ${this.describe()}`);
      await within(new Promise<void>((resolve) => this.waiters.push(resolve)), Math.max(1, deadline - Date.now()), `${what} (queued: ${this.describe()})`);
    }
  }

  /** The next message of a type. */
  takeType(type: number, ms = 5000): Promise<Message> {
    return this.take((m) => m.type === type, ms, typeName(type));
  }

  /** Collects DATA payloads of a connection until `bytes` have arrived. */
  async takeData(streamId: number, connectionId: number, bytes: number, ms = 10_000): Promise<Buffer> {
    const parts: Buffer[] = [];
    let got = 0;
    while (got < bytes) {
      const m = await this.take((x) => x.type === MessageType.DATA && x.streamId === streamId && x.connectionId === connectionId, ms, `DATA for stream ${streamId} connection ${connectionId} (${got}/${bytes} bytes)`);
      parts.push(Buffer.from(m.payload));
      got += m.payload.length;
    }
    return Buffer.concat(parts);
  }

  describe(): string {
    return this.messages.map((m) => `${typeName(m.type)}(s${m.streamId} c${m.connectionId} '${m.serviceId}' ${m.payload.length}B)`).join(', ') || 'none';
  }
}

export interface FakeService {
  port: number;
  caPem: string;
  /** Every proxy connection so far. */
  peers: FakePeer[];
  /** The n-th proxy connection (0-based), once it exists. */
  peer(n?: number, ms?: number): Promise<FakePeer>;
  close(): Promise<void>;
}

export interface FakeServiceOptions {
  /** The subprotocol to choose; default the first one offered. */
  subprotocol?: string;
  autoPong?: boolean;
  /** Called for each upgrade: a status to refuse it with, or undefined to accept. */
  refuse?: () => number | undefined;
  /** Extensions named in the `localproxy-extensions` response header (as our relay does for credit/1). */
  extensions?: string[];
}

export async function startFakeService(options: FakeServiceOptions = {}): Promise<FakeService> {
  const server: Server = createServer({ cert: cert.certPem, key: cert.keyPem });
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  const wss = new WebSocketServer({
    server,
    autoPong: options.autoPong ?? true,
    verifyClient: (_info, done) => {
      const status = options.refuse?.();
      if (status) done(false, status, 'refused by the test');
      else done(true);
    },
    handleProtocols: (offered) => options.subprotocol ?? [...offered][0] ?? false,
  });
  if (options.extensions?.length) wss.on('headers', (headers) => headers.push(`localproxy-extensions: ${options.extensions!.join(', ')}`));
  const peers: FakePeer[] = [];
  let arrivals: Array<() => void> = [];
  wss.on('connection', (ws, req) => {
    peers.push(new FakePeer(ws, req.headers));
    const waiting = arrivals;
    arrivals = [];
    for (const w of waiting) w();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  return {
    port,
    caPem: cert.certPem,
    peers,
    async peer(n = 0, ms = 5000): Promise<FakePeer> {
      const deadline = Date.now() + ms;
      while (peers.length <= n) {
        await within(new Promise<void>((resolve) => arrivals.push(resolve)), Math.max(1, deadline - Date.now()), `proxy connection #${n + 1}`);
      }
      return peers[n];
    },
    async close(): Promise<void> {
      for (const ws of wss.clients) ws.terminate();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Log lines a proxy wrote, for assertions. */
export class LogCapture {
  readonly lines: string[] = [];
  readonly logger: Logger;
  private readonly events = new EventEmitter();
  constructor(level = Number(process.env.LOCALPROXY_TEST_LOG ?? 5)) {
    this.logger = new Logger({ level: Math.max(level, 5), id: 'test', sink: (line) => {
      this.lines.push(line);
      this.events.emit('line');
      if (process.env.LOCALPROXY_TEST_LOG) process.stderr.write(line);
    } });
  }
  /** Resolves once a line containing `text` has been logged. */
  waitFor(text: string, ms = 5000): Promise<void> {
    return waitUntil(this.events, 'line', () => this.has(text), ms, `log line '${text}'`);
  }
  count(text: string): number {
    return this.lines.filter((l) => l.includes(text)).length;
  }
  has(text: string): boolean {
    return this.count(text) > 0;
  }
}

/** ProxyOptions for a proxy talking to the fake service; fast retries, no pings during tests. */
export function fakeOptions(service: FakeService, mode: ProxyOptions['mode'], services: Record<string, number | ServiceTarget>, extra: Partial<ProxyOptions> = {}, settings: Partial<Settings> = {}): ProxyOptions & { capture: LogCapture } {
  const capture = new LogCapture();
  return {
    mode,
    accessToken: `test-access-token-${mode}`,
    endpoint: { host: '127.0.0.1', port: service.port },
    services: new Map(Object.entries(services).map(([id, t]) => [id, typeof t === 'number' ? { kind: 'tcp', host: '127.0.0.1', port: t } as ServiceTarget : t])),
    ca: [service.caPem],
    settings: { ...defaultSettings(), retryDelayMs: 20, retryMaxDelayMs: 200, pingPeriodMs: 60_000, tcpConnectionRetryDelayMs: 20, ...settings },
    log: capture.logger,
    capture,
    ...extra,
  };
}
