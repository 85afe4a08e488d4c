/**
 * AWS credentials, region and output format as the AWS CLI and SDKs find them, through the AWS
 * SDK's own providers (@aws-sdk/credential-provider-node): the environment (AWS_ACCESS_KEY_ID,
 * AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), then the profile (`--profile`, else AWS_PROFILE,
 * else `default`) of ~/.aws/credentials and ~/.aws/config (AWS_SHARED_CREDENTIALS_FILE,
 * AWS_CONFIG_FILE) with credential_process, SSO, assumed roles and web identity, then container
 * and instance credentials. A named profile replaces the environment's keys, as in the SDKs.
 *
 * The providers are as large as the rest of the bundle and only the API commands use them: they
 * are loaded on first use (aws-sdk.ts), so the proxy's start-up does not pay for them.
 */
import { brotliDecompressSync } from 'node:zlib';
import { ExitCode, ExitError } from '../exit';
import { printable } from '../printable';
import type { ApiCredentials } from './client';

export interface AwsConfigChoice {
  /** `--profile NAME`. */
  profile?: string;
  env?: NodeJS.ProcessEnv;
}

export interface AwsConfig {
  /** Where the credentials come from, for messages: `profile 'dev'` or `the environment`. */
  source: string;
  /** Signs with these; refreshed by the SDK's provider when they expire. */
  credentials: () => Promise<ApiCredentials>;
  /** The profile's `region` and `output` settings (~/.aws/config), when it has them. */
  region?: string;
  output?: string;
}

/** The SDK's warnings (AWS_PROFILE and keys both set) would be several lines on stderr: its choice is documented instead. */
const QUIET = { debug() {}, info() {}, warn() {}, error() {} };

/** The packed aws-sdk.ts, base64 of its brotli-compressed CommonJS bundle (build.mjs); absent when run from source. */
declare const __LOCALPROXY_AWS_SDK__: string;

type Sdk = typeof import('./aws-sdk');
let sdk: Promise<Sdk> | undefined;

/** aws-sdk.ts: unpacked and run from the bundle, or imported when running from source. */
function loadSdk(): Promise<Sdk> {
  sdk ??= (async () => {
    // A constant in the bundle, so that the import below, and aws-sdk.ts with it, is left out of it.
    if (typeof __LOCALPROXY_AWS_SDK__ === 'undefined') return import('./aws-sdk');
    const code = brotliDecompressSync(Buffer.from(__LOCALPROXY_AWS_SDK__, 'base64')).toString('utf8');
    const module = { exports: {} as Sdk };
    // Our own bundle, built with this one (build.mjs); `require` gives it Node's built-in modules.
    new Function('module', 'exports', 'require', code)(module, module.exports, require);
    return module.exports;
  })();
  return sdk;
}

/** One line for why credentials could not be had, the SDK's reason cut to its first line. */
function credentialError(source: string, err: unknown): ExitError {
  const reason = printable(String((err as Error)?.message ?? err).split('\n')[0]);
  return new ExitError(ExitCode.USAGE, `no usable AWS credentials from ${source}: ${reason}`);
}

/** The shared files, as messages name them. */
function shownFiles(env: NodeJS.ProcessEnv): string {
  return `${printable(env.AWS_SHARED_CREDENTIALS_FILE || '~/.aws/credentials')} or ${printable(env.AWS_CONFIG_FILE || '~/.aws/config')}`;
}

/**
 * The profile's credentials (fetched once now, so that a missing or expired one is reported
 * before any request), region and output format.
 */
export async function loadAwsConfig(choice: AwsConfigChoice = {}): Promise<AwsConfig> {
  const env = choice.env ?? process.env;
  const { defaultProvider, fromIni, loadSharedConfigFiles } = await loadSdk();
  const named = choice.profile ?? (env.AWS_PROFILE || undefined);
  const profile = named ?? 'default';
  const fromEnv = named === undefined && Boolean(env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY);
  const source = fromEnv ? 'the environment (AWS_ACCESS_KEY_ID)' : `profile '${printable(profile)}'`;
  let files: Awaited<ReturnType<typeof loadSharedConfigFiles>>;
  try {
    files = await loadSharedConfigFiles({ ignoreCache: true });
  } catch (err) {
    throw credentialError(source, err);
  }
  // As the AWS CLI does: a profile named but defined nowhere is an error at once (the SDK's
  // chain would go on to ask the instance metadata service).
  if (named !== undefined && files.configFile[named] === undefined && files.credentialsFile[named] === undefined) {
    throw new ExitError(ExitCode.USAGE, `no usable AWS credentials from ${source}: no such profile in ${shownFiles(env)}`);
  }
  const provider = defaultProvider({ ...(choice.profile !== undefined ? { profile: choice.profile } : {}), ignoreCache: true, logger: QUIET });
  const credentials = async (): Promise<ApiCredentials> => {
    try {
      const { accessKeyId, secretAccessKey, sessionToken } = await provider();
      return { accessKeyId, secretAccessKey, sessionToken };
    } catch (err) {
      // Nothing anywhere (the SDK's last word is then about instance metadata): say where we looked.
      if (!fromEnv && files.configFile[profile] === undefined && files.credentialsFile[profile] === undefined) {
        throw new ExitError(ExitCode.USAGE, `no AWS credentials: none in the environment and no profile '${printable(profile)}' in ${shownFiles(env)}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give --profile NAME`);
      }
      // The chain's last word is its own ("from any providers"); a profile's provider says what is wrong with it.
      if (!fromEnv) await fromIni({ profile, ignoreCache: true, logger: QUIET })().catch((iniErr: unknown) => { err = iniErr; });
      throw credentialError(source, err);
    }
  };
  await credentials();
  const settings = files.configFile[profile] ?? {};
  return { source, credentials, region: settings.region || undefined, output: settings.output || undefined };
}
