/**
 * Verifies an AWS Signature Version 4 `Authorization` header by recomputing the signature
 * with the AWS SDK's own signer (@smithy/signature-v4) over exactly the headers the client
 * signed, then comparing in constant time.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { Hash } from '@smithy/hash-node';
import { SignatureV4 } from '@smithy/signature-v4';
import { isRegion, REGION_TEXT } from './store/record';

export interface Credentials {
  accessKeyId: string;
  secretAccessKey: string;
}

/** The signing name the AWS SDKs use for the secure tunneling API. */
export const SIGNING_SERVICE = 'IoTSecuredTunneling';
/** Largest accepted difference between the request's X-Amz-Date and our clock (as AWS). */
export const MAX_CLOCK_SKEW_MS = 15 * 60 * 1000;

export interface AuthFailure {
  type: 'MissingAuthenticationTokenException' | 'IncompleteSignatureException' | 'UnrecognizedClientException' | 'InvalidSignatureException';
  message: string;
}

export interface SignedRequest {
  method: string;
  /** Path and query as received. */
  url: string;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

const AUTH_PATTERN = /^AWS4-HMAC-SHA256\s+Credential=([^/,\s]+)\/(\d{8})\/([^/,\s]+)\/([^/,\s]+)\/aws4_request,\s*SignedHeaders=([a-z0-9;_.-]+),\s*Signature=([0-9a-f]{64})\s*$/;

function parseAmzDate(value: string): Date | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(value);
  if (!m) return undefined;
  return new Date(Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]));
}

/** Returns undefined when the request is signed with `credentials`, else why not. */
export async function verifySigV4(req: SignedRequest, credentials: Credentials, now = Date.now()): Promise<AuthFailure | undefined> {
  const header = req.headers.authorization;
  if (typeof header !== 'string' || header === '') return { type: 'MissingAuthenticationTokenException', message: 'Missing Authentication Token' };
  const m = AUTH_PATTERN.exec(header);
  if (!m) return { type: 'IncompleteSignatureException', message: 'Authorization header is not a valid AWS4-HMAC-SHA256 signature' };
  const [, accessKeyId, scopeDate, region, service, signedHeaderList, signature] = m;
  if (accessKeyId !== credentials.accessKeyId) return { type: 'UnrecognizedClientException', message: 'The security token included in the request is invalid.' };
  if (service.toLowerCase() !== SIGNING_SERVICE.toLowerCase()) return { type: 'InvalidSignatureException', message: `Credential should be scoped to correct service: '${SIGNING_SERVICE}'.` };
  // The region names the tunnels' ARNs, which are stored: bounded here like any stored field.
  if (!isRegion(region)) return { type: 'InvalidSignatureException', message: `Credential should be scoped to a valid region: ${REGION_TEXT}.` };
  const amzDate = req.headers['x-amz-date'];
  const date = typeof amzDate === 'string' ? parseAmzDate(amzDate) : undefined;
  if (!date) return { type: 'IncompleteSignatureException', message: 'X-Amz-Date header missing or malformed' };
  if (!(amzDate as string).startsWith(scopeDate)) return { type: 'InvalidSignatureException', message: 'Credential scope date does not match X-Amz-Date' };
  if (Math.abs(now - date.getTime()) > MAX_CLOCK_SKEW_MS) return { type: 'InvalidSignatureException', message: 'Signature expired: the request time is too far from the server time' };
  const signedHeaders = signedHeaderList.split(';');
  // As AWS requires: host and every x-amz-* header are signed. Otherwise a captured request
  // could be replayed with another X-Amz-Target (an OpenTunnel handing out fresh tokens).
  if (!signedHeaders.includes('host')) return { type: 'IncompleteSignatureException', message: "'Host' must be a 'SignedHeader' in the AWS Authorization." };
  for (const name of Object.keys(req.headers)) {
    if (name.startsWith('x-amz-') && !signedHeaders.includes(name)) return { type: 'IncompleteSignatureException', message: `'${name}' must be a 'SignedHeader' in the AWS Authorization.` };
  }

  // The signer trusts a body hash given in x-amz-content-sha256 (the SDKs send one), so the
  // claim must be checked against the body actually received.
  const claimed = req.headers['x-amz-content-sha256'];
  if (claimed !== undefined && claimed !== createHash('sha256').update(req.body).digest('hex')) {
    return { type: 'InvalidSignatureException', message: "The provided 'x-amz-content-sha256' header does not match what was computed." };
  }
  const headers: Record<string, string> = {};
  for (const name of signedHeaders) {
    const value = req.headers[name];
    if (value === undefined) return { type: 'InvalidSignatureException', message: `Signed header ${name} is missing` };
    headers[name] = Array.isArray(value) ? value.join(',') : value;
  }
  const url = new URL(req.url, 'http://relay');
  const query: Record<string, string | string[]> = {};
  for (const [key, value] of url.searchParams) {
    const prev = query[key];
    query[key] = prev === undefined ? value : ([] as string[]).concat(prev, value);
  }
  const signer = new SignatureV4({ credentials, region, service, sha256: Hash.bind(null, 'sha256'), applyChecksum: false });
  const signed = await signer.sign(
    { method: req.method, protocol: 'https:', hostname: headers.host, path: url.pathname, query, headers, body: req.body },
    { signingDate: date, signableHeaders: new Set(signedHeaders), signingRegion: region, signingService: service },
  );
  const expected = /Signature=([0-9a-f]{64})/.exec(String(signed.headers.authorization ?? ''))?.[1] ?? '';
  const expectedHeaders = /SignedHeaders=([^,]+)/.exec(String(signed.headers.authorization ?? ''))?.[1] ?? '';
  if (expectedHeaders !== signedHeaderList || expected.length !== signature.length || !timingSafeEqual(Buffer.from(expected), Buffer.from(signature))) {
    return {
      type: 'InvalidSignatureException',
      message: 'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.',
    };
  }
  return undefined;
}
