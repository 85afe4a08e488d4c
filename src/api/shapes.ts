/**
 * The output shapes of the IoTSecuredTunneling API, as the AWS CLI (botocore) reads a response:
 * members in the service model's order, members the model does not know and null values left
 * out, and timestamps (epoch seconds on the wire) as the AWS CLI prints them,
 * `2026-12-08T01:55:42.044000+00:00`, in the local time zone.
 */
import type { Operation } from './client';

type Shape = 'scalar' | 'timestamp' | { list: Shape } | { members: ReadonlyArray<readonly [string, Shape]> };

const CONNECTION_STATE: Shape = { members: [['status', 'scalar'], ['lastUpdatedAt', 'timestamp']] };
const DESTINATION_CONFIG: Shape = { members: [['thingName', 'scalar'], ['services', { list: 'scalar' }]] };
const TAGS: Shape = { list: { members: [['key', 'scalar'], ['value', 'scalar']] } };
const TUNNEL: Shape = {
  members: [
    ['tunnelId', 'scalar'], ['tunnelArn', 'scalar'], ['status', 'scalar'],
    ['sourceConnectionState', CONNECTION_STATE], ['destinationConnectionState', CONNECTION_STATE],
    ['description', 'scalar'], ['destinationConfig', DESTINATION_CONFIG],
    ['timeoutConfig', { members: [['maxLifetimeTimeoutMinutes', 'scalar']] }],
    ['tags', TAGS], ['createdAt', 'timestamp'], ['lastUpdatedAt', 'timestamp'],
  ],
};
const TUNNEL_SUMMARY: Shape = {
  members: [
    ['tunnelId', 'scalar'], ['tunnelArn', 'scalar'], ['status', 'scalar'], ['description', 'scalar'],
    ['createdAt', 'timestamp'], ['lastUpdatedAt', 'timestamp'],
  ],
};
const NONE: Shape = { members: [] };

const OUTPUTS: Record<Operation, Shape> = {
  OpenTunnel: { members: [['tunnelId', 'scalar'], ['tunnelArn', 'scalar'], ['sourceAccessToken', 'scalar'], ['destinationAccessToken', 'scalar']] },
  CloseTunnel: NONE,
  DescribeTunnel: { members: [['tunnel', TUNNEL]] },
  ListTunnels: { members: [['tunnelSummaries', { list: TUNNEL_SUMMARY }], ['nextToken', 'scalar']] },
  RotateTunnelAccessToken: { members: [['tunnelArn', 'scalar'], ['sourceAccessToken', 'scalar'], ['destinationAccessToken', 'scalar']] },
  TagResource: NONE,
  UntagResource: NONE,
  ListTagsForResource: { members: [['tags', TAGS]] },
};

function pad(n: number, width = 2): string {
  return String(Math.abs(n)).padStart(width, '0');
}

/** Python's round(): halves to even. */
function roundHalfEven(x: number): number {
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/**
 * Epoch seconds as Python's `datetime.fromtimestamp(seconds, tzlocal()).isoformat()`: the
 * fraction rounded to microseconds (halves to even) and shown only when not zero, the local
 * offset as ±HH:MM.
 */
export function cliTimestamp(seconds: number): string {
  let whole = Math.floor(seconds);
  let micros = roundHalfEven((seconds - whole) * 1e6);
  if (micros >= 1e6) {
    whole += 1;
    micros -= 1e6;
  }
  const instant = new Date(whole * 1000);
  const offset = -instant.getTimezoneOffset();
  const local = new Date(whole * 1000 + offset * 60_000);
  const date = `${pad(local.getUTCFullYear(), 4)}-${pad(local.getUTCMonth() + 1)}-${pad(local.getUTCDate())}`;
  const time = `${pad(local.getUTCHours())}:${pad(local.getUTCMinutes())}:${pad(local.getUTCSeconds())}${micros === 0 ? '' : `.${pad(micros, 6)}`}`;
  return `${date}T${time}${offset < 0 ? '-' : '+'}${pad(Math.trunc(Math.abs(offset) / 60))}:${pad(Math.abs(offset) % 60)}`;
}

function read(value: unknown, shape: Shape): unknown {
  if (shape === 'scalar') return value;
  if (shape === 'timestamp') return typeof value === 'number' && Number.isFinite(value) ? cliTimestamp(value) : value;
  if ('list' in shape) return Array.isArray(value) ? value.filter((item) => item !== null).map((item) => read(item, shape.list)) : value;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return value;
  const source = value as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const [name, member] of shape.members) {
    if (source[name] !== undefined && source[name] !== null) out[name] = read(source[name], member);
  }
  return out;
}

/** A response of `operation` as the AWS CLI holds it before its query and output format. */
export function cliShape(operation: Operation, response: unknown): unknown {
  return read(response, OUTPUTS[operation]);
}
