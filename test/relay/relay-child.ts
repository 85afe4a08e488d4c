// A relay in its own process (for descriptor counts and `ulimit -n`): startRelay with the JSON
// options in RELAY_CHILD_OPTIONS; prints one JSON line {port, caPem, limits} once listening.
import { Logger } from '../../src/log';
import { startRelay } from '../../src/relay/server';

const options = JSON.parse(process.env.RELAY_CHILD_OPTIONS ?? '{}');
startRelay({ ...options, log: new Logger({ level: Number(process.env.RELAY_CHILD_LOG ?? 3) }) }).then((relay) => {
  process.stdout.write(`${JSON.stringify({ port: relay.port, caPem: relay.caPem, limits: relay.limits })}\n`);
  process.on('SIGTERM', () => void relay.close().then(() => process.exit(0)));
}, (err: Error) => {
  process.stderr.write(`${err.message}\n`);
  process.exit(2);
});
