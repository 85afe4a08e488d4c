/**
 * The AWS SDK's credential providers and shared-config loader: as large as the rest of the
 * bundle, and used only by the API commands. build.mjs bundles this module apart, compressed
 * into the executable, and credentials.ts unpacks it on first use, so the proxy's start-up
 * neither reads nor parses it.
 */
export { fromIni } from '@aws-sdk/credential-provider-ini';
export { defaultProvider } from '@aws-sdk/credential-provider-node';
export { loadSharedConfigFiles } from '@smithy/core/config';
