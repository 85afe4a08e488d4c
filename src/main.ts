/** Process entry: dispatches to the proxy command line (src/cli), `relay` or `tunnel`. */
import { PRODUCT, VERSION } from './version';

const argv = process.argv.slice(2);
if (argv.includes('--version') || argv.includes('-V')) {
  process.stdout.write(`${PRODUCT} ${VERSION}\n`);
} else {
  process.stdout.write(`${PRODUCT} ${VERSION}: AWS IoT Secure Tunneling local proxy\nUsage: localproxy [options]\n`);
}
