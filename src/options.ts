/**
 * The contract between the command line (src/cli), the service connection
 * (src/transport) and the tunnel (src/tunnel): one validated, resolved options object.
 */
import type { Logger } from './log';
import type { Settings } from './settings';
import type { Readable, Writable } from 'node:stream';

/** The streams a `-s stdio` source carries its one connection over (the process's own by default). */
export interface StdioStreams {
  input: Readable;
  output: Writable;
}

export type Mode = 'source' | 'destination';

/**
 * Where a source listens: a port (0 = any free port) and an optional bind host; or `stdio`: one
 * connection over the process's stdin and stdout (ssh's ProxyCommand), after which the run ends.
 */
export type SourceTarget = { kind: 'tcp'; host?: string; port: number } | { kind: 'stdio' };

/** Where a destination connects: TCP host (default 127.0.0.1, or -b) and port, or a Unix socket. */
export type DestinationTarget = { kind: 'tcp'; host?: string; port: number } | { kind: 'unix'; path: string };

export type ServiceTarget = SourceTarget | DestinationTarget;

/** An HTTP CONNECT proxy for the service connection (from https_proxy/HTTPS_PROXY). */
export interface WebProxy {
  protocol: 'http' | 'https';
  host: string;
  port: number;
  /** Decoded `user:password`, sent as Basic auth. Never logged. */
  auth?: string;
}

export interface ProxyOptions {
  mode: Mode;
  accessToken: string;
  /** Explicit client token; when absent one is derived from the token and host name (Decisions 7). */
  clientToken?: string;
  /** Service endpoint host (no brackets for IPv6) and port. */
  endpoint: { host: string; port: number };
  /**
   * Service id → target from `-s`/`-d`. The key "" is the V1 form (`-s 5555`, `-d 22`).
   * Empty: mappings come from `configDirMappings`, and in source mode any id left gets a free port.
   * Insertion order is the service order (the "first service" for V1 peers).
   */
  services: Map<string, ServiceTarget>;
  /** Mappings read once at start from `--config-dir` (or the default config directory). */
  configDirMappings?: Map<string, ServiceTarget>;
  /** `-b`: listen host in source mode; default host for port-only targets in destination mode. */
  bindAddress?: string;
  /** `-c`: extra CA certificates: a file, or a directory (hashed or plain .pem/.crt files). */
  caPath?: string;
  /** Extra trusted CA certificates in PEM (library users and tests). */
  ca?: string[];
  /** `-k`: no TLS verification. */
  insecure?: boolean;
  /** `-y`: speak the older message format. */
  clientType?: 'V1' | 'V2';
  settings: Settings;
  /** Web proxy for the service connection, already parsed; undefined = direct. */
  webProxy?: WebProxy;
  /** NO_PROXY / no_proxy value, applied to the service host. */
  noProxy?: string;
  /** The streams of a `stdio` source service; default the process's stdin and stdout (library users and tests). */
  stdio?: StdioStreams;
  log: Logger;
}
