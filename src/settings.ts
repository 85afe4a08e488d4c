/**
 * Fine-grained settings (`--settings-json`, `--export-default-settings`), under the
 * reference's key names below `tunneling.proxy.`. Unlike the reference, a settings file
 * is merged over the defaults (Decisions 9) and a value of the wrong type is an error
 * naming its key instead of a silent fallback.
 */
import { MAX_MESSAGE_BYTES, MAX_PAYLOAD_BYTES, MAX_WS_MESSAGE_BYTES } from './protocol/constants';
import { DEFAULT_MIN_MESSAGE_BYTES, DEFAULT_TARGET_DELAY_MS, type PacerSettings } from './flow/pacer';

export interface Settings {
  defaultBindAddress: string;
  endpointFormat: string;
  regionEndpointOverrides: Record<string, string>;
  maxPayloadSize: number;
  maxSize: number;
  tcpConnectionRetryCount: number;
  tcpConnectionRetryDelayMs: number;
  maxActiveConnections: number;
  pingPeriodMs: number;
  maxMissedPings: number;
  retryDelayMs: number;
  retryMaxDelayMs: number;
  connectRetryCount: number;
  reconnectOnDataError: boolean;
  subprotocol: string;
  maxFrameSize: number;
  /** Total bytes waiting to be written to local applications before the WebSocket reader pauses. */
  inboundBudgetBytes: number;
  /** WebSocket send backlog above which local sockets stop being read. */
  outboundHighWaterBytes: number;
  /** Queueing delay the pacer keeps in front of the service (ms, issue 13); 0 turns pacing off. */
  targetDelayMs: number;
  /** Range of DATA payload sizes: about 5 ms at the measured rate, within these (and message.max_payload_size). */
  minMessageBytes: number;
  maxMessageBytes: number;
  /**
   * The credit/1 extension (per-connection flow control between localproxy peers, issue 14):
   * auto = announced when the service says it forwards it (our relay does), on = always, off = never.
   */
  creditExtension: CreditMode;
  /** First window per connection with credit, and the largest it grows to. */
  creditWindowBytes: number;
  creditMaxWindowBytes: number;
  /** Windows stop growing while the bytes granted and not yet taken, all connections together, would exceed this. */
  creditTotalBytes: number;
}

export const CREDIT_MODES = ['auto', 'on', 'off'] as const;
export type CreditMode = (typeof CREDIT_MODES)[number];

type Kind = 'string' | 'int' | 'bool' | 'map' | 'choice';

interface KeySpec {
  /** Path below `tunneling.proxy.`. */
  key: string;
  field: keyof Settings;
  kind: Kind;
  /** Smallest accepted integer (inclusive). */
  min?: number;
  max?: number;
  /** The accepted values of a 'choice'. */
  choices?: readonly string[];
}

/** Every key we honour, in export order (the reference's order, then ours). */
export const SETTING_KEYS: readonly KeySpec[] = [
  { key: 'default_bind_address', field: 'defaultBindAddress', kind: 'string' },
  { key: 'endpoint_format', field: 'endpointFormat', kind: 'string' },
  { key: 'message.max_payload_size', field: 'maxPayloadSize', kind: 'int', min: 1, max: MAX_PAYLOAD_BYTES },
  { key: 'message.max_size', field: 'maxSize', kind: 'int', min: 16, max: MAX_MESSAGE_BYTES },
  { key: 'tcp.connection_retry_count', field: 'tcpConnectionRetryCount', kind: 'int', min: -1 },
  { key: 'tcp.connection_retry_delay_ms', field: 'tcpConnectionRetryDelayMs', kind: 'int', min: 0 },
  { key: 'tcp.max_active_connections', field: 'maxActiveConnections', kind: 'int', min: 1 },
  { key: 'websocket.ping_period_ms', field: 'pingPeriodMs', kind: 'int', min: 1 },
  { key: 'websocket.max_missed_pings', field: 'maxMissedPings', kind: 'int', min: 0 },
  { key: 'websocket.retry_delay_ms', field: 'retryDelayMs', kind: 'int', min: 0 },
  { key: 'websocket.retry_max_delay_ms', field: 'retryMaxDelayMs', kind: 'int', min: 0 },
  { key: 'websocket.connect_retry_count', field: 'connectRetryCount', kind: 'int', min: -1 },
  { key: 'websocket.reconnect_on_data_error', field: 'reconnectOnDataError', kind: 'bool' },
  { key: 'websocket.subprotocol', field: 'subprotocol', kind: 'string' },
  { key: 'websocket.max_frame_size', field: 'maxFrameSize', kind: 'int', min: 1 },
  { key: 'flow.inbound_budget_bytes', field: 'inboundBudgetBytes', kind: 'int', min: 65536 },
  { key: 'flow.outbound_high_water_bytes', field: 'outboundHighWaterBytes', kind: 'int', min: 65536 },
  { key: 'flow.target_delay_ms', field: 'targetDelayMs', kind: 'int', min: 0, max: 1000 },
  { key: 'flow.min_message_bytes', field: 'minMessageBytes', kind: 'int', min: 256, max: MAX_PAYLOAD_BYTES },
  { key: 'flow.max_message_bytes', field: 'maxMessageBytes', kind: 'int', min: 256, max: MAX_PAYLOAD_BYTES },
  { key: 'flow.credit_window_bytes', field: 'creditWindowBytes', kind: 'int', min: 65536 },
  { key: 'flow.credit_max_window_bytes', field: 'creditMaxWindowBytes', kind: 'int', min: 65536 },
  { key: 'flow.credit_total_bytes', field: 'creditTotalBytes', kind: 'int', min: 65536 },
  { key: 'extensions.credit', field: 'creditExtension', kind: 'choice', choices: CREDIT_MODES },
  { key: 'region_endpoint_overrides', field: 'regionEndpointOverrides', kind: 'map' },
];

