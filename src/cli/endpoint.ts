/**
 * The service endpoint: region → host name (1.11, with settings overrides) and
 * `host[:port]` parsing (1.12), which unlike the reference accepts IPv6 in brackets.
 */
import { ExitCode, ExitError } from '../exit';
import type { Settings } from '../settings';

const DEFAULT_SERVICE_PORT = 443;

/** `region_endpoint_overrides.<region>` verbatim, else `endpoint_format` with the region in `%s`. */
export function regionEndpoint(region: string, settings: Settings): string {
  const override = settings.regionEndpointOverrides[region];
  if (override !== undefined) return override;
  if (!settings.endpointFormat.includes('%s')) {
    throw new ExitError(ExitCode.USAGE, `setting tunneling.proxy.endpoint_format must contain %s for the region: ${settings.endpointFormat}`);
  }
  return settings.endpointFormat.split('%s').join(region);
}

/**
 * `host`, `host:port`, `[v6]` or `[v6]:port`, lower-cased as the reference does.
 * A bare IPv6 literal is refused: its last group would read as a port.
 */
export function parseEndpoint(endpoint: string): { host: string; port: number } {
  const text = endpoint.toLowerCase();
  const bad = (why: string): ExitError => new ExitError(ExitCode.USAGE, `Invalid endpoint specified: ${text} (${why})`);
  let host: string;
  let portText: string | undefined;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close === -1) throw bad('missing ]');
    host = text.slice(1, close);
    if (!/^[0-9a-f:.]+$/.test(host) || !host.includes(':')) throw bad('not an IPv6 address in brackets');
    const rest = text.slice(close + 1);
    if (rest !== '' && !rest.startsWith(':')) throw bad('unexpected text after ]');
    portText = rest === '' ? undefined : rest.slice(1);
  } else {
    const colons = text.split(':').length - 1;
    if (colons > 1) throw bad('put IPv6 addresses in brackets, e.g. [::1]:443');
    const colon = text.indexOf(':');
    host = colon === -1 ? text : text.slice(0, colon);
    portText = colon === -1 ? undefined : text.slice(colon + 1);
  }
  if (host === '') throw bad('empty host');
  if (portText === undefined) return { host, port: DEFAULT_SERVICE_PORT };
  if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) throw bad('port must be 1-65535');
  return { host, port: Number(portText) };
}
