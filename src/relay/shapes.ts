/**
 * Request validation for the management API, as the cloud does it: the input shapes of the
 * IoTSecuredTunneling 2018-10-05 service model (types, lengths, patterns, ranges, list sizes,
 * required members). A value of the wrong JSON type is a SerializationException; a value that
 * breaks a constraint is collected, and all of them are reported in one ValidationException
 * worded as AWS words it ("2 validation errors detected: Value '0' at
 * 'timeoutConfig.maxLifetimeTimeoutMinutes' failed to satisfy constraint: ..."). Members the
 * model does not name are ignored, and `null` counts as absent, as in the cloud.
 */
import {
  DESCRIPTION_PATTERN, MAX_LIFETIME_MINUTES, MAX_NAME_LENGTH, MAX_TAG_KEY_LENGTH, MAX_TAG_VALUE_LENGTH, MIN_LIFETIME_MINUTES, TAG_TEXT_PATTERN, TUNNEL_ID_PATTERN,
  type DestinationConfig, type Tag,
} from '../api/model';

export type Shape =
  | { type: 'string'; min?: number; max?: number; pattern?: RegExp; patternText?: string; enum?: readonly string[] }
  | { type: 'integer'; min?: number; max?: number }
  | { type: 'boolean' }
  | { type: 'list'; member: Shape; min?: number; max?: number }
  | { type: 'structure'; members: Record<string, Shape>; required?: readonly string[] };

/** A member of the wrong JSON type (AWS: SerializationException). */
export class SerializationError extends Error {}

/** Constraint violations, in AWS's wording (AWS: ValidationException). */
export class ConstraintError extends Error {
  readonly violations: string[];
  constructor(violations: string[]) {
    super(`${violations.length} validation error${violations.length === 1 ? '' : 's'} detected: ${violations.join('; ')}`);
    this.violations = violations;
  }
}

const MAX_SHOWN_CHARS = 64;

/** A value as AWS's messages show it (Java's toString), cut short and with control characters escaped. */
function show(value: unknown): string {
  let text: string;
  if (Array.isArray(value)) text = `[${value.map(show).join(', ')}]`;
  else if (typeof value === 'string') text = value;
  else if (typeof value === 'object' && value !== null) text = '{...}';
  else text = String(value);
  // eslint-disable-next-line no-control-regex
  text = text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return text.length > MAX_SHOWN_CHARS ? `${text.slice(0, MAX_SHOWN_CHARS)}...` : text;
}

function jsonType(value: unknown): string {
  if (Array.isArray(value)) return 'a list';
  if (value === null) return 'null';
  if (typeof value === 'object') return 'an object';
  return `a ${typeof value}`;
}

function wrongType(path: string, expected: string, value: unknown): never {
  throw new SerializationError(`${path} must be ${expected}, not ${jsonType(value)}`);
}

function check(value: unknown, shape: Shape, path: string, violations: string[]): unknown {
  const violation = (constraint: string) => violations.push(`Value '${show(value)}' at '${path}' failed to satisfy constraint: Member must ${constraint}`);
  switch (shape.type) {
    case 'string': {
      if (typeof value !== 'string') wrongType(path, 'a string', value);
      if (shape.enum && !shape.enum.includes(value)) violation(`satisfy enum value set: [${shape.enum.join(', ')}]`);
      if (shape.min !== undefined && value.length < shape.min) violation(`have length greater than or equal to ${shape.min}`);
      if (shape.max !== undefined && value.length > shape.max) violation(`have length less than or equal to ${shape.max}`);
      if (shape.pattern && !shape.pattern.test(value)) violation(`satisfy regular expression pattern: ${shape.patternText ?? shape.pattern.source}`);
      return value;
    }
    case 'integer': {
      if (typeof value !== 'number' || !Number.isInteger(value)) wrongType(path, 'an integer', value);
      if (shape.min !== undefined && value < shape.min) violation(`have value greater than or equal to ${shape.min}`);
      if (shape.max !== undefined && value > shape.max) violation(`have value less than or equal to ${shape.max}`);
      return value;
    }
    case 'boolean':
      if (typeof value !== 'boolean') wrongType(path, 'true or false', value);
      return value;
    case 'list': {
      if (!Array.isArray(value)) wrongType(path, 'a list', value);
      if (shape.min !== undefined && value.length < shape.min) violation(`have length greater than or equal to ${shape.min}`);
      if (shape.max !== undefined && value.length > shape.max) violation(`have length less than or equal to ${shape.max}`);
      return value.map((item, i) => {
        if (item === null) {
          violations.push(`Value null at '${path}.${i + 1}.member' failed to satisfy constraint: Member must not be null`);
          return item;
        }
        return check(item, shape.member, `${path}.${i + 1}.member`, violations);
      });
    }
    case 'structure': {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) wrongType(path, 'an object', value);
      const input = value as Record<string, unknown>;
      const out: Record<string, unknown> = {};
      for (const [name, member] of Object.entries(shape.members)) {
        const at = path ? `${path}.${name}` : name;
        const v = Object.hasOwn(input, name) ? input[name] : undefined;
        if (v === undefined || v === null) {
          if (shape.required?.includes(name)) violations.push(`Value null at '${at}' failed to satisfy constraint: Member must not be null`);
          continue;
        }
        out[name] = check(v, member, at, violations);
      }
      return out;
    }
  }
}