/**
 * Keys of the reference that size its own buffers, which this proxy does not have (its
 * flow control is `flow.*`). A settings file written for the reference may carry them: they
 * are checked (a wrong value is still an error naming the key) and otherwise ignored, and
 * not exported.
 */
export const REFERENCE_ONLY_KEYS: readonly Omit<KeySpec, 'field'>[] = [
  { key: 'message.data_length_size', kind: 'int', min: 2, max: 2 },
  { key: 'message.data_frame_max_size', kind: 'int', min: 1, max: 65538 },
  { key: 'tcp.read_buffer_size', kind: 'int', min: 1 },
  { key: 'tcp.write_buffer_size', kind: 'int', min: 1 },
  { key: 'websocket.write_buffer_size', kind: 'int', min: 1 },
  { key: 'websocket.read_buffer_size', kind: 'int', min: 1 },
];

export function defaultSettings(): Settings {
  return {
    defaultBindAddress: 'localhost',
    endpointFormat: 'data.tunneling.iot.%s.amazonaws.com',
    regionEndpointOverrides: {
      'cn-north-1': 'data.tunneling.iot.cn-north-1.amazonaws.com.cn',
      'cn-northwest-1': 'data.tunneling.iot.cn-northwest-1.amazonaws.com.cn',
    },
    maxPayloadSize: MAX_PAYLOAD_BYTES,
    maxSize: MAX_MESSAGE_BYTES,
    tcpConnectionRetryCount: 5,
    tcpConnectionRetryDelayMs: 2500,
    maxActiveConnections: 128,
    pingPeriodMs: 20000,
    maxMissedPings: 3,
    retryDelayMs: 2500,
    retryMaxDelayMs: 60000,
    connectRetryCount: -1,
    reconnectOnDataError: true,
    subprotocol: 'aws.iot.securetunneling-3.0',
    maxFrameSize: MAX_WS_MESSAGE_BYTES,
    inboundBudgetBytes: 16 * 1024 * 1024,
    outboundHighWaterBytes: 1024 * 1024,
    targetDelayMs: DEFAULT_TARGET_DELAY_MS,
    minMessageBytes: DEFAULT_MIN_MESSAGE_BYTES,
    maxMessageBytes: MAX_PAYLOAD_BYTES,
    creditExtension: 'auto',
    creditWindowBytes: 256 * 1024,
    creditMaxWindowBytes: 8 * 1024 * 1024,
    creditTotalBytes: 32 * 1024 * 1024,
  };
}

export class SettingsError extends Error {
  readonly key: string;
  constructor(key: string, message: string) {
    super(message);
    this.name = 'SettingsError';
    this.key = key;
  }
}

const PREFIX = 'tunneling.proxy.';

function convert(spec: Omit<KeySpec, 'field'>, value: unknown): string | number | boolean | Record<string, string> {
  const name = PREFIX + spec.key;
  switch (spec.kind) {
    case 'string':
      if (typeof value !== 'string' && typeof value !== 'number') throw new SettingsError(name, `setting ${name} must be a string`);
      return String(value);
    case 'choice': {
      const text = typeof value === 'string' ? value.trim().toLowerCase() : undefined;
      if (text === undefined || !spec.choices!.includes(text)) throw new SettingsError(name, `setting ${name} must be one of ${spec.choices!.join(', ')}, got ${JSON.stringify(value)}`);
      return text;
    }
    case 'bool':
      if (value === true || value === 'true' || value === 1 || value === '1') return true;
      if (value === false || value === 'false' || value === 0 || value === '0') return false;
      throw new SettingsError(name, `setting ${name} must be true or false, got ${JSON.stringify(value)}`);
    case 'int': {
      const n = typeof value === 'number' ? value : typeof value === 'string' && /^-?\d+$/.test(value.trim()) ? Number(value.trim()) : NaN;
      if (!Number.isSafeInteger(n)) throw new SettingsError(name, `setting ${name} must be an integer, got ${JSON.stringify(value)}`);
      if ((spec.min !== undefined && n < spec.min) || (spec.max !== undefined && n > spec.max)) {
        const range = spec.max === undefined ? `at least ${spec.min}` : spec.min === spec.max ? `exactly ${spec.min}` : `between ${spec.min} and ${spec.max}`;
        throw new SettingsError(name, `setting ${name} must be ${range}, got ${n}`);
      }
      return n;
    }
    case 'map': {
      if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new SettingsError(name, `setting ${name} must be an object of region to endpoint`);
      const out: Record<string, string> = {};
      for (const [k, v] of Object.entries(value)) {
        if (typeof v !== 'string') throw new SettingsError(`${name}.${k}`, `setting ${name}.${k} must be a string`);
        out[k] = v;
      }
      return out;
    }
  }
}

