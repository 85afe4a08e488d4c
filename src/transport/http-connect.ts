/**
 * An HTTP CONNECT tunnel through a web proxy (behaviour spec 5.2-5.4, Decisions 11):
 * TCP (and TLS for an https:// proxy) to the proxy, `CONNECT host:port` with `Host` and
 * optional Basic auth, then the reply read up to its blank line within a size and time
 * bound. Bytes the proxy sent after the header are put back on the socket, not dropped.
 */
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { Logger } from '../log';
import type { WebProxy } from '../options';
import { ConnectError, ConnectErrorCode, describeError, oneLine } from './errors';
import { describeProxy } from './web-proxy';
import { hostPort, isCertificateError, tcpConnect, tlsHandshake } from './sockets';

/** Largest CONNECT reply header we read before calling the proxy broken. */
export const CONNECT_RESPONSE_MAX_BYTES = 16 * 1024;
/** Time for the proxy to answer the CONNECT once it is sent. */
export const CONNECT_RESPONSE_TIMEOUT_MS = 20_000;

const HEADER_END = Buffer.from('\r\n\r\n');

export interface ProxyTunnelOptions {
  proxy: WebProxy;
  /** Where the tunnel should lead (the service endpoint). */
  target: { host: string; port: number };
  /** Trusted CAs for an https:// proxy (undefined = Node's default store). */
  ca?: string[];
  insecure?: boolean;
  log: Logger;
  signal?: AbortSignal;
  responseTimeoutMs?: number;
}

/** The CONNECT request; `auth` is the decoded `user:password`. */
export function connectRequest(target: { host: string; port: number }, auth?: string): string {
  const authority = hostPort(target.host, target.port);
  let request = `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n`;
  if (auth !== undefined) request += `Proxy-Authorization: Basic ${Buffer.from(auth, 'utf8').toString('base64')}\r\n`;
  return `${request}\r\n`;
}

/** Returns a stream connected through the proxy to the target, ready for the service's TLS. */
export async function openProxyTunnel(options: ProxyTunnelOptions): Promise<Duplex> {
  const { proxy, log, signal } = options;
  const name = describeProxy(proxy);
  log.debug(`Connecting to the web proxy ${name}`);
  let socket: Socket | TLSSocket;
  try {
    socket = await tcpConnect(proxy.host, proxy.port, signal);
  } catch (err) {
    if (signal?.aborted) throw signal.reason;
    const dns = (err as NodeJS.ErrnoException).syscall === 'getaddrinfo';
    const message = dns
      ? `Could not resolve DNS hostname of Web proxy: ${proxy.host} - ${describeError(err)}`
      : `Could not connect to Web Proxy ${name}: ${describeError(err)}`;
    throw new ConnectError(ConnectErrorCode.PROXY, message, { cause: err });
  }
  if (proxy.protocol === 'https') {
    if (options.insecure) log.warn('SECURITY WARNING: SSL host verification is disabled for web proxy - connection is vulnerable to MITM attacks');
    try {
      socket = await tlsHandshake(socket, proxy.host, { ca: options.ca, rejectUnauthorized: !options.insecure }, signal);
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      const what = isCertificateError(err) ? 'certificate not accepted: ' : '';
      throw new ConnectError(ConnectErrorCode.PROXY, `Could not perform SSL handshake with Web Proxy ${name}: ${what}${describeError(err)}`, { cause: err });
    }
  }
  try {
    socket.write(connectRequest(options.target, proxy.auth));
    const { statusLine, status, leftover } = await readConnectResponse(socket, options.responseTimeoutMs ?? CONNECT_RESPONSE_TIMEOUT_MS, signal);
    if (status < 200 || status > 299) throw refusal(name, statusLine, status);
    if (status !== 200) log.warn(`TCP tunnel established but with unexpected response code from the Web proxy: ${statusLine}`);
    else log.debug(`TCP tunnel established successfully through ${name}`);
    // The service's TLS layer reads the socket from here on; it picks up unshifted bytes.
    if (leftover.length > 0) socket.unshift(leftover);
    // Failures of the tunnel socket reach the session through the TLS layer above it; this
    // listener only keeps an error on the lower socket from being an uncaught exception.
    socket.on('error', (err) => log.debug(`Web proxy connection error: ${describeError(err)}`));
    return socket;
  } catch (err) {
    socket.destroy();
    if (signal?.aborted) throw signal.reason;
    throw err;
  }
}

