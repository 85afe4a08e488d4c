/** `--store` URLs: checked at start, and printed without credentials. No Redis client here. */

/** The URL as it may be printed: scheme, host, port and database, never a user or password. */
export function describeStoreUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname && u.pathname !== '/' ? u.pathname : ''}`;
  } catch {
    return 'the Redis URL';
  }
}

/** Checks a --store URL; returns a one-line problem, or undefined. */
export function checkStoreUrl(url: string): string | undefined {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return 'expected redis://HOST[:PORT][/DB] or rediss://...';
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') return `unsupported scheme ${u.protocol.replace(/:$/, '')} (redis or rediss)`;
  if (!u.hostname) return 'no host';
  if (u.pathname && u.pathname !== '/' && !/^\/\d{1,2}$/.test(u.pathname)) return 'the path must be a database number, e.g. /0';
  if (u.search || u.hash) return 'no query or fragment is understood';
  return undefined;
}
