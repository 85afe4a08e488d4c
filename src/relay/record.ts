/**
 * What the relay knows about a tunnel, and the cloud's rules for its fields (the service
 * model of IoTSecuredTunneling 2018-10-05: lengths and patterns). Tokens are never stored:
 * only their SHA-256 hashes.
 */
import { RelayConfigError } from './errors';

export type PeerMode = 'source' | 'destination';
export type ClientMode = 'SOURCE' | 'DESTINATION' | 'ALL';

export interface EndpointState {
  tokenHash: string;
  /** Set by the first handshake that presented a client token. */
  clientTokenHash?: string;
  /** A handshake without a client token succeeded: the token is spent. */
  consumed: boolean;
  connected: boolean;
  lastUpdatedAt: number; // epoch ms
}

export interface Tag {
  key: string;
  value: string;
}

export interface TunnelRecord {
  tunnelId: string;
  tunnelArn: string;
  status: 'OPEN' | 'CLOSED';
  description?: string;
  thingName?: string;
  services: string[];
  tags: Tag[];
  lifetimeMinutes: number;
  createdAt: number; // epoch ms
  lastUpdatedAt: number;
  source: EndpointState;
  destination: EndpointState;
}

/** TunnelId. */
export const TUNNEL_ID_PATTERN = /^[a-zA-Z0-9_\-+=:]{1,128}$/;
/** Service and ThingName: 1-128 characters. */
export const NAME_PATTERN = /^[a-zA-Z0-9:_-]{1,128}$/;
/** Description: 1-2048 characters, none of Unicode category C (controls, format, unassigned, surrogates). */
export const DESCRIPTION_PATTERN = /^[^\p{C}]{1,2048}$/u;
/** TagKey (1-128) and TagValue (0-256). */
export const TAG_TEXT_PATTERN = /^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$/u;
export const MAX_TAG_KEY_LENGTH = 128;
export const MAX_TAG_VALUE_LENGTH = 256;
/** AWS's tag quota per resource; a request may name up to 200 (the model's TagList), the tunnel keeps at most this many. */
export const MAX_TAGS_PER_TUNNEL = 50;
/** TimeoutConfig.maxLifetimeTimeoutMinutes. */
export const MIN_LIFETIME_MINUTES = 1;
export const MAX_LIFETIME_MINUTES = 720;

const SHA256_HEX = /^[0-9a-f]{64}$/;

/** A state file that cannot be used; the message is one line naming the file (and entry, and field). */
export class StateFileError extends RelayConfigError {
  constructor(message: string) {
    super(message);
    this.name = 'StateFileError';
  }
}

function fail(where: string, what: string): never {
  throw new StateFileError(`${where}: ${what}`);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function checkTime(value: unknown, where: string, field: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) fail(where, `${field} must be a time in epoch milliseconds`);
  return value;
}

function checkEndpoint(value: unknown, where: string, field: PeerMode): EndpointState {
  if (!isObject(value)) fail(where, `${field} must be an object`);
  if (typeof value.tokenHash !== 'string' || !SHA256_HEX.test(value.tokenHash)) fail(where, `${field}.tokenHash must be a SHA-256 hex digest`);
  if (value.clientTokenHash !== undefined && (typeof value.clientTokenHash !== 'string' || !SHA256_HEX.test(value.clientTokenHash))) fail(where, `${field}.clientTokenHash must be a SHA-256 hex digest`);
  if (typeof value.consumed !== 'boolean') fail(where, `${field}.consumed must be true or false`);
  return {
    tokenHash: value.tokenHash,
    ...(value.clientTokenHash !== undefined ? { clientTokenHash: value.clientTokenHash as string } : {}),
    consumed: value.consumed,
    // Nobody is connected to a relay that is starting.
    connected: false,
    lastUpdatedAt: checkTime(value.lastUpdatedAt, where, `${field}.lastUpdatedAt`),
  };
}

/**
 * A tunnel record read from the state file, checked field by field; throws one line naming
 * `where` (file and entry) and the field. Fields added since format 1 take their defaults.
 */
export function checkRecord(value: unknown, where: string): TunnelRecord {
  if (!isObject(value)) fail(where, 'expected a tunnel object');
  const v = value;
  if (typeof v.tunnelId !== 'string' || !TUNNEL_ID_PATTERN.test(v.tunnelId)) fail(where, 'tunnelId must be 1-128 characters of a-z A-Z 0-9 _ - + = :');
  const at = `${where} (tunnel ${v.tunnelId})`;
  if (typeof v.tunnelArn !== 'string' || v.tunnelArn.length === 0 || v.tunnelArn.length > 1600) fail(at, 'tunnelArn must be a string of 1-1600 characters');
  if (v.status !== 'OPEN' && v.status !== 'CLOSED') fail(at, 'status must be OPEN or CLOSED');
  if (v.description !== undefined && (typeof v.description !== 'string' || !DESCRIPTION_PATTERN.test(v.description))) fail(at, 'description must be 1-2048 characters without control characters');
  if (v.thingName !== undefined && (typeof v.thingName !== 'string' || !NAME_PATTERN.test(v.thingName))) fail(at, 'thingName must be 1-128 characters of a-z A-Z 0-9 : _ -');
  if (!Array.isArray(v.services) || !v.services.every((s) => typeof s === 'string' && NAME_PATTERN.test(s))) fail(at, 'services must be a list of service ids (1-128 characters of a-z A-Z 0-9 : _ -)');
  if (new Set(v.services).size !== v.services.length) fail(at, 'services must not repeat');
  const tags = v.tags ?? [];
  if (!Array.isArray(tags) || tags.length > MAX_TAGS_PER_TUNNEL || !tags.every((t) => isObject(t) && typeof t.key === 'string' && typeof t.value === 'string' && t.key.length >= 1 && t.key.length <= MAX_TAG_KEY_LENGTH && t.value.length <= MAX_TAG_VALUE_LENGTH && TAG_TEXT_PATTERN.test(t.key) && TAG_TEXT_PATTERN.test(t.value))) {
    fail(at, `tags must be a list of at most ${MAX_TAGS_PER_TUNNEL} {key, value} pairs`);
  }
  if (!Number.isInteger(v.lifetimeMinutes) || (v.lifetimeMinutes as number) < MIN_LIFETIME_MINUTES || (v.lifetimeMinutes as number) > MAX_LIFETIME_MINUTES) fail(at, `lifetimeMinutes must be an integer from ${MIN_LIFETIME_MINUTES} to ${MAX_LIFETIME_MINUTES}`);
  return {
    tunnelId: v.tunnelId,
    tunnelArn: v.tunnelArn,
    status: v.status,
    ...(v.description !== undefined ? { description: v.description as string } : {}),
    ...(v.thingName !== undefined ? { thingName: v.thingName as string } : {}),
    services: [...(v.services as string[])],
    tags: (tags as Tag[]).map((t) => ({ key: t.key, value: t.value })),
    lifetimeMinutes: v.lifetimeMinutes as number,
    createdAt: checkTime(v.createdAt, at, 'createdAt'),
    lastUpdatedAt: checkTime(v.lastUpdatedAt, at, 'lastUpdatedAt'),
    source: checkEndpoint(v.source, at, 'source'),
    destination: checkEndpoint(v.destination, at, 'destination'),
  };
}