function refusal(name: string, statusLine: string, status: number): ConnectError {
  let hint: string;
  let what = `refused the CONNECT (${statusLine})`;
  if (status === 407) {
    what = `proxy authentication required (${statusLine})`;
    hint = 'check the user and password in the https_proxy URL (percent-encode special characters)';
  } else if (status === 401) {
    // tinyproxy answers a CONNECT with wrong credentials this way (407 only when none were sent).
    what = `proxy authentication failed (${statusLine})`;
    hint = 'check the user and password in the https_proxy URL (percent-encode special characters)';
  } else if (status >= 300 && status < 400) {
    hint = "make sure you're using the correct Web proxy address";
  } else if (status >= 400 && status < 500) {
    hint = 'make sure the Web proxy is configured properly (does it allow CONNECT to this host and port?)';
  } else if (status >= 500) {
    hint = "Web proxy error, make sure to check your server's logs";
  } else {
    hint = 'unexpected response code';
  }
  return new ConnectError(ConnectErrorCode.PROXY_REFUSED, `Web proxy ${name}: ${what}; ${hint}`, { status, reason: statusLine, hint });
}

export interface ConnectResponse {
  statusLine: string;
  status: number;
  leftover: Buffer;
}

/** Reads the proxy's reply header completely (the reference parsed whatever one read returned). */
export function readConnectResponse(socket: Duplex, timeoutMs: number, signal?: AbortSignal): Promise<ConnectResponse> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    let received: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => fail(new ConnectError(ConnectErrorCode.PROXY_REFUSED, `Web proxy did not answer the CONNECT request within ${timeoutMs / 1000} s`)), timeoutMs);
    function onData(chunk: Buffer): void {
      received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);
      const end = received.indexOf(HEADER_END);
      if (end < 0) {
        if (received.length > CONNECT_RESPONSE_MAX_BYTES) {
          fail(new ConnectError(ConnectErrorCode.PROXY_REFUSED, `Web proxy reply header is longer than ${CONNECT_RESPONSE_MAX_BYTES} bytes`));
        }
        return;
      }
      if (end > CONNECT_RESPONSE_MAX_BYTES) {
        fail(new ConnectError(ConnectErrorCode.PROXY_REFUSED, `Web proxy reply header is longer than ${CONNECT_RESPONSE_MAX_BYTES} bytes`));
        return;
      }
      const header = received.subarray(0, end).toString('latin1');
      const statusLine = header.split('\r\n', 1)[0];
      const match = /^HTTP\/\d(?:\.\d)? (\d{3})(?: .*)?$/.exec(statusLine);
      if (!match) {
        fail(new ConnectError(ConnectErrorCode.PROXY_REFUSED, `Web proxy sent a malformed reply: "${oneLine(statusLine, 120)}"`));
        return;
      }
      detach();
      socket.pause();
      resolve({ statusLine: oneLine(statusLine, 200), status: Number(match[1]), leftover: Buffer.from(received.subarray(end + HEADER_END.length)) });
    }
    function onError(err: Error): void {
      fail(new ConnectError(ConnectErrorCode.PROXY_REFUSED, `Could not read HTTP CONNECT response from the Web proxy: ${describeError(err)}`, { cause: err }));
    }
    function onEnd(): void {
      fail(new ConnectError(ConnectErrorCode.PROXY_REFUSED, 'Web proxy closed the connection before answering the CONNECT request'));
    }
    function onAbort(): void {
      fail(signal?.reason);
    }
    function fail(err: unknown): void {
      detach();
      reject(err);
    }
    function detach(): void {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      signal?.removeEventListener('abort', onAbort);
    }
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('end', onEnd);
    socket.on('close', onEnd);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
