/**
 * Web proxy configuration: the proxy URL (behaviour spec 5.1, with its bugs fixed per
 * Decisions 11), the environment variables (1.13) and NO_PROXY.
 */
import { BlockList, isIP } from 'node:net';
import type { WebProxy } from '../options';

export const DEFAULT_WEB_PROXY_PORT = 3128;

/**
 * Percent-decoding of URL userinfo as the reference does it (`+` is a space), but strict:
 * `%` must be followed by two hex digits, and `%00` is refused.
 */
export function urlDecode(text: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === '+') {
      bytes.push(0x20);
    } else if (ch === '%') {
      const hex = text.slice(i + 1, i + 3);
      if (hex.length < 2) throw new Error('Invalid URL token: "%" must be followed by two hex digits');
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) throw new Error('Invalid Hex number after "%" in URL');
      const value = parseInt(hex, 16);
      if (value === 0) throw new Error('Invalid URL: encoded null byte (%00) is not allowed');
      bytes.push(value);
      i += 2;
    } else {
      bytes.push(...Buffer.from(ch, 'utf8'));
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

export interface ParseProxyUrlOptions {
  /** Receives the "no port, using 3128" warning. */
  warn?: (message: string) => void;
}

/**
 * Parses an `https_proxy` value: `[http|https://][user:password@]host[:port][/path]`.
 * Unlike the reference, a missing scheme loses no characters, a path is ignored, and a
 * missing or 0 port becomes 3128 here. Throws an Error with a one-line message that never
 * contains the password.
 */
export function parseProxyUrl(url: string, options: ParseProxyUrlOptions = {}): WebProxy {
  const text = url.trim();
  const schemeEnd = text.indexOf('://');
  let scheme = 'http';
  let rest = text;
  if (schemeEnd >= 0) {
    scheme = text.slice(0, schemeEnd).toLowerCase();
    if (scheme === '') throw new Error('Invalid URL, missing protocol');
    rest = text.slice(schemeEnd + 3);
  }
  if (scheme !== 'http' && scheme !== 'https') throw new Error(`Unsupported protocol "${scheme}" for the web proxy (use http:// or https://)`);

  // The last `@` ends the userinfo, as in the reference: a password may contain a raw `@`.
  const at = rest.lastIndexOf('@');
  let auth: string | undefined;
  if (at >= 0) {
    const raw = rest.slice(0, at);
    if (raw === '') throw new Error("Empty authentication, if you don't need authentication information, remove `@`");
    if (!raw.includes(':')) throw new Error('Missing the colon between the username and password in URL.');
    auth = urlDecode(raw);
    if (auth.length < 3) throw new Error('Invalid authentication format, missing either username or password.');
    rest = rest.slice(at + 1);
  }

  const authority = rest.split(/[/?#]/, 1)[0];
  let host: string;
  let portText: string | undefined;
  if (authority.startsWith('[')) {
    const close = authority.indexOf(']');
    if (close < 0) throw new Error("Invalid IPv6 address in URL: missing closing ']'");
    host = authority.slice(1, close);
    const after = authority.slice(close + 1);
    if (after.startsWith(':')) portText = after.slice(1);
    else if (after !== '') throw new Error(`Unexpected text after the IPv6 address in the web proxy URL: "${after}"`);
    if (isIP(host) !== 6) throw new Error(`Invalid IPv6 address in URL: "${host}"`);
  } else {
    const colon = authority.indexOf(':');
    host = colon >= 0 ? authority.slice(0, colon) : authority;
    if (colon >= 0) portText = authority.slice(colon + 1);
    if (host !== '' && !/^[A-Za-z0-9._-]+$/.test(host)) throw new Error(`Invalid web proxy host "${host}"`);
  }
  if (host === '') throw new Error('Missing HTTP host address');
  host = host.toLowerCase();

  let port = 0;
  if (portText !== undefined && portText !== '') {
    if (!/^\d+$/.test(portText)) throw new Error(`Invalid web proxy port "${portText}"`);
    port = Number(portText);
    if (port > 65535) throw new Error('Port number out of range [0, 65535]');
  }
  if (port === 0) {
    options.warn?.(`No port was provided for the web proxy, using default: ${DEFAULT_WEB_PROXY_PORT}`);
    port = DEFAULT_WEB_PROXY_PORT;
  }
  const proxy: WebProxy = { protocol: scheme, host, port };
  if (auth !== undefined) proxy.auth = auth;
  return proxy;
}

/** Which variable gave the web proxy, and its raw value. */
export interface ProxyEnvValue {
  variable: 'https_proxy' | 'HTTPS_PROXY';
  value: string;
}

/**
 * The web proxy setting from the environment: `https_proxy` wins whenever it is set, even
 * to the empty string (which disables a non-empty `HTTPS_PROXY`), as in the reference.
 * Undefined when the winning value is empty.
 */
export function proxyFromEnv(env: NodeJS.ProcessEnv = process.env): ProxyEnvValue | undefined {
  const variable = env.https_proxy !== undefined ? 'https_proxy' : 'HTTPS_PROXY';
  const value = (env[variable] ?? '').trim();
  return value === '' ? undefined : { variable, value };
}

/** `no_proxy` if set (even empty), else `NO_PROXY`; undefined when neither is set. */
export function noProxyFromEnv(env: NodeJS.ProcessEnv = process.env): string | undefined {
  return env.no_proxy !== undefined ? env.no_proxy : env.NO_PROXY;
}

function stripBrackets(host: string): string {
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

/**
 * Whether `host` (the service endpoint) is reached directly because of a NO_PROXY list.
 * Entries are separated by commas or spaces: `*` (everything), a name (matches itself and
 * its subdomains; a leading `.` or `*.` is the same), an IP address, a CIDR block, each
 * optionally with `:port`.
 */
export function shouldBypassProxy(host: string, noProxy: string | undefined, port?: number): boolean {
  if (!noProxy) return false;
  const target = stripBrackets(host.toLowerCase()).replace(/\.$/, '');
  const family = isIP(target);
  for (let entry of noProxy.toLowerCase().split(/[\s,]+/)) {
    if (entry === '') continue;
    if (entry === '*') return true;
    // A trailing `:port` (not part of a bare IPv6 address) limits the entry to that port.
    const portMatch = /^(.*[^:]):(\d+)$/.exec(entry);
    if (portMatch && isIP(entry) !== 6) {
      if (port !== undefined && Number(portMatch[2]) !== port) continue;
      entry = portMatch[1];
    }
    entry = stripBrackets(entry);
    const slash = entry.indexOf('/');
    if (slash > 0) {
      const base = entry.slice(0, slash);
      const bits = Number(entry.slice(slash + 1));
      const baseFamily = isIP(base);
      if (family === 0 || baseFamily !== family || !Number.isInteger(bits)) continue;
      const type = family === 4 ? 'ipv4' : 'ipv6';
      if (bits < 0 || bits > (family === 4 ? 32 : 128)) continue;
      const list = new BlockList();
      list.addSubnet(base, bits, type);
      if (list.check(target, type)) return true;
      continue;
    }
    if (isIP(entry) !== 0) {
      if (entry === target) return true;
      continue;
    }
    const name = entry.replace(/^\*?\./, '').replace(/\.$/, '');
    if (name !== '' && (target === name || target.endsWith(`.${name}`))) return true;
  }
  return false;
}

/** The proxy as shown in logs: scheme, host and port, never the credentials. */
export function describeProxy(proxy: WebProxy): string {
  const host = isIP(proxy.host) === 6 ? `[${proxy.host}]` : proxy.host;
  return `${proxy.protocol}://${host}:${proxy.port}`;
}
