/**
 * The relay's limits, each with a default meant to need no tuning (README, "Relay limits").
 * An exposed relay meets clients that connect and never speak, speak one byte a minute,
 * ignore refusals or open tunnels in a loop; every such resource is bounded here.
 */
import { readFileSync } from 'node:fs';

export interface RelayLimits {
  /** Connections of every kind at once; further ones are closed on accept. */
  maxConnections: number;
  /**
   * Connections that are not (yet) tunnel peers — TLS handshake in progress, HTTP request
   * incomplete, management API or /health calls — from one source address. Accepted peers do
   * not count: a fleet behind one NAT address may hold any number of tunnels.
   */
  maxPendingPerAddress: number;
  /** Connections that are not (yet) tunnel peers, from all addresses; the oldest is dropped for a new one. */
  maxPendingConnections: number;
  /** Tunnels open at once (OpenTunnel beyond it: LimitExceededException). */
  maxOpenTunnels: number;
  /** Closed tunnels kept for DescribeTunnel/ListTunnels; the oldest are forgotten first. */
  maxClosedTunnels: number;
  /** Services per tunnel (the cloud's default quota is 3). */
  maxServicesPerTunnel: number;
  /** A management API request body. */
  maxRequestBodyBytes: number;
  /** HTTP request headers (Node's maxHeaderSize); a WebSocket upgrade is further held to 4096 bytes. */
  maxHeaderBytes: number;
  /** From TCP accept to the end of the TLS handshake. */
  tlsHandshakeTimeoutMs: number;
  /** From the start of a request (or the connection) to its last header. */
  headersTimeoutMs: number;
  /** From the start of a request to its last body byte. */
  requestTimeoutMs: number;
  /** A connection that is not a tunnel peer and moves no byte for this long is dropped. */
  idleTimeoutMs: number;
  /** After the relay refuses or closes a connection, how long the client has to read the answer before the socket is destroyed. */
  lingerMs: number;
}

/** Descriptors kept free for the state file, logs, DNS and the like. */
const RESERVED_DESCRIPTORS = 64;
/** Where the open-file limit cannot be read (not Linux). */
const FALLBACK_CONNECTIONS = 8192;
const MAX_DEFAULT_CONNECTIONS = 30_000;

/** The soft open-file limit of this process (Node raises it to the hard limit at start), if known. */
export function openFileLimit(): number | undefined {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
    const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
    if (soft === 'unlimited') return Number.MAX_SAFE_INTEGER;
    const n = Number(soft);
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/** Defaults for this process: the connection limits follow the open-file limit (`ulimit -n`). */
export function defaultLimits(fdLimit = openFileLimit()): RelayLimits {
  const maxConnections = fdLimit === undefined ? FALLBACK_CONNECTIONS : Math.max(16, Math.min(MAX_DEFAULT_CONNECTIONS, fdLimit - RESERVED_DESCRIPTORS));
  const maxPendingConnections = Math.max(8, Math.min(1024, Math.floor(maxConnections / 2)));
  return {
    maxConnections,
    maxPendingPerAddress: Math.max(4, Math.min(128, Math.floor(maxPendingConnections / 4))),
    maxPendingConnections,
    maxOpenTunnels: 10_000,
    maxClosedTunnels: 1000,
    maxServicesPerTunnel: 3,
    maxRequestBodyBytes: 128 * 1024,
    maxHeaderBytes: 8 * 1024,
    tlsHandshakeTimeoutMs: 10_000,
    headersTimeoutMs: 10_000,
    requestTimeoutMs: 30_000,
    idleTimeoutMs: 60_000,
    lingerMs: 2000,
  };
}

/** Defaults overridden by `given`; throws (one line) on a value that is not a positive integer. */
export function resolveLimits(given: Partial<RelayLimits> = {}): RelayLimits {
  const limits = defaultLimits();
  for (const [key, value] of Object.entries(given) as Array<[keyof RelayLimits, number | undefined]>) {
    if (value === undefined) continue;
    if (!(key in limits)) throw new Error(`unknown relay limit ${key}`);
    if (!Number.isSafeInteger(value) || value < 1) throw new Error(`relay limit ${key} must be a positive integer, not ${value}`);
    limits[key] = value;
  }
  return limits;
}
