/**
 * Raw management API calls signed with the AWS SDK's own signer, for requests no SDK would
 * send (wrong JSON types, unsigned headers, a body changed in flight).
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { Hash } from '@smithy/hash-node';
import { SignatureV4 } from '@smithy/signature-v4';
import type { Relay } from '../../src/relay/server';
import { within } from '../helpers/wait';

export interface Credentials { accessKeyId: string; secretAccessKey: string }

export interface SignOptions {
  region?: string;
  /** Headers left out of the signature (SignedHeaders). */
  unsigned?: string[];
  /** Headers added after signing. */
  extraHeaders?: Record<string, string>;
  /** The body sent, when it differs from the body signed. */
  sendBody?: string;
}

export interface Answer { status: number; body: string; json: { __type?: string; message?: string } & Record<string, unknown> }

export async function signedPost(relay: Relay, credentials: Credentials, operation: string, body: string, options: SignOptions = {}): Promise<Answer> {
  const secure = relay.url.startsWith('wss:');
  const signer = new SignatureV4({ credentials, region: options.region ?? 'us-east-1', service: 'IoTSecuredTunneling', sha256: Hash.bind(null, 'sha256') });
  const headers = { host: `127.0.0.1:${relay.port}`, 'content-type': 'application/x-amz-json-1.1', 'x-amz-target': `IoTSecuredTunneling.${operation}` };
  const signed = await signer.sign(
    { method: 'POST', protocol: secure ? 'https:' : 'http:', hostname: '127.0.0.1', port: relay.port, path: '/', query: {}, headers, body },
    { unsignableHeaders: new Set(options.unsigned ?? []) },
  );
  const send = secure ? httpsRequest : httpRequest;
  return within(new Promise<Answer>((resolve, reject) => {
    send({ host: '127.0.0.1', port: relay.port, path: '/', method: 'POST', ca: relay.caPem, headers: { ...signed.headers, ...options.extraHeaders } }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => { text += d; });
      res.on('end', () => {
        let json = {};
        try { json = JSON.parse(text); } catch { /* not JSON: left empty */ }
        resolve({ status: res.statusCode ?? 0, body: text, json });
      });
    }).on('error', reject).end(options.sendBody ?? body);
  }), 10_000, `${operation} request`);
}
