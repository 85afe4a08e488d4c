/**
 * The relay's HTTP(S) server, before routing: its certificate, the bounds Node enforces
 * (header size, header and request time, idle time, connections), the admission of TCP
 * connections (guard.ts), and the answer to a request Node could not parse or that timed out.
 */
import { createServer as createPlainServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { LogLevel, type Logger } from '../log';
import { checkKeyPair, generateSelfSigned, loadOrCreateSelfSigned } from './certs';
import { ConnectionGuard, endGracefully } from './guard';
import type { RelayLimits } from './limits';

/** How often Node checks the header and request timeouts (its default is 30 s). */
const TIMEOUT_CHECK_MS = 1000;
const STATUS_TEXT: Record<number, string> = { 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 408: 'Request Timeout', 429: 'Too Many Requests', 431: 'Request Header Fields Too Large', 500: 'Internal Server Error', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout' };

/** The certificate and key to serve; none with `plain`. */
export interface TlsMaterial {
  secure: boolean;
  cert?: string;
  key?: string;
  /** The self-signed certificate, for clients to trust. */
  caPem?: string;
}

export interface TlsChoice {
  /** `certFile`/`keyFile` only name the files in error messages. */
  tls?: { cert: string; key: string; certFile?: string; keyFile?: string } | 'self-signed' | 'plain';
  /** Load or create the self-signed certificate there (implies TLS). */
  selfSignedDir?: string;
  /** Names the self-signed certificate covers besides localhost. */
  tlsNames?: string[];
}

/** The certificate to serve: generated, loaded (or created) in a directory, or given; checked to match its key. */
export function tlsMaterial(choice: TlsChoice, log: Logger): TlsMaterial {
  const tls = choice.selfSignedDir ? 'self-signed' : choice.tls ?? 'self-signed';
  if (tls === 'plain') return { secure: false };
  if (tls === 'self-signed') {
    const generated = choice.selfSignedDir
      ? loadOrCreateSelfSigned(choice.selfSignedDir, { names: choice.tlsNames, log })
      : generateSelfSigned(new Date(), choice.tlsNames);
    return { secure: true, cert: generated.certPem, key: generated.keyPem, caPem: generated.certPem };
  }
  checkKeyPair(tls.cert, tls.key, tls.certFile ?? 'the TLS certificate', tls.keyFile ?? 'the TLS private key');
  return { secure: true, cert: tls.cert, key: tls.key };
}

/** The pending connections' guard: per address and in total, with a rate-limited line for each refusal. */
export function connectionGuard(limits: RelayLimits, log: Logger): ConnectionGuard {
  return new ConnectionGuard({
    maxPendingPerAddress: limits.maxPendingPerAddress,
    maxPendingConnections: limits.maxPendingConnections,
    lingerMs: limits.lingerMs,
    onRefused: (why, address) => log.limited(LogLevel.WARNING, `connection-${why}`, why === 'per-address'
      ? `refused a connection from ${address}: it already has ${limits.maxPendingPerAddress} connections that are not tunnel peers`
      : `dropped the oldest of ${limits.maxPendingConnections} connections that are not tunnel peers (from ${address}) to admit a new one`),
  });
}

/** A complete HTTP answer refusing a request: status line, one line of text, and `Connection: close`. */
export function refusal(status: number, reason: string): string {
  const body = `${reason}\n`;
  return `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
}

/** Answers on a raw socket (an upgrade) with a refusal, and ends it `lingerMs` later at most. */
export function refuse(socket: Socket, status: number, reason: string, lingerMs: number): void {
  endGracefully(socket, lingerMs, refusal(status, reason));
}

export interface HttpHandlers {
  request(req: IncomingMessage, res: ServerResponse): void;
  upgrade(req: IncomingMessage, socket: Socket, head: Buffer): void;
}

/** The server, with every bound on what a client without credentials can hold. */
export function httpServer(tls: TlsMaterial, limits: RelayLimits, guard: ConnectionGuard, log: Logger, handlers: HttpHandlers): Server {
  const onRequest = (req: IncomingMessage, res: ServerResponse): void => handlers.request(req, res);
  const options = {
    maxHeaderSize: limits.maxHeaderBytes,
    // Node requires headersTimeout <= requestTimeout.
    headersTimeout: Math.min(limits.headersTimeoutMs, limits.requestTimeoutMs),
    requestTimeout: limits.requestTimeoutMs,
    connectionsCheckingInterval: Math.min(TIMEOUT_CHECK_MS, limits.headersTimeoutMs, limits.requestTimeoutMs),
  };
  const server = tls.secure
    ? createTlsServer({ ...options, cert: tls.cert, key: tls.key, minVersion: 'TLSv1.2', handshakeTimeout: limits.tlsHandshakeTimeoutMs }, onRequest)
    : createPlainServer(options, onRequest);
  server.maxConnections = limits.maxConnections;
  // Node's own inactivity timeout: a connection that is not a peer and moves no byte is destroyed.
  server.timeout = limits.idleTimeoutMs;
  /** TLS sockets whose handshake finished: only those can carry an HTTP answer. */
  const secured = new WeakSet<Socket>();
  server.on('connection', (socket: Socket) => guard.admit(socket));
  server.on('drop', (data?: { remoteAddress?: string }) => {
    log.limited(LogLevel.WARNING, 'connection-limit', `refused a connection from ${data?.remoteAddress ?? 'an unknown address'}: ${limits.maxConnections} connections are open (maxConnections)`);
  });
  server.on('secureConnection', (socket: TLSSocket) => secured.add(socket));
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => handlers.upgrade(req, socket, head));
  server.on('clientError', (err: Error & { code?: string }, socket: Socket) => {
    onClientError(err, socket, tls.secure && !secured.has(socket), limits, log);
  });
  return server;
}

/**
 * Node could not parse a request, or a timeout fired. A TLS socket whose handshake never
 * finished cannot carry an answer (the bytes would wait for that handshake forever): it is
 * destroyed. Otherwise the client gets a status line, and `lingerMs` to read it.
 */
function onClientError(err: Error & { code?: string }, socket: Socket, handshaking: boolean, limits: RelayLimits, log: Logger): void {
  const code = err.code ?? '';
  if (!socket.writable || handshaking || code === 'ECONNRESET' || code === 'EPIPE') {
    if (code === 'ERR_TLS_HANDSHAKE_TIMEOUT') log.limited(LogLevel.DEBUG, 'tls-timeout', `TLS handshake from ${socket.remoteAddress} not finished within ${limits.tlsHandshakeTimeoutMs} ms`);
    socket.destroy();
    return;
  }
  const [status, reason] = code === 'ERR_HTTP_REQUEST_TIMEOUT' ? [408, 'Request timeout']
    : code === 'HPE_HEADER_OVERFLOW' ? [431, 'Request headers too large']
    : [400, 'Bad request'];
  log.limited(LogLevel.DEBUG, 'client-error', `HTTP ${status} to ${socket.remoteAddress}: ${code || err.message}`);
  refuse(socket, status, reason, limits.lingerMs);
}
