// `localproxy relay ARGS` through the library function; bench/relay.ts bundles this file with
// esbuild and runs it with plain node (`node relay.cjs relay ARGS`), so the measured memory is
// the product's, not tsx's. As in src/main.ts, the relay's heap settings come first.
import '../src/relay/young';
import { runRelayCli } from '../src/relay/cli';

runRelayCli(process.argv.slice(3)).then((code) => process.exit(code));
