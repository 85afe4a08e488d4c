/**
 * The management API's data model (IoTSecuredTunneling 2018-10-05), as the cloud defines it:
 * what its operations take and give back, and the bounds of each field (lengths and patterns).
 * The API client checks its flags against them; the relay validates requests and stored
 * records by them.
 */

export type ClientMode = 'SOURCE' | 'DESTINATION' | 'ALL';

export interface Tag {
  key: string;
  value: string;
}

/** Where a tunnel's destination is: its services and, optionally, the thing to notify. */
export interface DestinationConfig {
  services: string[];
  thingName?: string;
}

/** What OpenTunnel gives back: the only time the tokens exist in clear. */
export interface OpenedTunnel {
  tunnelId: string;
  tunnelArn: string;
  sourceAccessToken: string;
  destinationAccessToken: string;
}

/** What RotateTunnelAccessToken gives back: the new token of each mode it rotated. */
export interface RotatedTokens {
  sourceAccessToken?: string;
  destinationAccessToken?: string;
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
