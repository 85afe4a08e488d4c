/**
 * The rules of the management API's operations, on one tunnel record. Pure apart from
 * randomness: both stores (local.ts, redis.ts) apply the same ones.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import {
  ACCOUNT_ID_PATTERN, isRegion, REGION_TEXT, tunnelArnOf, type EndpointState, type PeerMode, type TunnelRecord,
} from './record';
import {
  isDescription, isName, isTag, MAX_DESCRIPTION_LENGTH, MAX_LIFETIME_MINUTES, MAX_NAME_LENGTH, MAX_TAG_KEY_LENGTH, MAX_TAG_VALUE_LENGTH,
  MAX_TAGS_PER_TUNNEL, MIN_LIFETIME_MINUTES, type ClientMode, type DestinationConfig, type OpenedTunnel, type RotatedTokens, type Tag,
} from '../../api/model';

/** The account and region in a tunnel's ARN when neither the relay nor the request names one. */
export const DEFAULT_ACCOUNT_ID = '000000000000';
export const DEFAULT_REGION = 'local';

/** An operation the rules refuse, with its AWS error type (the management API's `__type`). */
export class OperationError extends Error {
  readonly type: 'ResourceNotFoundException' | 'ValidationException' | 'LimitExceededException';
  constructor(type: OperationError['type'], message: string) {
    super(message);
    this.name = 'OperationError';
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
    throw new OperationError('ValidationException', `A tunnel may have at most ${maxServices} services (this relay's limit; the cloud's default quota is 3)`);
  }
  for (const id of services) {
    if (!isName(id)) throw new OperationError('ValidationException', `Invalid service id: ${shown(id)} (1-${MAX_NAME_LENGTH} characters of a-z A-Z 0-9 : _ -)`);
  }
  if (new Set(services).size !== services.length) throw new OperationError('ValidationException', 'Duplicate service ids');
  return [...services];
}

/** `current` with `added` merged in: new keys appended, existing keys get the new value. */
export function mergeTags(current: Tag[], added: Tag[]): Tag[] {
  if (new Set(added.map((t) => t.key)).size !== added.length) throw new OperationError('ValidationException', 'Duplicate tag keys in the request');
  for (const t of added) {
    if (!isTag(t)) throw new OperationError('ValidationException', `Invalid tag ${shown((t as Partial<Tag> | null)?.key)}: keys are 1-${MAX_TAG_KEY_LENGTH} and values 0-${MAX_TAG_VALUE_LENGTH} letters, digits, spaces or _ . : / = + - @`);
    if (t.key.toLowerCase().startsWith('aws:')) throw new OperationError('ValidationException', `Tag keys starting with 'aws:' are reserved: ${JSON.stringify(t.key)}`);
  }
  const merged = new Map(current.map((t) => [t.key, t.value]));
  for (const t of added) merged.set(t.key, t.value);
  if (merged.size > MAX_TAGS_PER_TUNNEL) throw new OperationError('ValidationException', `A tunnel may have at most ${MAX_TAGS_PER_TUNNEL} tags`);
  return [...merged].map(([key, value]) => ({ key, value }));
}

export function removeTags(current: Tag[], keys: string[]): Tag[] {
  const drop = new Set(keys);
  return current.filter((t) => !drop.has(t.key));
}

/** A new open tunnel and its two tokens (the only time the tokens exist in clear). */
export function createTunnel(req: OpenTunnelRequest, at: { now: number; region: string; accountId: string; maxServices: number }): { tunnel: TunnelRecord; opened: OpenedTunnel } {
  if (!isRegion(at.region)) throw new OperationError('ValidationException', `Invalid region ${shown(at.region)}: expected ${REGION_TEXT}`);
  if (!ACCOUNT_ID_PATTERN.test(at.accountId)) throw new OperationError('ValidationException', `Invalid account id ${shown(at.accountId)}: expected 12 digits`);
  const services = checkServices(req.services ?? [], at.maxServices);
  const lifetime = req.lifetimeMinutes ?? MAX_LIFETIME_MINUTES;
  if (!Number.isInteger(lifetime) || lifetime < MIN_LIFETIME_MINUTES || lifetime > MAX_LIFETIME_MINUTES) {
    throw new OperationError('ValidationException', `maxLifetimeTimeoutMinutes must be an integer from ${MIN_LIFETIME_MINUTES} to ${MAX_LIFETIME_MINUTES}`);
  }
  if (req.thingName !== undefined && !isName(req.thingName)) throw new OperationError('ValidationException', `Invalid thingName: ${shown(req.thingName)} (1-${MAX_NAME_LENGTH} characters of a-z A-Z 0-9 : _ -)`);
  if (req.description !== undefined && !isDescription(req.description)) throw new OperationError('ValidationException', `Invalid description: 1-${MAX_DESCRIPTION_LENGTH} characters without control characters`);
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
  if (mode !== 'SOURCE' && mode !== 'DESTINATION' && mode !== 'ALL') throw new OperationError('ValidationException', `clientMode must be SOURCE, DESTINATION or ALL`);
  if (tunnel.status !== 'OPEN') throw new OperationError('ValidationException', `Tunnel ${tunnel.tunnelId} is closed`);
  if (destination && mode === 'SOURCE') throw new OperationError('ValidationException', 'destinationConfig cannot be used with clientMode SOURCE');
  const services = destination ? checkServices(destination.services, maxServices) : undefined;
  if (destination?.thingName !== undefined && !isName(destination.thingName)) throw new OperationError('ValidationException', `Invalid thingName: ${shown(destination.thingName)} (1-${MAX_NAME_LENGTH} characters of a-z A-Z 0-9 : _ -)`);
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
