/**
 * What the relay knows about a tunnel, and the cloud's rules for its fields (the service
 * model of IoTSecuredTunneling 2018-10-05: lengths and patterns). Tokens are never stored:
 * only their SHA-256 hashes.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
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
export const MAX_NAME_LENGTH = 128;
export const NAME_PATTERN = new RegExp(`^[a-zA-Z0-9:_-]{1,${MAX_NAME_LENGTH}}$`);
/** Description: 1-2048 characters, none of Unicode category C (controls, format, unassigned, surrogates). */
export const MAX_DESCRIPTION_LENGTH = 2048;
export const DESCRIPTION_PATTERN = new RegExp(`^[^\\p{C}]{1,${MAX_DESCRIPTION_LENGTH}}$`, 'u');
/** TagKey (1-128) and TagValue (0-256). */
export const TAG_TEXT_PATTERN = /^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$/u;
export const MAX_TAG_KEY_LENGTH = 128;
export const MAX_TAG_VALUE_LENGTH = 256;
/** AWS's tag quota per resource; a request may name up to 200 (the model's TagList), the tunnel keeps at most this many. */
export const MAX_TAGS_PER_TUNNEL = 50;
/** TimeoutConfig.maxLifetimeTimeoutMinutes. */
export const MIN_LIFETIME_MINUTES = 1;
export const MAX_LIFETIME_MINUTES = 720;
/**
 * A region in an ARN: an AWS region's shape (`us-east-1`, `us-gov-west-1`, `my-lab-1`) or
 * `local`, the relay's own name. It comes from the request's signature or `--region`.
 */
export const MAX_REGION_LENGTH = 32;
const REGION_PATTERN = /^(?:local|[a-z]{2}(?:-[a-z0-9]+)+-\d{1,3})$/;
export const REGION_TEXT = `a region such as eu-west-1 (at most ${MAX_REGION_LENGTH} characters)`;
/** The account in an ARN. */
export const ACCOUNT_ID_PATTERN = /^\d{12}$/;

export function isRegion(value: unknown): value is string {
  return typeof value === 'string' && value.length <= MAX_REGION_LENGTH && REGION_PATTERN.test(value);
}

export function isName(value: unknown): value is string {
  return typeof value === 'string' && NAME_PATTERN.test(value);
}

export function isDescription(value: unknown): value is string {
  return typeof value === 'string' && DESCRIPTION_PATTERN.test(value);
}

export function isTag(value: unknown): value is Tag {
  if (typeof value !== 'object' || value === null) return false;
  const { key, value: text } = value as { key?: unknown; value?: unknown };
  return typeof key === 'string' && typeof text === 'string' && key.length >= 1 && key.length <= MAX_TAG_KEY_LENGTH
    && text.length <= MAX_TAG_VALUE_LENGTH && TAG_TEXT_PATTERN.test(key) && TAG_TEXT_PATTERN.test(text);
}

/** The ARN partition of a region: aws, aws-cn or aws-us-gov. */
export function partitionOf(region: string): string {
  if (region.startsWith('cn-')) return 'aws-cn';
  if (region.startsWith('us-gov-')) return 'aws-us-gov';
  return 'aws';
}

export function tunnelArnOf(region: string, accountId: string, tunnelId: string): string {
  return `arn:${partitionOf(region)}:iot:${region}:${accountId}:tunnel/${tunnelId}`;
}

/** Whether `arn` is the ARN of tunnel `tunnelId` in some region and account. */
function isArnOf(arn: unknown, tunnelId: string): arn is string {
  if (typeof arn !== 'string') return false;
  const m = /^arn:[a-z-]+:iot:([^:]+):([^:]+):tunnel\/(.+)$/.exec(arn);
  return m !== null && isRegion(m[1]) && ACCOUNT_ID_PATTERN.test(m[2]) && m[3] === tunnelId && arn === tunnelArnOf(m[1], m[2], tunnelId);
}

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
 * A tunnel record read from storage, checked field by field; throws one line naming `where`
 * (file and entry) and the field. The writers (createTunnel, rotateTunnel, mergeTags) hold
 * each field to the same definitions, so the relay never stores what it would refuse here.
 */
