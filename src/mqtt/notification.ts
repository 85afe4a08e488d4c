/**
 * The tunnel notification: what the cloud (and `localproxy relay --mqtt-url`) publishes to a
 * device when a tunnel for its thing is opened or its destination token is rotated.
 *
 *   topic    $aws/things/<thing name>/tunnels/notify
 *   payload  {"clientAccessToken": "...", "clientMode": "destination", "region": "us-east-1", "services": ["SSH"]}
 *
 * Our relay adds `"tunnelId"`, which the cloud's payload lacks (other readers ignore the extra
 * field), so the agent can name the tunnel and tell a rotation from a new tunnel.
 *
 * Shared by the agent (parse) and the relay's notifier (build). No I/O here.
 */
import { ExitError } from '../exit';
import { validateAccessToken, validateRegion, validateServiceId } from '../cli/validate';

/** Far above any real notification (a token is under 1 KiB, a tunnel has at most a few services). */
export const MAX_NOTIFICATION_BYTES = 64 * 1024;
/** The cloud's limit on services per tunnel is 3; the relay allows 10. */
export const MAX_NOTIFIED_SERVICES = 10;
/**
 * The region the relay's notifications carry: the one its tunnel ARNs name. Agents of a
 * self-hosted relay connect to `--proxy-endpoint`, so it only has to be a valid region name.
 */
export const RELAY_REGION = 'local';
/** As the relay's tunnel ids (UUIDs, or ids of up to 128 characters from its store). */
const TUNNEL_ID_PATTERN = /^[a-zA-Z0-9_\-+=:]{1,128}$/;
/** AWS IoT thing names: 1-128 of these characters; no MQTT wildcard (+ #) or level separator (/) can slip in. */
const THING_NAME_PATTERN = /^[a-zA-Z0-9:_-]{1,128}$/;

export interface TunnelNotification {
  clientAccessToken: string;
  clientMode: 'destination';
  region: string;
  services: string[];
  /** From our relay only. */
  tunnelId?: string;
}

/** Why a notification was ignored, and the line that says so (never the token or the raw payload). */
export interface BadNotification {
  kind: 'too large' | 'not JSON' | 'wrong mode' | 'invalid';
  reason: string;
}

export function isValidThingName(name: string): boolean {
  return THING_NAME_PATTERN.test(name);
}

export function notificationTopic(thingName: string): string {
  return `$aws/things/${thingName}/tunnels/notify`;
}

export function encodeNotification(n: TunnelNotification): string {
  const fields: Record<string, unknown> = { clientAccessToken: n.clientAccessToken, clientMode: n.clientMode, region: n.region, services: n.services };
  if (n.tunnelId !== undefined) fields.tunnelId = n.tunnelId;
  return JSON.stringify(fields);
}

/** A value from the payload, quoted, escaped and cut: whoever can publish to the topic chooses it. */
function shown(value: string): string {
  return JSON.stringify(value.length > 32 ? `${value.slice(0, 32)}…` : value);
}

function invalid(reason: string): BadNotification {
  return { kind: 'invalid', reason };
}

/** The message of a validator's usage error (which names what was wrong, never a token). */
function check(validate: () => void): string | undefined {
  try {
    validate();
    return undefined;
  } catch (err) {
    if (err instanceof ExitError) return err.message;
    throw err;
  }
}

/**
 * A payload as received. `regionRequired`: false when the agent has its own endpoint, so the
 * region is not used (a self-hosted relay announces the region "local").
 */
export function parseNotification(payload: Uint8Array, regionRequired: boolean): TunnelNotification | BadNotification {
  if (payload.length > MAX_NOTIFICATION_BYTES) {
    return { kind: 'too large', reason: `a notification of ${payload.length} bytes is over the ${MAX_NOTIFICATION_BYTES}-byte limit` };
  }
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(payload).toString('utf8'));
  } catch {
    // JSON.parse's message quotes the text around the error, which may be part of a token.
    return { kind: 'not JSON', reason: `a notification of ${payload.length} bytes is not JSON` };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { kind: 'not JSON', reason: 'a notification is not a JSON object' };
  const fields = value as Record<string, unknown>;
  if (fields.clientMode !== 'destination') {
    const mode = typeof fields.clientMode === 'string' ? shown(fields.clientMode) : 'missing';
    return { kind: 'wrong mode', reason: `clientMode is ${mode}, not "destination"` };
  }
  const token = fields.clientAccessToken;
  if (typeof token !== 'string') return invalid('clientAccessToken is missing or not a string');
  const tokenProblem = check(() => validateAccessToken(token));
  if (tokenProblem) return invalid(tokenProblem);
  let region = '';
  if (typeof fields.region === 'string') region = fields.region;
  else if (fields.region !== undefined) return invalid('region is not a string');
  if (regionRequired) {
    if (region === '') return invalid('region is missing or empty (give --proxy-endpoint to use a relay of your own)');
    if (check(() => validateRegion(region))) return invalid(`region ${shown(region)} is not a region name (lowercase letters, digits and hyphens)`);
  }
  const services = fields.services;
  if (!Array.isArray(services) || services.length === 0) return invalid('services is missing or empty');
  if (services.length > MAX_NOTIFIED_SERVICES) return invalid(`${services.length} services, more than ${MAX_NOTIFIED_SERVICES}`);
  for (const id of services) {
    if (typeof id !== 'string' || id === '') return invalid('a service id is not a non-empty string');
    if (check(() => validateServiceId(id))) return invalid(`service id ${shown(id)} is not 1-128 of a-z A-Z 0-9 _ -`);
  }
  if (new Set(services).size !== services.length) return invalid('a service id is listed twice');
  const n: TunnelNotification = { clientAccessToken: token, clientMode: 'destination', region, services: services as string[] };
  if (fields.tunnelId !== undefined) {
    if (typeof fields.tunnelId !== 'string' || !TUNNEL_ID_PATTERN.test(fields.tunnelId)) return invalid('tunnelId is not 1-128 of a-z A-Z 0-9 _ - + = :');
    n.tunnelId = fields.tunnelId;
  }
  return n;
}

export function isBadNotification(n: TunnelNotification | BadNotification): n is BadNotification {
  return 'kind' in n;
}
