/**
 * Every failure to reach the service is a ConnectError with a stable `code`.
 * `refused` is true only for an HTTP 4xx on the WebSocket upgrade: the service
 * said no, and asking again will not change its mind (Decisions 2: exit 3).
 */
import { printable } from '../printable';

export const ConnectErrorCode = {
  /** Upgrade answered with 4xx: bad, used, rotated or other-mode token, wrong region. */
  REFUSED: 'ERR_CONNECT_REFUSED',
  /** Upgrade answered with a status other than 101 and 4xx (5xx, 3xx, ...). */
  HTTP_STATUS: 'ERR_CONNECT_HTTP_STATUS',
  /** The service host name does not resolve. */
  DNS: 'ERR_CONNECT_DNS',
  /** TCP connect to the service failed (refused, unreachable, reset). */
  TCP: 'ERR_CONNECT_TCP',
  /** The service's certificate was not trusted or does not name the host. */
  CERTIFICATE: 'ERR_CONNECT_CERTIFICATE',
  /** Any other TLS handshake failure. */
  TLS: 'ERR_CONNECT_TLS',
  /** The web proxy could not be reached, or its TLS failed. */
  PROXY: 'ERR_CONNECT_PROXY',
  /** The web proxy answered CONNECT with a non-2xx status or a malformed reply. */
  PROXY_REFUSED: 'ERR_CONNECT_PROXY_REFUSED',
  /** The upgrade response was not a valid WebSocket handshake. */
  HANDSHAKE: 'ERR_CONNECT_HANDSHAKE',
  /** The service chose no subprotocol, or one that is not ours. */
  SUBPROTOCOL: 'ERR_CONNECT_SUBPROTOCOL',
  /** The attempt did not finish within its time bound. */
  TIMEOUT: 'ERR_CONNECT_TIMEOUT',
} as const;

export type ConnectErrorCodeValue = (typeof ConnectErrorCode)[keyof typeof ConnectErrorCode];

export interface ConnectErrorDetails {
  cause?: unknown;
  /** HTTP status of the upgrade (or of the web proxy's CONNECT reply). */
  status?: number;
  /** One-line reason from the response body or status line. */
  reason?: string;
  /** What the operator should check. */
  hint?: string;
}

export class ConnectError extends Error {
  readonly code: ConnectErrorCodeValue;
  readonly refused: boolean;
  readonly status?: number;
  readonly reason?: string;
  readonly hint?: string;
  constructor(code: ConnectErrorCodeValue, message: string, details: ConnectErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'ConnectError';
    this.code = code;
    this.refused = code === ConnectErrorCode.REFUSED;
    this.status = details.status;
    this.reason = details.reason;
    this.hint = details.hint;
  }
}

export function isConnectError(err: unknown): err is ConnectError {
  return err instanceof ConnectError;
}

/**
 * A one-line description of a Node error: its message, or for the AggregateError that
 * happy-eyeballs connects produce (empty message), the messages of its parts.
 */
export function describeError(err: unknown): string {
  if (err instanceof AggregateError && err.errors.length > 0) {
    const parts = [...new Set(err.errors.map((e) => describeError(e)))];
    return parts.join('; ');
  }
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    const text = err.message || code || err.name;
    return oneLine(code && !text.includes(code) ? `${text} (${code})` : text);
  }
  return oneLine(String(err));
}

/** Collapses whitespace so a reason fits on one log line, escapes control characters and bounds its length. */
export function oneLine(text: string, max = 300): string {
  return printable(text.replace(/\s+/g, ' ').trim(), max);
}
