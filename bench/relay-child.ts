// `localproxy relay ARGS` through the library function; bench/relay.ts bundles this file with
// esbuild and runs it with plain node, so the measured memory is the product's, not tsx's.
import { runRelayCli } from '../src/relay/cli';

runRelayCli(process.argv.slice(2)).then((code) => process.exit(code));
