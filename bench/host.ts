/**
 * The relay or one proxy in its own process through the library API, for the benchmark when the
 * CLI cannot run it. bench/tunnel.ts bundles this file with esbuild and runs it with plain
 * `node` (no tsx loader, so memory figures are the product's):
 *
 *   node host.cjs relay                      prints `READY {"port":…,"caPem":…,"tokens":…}`
 *   node host.cjs source|destination         spec as JSON in LOCALPROXY_BENCH_SPEC, token in
 *                                            AWSIOT_TUNNEL_ACCESS_TOKEN; prints `READY {ports}`
 *
 * The tokens go to the parent through a private pipe and are never printed by the benchmark.
 * SIGTERM/SIGINT close it.
 */
import { defaultSettings, Logger, startProxy, startRelay, type ProxyOptions, type ServiceTarget, type Settings } from '../src/index';

interface ProxySpec {
  endpoint: { host: string; port: number };
  caPem: string;
  services: Record<string, ServiceTarget>;
  settings?: Partial<Settings>;
}

async function runRelay(): Promise<void> {
  const relay = await startRelay({ host: '127.0.0.1', port: 0, tls: 'self-signed', log: new Logger({ level: 2 }) });
  const tokens = relay.openTunnel({ services: ['SSH1'], lifetimeMinutes: 720 });
  const stop = () => void relay.close().then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdout.write(`READY ${JSON.stringify({ port: relay.port, caPem: relay.caPem, tokens })}\n`);
}

function runProxy(mode: ProxyOptions['mode']): void {
  const spec = JSON.parse(process.env.LOCALPROXY_BENCH_SPEC ?? '{}') as ProxySpec;
  const proxy = startProxy({
    mode,
    accessToken: process.env.AWSIOT_TUNNEL_ACCESS_TOKEN ?? '',
    endpoint: spec.endpoint,
    services: new Map(Object.entries(spec.services)),
    ca: [spec.caPem],
    settings: { ...defaultSettings(), ...spec.settings },
    log: new Logger({ level: 3 }),
  });
  const stop = () => void proxy.close();
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  proxy.ready.then(
    () => process.stdout.write(`READY ${JSON.stringify(Object.fromEntries(proxy.ports()))}\n`),
    () => {},
  );
  void proxy.done.then(({ exitCode, message }) => {
    if (message) process.stderr.write(`${message}\n`);
    process.exit(exitCode);
  });
}

const role = process.argv[2];
if (role === 'relay') {
  runRelay().catch((err: Error) => {
    process.stderr.write(`relay failed to start: ${err.message}\n`);
    process.exit(1);
  });
} else if (role === 'source' || role === 'destination') {
  runProxy(role);
} else {
  process.stderr.write(`usage: host.cjs relay|source|destination\n`);
  process.exit(2);
}