/** The value at a dotted path; a section that exists but is not an object is an error naming it. */
function lookup(tree: unknown, path: string): unknown {
  let node: unknown = tree;
  const parts = path.split('.');
  for (const [i, part] of parts.entries()) {
    if (node === undefined) return undefined;
    if (node === null || typeof node !== 'object' || Array.isArray(node)) {
      const section = parts.slice(0, i).join('.');
      throw new SettingsError(section, `setting ${section} must be an object of settings, got ${JSON.stringify(node)}`);
    }
    node = (node as Record<string, unknown>)[part];
  }
  return node;
}

/** Every leaf key of a parsed JSON tree, dotted, for reporting unknown keys. */
function leafKeys(tree: unknown, prefix = ''): string[] {
  if (tree === null || typeof tree !== 'object' || Array.isArray(tree)) return [prefix];
  return Object.entries(tree).flatMap(([k, v]) => leafKeys(v, prefix ? `${prefix}.${k}` : k));
}

/**
 * Merges a settings JSON text over `base` (the defaults). Returns the settings and the
 * keys that were present but unknown (the caller logs them at debug level).
 * Throws SettingsError for malformed JSON or a value of the wrong type.
 */
/** The pacer's settings from the proxy's (`flow.*`, bounded by `message.max_payload_size`). */
export function pacerSettings(settings: Pick<Settings, 'targetDelayMs' | 'minMessageBytes' | 'maxMessageBytes' | 'maxPayloadSize'>): PacerSettings {
  const maxMessageBytes = Math.min(settings.maxMessageBytes, settings.maxPayloadSize);
  return { targetDelayMs: settings.targetDelayMs, minMessageBytes: Math.min(settings.minMessageBytes, maxMessageBytes), maxMessageBytes };
}

export function mergeSettingsJson(text: string, base: Settings = defaultSettings()): { settings: Settings; unknownKeys: string[] } {
  let tree: unknown;
  try {
    tree = JSON.parse(text);
  } catch (err) {
    throw new SettingsError('', `settings file is not valid JSON: ${(err as Error).message}`);
  }
  if (tree === null || typeof tree !== 'object' || Array.isArray(tree)) throw new SettingsError('', 'settings file must contain a JSON object');
  const settings: Settings = { ...base, regionEndpointOverrides: { ...base.regionEndpointOverrides } };
  const known = new Set<string>();
  for (const spec of SETTING_KEYS) {
    const value = lookup(tree, PREFIX + spec.key);
    if (value === undefined) continue;
    const converted = convert(spec, value);
    if (spec.kind === 'map') {
      Object.assign(settings.regionEndpointOverrides, converted);
      for (const k of Object.keys(converted as object)) known.add(`${PREFIX}${spec.key}.${k}`);
    } else {
      (settings as unknown as Record<string, unknown>)[spec.field] = converted;
      known.add(PREFIX + spec.key);
    }
  }
  for (const spec of REFERENCE_ONLY_KEYS) {
    const value = lookup(tree, PREFIX + spec.key);
    if (value === undefined) continue;
    convert(spec, value);
    known.add(PREFIX + spec.key);
  }
  const unknownKeys = leafKeys(tree).filter((k) => k && !known.has(k));
  return { settings, unknownKeys };
}

/** The export file: nested objects, every value a string, as the reference writes it. */
export function exportSettings(settings: Settings): string {
  const proxy: Record<string, unknown> = {};
  for (const spec of SETTING_KEYS) {
    const parts = spec.key.split('.');
    let node = proxy;
    for (const part of parts.slice(0, -1)) node = (node[part] ??= {}) as Record<string, unknown>;
    const value = settings[spec.field];
    node[parts[parts.length - 1]] = spec.kind === 'map' ? { ...(value as Record<string, string>) } : String(value);
  }
  return JSON.stringify({ tunneling: { proxy } }, null, 4) + '\n';
}
