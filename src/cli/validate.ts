/**
 * Input validation (behaviour spec section 2) with the reference's message texts.
 * Each check throws a usage ExitError (exit 2) naming what was wrong.
 */
import { usageError } from '../exit';
import { CLIENT_TOKEN_MAX_CHARS, CLIENT_TOKEN_MIN_CHARS, CLIENT_TOKEN_PATTERN } from '../protocol/constants';

const MAX_TOKEN_CHARS = 4096;
const MAX_HOST_CHARS = 253;
const MAX_REGION_CHARS = 64;
const MAX_SERVICE_ID_CHARS = 128;
const MAX_PATH_CHARS = 4096;

// Only ASCII control characters: bytes >= 0x80 are accepted, where the reference
// rejects every non-ASCII character on signed-char platforms (9.5#55).
function hasControl(text: string): boolean {
  return /[\u0000-\u001f\u007f]/.test(text);
}

export function validateAccessToken(token: string): void {
  if (token === '') throw usageError('Access token cannot be empty');
  if (token.length > MAX_TOKEN_CHARS) throw usageError('Access token exceeds maximum allowed length');
  if (hasControl(token)) throw usageError('Access token contains invalid control characters');
}

/** Decisions 7: the documented CLIENT_TOKEN_PATTERN, which the reference never enforced. */
export function validateClientToken(token: string): void {
  if (hasControl(token)) throw usageError('Client token contains invalid control characters');
  if (CLIENT_TOKEN_PATTERN.test(token)) return;
  if (token.length < CLIENT_TOKEN_MIN_CHARS || token.length > CLIENT_TOKEN_MAX_CHARS) throw usageError(`Client token must be between ${CLIENT_TOKEN_MIN_CHARS} and ${CLIENT_TOKEN_MAX_CHARS} characters`);
  throw usageError('Client token must contain only letters, digits and hyphens');
}

export function validateEndpoint(endpoint: string): void {
  if (endpoint === '') throw usageError('Proxy endpoint cannot be empty');
  if (endpoint.length > MAX_HOST_CHARS) throw usageError('Proxy endpoint exceeds maximum allowed length');
  // A URL is the most common mistake: the scheme is always wss://, so only HOST[:PORT] is asked for.
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//.exec(endpoint);
  if (scheme) {
    const rest = endpoint.slice(scheme[0].length).replace(/\/.*$/, '');
    throw usageError(`Proxy endpoint is HOST[:PORT] without a scheme: drop "${scheme[0]}"${rest && /^[a-zA-Z0-9.:[\]-]+$/.test(rest) ? ` (-e ${rest})` : ''}`);
  }
  if (!/^[a-zA-Z0-9.:[\]-]+$/.test(endpoint)) throw usageError(`Proxy endpoint contains invalid characters: ${endpoint}`);
}

export function validateRegion(region: string): void {
  if (region === '') throw usageError('Region cannot be empty');
  if (region.length > MAX_REGION_CHARS) throw usageError('Region exceeds maximum allowed length');
  if (!/^[a-z0-9-]+$/.test(region)) throw usageError(`Region must contain only lowercase letters, numbers, and hyphens: ${region}`);
}

export function validateServiceId(id: string): void {
  if (id.length > MAX_SERVICE_ID_CHARS) throw usageError('Service ID exceeds maximum allowed length');
  if (!/^[a-zA-Z0-9_-]+$/.test(id)) throw usageError(`Service ID must contain only alphanumeric characters, hyphens, and underscores: ${id}`);
}

/** A port from 1 to 65535, digits only (leading zeros allowed, where the reference crashes on them: 9.4#37). */
export function parsePort(text: string): number {
  if (text === '') throw usageError('Port cannot be empty');
  if (!/^\d+$/.test(text)) throw usageError(`Port must contain only digits: ${text}`);
  if (text.replace(/^0+/, '').length > 9) throw usageError(`Port value is too large: ${text}`);
  const port = Number(text);
  if (port < 1 || port > 65535) throw usageError(`Port must be between 1 and 65535: ${text}`);
  return port;
}

export function validatePath(path: string, what: string): void {
  if (path === '') throw usageError(`Path cannot be empty (${what})`);
  if (path.length > MAX_PATH_CHARS) throw usageError(`Path exceeds maximum allowed length (${what})`);
  if (path.includes('\0')) throw usageError(`Path contains invalid null byte (${what})`);
}

/** Bind address rules; returns the host without IPv6 brackets. */
export function validateBindAddress(address: string): string {
  if (address.length > MAX_HOST_CHARS) throw usageError('Bind address exceeds maximum allowed length');
  if (!/^[a-zA-Z0-9.:[\]-]*$/.test(address)) throw usageError(`Bind address contains invalid characters: ${address}`);
  if (address.startsWith('[')) {
    if (!/^\[[0-9a-fA-F:.]+\]$/.test(address)) throw usageError(`Bind address is not a valid bracketed IPv6 address: ${address}`);
    return address.slice(1, -1);
  }
  if (/[[\]]/.test(address)) throw usageError(`Bind address contains invalid characters: ${address}`);
  return address;
}
