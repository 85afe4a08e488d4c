/**
 * Completing the configured service mapping with the service ids the tunnel was opened with
 * (SERVICE_IDS, behaviour spec 4.5). Pure apart from the log lines.
 */
import type { ProxyOptions, ServiceTarget } from '../options';
import { MAX_PRINTED_ITEMS, printable, printableList } from '../printable';

/** Why no mapping can serve the tunnel: a configuration that names no port, or one the tunnel refuses. */
export interface MappingFailure {
  kind: 'misconfigured' | 'refused';
  message: string;
}

/**
 * Completes the configured mapping with the received service ids (behaviour spec 4.5).
 * `ids` undefined: a 1.0 subprotocol, which carries none.
 */
export function completeMapping(options: ProxyOptions, ids: string[] | undefined): Map<string, ServiceTarget> | MappingFailure {
  const configured = options.services;
  const keys = [...configured.keys()];
  const v1Form = keys.length === 1 && keys[0] === '';
  const log = options.log;
  if (ids === undefined) {
    const mapping = configured.size > 0 ? configured : options.configDirMappings ?? new Map();
    if (mapping.size === 0) return { kind: 'misconfigured', message: 'No port mapping exists: the 1.0 protocol names no services, so give -s/-d with a port' };
    return new Map(mapping);
  }
  if (options.clientType === 'V1' && ids.length > 1) {
    // Messages without a service id are refused by the service in such a tunnel (and the
    // reference sends them all to the first service): fail now, with the reason.
    return {
      kind: 'refused',
      message: `-y V1 cannot be used with a tunnel of several services [${printableList(ids)}]: the V1 message format carries no service id. Open the tunnel with one service, or start the local proxy without -y V1.`,
    };
  }
  if (v1Form) {
    if (ids.length === 1) {
      log.info(`Updated port mapping for v1 format: ${printable(ids[0])} = ${describe(configured.get('')!)}`);
      return new Map([[ids[0], configured.get('')!]]);
    }
    if (ids.length > 1) {
      // Messages without a service id are refused by the service in such a tunnel (the
      // reference keeps going and its first connection ends the session): fail now.
      const flag = options.mode === 'source' ? '-s' : '-d';
      return {
        kind: 'refused',
        message: `The tunnel has several services [${printableList(ids)}] but ${flag} ${describe(configured.get('')!)} names none: give one mapping per service, e.g. ${flag} ${ids.slice(0, MAX_PRINTED_ITEMS).map((id, i) => `${printable(id)}=${i === 0 ? describe(configured.get('')!) : 'PORT'}`).join(',')}`,
      };
    }
    return new Map(configured);
  }
  const stdio = keys.length === 1 ? configured.get(keys[0]) : undefined;
  if (stdio?.kind === 'stdio' && ids.includes(keys[0])) {
    // One connection, to one service: the tunnel's other services are not served.
    if (ids.length > 1) log.debug(`stdio carries service ${printable(keys[0])}; not serving ${printableList(ids.filter((id) => id !== keys[0]))}`);
    return new Map([[keys[0], stdio]]);
  }
  if (configured.size > 0) {
    const missing = ids.filter((id) => !configured.has(id));
    const extra = keys.filter((id) => !ids.includes(id));
    if (missing.length > 0 || extra.length > 0) {
      return {
        kind: 'refused',
        message: `Wrong configurations detected in local proxy: the tunnel has service ids [${printableList(ids)}] but this proxy is configured for [${keys.join(', ')}]. Please start the local proxy with the tunnel's service ids.`,
      };
    }
    return new Map(ids.map((id) => [id, configured.get(id)!]));
  }
  // No -s/-d mapping: the config directory, then (source) free ports for the rest.
  const fromDir = options.configDirMappings ?? new Map<string, ServiceTarget>();
  const mapping = new Map<string, ServiceTarget>();
  const absent: string[] = [];
  for (const id of ids) {
    const target = fromDir.get(id);
    if (target) mapping.set(id, target);
    else if (options.mode === 'source') mapping.set(id, { kind: 'tcp', port: 0 });
    else absent.push(id);
  }
  if (ids.length === 0) for (const [id, target] of fromDir) mapping.set(id, target);
  if (absent.length > 0 || mapping.size === 0) {
    return {
      kind: 'misconfigured',
      message: `No port mapping exists for service id${absent.length === 1 ? '' : 's'} ${printableList(absent) || '(none)'}: fail to start local proxy in destination mode. Give -d ${absent[0] === undefined ? 'SERVICE' : printable(absent[0])}=PORT or a --config-dir file.`,
    };
  }
  log.info('Use port mapping:');
  for (const [id, target] of mapping) log.info(`${printable(id)} = ${describe(target)}`);
  return mapping;
}

function describe(target: ServiceTarget): string {
  if (target.kind === 'unix') return target.path;
  if (target.kind === 'stdio') return 'stdio';
  return target.host ? `${target.host}:${target.port}` : String(target.port);
}
