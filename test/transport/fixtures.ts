/**
 * Test parts for the transport: certificates made with the real `openssl` CLI, and a small
 * TLS WebSocket service (https + ws) whose answers each test sets, recording every upgrade
 * request it receives.
 */
import { execFileSync } from 'node:child_process';
import { EventEmitter, once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { createServer as createHttpsServer, type Server } from 'node:https';
import type { IncomingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocketServer, type WebSocket } from 'ws';
import { defaultSettings, Logger, type ProxyOptions, type Settings } from '../../src/index';
import { within } from '../helpers/wait';

export interface Pki {
  dir: string;
  caPem: string;
  certPem: string;
  keyPem: string;
  /** Path of the CA certificate file. */
  caFile: string;
  remove(): void;
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A CA and a leaf for localhost, 127.0.0.1 and ::1 signed by it, in a fresh temp dir. */
export function makePki(name = 'localproxy test CA', subjectAltName = 'DNS:localhost,IP:127.0.0.1,IP:::1'): Pki {
  const dir = mkdtempSync(join(tmpdir(), 'lp-pki-'));
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(dir, ['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', `/CN=${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  openssl(dir, ['req', ...ec, '-keyout', 'leaf.key', '-out', 'leaf.csr', '-subj', '/CN=localhost']);
  writeFileSync(join(dir, 'leaf.ext'), `subjectAltName=${subjectAltName}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
  openssl(dir, ['x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'leaf.pem', '-days', '2', '-extfile', 'leaf.ext']);
  return {
    dir,
    caPem: readFileSync(join(dir, 'ca.pem'), 'utf8'),
    certPem: readFileSync(join(dir, 'leaf.pem'), 'utf8'),
    keyPem: readFileSync(join(dir, 'leaf.key'), 'utf8'),
    caFile: join(dir, 'ca.pem'),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

export interface UpgradeRecord {
  url: string;
  headers: IncomingHttpHeaders;
  rawHeaders: string[];
  servername: string | false;
}

export interface ServiceBehaviour {
  /** Answer the upgrade with this status and body instead of accepting. */
  reject?: { status: number; text?: string; body?: string; /** Announce more body than is sent and keep the connection open. */ stall?: boolean };
  /** Answer only the next `count` upgrades with `status`, then accept. */
  rejectNext?: { status: number; count: number };
  /** Subprotocol to choose: a name, 'none' to send no header, default the first offered. */
  subprotocol?: string | 'none';
  channelId?: string;
  /** Do not answer pings (the ws server answers them by itself otherwise). */
  silent?: boolean;
}

export interface FakeService {
  port: number;
  requests: UpgradeRecord[];
  sockets: Set<WebSocket>;
  behaviour: ServiceBehaviour;
  /** Resolves with the next accepted WebSocket. */
  nextConnection(): Promise<WebSocket>;
  close(): Promise<void>;
}

/** A TLS WebSocket service on 127.0.0.1, port 0. */
export async function startFakeService(tls: { certPem: string; keyPem: string }, behaviour: ServiceBehaviour = {}, host = '127.0.0.1'): Promise<FakeService> {
  const server: Server = createHttpsServer({ cert: tls.certPem, key: tls.keyPem });
  const tcpSockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    tcpSockets.add(socket);
    socket.on('close', () => tcpSockets.delete(socket));
  });
  const service: FakeService = {
    port: 0,
    requests: [],
    sockets: new Set(),
    behaviour,
    nextConnection: () => new Promise((resolve) => wss.once('connection', resolve)),
    close: async () => {
      for (const ws of service.sockets) ws.terminate();
      for (const socket of tcpSockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const handleProtocols = (offered: Set<string>): string | false => {
    const choice = service.behaviour.subprotocol;
    if (choice === 'none') return false;
    return choice ?? [...offered][0] ?? false;
  };
  const addChannelId = (headers: string[]): void => {
    if (service.behaviour.channelId !== undefined) headers.push(`channel-id: ${service.behaviour.channelId}`);
  };
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, handleProtocols });
  // A peer that looks alive at TCP level but never answers pings.
  const silentWss = new WebSocketServer({ noServer: true, perMessageDeflate: false, handleProtocols, autoPong: false });
  wss.on('headers', addChannelId);
  silentWss.on('headers', addChannelId);
  server.on('upgrade', (req, socket: Socket, head) => {
    const tlsSocket = socket as Socket & { servername?: string | false };
    service.requests.push({ url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, servername: tlsSocket.servername ?? false });
    let reject = service.behaviour.reject;
    const next = service.behaviour.rejectNext;
    if (!reject && next && next.count > 0) {
      next.count--;
      reject = { status: next.status, text: 'Service Unavailable', body: 'injected' };
    }
    if (reject) {
      const body = reject.body ?? '';
      const length = Buffer.byteLength(body) + (reject.stall ? 100 : 0);
      const reply = `HTTP/1.1 ${reject.status} ${reject.text ?? 'Refused'}\r\nContent-Type: text/plain\r\nContent-Length: ${length}\r\nConnection: close\r\n\r\n${body}`;
      if (reject.stall) socket.write(reply);
      else socket.end(reply);
      return;
    }
    (service.behaviour.silent ? silentWss : wss).handleUpgrade(req, socket, head, (ws) => {
      service.sockets.add(ws);
      ws.on('close', () => service.sockets.delete(ws));
      wss.emit('connection', ws, req);
    });
  });
  server.listen(0, host);
  await once(server, 'listening');
  service.port = (server.address() as { port: number }).port;
  return service;
}

export interface CapturedLog {
  log: Logger;
  lines: string[];
  text(): string;
  /** Resolves with the first line (already written or to come) containing `text`; bounded by `ms`. */
  waitFor(text: string, ms?: number): Promise<string>;
  /** Resolves once `count` lines contain `text`; bounded by `ms`. */
  waitForCount(text: string, count: number, ms?: number): Promise<void>;
  /** How many lines so far contain `text`. */
  count(text: string): number;
}

/** A logger at `level` that keeps its lines (and echoes them with LOCALPROXY_TEST_LOG set). */
export function captureLog(level = 5, id = 'test'): CapturedLog {
  const lines: string[] = [];
  const events = new EventEmitter();
  const echo = process.env.LOCALPROXY_TEST_LOG !== undefined;
  const log = new Logger({
    level,
    id,
    sink: (line) => {
      lines.push(line);
      events.emit('line', line);
      if (echo) process.stderr.write(line);
    },
  });
  const count = (text: string): number => lines.filter((l) => l.includes(text)).length;
  const waitForCount = (text: string, wanted: number, ms = 10_000): Promise<void> => {
    if (count(text) >= wanted) return Promise.resolve();
    let listener: (() => void) | undefined;
    const reached = new Promise<void>((resolve) => {
      listener = () => {
        if (count(text) >= wanted) resolve();
      };
      events.on('line', listener);
    });
    return within(reached, ms, `${wanted} log lines with "${text}"`).finally(() => events.off('line', listener!));
  };
  const waitFor = (text: string, ms = 10_000): Promise<string> =>
    waitForCount(text, 1, ms).then(() => lines.find((l) => l.includes(text))!);
  return { log, lines, text: () => lines.join(''), waitFor, waitForCount, count };
}

export const ACCESS_TOKEN = 'AQGAAXi-access-token-for-tests-0123456789abcdef';

/** ProxyOptions for a connection to 127.0.0.1:`port`. */
export function optionsFor(port: number, log: Logger, extra: Partial<ProxyOptions> = {}, settings: Partial<Settings> = {}): ProxyOptions {
  return {
    mode: 'source',
    accessToken: ACCESS_TOKEN,
    endpoint: { host: '127.0.0.1', port },
    services: new Map(),
    settings: { ...defaultSettings(), retryDelayMs: 10, retryMaxDelayMs: 40, ...settings },
    log,
    ...extra,
  };
}
