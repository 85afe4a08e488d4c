// Runs `localproxy relay ...` or `localproxy tunnel ...` through the library functions, as
// src/main.ts dispatches them, so these tests do not depend on the proxy's CLI building.
import { runTunnelCli } from '../../src/api/cli';
import { runRelayCli } from '../../src/relay/cli';

const [which, ...args] = process.argv.slice(2);
(which === 'relay' ? runRelayCli : runTunnelCli)(args).then((code) => process.exit(code));
