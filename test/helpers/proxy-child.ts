/**
 * A source or destination in a child process through the library API, for tests that need a
 * separate process (peak RSS, SIGKILL) while the CLI cannot run one. Run by `spawnProxy` as
 * `node --import tsx test/helpers/proxy-child.ts` with the token in AWSIOT_TUNNEL_ACCESS_TOKEN
 * and the rest as JSON in LOCALPROXY_TEST_CHILD. Prints `READY <json ports>` on stdout when
 * ready; SIGTERM/SIGINT close it; exits with `done.exitCode`.
 */
import { readFileSync } from 'node:fs';
import { defaultSettings, Logger, type ProxyOptions, type ServiceTarget } from '../../src/index';
import { startProxy } from '../../src/tunnel/proxy';

interface ChildSpec {
  mode: ProxyOptions['mode'];
  endpoint: { host: string; port: number };
  caFile: string;
  services: Record<string, ServiceTarget>;
  settings?: Record<string, unknown>;
  clientType?: 'V1' | 'V2';
  logLevel?: number;
}

const spec = JSON.parse(process.env.LOCALPROXY_TEST_CHILD ?? '{}') as ChildSpec;
const accessToken = process.env.AWSIOT_TUNNEL_ACCESS_TOKEN ?? '';
const proxy = startProxy({
  mode: spec.mode,
  accessToken,
  endpoint: spec.endpoint,
  services: new Map(Object.entries(spec.services)),
  ca: [readFileSync(spec.caFile, 'utf8')],
  settings: { ...defaultSettings(), ...spec.settings },
  clientType: spec.clientType,
  log: new Logger({ level: spec.logLevel ?? 4 }),
});

function onSignal(): void {
  void proxy.close();
}
process.on('SIGTERM', onSignal);
process.on('SIGINT', onSignal);

proxy.ready.then(
  () => process.stdout.write(`READY ${JSON.stringify(Object.fromEntries(proxy.ports()))}\n`),
  () => {},
);
void proxy.done.then(({ exitCode, message }) => {
  if (message) process.stderr.write(`${message}\n`);
  process.exit(exitCode);
});
