/**
 * `localproxy relay --health-check URL`: asks a running relay for `GET /health` and says whether
 * it answered 200. It is the container images' health check, which have no curl. The
 * certificate is not verified: the probe sends nothing secret and reads only the status, and a
 * relay's self-signed certificate would otherwise need its CA inside the probe as well.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { printable } from '../printable';

/** Bound on the whole probe: connect, TLS, answer. */
export const HEALTH_CHECK_TIMEOUT_MS = 5000;

/** The /health URL for `text`: http(s)://HOST:PORT, with or without the /health path. */
export function healthUrl(text: string): URL | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return undefined;
  }
  if ((url.protocol !== 'https:' && url.protocol !== 'http:') || url.username || url.password || url.search) return undefined;
  if (url.pathname === '/' || url.pathname === '') url.pathname = '/health';
  return url.pathname === '/health' ? url : undefined;
}

/** Resolves with whether the relay is healthy and one line saying so (never rejects). */
export function healthCheck(url: URL, timeoutMs = HEALTH_CHECK_TIMEOUT_MS): Promise<{ healthy: boolean; line: string }> {
  return new Promise((resolve) => {
    const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
    let done = false;
    const finish = (healthy: boolean, line: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.destroy();
      resolve({ healthy, line: `${url.origin}: ${line}` });
    };
    const req = request(url, { method: 'GET', rejectUnauthorized: false, headers: { 'user-agent': 'localproxy-health-check' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        if (body.length < 300) body += chunk;
      });
      res.on('end', () => finish(res.statusCode === 200, `HTTP ${res.statusCode} ${printable(body.trim(), 200)}`.trim()));
      res.on('error', (err) => finish(false, printable(err.message)));
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      const plain = err.code === 'EPROTO' && /wrong version number|packet length too long/.test(err.message);
      const why = plain ? 'the relay does not speak TLS here: use http:// for a relay started with --plain'
        : err.code === 'ECONNREFUSED' ? 'connection refused: no relay listens on this port'
        : printable(err.message);
      finish(false, why);
    });
    const timer = setTimeout(() => finish(false, `no answer within ${timeoutMs / 1000} s`), timeoutMs);
    req.end();
  });
}
