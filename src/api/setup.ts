/**
 * What `localproxy tunnel` and `localproxy connect` share to reach the management API: the
 * options `--endpoint`, `--region`, `--profile` and `--ca`, the client they make, and one line
 * for a failed call that says what to change.
 */
import { readFileSync } from 'node:fs';
import { usageError, type OptionSpec } from '../cli/args';
import { printable } from '../printable';
import { ApiError, defaultEndpoint, TunnelApiClient } from './client';
import { loadAwsConfig, type AwsConfig } from './credentials';

export const COMMON_OPTIONS: readonly OptionSpec[] = [
  { name: 'endpoint', value: true },
  { name: 'region', value: true },
  { name: 'profile', value: true },
  { name: 'ca', value: true },
];

const COMMON_HELP_ROWS: ReadonlyArray<readonly [string, string]> = [
  ['--endpoint URL', 'API endpoint, e.g. https://127.0.0.1:8443 for a relay\n(default https://api.tunneling.iot.REGION.amazonaws.com)'],
  ['--region R', 'Region (default AWS_REGION, AWS_DEFAULT_REGION, the profile\'s region\nin ~/.aws/config, else us-east-1)'],
  ['--profile NAME', 'AWS profile of ~/.aws/credentials and ~/.aws/config (default AWS_PROFILE,\nelse the environment\'s AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/\nAWS_SESSION_TOKEN, else the profile "default"); credential_process, SSO\nand role profiles work as in the AWS CLI. For a relay: the key pair it\nwas started with (LOCALPROXY_RELAY_ACCESS_KEY_ID/..._SECRET_ACCESS_KEY)'],
  ['--ca FILE', 'Also trust the PEM certificate(s) in FILE (e.g. a relay\'s cert.pem)'],
];

/** The help lines of the common options, descriptions starting at `column`. */
export function commonHelp(column: number): string {
  return COMMON_HELP_ROWS.map(([flag, text]) => text.split('\n').map((line, i) => `${(i === 0 ? `  ${flag}` : '').padEnd(column)}${line}\n`).join('')).join('');
}

export interface ApiSetup {
  client: TunnelApiClient;
  /** The API endpoint URL. */
  endpoint: string;
  region: string;
  aws: AwsConfig;
  /** `--ca`: PEM text. */
  ca?: string;
}

type Values = Record<string, string | true | undefined>;

function text(values: Values, name: string): string | undefined {
  const value = values[name];
  return typeof value === 'string' ? value : undefined;
}

/** The endpoint as a URL, with a hint when the scheme is missing. */
export function endpointUrl(endpoint: string): string {
  const hint = `invalid --endpoint '${endpoint}': expected a URL such as https://${endpoint.replace(/^[a-z]+:\/\//i, '')}`;
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(endpoint)) throw usageError(`${hint} (the scheme https:// is missing)`);
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw usageError(`invalid --endpoint '${endpoint}': not a URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw usageError(`${hint} (https:// or http://, not ${url.protocol}//)`);
  return endpoint;
}

/** The client for the parsed common options; usage errors (exit 2) for them and for the credentials. */
export async function connectApi(values: Values, env: NodeJS.ProcessEnv = process.env): Promise<ApiSetup> {
  const endpointOption = text(values, 'endpoint');
  if (endpointOption !== undefined) endpointUrl(endpointOption);
  const caPath = text(values, 'ca');
  let ca: string | undefined;
  if (caPath !== undefined) {
    try {
      ca = readFileSync(caPath, 'utf8');
    } catch (err) {
      throw usageError(`cannot read --ca '${caPath}': ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
  const aws = await loadAwsConfig({ profile: text(values, 'profile'), env });
  const region = text(values, 'region') || env.AWS_REGION || env.AWS_DEFAULT_REGION || aws.region || 'us-east-1';
  if (!/^[a-z0-9-]{1,64}$/.test(region)) throw usageError(`invalid region '${printable(region)}': lower-case letters, digits and hyphens`);
  const endpoint = endpointOption ?? defaultEndpoint(region);
  const client = new TunnelApiClient({ endpoint, region, credentials: aws.credentials, ca });
  return { client, endpoint, region, aws, ca };
}

const UNTRUSTED = new Set(['SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'UNABLE_TO_GET_ISSUER_CERT', 'CERT_UNTRUSTED']);
/** Errors that are about the credentials used: the line names where they came from. */
const CREDENTIAL_ERRORS = new Set(['UnrecognizedClientException', 'InvalidSignatureException', 'ExpiredTokenException', 'MissingAuthenticationTokenException', 'AccessDeniedException', 'InvalidClientTokenId', 'SignatureDoesNotMatch']);

/** One line for a failed call, with what to do about the usual causes. */
export function apiFailure(err: unknown, api: Pick<ApiSetup, 'endpoint' | 'aws'>): string {
  if (err instanceof ApiError) {
    const line = `${printable(err.type)}: ${printable(err.message)}`;
    return CREDENTIAL_ERRORS.has(err.type) ? `${line} (credentials from ${api.aws.source})` : line;
  }
  const e = err as NodeJS.ErrnoException;
  const message = printable(e.message ?? String(err));
  if (e.code && UNTRUSTED.has(e.code)) {
    return `${message}: the endpoint's certificate is not trusted; give its CA with --ca FILE (a relay started with --tls-self-signed DIR: --ca DIR/cert.pem)`;
  }
  if (e.code === 'ERR_TLS_CERT_ALTNAME_INVALID') return `${message}: use the host name the certificate names in --endpoint`;
  if (e.code === 'ECONNREFUSED') return `${message}: nothing listens at ${printable(api.endpoint)}`;
  if (e.code === 'EPROTO' && /wrong version number|packet length too long/.test(e.message)) return `${message}: the endpoint does not speak TLS; a relay started with --plain needs http://`;
  return message;
}
