// Bundles src/ into dist/localproxy.cjs (one CommonJS file, runnable with `node`).
// `node build.mjs --dist [--target NAME]` also builds the single-file executables (see targets/).
import { build } from 'esbuild';
import { readFileSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('./package.json', import.meta.url), 'utf8'));

export async function bundle() {
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
    define: {
      __LOCALPROXY_VERSION__: JSON.stringify(pkg.version),
      // ws falls back to pure JS without these optional native add-ons; say so up front
      // so the bundle never tries to require them (a single executable cannot load them).
      'process.env.WS_NO_BUFFER_UTIL': '"1"',
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
