// Bundles src/ into dist/localproxy.cjs (one CommonJS file, runnable with `node`).
// `node build.mjs --dist [--target NAME]` also builds the single-file executables (see targets/).
import { build } from 'esbuild';
import { readFileSync } from 'node:fs';
import { brotliCompressSync, constants } from 'node:zlib';

const pkg = JSON.parse(readFileSync(new URL('./package.json', import.meta.url), 'utf8'));

/**
 * src/api/aws-sdk.ts (the AWS SDK's credential providers, as large as everything else) bundled
 * apart, minified and brotli-compressed: embedded as one base64 string, it costs the start-up of
 * commands that never use it a few milliseconds instead of some 40 ms of reading and parsing.
 */
async function packedAwsSdk() {
  const result = await build({
    entryPoints: ['src/api/aws-sdk.ts'],
    bundle: true,
    platform: 'node',
    target: 'node20.11',
    format: 'cjs',
    minify: true,
    legalComments: 'none',
    // Its import('node:http') become require(): a single executable's script cannot import().
    supported: { 'dynamic-import': false },
    write: false,
    logLevel: 'warning',
  });
  return brotliCompressSync(result.outputFiles[0].contents, { params: { [constants.BROTLI_PARAM_QUALITY]: 9 } }).toString('base64');
}

export async function bundle() {
  const awsSdk = await packedAwsSdk();
  await build({
    entryPoints: ['src/main.ts'],
    bundle: true,
    platform: 'node',
    target: 'node20.11',
    format: 'cjs',
    outfile: 'dist/localproxy.cjs',
    minifySyntax: true,
    legalComments: 'none',
    banner: { js: '#!/usr/bin/env node' },
    // ws's optional `bufferutil` add-on is native; a single executable cannot load it. Our
    // word-wise masking in TypeScript stands in for it (issue 15: the relay unmasks every
    // byte a randomly masking client sends).
    alias: { bufferutil: './src/relay/ws-mask.ts' },
    define: {
      __LOCALPROXY_VERSION__: JSON.stringify(pkg.version),
      __LOCALPROXY_AWS_SDK__: JSON.stringify(awsSdk),
      // ws falls back to pure JS without this optional native add-on; say so up front
      // so the bundle never tries to require it (a single executable cannot load it).
      'process.env.WS_NO_UTF_8_VALIDATE': '"1"',
    },
    logLevel: 'warning',
  });
}

await bundle();
if (process.argv.includes('--dist')) {
  const { dist } = await import('./scripts/dist.mjs');
  await dist(process.argv.slice(2));
}
