/**
 * A tunnel across two relays of a cluster next to one through a single relay (not part of the
 * tests): `npm run build && node --import tsx bench/relay-cluster.ts [--mib N] [--echoes N]`.
 *
 * Relays: the built CLI (`node dist/localproxy.cjs relay`, TLS) as processes. Three setups:
 *   single   one relay with the local store (no Redis)
 *   same     a two-relay cluster on one redis-server, both peers on relay 1
 *   cross    the same cluster, source on relay 1 and destination on relay 2 (over a bridge)
 * Peers are raw WebSocket clients in this process (the codec, no proxies), so the figures are
 * the relays'. Per setup: N MiB (default 256) of 64512-byte DATA source → destination, then
 * N (default 2000) one-byte echoes one after another (source DATA, the destination answers at
 * once), p50 and p99 of the round trip.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { TunnelApiClient } from '../src/api/client';
import { encodeFrame, FrameDecoder } from '../src/protocol/framing';
import { MessageType } from '../src/protocol/message';
import { CLI, cpuSeconds, spawnChild, type Child } from './procs';
import { connectPeer, pump, waitReceived } from './raw-peer';

const args = process.argv.slice(2);
const arg = (name: string, fallback: number) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const MiB = 1024 * 1024;
const BYTES = Math.floor((arg('--mib', 256) * MiB) / 64512) * 64512;
const ECHOES = arg('--echoes', 2000);
const CREDENTIALS = { accessKeyId: 'AKIDBENCH', secretAccessKey: 'bench-secret' };
const ENV = {
  LOCALPROXY_RELAY_ACCESS_KEY_ID: CREDENTIALS.accessKeyId,
  LOCALPROXY_RELAY_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey,
  LOCALPROXY_RELAY_CLUSTER_SECRET: 'bench cluster secret, 16+ bytes',
};


async function freePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function startRedis(port: number, dir: string): Promise<ChildProcess> {
  const redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  await new Promise<void>((resolve, reject) => {
    redis.stdout!.on('data', (d: Buffer) => { out += d; if (out.includes('Ready to accept connections')) resolve(); });
    redis.once('exit', () => reject(new Error(`redis-server exited: ${out}`)));
  });
  return redis;
}

async function startRelay(dir: string, store?: string): Promise<{ child: Child; url: string }> {
  const port = await freePort();
  const extra = store ? ['--store', store, '--node-url', `wss://127.0.0.1:${port}`] : [];
  const child = spawnChild(`relay:${port}`, [CLI, 'relay', '--listen', `127.0.0.1:${port}`, '--tls-self-signed', join(dir, 'certs'), '-v', store ? '4' : '3', ...extra], ENV);
  await child.waitFor(/listening on/, 20_000);
  if (store) await child.waitFor(/tunnel store \S+ connected/, 20_000);
  return { child, url: `wss://127.0.0.1:${port}` };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function measure(name: string, urls: [string, string], relays: Child[], ca: string): Promise<string[]> {
  const api = new TunnelApiClient({ endpoint: urls[0].replace('wss:', 'https:'), region: 'us-east-1', credentials: CREDENTIALS, ca });
  const t = await api.call<{ sourceAccessToken: string; destinationAccessToken: string }>('OpenTunnel', { destinationConfig: { services: ['bulk'] } });
  const dst = await connectPeer(urls[1], 'destination', t.destinationAccessToken, ca);
  const src = await connectPeer(urls[0], 'source', t.sourceAccessToken, ca);
  // The bridge is up once a STREAM_START reaches the destination (before that it is answered with a reset).
  const started = new Promise<void>((resolve) => {
    const decoder = new FrameDecoder();
    const onMessage = (data: Buffer) => decoder.push(data, (msg) => { if (msg.type === MessageType.STREAM_START) { dst.ws.off('message', onMessage); resolve(); } }, () => {});
    dst.ws.on('message', onMessage);
  });
  const startFrame = encodeFrame({ type: MessageType.STREAM_START, streamId: 1, serviceId: 'bulk', connectionId: 1 });
  const retry = setInterval(() => src.ws.send(startFrame), 50);
  src.ws.send(startFrame);
  await started;
  clearInterval(retry);

  const cpu0 = relays.map((r) => cpuSeconds(r.pid));
  const t0 = process.hrtime.bigint();
  await Promise.all([pump(src, 'bulk', BYTES), waitReceived(dst, BYTES)]);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = relays.map((r, i) => cpuSeconds(r.pid) - cpu0[i]).reduce((a, b) => a + b, 0);

  // Echoes: the destination answers each DATA at once; one at a time.
  const one = encodeFrame({ type: MessageType.DATA, streamId: 1, serviceId: 'bulk', connectionId: 1, payload: Buffer.from([1]) });
  dst.onData = () => dst.ws.send(one);
  const rtts: number[] = [];
  for (let i = 0; i < ECHOES; i++) {
    const back = new Promise<void>((resolve) => { src.onData = () => resolve(); });
    const s = process.hrtime.bigint();
    src.ws.send(one);
    await back;
    rtts.push(Number(process.hrtime.bigint() - s) / 1000);
  }
  rtts.sort((a, b) => a - b);
  src.ws.terminate();
  dst.ws.terminate();
  return [name, `${(BYTES / MiB / seconds).toFixed(0)} MiB/s`, `${cpu.toFixed(1)} s`, `${percentile(rtts, 50).toFixed(0)} / ${percentile(rtts, 99).toFixed(0)}`];
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'relay-cluster-bench-'));
  const children: Child[] = [];
  let redis: ChildProcess | undefined;
  const load = loadavg()[0];
  try {
    const rows: string[][] = [];
    const single = await startRelay(dir);
    children.push(single.child);
    const ca = readFileSync(join(dir, 'certs', 'cert.pem'), 'utf8');
    rows.push(await measure('single relay (local store)', [single.url, single.url], [single.child], ca));
    await single.child.stop();

    const redisPort = await freePort();
    redis = await startRedis(redisPort, dir);
    const store = `redis://127.0.0.1:${redisPort}`;
    const one = await startRelay(dir, store);
    const two = await startRelay(dir, store);
    children.push(one.child, two.child);
    rows.push(await measure('cluster, both peers on relay 1', [one.url, one.url], [one.child, two.child], ca));
    rows.push(await measure('cluster, source on relay 1, destination on relay 2 (bridge)', [one.url, two.url], [one.child, two.child], ca));

    console.log(`${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC · node ${process.version} · load average before: ${load.toFixed(1)} · ${(BYTES / MiB).toFixed(0)} MiB, ${ECHOES} echoes`);
    console.log('| tunnel | throughput | relays\' CPU | echo p50 / p99 (µs) |');
    console.log('|---|---|---|---|');
    for (const row of rows) console.log(`| ${row.join(' | ')} |`);
  } finally {
    for (const c of children) await c.stop();
    redis?.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(`bench/relay-cluster: ${(err as Error).message}`);
  process.exit(1);
});
