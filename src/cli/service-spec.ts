/**
 * `-s` / `-d` mapping lists (behaviour spec 2.9, 2.10) and the values of `--config-dir` files.
 *
 *   -s 5555                     "" → listen on 5555 (V1 form)
 *   -s SSH1=5555,HTTP1=8080     SSH1 → 5555, HTTP1 → 8080
 *   -s SSH1=0.0.0.0:5555        SSH1 → listen on 0.0.0.0 port 5555 (Decisions 10)
 *   -s stdio, -s SSH=stdio      one connection over stdin/stdout (ssh's ProxyCommand)
 *   -d 22                       "" → 127.0.0.1:22 (or -b host)
 *   -d SSH1=22,WEB=10.0.0.5:80  SSH1 → port 22, WEB → 10.0.0.5:80
 *   -d SSH1=[::1]:22            IPv6 in brackets
 *   -d SSH1=/run/ssh.sock       Unix socket (a value containing "/")
 */
import { usageError } from '../exit';
import type { Mode, ServiceTarget } from '../options';
import { parsePort, validateBindAddress, validatePath, validateServiceId } from './validate';

/**
 * One endpoint value of a mapping, validated for the mode it is used in. A source's value is
 * where it listens, so its messages say "listen address" (the endpoint is -e, the service).
 */
export function parseTarget(value: string, mode: Mode): ServiceTarget {
  const what = mode === 'source' ? 'Listen address' : 'Endpoint';
  const form = mode === 'source' ? 'PORT or ADDRESS:PORT (ID=PORT for a service id)' : 'PORT or HOST:PORT';
  if (value === '') throw usageError(`${what} cannot be empty`);
  if (value === 'stdio' && mode === 'source') return { kind: 'stdio' };
  if (/^\d+$/.test(value)) return { kind: 'tcp', port: parsePort(value) };
  if (value.includes('/')) {
    validatePath(value, 'Unix socket');
    // The reference accepts a path for -s and then crashes setting up the listener (9.4#38).
    if (mode === 'source') throw usageError(`A source listens on PORT or HOST:PORT, not on a path: ${value}`);
    return { kind: 'unix', path: value };
  }
  if (!/^[a-zA-Z0-9.:[\]-]+$/.test(value)) throw usageError(`Bind address contains invalid characters: ${value}`);
  let host: string;
  let portText: string;
  const bracketed = /^\[([^\]]*)\]:(.*)$/.exec(value);
  if (bracketed) {
    host = validateBindAddress(`[${bracketed[1]}]`);
    portText = bracketed[2];
  } else {
    const colons = value.split(':').length - 1;
    if (colons === 0 || value.startsWith('[')) throw usageError(`${what} must be ${form}: ${value}`);
    if (colons > 1) throw usageError(`${what} has an IPv6 address without brackets; write [address]:port: ${value}`);
    const colon = value.indexOf(':');
    host = value.slice(0, colon);
    portText = value.slice(colon + 1);
  }
  if (host === '') throw usageError(`${what} has an empty host: ${value}`);
  // `host:` passes the reference's validation and then fails to resolve (2.9).
  if (portText === '') throw usageError(`${what} has no port after ':': ${value}`);
  return { kind: 'tcp', host, port: parsePort(portText) };
}

/** How a target is shown in logs and messages. */
export function formatTarget(target: ServiceTarget): string {
  if (target.kind === 'unix') return target.path;
  if (target.kind === 'stdio') return 'stdio';
  if (target.host === undefined) return String(target.port);
  return target.host.includes(':') ? `[${target.host}]:${target.port}` : `${target.host}:${target.port}`;
}

export interface ParsedMappings {
  services: Map<string, ServiceTarget>;
  /** Warnings to log once a logger exists (duplicates). */
  warnings: string[];
}

/**
 * A comma-separated list of `ID=ENDPOINT` items, or a single `ENDPOINT` (the V1 form,
 * stored under the id ""). Insertion order is kept: it decides the "first service".
 */
export function parseMappings(list: string, mode: Mode): ParsedMappings {
  const services = new Map<string, ServiceTarget>();
  const warnings: string[] = [];
  const items = list.split(/,+/);
  if (items.length === 1 && !items[0].includes('=')) {
    services.set('', parseTarget(items[0].trim(), mode));
    return { services, warnings };
  }
  for (const item of items) {
    if (item === '') continue;
    const parts = item.split(/=+/);
    if (parts.length !== 2) throw usageError('Wrong format for the port mappings! Example: SSH1=5555,SSH2=6666.');
    const id = parts[0].trim();
    const endpoint = parts[1].trim();
    if (id === '' || endpoint === '') throw usageError(`Wrong format for the port mappings: ${item} .Example: SSH1=5555`);
    validateServiceId(id);
    const target = parseTarget(endpoint, mode);
    const first = services.get(id);
    if (first) {
      warnings.push(`Duplicate mappings, ignore. This mapping already exists: ${id} : ${formatTarget(first)}`);
      continue;
    }
    services.set(id, target);
  }
  return { services, warnings };
}

/**
 * Source mode: two services given the same listen address and port would fail only when
 * the second one binds, after the bind retries (exit 1); say so at start instead. A stdio
 * mapping carries one connection and the run ends with it, so it stands alone.
 */
export function checkListenPorts(services: ReadonlyMap<string, ServiceTarget>, where: string): void {
  const stdio = [...services].find(([, target]) => target.kind === 'stdio');
  if (stdio && services.size > 1) {
    throw usageError(`stdio carries one connection and cannot be mapped with other services: give it alone, e.g. -s ${stdio[0] === '' ? 'stdio' : `${stdio[0]}=stdio`} (${where})`);
  }
  const byAddress = new Map<string, string>();
  for (const [id, target] of services) {
    if (target.kind !== 'tcp') continue;
    const address = formatTarget(target);
    const other = byAddress.get(address);
    if (other !== undefined) throw usageError(`Services ${other} and ${id} both listen on ${address} (${where})`);
    byAddress.set(address, id);
  }
}