export function checkRecord(value: unknown, where: string): TunnelRecord {
  if (!isObject(value)) fail(where, 'expected a tunnel object');
  const v = value;
  if (typeof v.tunnelId !== 'string' || !TUNNEL_ID_PATTERN.test(v.tunnelId)) fail(where, 'tunnelId must be 1-128 characters of a-z A-Z 0-9 _ - + = :');
  const at = `${where} (tunnel ${v.tunnelId})`;
  if (!isArnOf(v.tunnelArn, v.tunnelId)) fail(at, `tunnelArn must be arn:PARTITION:iot:REGION:ACCOUNT:tunnel/${v.tunnelId}, with ${REGION_TEXT} and 12 digits`);
  if (v.status !== 'OPEN' && v.status !== 'CLOSED') fail(at, 'status must be OPEN or CLOSED');
  if (v.description !== undefined && !isDescription(v.description)) fail(at, `description must be 1-${MAX_DESCRIPTION_LENGTH} characters without control characters`);
  if (v.thingName !== undefined && !isName(v.thingName)) fail(at, `thingName must be 1-${MAX_NAME_LENGTH} characters of a-z A-Z 0-9 : _ -`);
  if (!Array.isArray(v.services) || !v.services.every(isName)) fail(at, `services must be a list of service ids (1-${MAX_NAME_LENGTH} characters of a-z A-Z 0-9 : _ -)`);
  if (new Set(v.services).size !== v.services.length) fail(at, 'services must not repeat');
  const tags = v.tags;
  if (!Array.isArray(tags) || tags.length > MAX_TAGS_PER_TUNNEL || !tags.every(isTag)) {
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

// ---------------------------------------------------------------------------------------------
// The rules of the management API's operations, on one record. Pure apart from randomness:
// the in-memory registry (tunnels.ts) and the shared store (store/redis.ts) apply the same ones.

export class RegistryError extends Error {
  /** An AWS error type name, as the management API reports it (`__type`). */
  readonly type: 'ResourceNotFoundException' | 'ValidationException' | 'LimitExceededException';
  constructor(type: RegistryError['type'], message: string) {
    super(message);
    this.name = 'RegistryError';
    this.type = type;
  }
}

export interface OpenTunnelRequest {
  services?: string[];
  lifetimeMinutes?: number;
  description?: string;
  thingName?: string;
  tags?: Tag[];
}

export interface OpenedTunnel {
  tunnelId: string;
  tunnelArn: string;
  sourceAccessToken: string;
  destinationAccessToken: string;
}

export interface RotatedTokens {
  sourceAccessToken?: string;
  destinationAccessToken?: string;
}

export interface DestinationConfig {
  services: string[];
  thingName?: string;
}

/** A value from a request, as an error message shows it: JSON, cut short. */
function shown(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 80)}...` : text;
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

function newToken(): string {
  // Same alphabet family as the cloud's tokens (base64url), long enough to be unguessable.
  return 'AQG' + randomBytes(96).toString('base64url');
}

function newEndpoint(token: string, now: number): EndpointState {
  return { tokenHash: hashToken(token), consumed: false, connected: false, lastUpdatedAt: now };
}

export function checkServices(services: string[], maxServices: number): string[] {
  if (services.length > maxServices) {
    throw new RegistryError('ValidationException', `A tunnel may have at most ${maxServices} services (this relay's limit; the cloud's default quota is 3)`);
  }
  for (const id of services) {
    if (!isName(id)) throw new RegistryError('ValidationException', `Invalid service id: ${shown(id)} (1-${MAX_NAME_LENGTH} characters of a-z A-Z 0-9 : _ -)`);
  }
  if (new Set(services).size !== services.length) throw new RegistryError('ValidationException', 'Duplicate service ids');
  return [...services];
}

/** `current` with `added` merged in: new keys appended, existing keys get the new value. */
export function mergeTags(current: Tag[], added: Tag[]): Tag[] {
  if (new Set(added.map((t) => t.key)).size !== added.length) throw new RegistryError('ValidationException', 'Duplicate tag keys in the request');
  for (const t of added) {
    if (!isTag(t)) throw new RegistryError('ValidationException', `Invalid tag ${shown((t as Partial<Tag> | null)?.key)}: keys are 1-${MAX_TAG_KEY_LENGTH} and values 0-${MAX_TAG_VALUE_LENGTH} letters, digits, spaces or _ . : / = + - @`);
    if (t.key.toLowerCase().startsWith('aws:')) throw new RegistryError('ValidationException', `Tag keys starting with 'aws:' are reserved: ${JSON.stringify(t.key)}`);
  }
  const merged = new Map(current.map((t) => [t.key, t.value]));
  for (const t of added) merged.set(t.key, t.value);
  if (merged.size > MAX_TAGS_PER_TUNNEL) throw new RegistryError('ValidationException', `A tunnel may have at most ${MAX_TAGS_PER_TUNNEL} tags`);
  return [...merged].map(([key, value]) => ({ key, value }));
}

export function removeTags(current: Tag[], keys: string[]): Tag[] {
  const drop = new Set(keys);
  return current.filter((t) => !drop.has(t.key));
}

/** A new open tunnel and its two tokens (the only time the tokens exist in clear). */
export function createTunnel(req: OpenTunnelRequest, at: { now: number; region: string; accountId: string; maxServices: number }): { tunnel: TunnelRecord; opened: OpenedTunnel } {
  if (!isRegion(at.region)) throw new RegistryError('ValidationException', `Invalid region ${shown(at.region)}: expected ${REGION_TEXT}`);
  if (!ACCOUNT_ID_PATTERN.test(at.accountId)) throw new RegistryError('ValidationException', `Invalid account id ${shown(at.accountId)}: expected 12 digits`);
  const services = checkServices(req.services ?? [], at.maxServices);
  const lifetime = req.lifetimeMinutes ?? MAX_LIFETIME_MINUTES;
  if (!Number.isInteger(lifetime) || lifetime < MIN_LIFETIME_MINUTES || lifetime > MAX_LIFETIME_MINUTES) {
    throw new RegistryError('ValidationException', `maxLifetimeTimeoutMinutes must be an integer from ${MIN_LIFETIME_MINUTES} to ${MAX_LIFETIME_MINUTES}`);
  }
  if (req.thingName !== undefined && !isName(req.thingName)) throw new RegistryError('ValidationException', `Invalid thingName: ${shown(req.thingName)} (1-${MAX_NAME_LENGTH} characters of a-z A-Z 0-9 : _ -)`);
  if (req.description !== undefined && !isDescription(req.description)) throw new RegistryError('ValidationException', `Invalid description: 1-${MAX_DESCRIPTION_LENGTH} characters without control characters`);
  const tags = mergeTags([], req.tags ?? []);
  const tunnelId = randomUUID();
  const sourceAccessToken = newToken();
  const destinationAccessToken = newToken();
  const tunnel: TunnelRecord = {
    tunnelId,
    tunnelArn: tunnelArnOf(at.region, at.accountId, tunnelId),
    status: 'OPEN',
    ...(req.description !== undefined ? { description: req.description } : {}),
    ...(req.thingName !== undefined ? { thingName: req.thingName } : {}),
    services,
    tags,
    lifetimeMinutes: lifetime,
    createdAt: at.now,
    lastUpdatedAt: at.now,
    source: newEndpoint(sourceAccessToken, at.now),
    destination: newEndpoint(destinationAccessToken, at.now),
  };
  return { tunnel, opened: { tunnelId, tunnelArn: tunnel.tunnelArn, sourceAccessToken, destinationAccessToken } };
}

/** When the tunnel's lifetime runs out (epoch ms). */
export function expiresAt(tunnel: TunnelRecord): number {
  return tunnel.createdAt + tunnel.lifetimeMinutes * 60_000;
}

/** The peer modes a RotateTunnelAccessToken client mode replaces. */
export function rotatedModes(mode: ClientMode): PeerMode[] {
  return mode === 'ALL' ? ['source', 'destination'] : [mode === 'SOURCE' ? 'source' : 'destination'];
}

/**
 * New tokens for `mode` in `tunnel` (changed in place); with a destination config (not for
 * SOURCE, as in the cloud) the services and thing name are replaced. Throws before any change.
 */
export function rotateTunnel(tunnel: TunnelRecord, mode: ClientMode, destination: DestinationConfig | undefined, now: number, maxServices: number): RotatedTokens {
  if (mode !== 'SOURCE' && mode !== 'DESTINATION' && mode !== 'ALL') throw new RegistryError('ValidationException', `clientMode must be SOURCE, DESTINATION or ALL`);
  if (tunnel.status !== 'OPEN') throw new RegistryError('ValidationException', `Tunnel ${tunnel.tunnelId} is closed`);
  if (destination && mode === 'SOURCE') throw new RegistryError('ValidationException', 'destinationConfig cannot be used with clientMode SOURCE');
  const services = destination ? checkServices(destination.services, maxServices) : undefined;
  if (destination?.thingName !== undefined && !isName(destination.thingName)) throw new RegistryError('ValidationException', `Invalid thingName: ${shown(destination.thingName)} (1-${MAX_NAME_LENGTH} characters of a-z A-Z 0-9 : _ -)`);
  const out: RotatedTokens = {};
  for (const peerMode of rotatedModes(mode)) {
    const token = newToken();
    tunnel[peerMode] = newEndpoint(token, now);
    if (peerMode === 'source') out.sourceAccessToken = token;
    else out.destinationAccessToken = token;
  }
  if (destination && services) {
    tunnel.services = services;
    if (destination.thingName !== undefined) tunnel.thingName = destination.thingName;
    else delete tunnel.thingName;
  }
  tunnel.lastUpdatedAt = now;
  return out;
}

/** The client-token rule of the protocol guide: a refusal text, or undefined when the handshake may proceed. */
export function clientTokenRefusal(endpoint: EndpointState, clientToken: string | undefined): string | undefined {
  if (endpoint.consumed) return 'Invalid access token: The access token was previously used and cannot be used again';
  if (endpoint.clientTokenHash !== undefined && (clientToken === undefined || hashToken(clientToken) !== endpoint.clientTokenHash)) {
    return 'Invalid client token: The provided client token does not match the client token that was previously set.';
  }
  return undefined;
}

/** A handshake succeeded: the token is spent (no client token) or bound to the client token. Returns whether that changed the endpoint. */
export function spendToken(endpoint: EndpointState, clientToken: string | undefined): boolean {
  const before = `${endpoint.consumed}/${endpoint.clientTokenHash}`;
  if (clientToken === undefined) endpoint.consumed = true;
  else endpoint.clientTokenHash ??= hashToken(clientToken);
  return `${endpoint.consumed}/${endpoint.clientTokenHash}` !== before;
}
