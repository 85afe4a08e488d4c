/**
 * The two socket steps every connection makes - TCP connect, TLS handshake - as promises
 * that settle exactly once and give up when `signal` aborts (rejecting with its reason).
 * The caller classifies the error; these only wait.
 */
import { connect as netConnect, isIP, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';
import { secureContextFor } from './ca';

export function tcpConnect(host: string, port: number, signal?: AbortSignal): Promise<Socket> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const socket = netConnect({ host, port, noDelay: true });
    const onConnect = (): void => {
      detach();
      resolve(socket);
    };
    const onError = (err: Error): void => {
      detach();
      socket.destroy();
      reject(err);
    };
    const onAbort = (): void => {
      detach();
      socket.destroy();
      reject(signal?.reason);
    };
    function detach(): void {
      socket.off('connect', onConnect);
      socket.off('error', onError);
      signal?.removeEventListener('abort', onAbort);
    }
    socket.on('connect', onConnect);
    socket.on('error', onError);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export class ClosedDuringHandshake extends Error {
  constructor() {
    super('connection closed during the TLS handshake');
    this.name = 'ClosedDuringHandshake';
  }
}

/**
 * TLS over an open stream. `host` is checked against the certificate (IP SANs included);
 * SNI is sent only for host names, as RFC 6066 forbids IP literals in it.
 */
export function tlsHandshake(
  socket: Duplex,
  host: string,
  options: { ca?: string[]; rejectUnauthorized?: boolean },
  signal?: AbortSignal,
): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const tls = tlsConnect({
      socket,
      host,
      servername: isIP(host) ? undefined : host,
      minVersion: 'TLSv1.2',
      secureContext: options.ca ? secureContextFor(options.ca) : undefined,
      rejectUnauthorized: options.rejectUnauthorized,
    });
    const onSecure = (): void => {
      detach();
      resolve(tls);
    };
    const onError = (err: Error): void => {
      detach();
      tls.destroy();
      socket.destroy();
      reject(err);
    };
    const onClose = (): void => onError(new ClosedDuringHandshake());
    const onAbort = (): void => {
      detach();
      tls.destroy();
      socket.destroy();
      reject(signal?.reason);
    };
    function detach(): void {
      tls.off('secureConnect', onSecure);
      tls.off('error', onError);
      tls.off('close', onClose);
      signal?.removeEventListener('abort', onAbort);
    }
    tls.on('secureConnect', onSecure);
    tls.on('error', onError);
    tls.on('close', onClose);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** `host:port`, with brackets round an IPv6 literal. */
export function hostPort(host: string, port: number): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

/** True for the OpenSSL/Node codes that mean "the certificate was not accepted". */
export function isCertificateError(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code ?? '';
  return (
    code === 'ERR_TLS_CERT_ALTNAME_INVALID' ||
    /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|ISSUER|CHAIN|SIGNATURE_FAILURE|DEPTH_ZERO/.test(code)
  );
}
