/**
 * Checks a WebSocket upgrade request against the service's rules (V1 guide, "Handshake").
 * Pure: returns either a refusal (status + one-line reason) or what the token lookup
 * (TunnelDirectory.authorize) and the upgrade need.
 */
import type { IncomingMessage } from 'node:http';
import { CLIENT_TOKEN_PATTERN, SUBPROTOCOL_V1, SUBPROTOCOL_V2, SUBPROTOCOL_V3, type ProtocolVersion } from '../protocol/constants';
import { CREDIT_EXTENSION, EXTENSIONS_HEADER, parseExtensions } from '../protocol/extension';
import { isRefusal as isDirectoryRefusal, type Authorized, type Refusal } from './store/directory';
import type { PeerMode } from './store/record';

export type { Refusal } from './store/directory';

/** The guide's limit for the whole upgrade request. */
export const MAX_HANDSHAKE_BYTES = 4096;
/** RFC 6455 4.1: the base64 of 16 bytes. */
const WEBSOCKET_KEY_PATTERN = /^[+/0-9A-Za-z]{22}==$/;
const TOKEN_COOKIE = 'awsiot-tunnel-token';

/** Extensions whose messages the relay forwards between peers that both declared them (protocol/extension.ts). */
export const RELAY_EXTENSIONS: readonly string[] = [CREDIT_EXTENSION];

/** Highest first. */
const OFFERED_ORDER: Array<[string, ProtocolVersion]> = [[SUBPROTOCOL_V3, 3], [SUBPROTOCOL_V2, 2], [SUBPROTOCOL_V1, 1]];

/** A well-formed upgrade request: whose token it carries is for the directory to say. */
export interface HandshakeRequest {
  mode: PeerMode;
  accessToken: string;
  subprotocol: string;
  version: ProtocolVersion;
  clientToken?: string;
  /** Extensions the peer declared that the relay forwards to it (none for a V1 peer); answered in the response header. */
  extensions: string[];
}

/** A request whose token the directory authorized. */
export interface Accepted extends HandshakeRequest {
  auth: Authorized;
}

function requestBytes(req: IncomingMessage): number {
  let n = (req.method ?? '').length + (req.url ?? '').length + 12; // "GET <url> HTTP/1.1\r\n"
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) n += raw[i].length + raw[i + 1].length + 4;
  return n + 2;
}

function cookieToken(header: string | undefined): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === TOKEN_COOKIE) return part.slice(eq + 1).trim();
  }
  return undefined;
}

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

export function checkHandshake(req: IncomingMessage): HandshakeRequest | Refusal {
  let url: URL;
  try {
    url = new URL(req.url ?? '/', 'http://relay');
  } catch {
    return { status: 400, reason: 'Invalid request target' };
  }
  if (req.method !== 'GET' || url.pathname !== '/tunnel') return { status: 400, reason: 'WebSocket upgrades are only served on GET /tunnel' };
  if (requestBytes(req) > MAX_HANDSHAKE_BYTES) return { status: 400, reason: `Handshake request exceeds ${MAX_HANDSHAKE_BYTES} bytes` };
  // Checked here rather than left to ws, so that every refusal takes the same (bounded) path.
  if (String(req.headers.upgrade ?? '').toLowerCase() !== 'websocket') return { status: 400, reason: 'Only WebSocket upgrades are served' };
  if (!WEBSOCKET_KEY_PATTERN.test(String(req.headers['sec-websocket-key'] ?? '').trim())) return { status: 400, reason: 'Missing or invalid Sec-WebSocket-Key header' };
  if (String(req.headers['sec-websocket-version'] ?? '').trim() !== '13') return { status: 400, reason: 'Unsupported Sec-WebSocket-Version (expected 13)' };
  const mode = url.searchParams.get('local-proxy-mode');
  if (mode !== 'source' && mode !== 'destination') return { status: 400, reason: 'Missing or invalid local-proxy-mode query parameter (source or destination)' };

  const offered = new Set(String(req.headers['sec-websocket-protocol'] ?? '').split(',').map((s) => s.trim()).filter(Boolean));
  const chosen = OFFERED_ORDER.find(([name]) => offered.has(name));
  if (!chosen) return { status: 400, reason: `No supported Sec-WebSocket-Protocol offered (expected one of ${SUBPROTOCOL_V1}, ${SUBPROTOCOL_V2}, ${SUBPROTOCOL_V3})` };

  const headerToken = single(req.headers['access-token']);
  const cookie = cookieToken(single(req.headers.cookie));
  if (headerToken !== undefined && cookie !== undefined) return { status: 400, reason: 'Provide the access token in the access-token header or the awsiot-tunnel-token cookie, not both' };
  const token = headerToken ?? cookie;
  if (!token) return { status: 401, reason: 'Missing access token' };

  const clientToken = single(req.headers['client-token']);
  if (clientToken !== undefined && !CLIENT_TOKEN_PATTERN.test(clientToken)) {
    return { status: 400, reason: 'Invalid client token: must be 32-128 characters of a-z, A-Z, 0-9 and -' };
  }

  const extensions = chosen[1] >= 2 ? parseExtensions(req.headers[EXTENSIONS_HEADER]).filter((name) => RELAY_EXTENSIONS.includes(name)) : [];
  return { mode, accessToken: token, subprotocol: chosen[0], version: chosen[1], extensions, ...(clientToken !== undefined ? { clientToken } : {}) };
}

export function isRefusal(result: object): result is Refusal {
  return isDirectoryRefusal(result);
}
