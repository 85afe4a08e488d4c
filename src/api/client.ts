/**
 * A small client for the secure tunneling management API (the cloud's or our relay's):
 * AWS JSON 1.1 over HTTPS, signed with SigV4 by the AWS SDK's own signer.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { Hash } from '@smithy/hash-node';
import { SignatureV4 } from '@smithy/signature-v4';

export const SIGNING_SERVICE = 'IoTSecuredTunneling';
const TARGET_PREFIX = 'IoTSecuredTunneling.';
const CONTENT_TYPE = 'application/x-amz-json-1.1';
/** Bounds for one API call. */
const REQUEST_TIMEOUT_MS = 30_000;
const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;

export interface ApiCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface TunnelApiOptions {
  /** e.g. https://127.0.0.1:8443 or https://api.tunneling.iot.us-east-1.amazonaws.com */
  endpoint: string;
  region: string;
  /** The credentials, or a function that resolves them (refreshed temporary credentials). */
  credentials: ApiCredentials | (() => Promise<ApiCredentials>);
  /** Extra trusted CA certificates (PEM). */
  ca?: string;
}

export type Operation = 'OpenTunnel' | 'CloseTunnel' | 'DescribeTunnel' | 'ListTunnels' | 'RotateTunnelAccessToken' | 'TagResource' | 'UntagResource' | 'ListTagsForResource';

/** The service answered with an error: `type` is its `__type` (e.g. ResourceNotFoundException). */
export class ApiError extends Error {
  readonly status: number;
  readonly type: string;
  constructor(status: number, type: string, message: string) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.type = type;
  }
}

/** The cloud's management endpoint for a region. */
export function defaultEndpoint(region: string): string {
  return `https://api.tunneling.iot.${region}.amazonaws.com${region.startsWith('cn-') ? '.cn' : ''}`;
}

export class TunnelApiClient {
  private readonly url: URL;
  private readonly options: TunnelApiOptions;
  private readonly signer: SignatureV4;

  constructor(options: TunnelApiOptions) {
    this.options = options;
    this.url = new URL(options.endpoint);
    if (this.url.protocol !== 'https:' && this.url.protocol !== 'http:') throw new Error(`endpoint must be an http:// or https:// URL: ${options.endpoint}`);
    this.signer = new SignatureV4({ credentials: options.credentials, region: options.region, service: SIGNING_SERVICE, sha256: Hash.bind(null, 'sha256') });
  }

  async call<T = Record<string, unknown>>(operation: Operation, input: object): Promise<T> {
    const body = JSON.stringify(input);
    const path = this.url.pathname || '/';
    const signed = await this.signer.sign({
      method: 'POST',
      protocol: this.url.protocol,
      hostname: this.url.hostname,
      port: this.url.port ? Number(this.url.port) : undefined,
      path,
      query: {},
      headers: {
        host: this.url.host,
        'content-type': CONTENT_TYPE,
        'x-amz-target': TARGET_PREFIX + operation,
      },
      body,
    });
    const send = this.url.protocol === 'https:' ? httpsRequest : httpRequest;
    const { status, text } = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = send({
        host: this.url.hostname.replace(/^\[|\]$/g, ''),
        port: this.url.port || undefined,
        path,
        method: 'POST',
        headers: { ...signed.headers, 'content-length': Buffer.byteLength(body) },
        ca: this.options.ca,
        // One connection per call: a kept-alive connection the server closes just as it is
        // reused fails the call with ECONNRESET (Node's global agent keeps connections alive).
        agent: false,
        timeout: REQUEST_TIMEOUT_MS,
      }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_RESPONSE_BYTES) req.destroy(new Error(`response exceeds ${MAX_RESPONSE_BYTES} bytes`));
          else chunks.push(chunk);
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`no response within ${REQUEST_TIMEOUT_MS / 1000} s`)));
      req.on('error', reject);
      req.end(body);
    });
    let parsed: Record<string, unknown> = {};
    try {
      parsed = text ? JSON.parse(text) : {};
    } catch {
      if (status >= 200 && status < 300) throw new ApiError(status, 'SerializationException', 'response is not JSON');
    }
    if (status < 200 || status >= 300) {
      const type = String(parsed.__type ?? `HTTP ${status}`).split('#').pop()!;
      const message = String(parsed.message ?? parsed.Message ?? (text.trim().split('\n')[0] || 'no details'));
      throw new ApiError(status, type, message);
    }
    return parsed as T;
  }
}