/**
 * Checks a request body against an operation's input shape; returns the known members only.
 * Throws SerializationError or ConstraintError.
 */
export function validateInput<T>(input: unknown, shape: Shape & { type: 'structure' }): T {
  const violations: string[] = [];
  const out = check(input, shape, '', violations);
  if (violations.length > 0) throw new ConstraintError(violations);
  return out as T;
}

const str = (min: number | undefined, max: number | undefined, pattern?: RegExp, patternText?: string): Shape => ({ type: 'string', min, max, pattern, patternText });

// The model's shapes, with the limits the stores load (store/record.ts). Pattern texts are the
// model's, as AWS quotes them.
const TunnelId = str(undefined, undefined, TUNNEL_ID_PATTERN, '[a-zA-Z0-9_\\-+=:]{1,128}');
const Name = str(1, MAX_NAME_LENGTH, /^[a-zA-Z0-9:_-]+$/, '[a-zA-Z0-9:_-]+');
const Description = str(undefined, undefined, DESCRIPTION_PATTERN, '[^\\p{C}]{1,2048}');
const TagKey = str(1, MAX_TAG_KEY_LENGTH, TAG_TEXT_PATTERN, '^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)$');
const TagValue = str(0, MAX_TAG_VALUE_LENGTH, TAG_TEXT_PATTERN, '^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)$');
const TagShape: Shape = { type: 'structure', members: { key: TagKey, value: TagValue }, required: ['key', 'value'] };
const TagList: Shape = { type: 'list', member: TagShape, min: 1, max: 200 };
const ResourceArn = str(1, 1011);
const DestinationConfigShape: Shape = { type: 'structure', members: { thingName: Name, services: { type: 'list', member: Name, min: 1 } }, required: ['services'] };
const ClientMode: Shape = { type: 'string', enum: ['SOURCE', 'DESTINATION', 'ALL'] };

/** OpenTunnel's input, as the model shapes it. */
export interface OpenTunnelInput {
  description?: string;
  tags?: Tag[];
  destinationConfig?: DestinationConfig;
  timeoutConfig?: { maxLifetimeTimeoutMinutes?: number };
}

export const SHAPES = {
  OpenTunnel: {
    type: 'structure',
    members: {
      description: Description,
      tags: TagList,
      destinationConfig: DestinationConfigShape,
      timeoutConfig: { type: 'structure', members: { maxLifetimeTimeoutMinutes: { type: 'integer', min: MIN_LIFETIME_MINUTES, max: MAX_LIFETIME_MINUTES } } },
    },
  },
  CloseTunnel: { type: 'structure', members: { tunnelId: TunnelId, delete: { type: 'boolean' } }, required: ['tunnelId'] },
  DescribeTunnel: { type: 'structure', members: { tunnelId: TunnelId }, required: ['tunnelId'] },
  ListTunnels: {
    type: 'structure',
    members: { thingName: Name, maxResults: { type: 'integer', min: 1, max: 100 }, nextToken: str(undefined, undefined, /^[a-zA-Z0-9_=-]{1,4096}$/, '[a-zA-Z0-9_=-]{1,4096}') },
  },
  RotateTunnelAccessToken: { type: 'structure', members: { tunnelId: TunnelId, clientMode: ClientMode, destinationConfig: DestinationConfigShape }, required: ['tunnelId', 'clientMode'] },
  TagResource: { type: 'structure', members: { resourceArn: ResourceArn, tags: TagList }, required: ['resourceArn', 'tags'] },
  UntagResource: { type: 'structure', members: { resourceArn: ResourceArn, tagKeys: { type: 'list', member: TagKey, min: 0, max: 200 } }, required: ['resourceArn', 'tagKeys'] },
  ListTagsForResource: { type: 'structure', members: { resourceArn: ResourceArn }, required: ['resourceArn'] },
} as const satisfies Record<string, Shape & { type: 'structure' }>;

export type Operation = keyof typeof SHAPES;

export function isOperation(name: string): name is Operation {
  return Object.hasOwn(SHAPES, name);
}
