/**
 * The cost of a management API change with `--state` as the number of tunnels grows (not part
 * of the tests): `node --import tsx bench/relay-state.ts [--tunnels N] [--calls N]`.
 *
 * An in-process relay (plain HTTP, so TLS does not blur the figure) with a state file in the
 * temporary directory; OpenTunnel through the API, one call at a time, with 0 and then N
 * (default 3,000) tunnels already open; then the same with `--calls` concurrent calls, which
 * share their fdatasync (group commit). Prints the latency per call and the file's size.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { TunnelApiClient } from '../src/api/client';
import { silentLogger } from '../src/log';
import { startRelay } from '../src/relay/server';
import { percentile } from './stats';

const args = process.argv.slice(2);
const arg = (name: string, fallback: number) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const TUNNELS = arg('--tunnels', 3000);
const CALLS = arg('--calls', 200);
const credentials = { accessKeyId: 'AKIDSTATEBENCH', secretAccessKey: 'state-bench-secret' };

async function main(): Promise<void> {
  const dir = mkdtempSync(join(os.tmpdir(), 'relay-state-bench-'));
  const statePath = join(dir, 'state.json');
  const relay = await startRelay({ port: 0, tls: 'plain', statePath, credentials, log: silentLogger(), limits: { maxOpenTunnels: TUNNELS + 4 * CALLS + 10 } });
  try {
    const client = new TunnelApiClient({ endpoint: relay.url.replace('ws:', 'http:'), region: 'us-east-1', credentials });
    const description = 'a tunnel opened by bench/relay-state.ts to fill the state file';
    const sequential = async () => {
      const ms: number[] = [];
      for (let i = 0; i < CALLS; i++) {
        const t0 = process.hrtime.bigint();
        await client.call('OpenTunnel', { description, destinationConfig: { services: ['SSH'] } });
        ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
      return ms;
    };
    const concurrent = async () => {
      const t0 = process.hrtime.bigint();
      await Promise.all(Array.from({ length: CALLS }, () => client.call('OpenTunnel', { description, destinationConfig: { services: ['SSH'] } })));
      return Number(process.hrtime.bigint() - t0) / 1e6 / CALLS;
    };
    const empty = await sequential();
    await Promise.all(Array.from({ length: TUNNELS }, () => relay.openTunnel({ services: ['SSH'], description })));
    await relay.flush();
    const full = await sequential();
    const together = await concurrent();
    await relay.flush();
    const cpu = os.cpus();
    console.log(`Measured ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC · Node ${process.version} · ${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'} · ${os.tmpdir()} on this machine's disk`);
    console.log('');
    console.log('| OpenTunnel through the API, --state | p50 (ms) | p99 (ms) |');
    console.log('|---|---|---|');
    console.log(`| ${CALLS} calls one after another, ~${CALLS} tunnels open | ${percentile(empty, 50).toFixed(2)} | ${percentile(empty, 99).toFixed(2)} |`);
    console.log(`| ${CALLS} calls one after another, ~${TUNNELS + 2 * CALLS} tunnels open | ${percentile(full, 50).toFixed(2)} | ${percentile(full, 99).toFixed(2)} |`);
    console.log(`| ${CALLS} calls at once (group commit), time per call | ${together.toFixed(2)} | – |`);
    console.log('');
    console.log(`state file at the end: ${(statSync(statePath).size / 1024 / 1024).toFixed(1)} MiB for ${relay.stats().openTunnels} open tunnels`);
  } finally {
    await relay.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(`bench/relay-state: ${(err as Error).message}`);
  process.exit(1);
});
