/**
 * A tunnel record: what the relay keeps about a tunnel, in its journal or in Redis, and the
 * bounds of each field (those of the management API's model, src/api/model.ts, and of the ARN).
 * Tokens are never stored: only their SHA-256 hashes.
 */
import {
  isDescription, isName, isTag, MAX_DESCRIPTION_LENGTH, MAX_LIFETIME_MINUTES, MAX_NAME_LENGTH, MAX_TAGS_PER_TUNNEL, MIN_LIFETIME_MINUTES,
  TUNNEL_ID_PATTERN, type Tag,
} from '../../api/model';

export type PeerMode = 'source' | 'destination';

export interface EndpointState {
  tokenHash: string;
  /** Set by the first handshake that presented a client token. */
  clientTokenHash?: string;
  /** A handshake without a client token succeeded: the token is spent. */
  consumed: boolean;
  connected: boolean;
  lastUpdatedAt: number; // epoch ms
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

/** A stored record the relay would not have written; the message is one line naming where it is (and the field). */
export class RecordError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RecordError';
  }
}

function fail(where: string, what: string): never {
  throw new RecordError(`${where}: ${what}`);
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
 * A tunnel record read from storage, checked field by field; throws a RecordError naming
 * `where` (file and entry) and the field. The writers (rules.ts) hold each field to the same
 * definitions, so the relay never stores what it would refuse here.
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
