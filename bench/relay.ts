/**
 * Relay benchmark (not part of the tests): `node --import tsx bench/relay.ts [--gib N] [--tunnels N]`.
 *
 * 1. Throughput: one tunnel, a raw source peer pushes N GiB (default 1) of 64512-byte DATA
 *    messages through the relay (TLS) to a raw destination peer that checks every byte count.
 * 2. Slow reader: the destination stops reading for a while; the source keeps offering data.
 *    The relay's peak RSS must not grow with the amount offered (bounded backlog).
 * 3. Many tunnels: N (default 100) tunnels with both peers connected exchange 1 MiB each way.
 *
 * The relay runs as a separate process (bench/relay-child.ts bundled with esbuild, plain node);
 * its peak RSS (VmHWM, reset between phases) and CPU time come from /proc.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build } from 'esbuild';
import { TunnelApiClient } from '../src/api/client';
import { encodeFrame } from '../src/protocol/framing';
import { MessageType } from '../src/protocol/message';
import { cpuSeconds, peakRssMiB, resetPeakRss, rssMiB, spawnChild } from './procs';
import { connectPeer, PAYLOAD, pump, waitReceived } from './raw-peer';

const args = process.argv.slice(2);
const arg = (name: string, fallback: number) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const GIB = arg('--gib', 1);
const TUNNELS = arg('--tunnels', 100);
const MiB = 1024 * 1024;
const CREDENTIALS = { accessKeyId: 'AKIDBENCH', secretAccessKey: 'bench-secret' };


async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'relay-bench-'));
  const bundle = join(dir, 'relay.cjs');
  await build({ entryPoints: [join(__dirname, 'relay-child.ts')], bundle: true, platform: 'node', format: 'cjs', target: 'node20', outfile: bundle, logLevel: 'error' });
  const relay = spawnChild('relay', [bundle, '--listen', '127.0.0.1:0', '--tls-self-signed', join(dir, 'certs'), '-v', '3'], {
    LOCALPROXY_RELAY_ACCESS_KEY_ID: CREDENTIALS.accessKeyId,
    LOCALPROXY_RELAY_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey,
  });
  try {
    const url = (await relay.waitFor(/listening on (\S+)/, 20000))[1];
    const ca = readFileSync(join(dir, 'certs', 'cert.pem'), 'utf8');
    const api = new TunnelApiClient({ endpoint: url.replace('wss:', 'https:'), region: 'us-east-1', credentials: CREDENTIALS, ca });
    const idleRss = rssMiB(relay.pid);
    const rows: string[][] = [];

    // 1. Throughput.
    {
      const t = await api.call<{ sourceAccessToken: string; destinationAccessToken: string }>('OpenTunnel', { destinationConfig: { services: ['bulk'] } });
      const src = await connectPeer(url, 'source', t.sourceAccessToken, ca);
      const dst = await connectPeer(url, 'destination', t.destinationAccessToken, ca);
      src.ws.send(encodeFrame({ type: MessageType.STREAM_START, streamId: 1, serviceId: 'bulk', connectionId: 1 }));
      const bytes = Math.floor((GIB * 1024 * MiB) / PAYLOAD) * PAYLOAD;
      resetPeakRss(relay.pid);
      const cpu0 = cpuSeconds(relay.pid);
      const t0 = process.hrtime.bigint();
      await Promise.all([pump(src, 'bulk', bytes), waitReceived(dst, bytes)]);
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      if (dst.received !== bytes) throw new Error(`received ${dst.received} of ${bytes} bytes`);
      rows.push([`${GIB} GiB through one tunnel (TLS)`, `${(bytes / MiB / seconds).toFixed(0)} MiB/s`, `${seconds.toFixed(1)} s`, `${(cpuSeconds(relay.pid) - cpu0).toFixed(1)} s`, `${peakRssMiB(relay.pid).toFixed(0)} MiB`]);

      // 2. Slow reader: the destination stops reading while 256 MiB are offered.
      const socket = (dst.ws as unknown as { _socket: import('node:net').Socket })._socket;
      resetPeakRss(relay.pid);
      socket.pause();
      const offered = 256 * MiB;
      const before = dst.received;
      const pushing = pump(src, 'bulk', offered);
      // Let the relay fill its backlog and pause the source, then read again.
      await new Promise((resolve) => setTimeout(resolve, 3000));
      const stalledPeak = peakRssMiB(relay.pid);
      socket.resume();
      await Promise.all([pushing, waitReceived(dst, before + Math.floor(offered / PAYLOAD) * PAYLOAD)]);
      rows.push(['slow reader: 256 MiB offered, reader stalled 3 s', '-', '-', '-', `${stalledPeak.toFixed(0)} MiB while stalled, ${peakRssMiB(relay.pid).toFixed(0)} MiB overall`]);
      src.ws.terminate();
      dst.ws.terminate();
    }

    // 3. Many tunnels.
    {
      resetPeakRss(relay.pid);
      const cpu0 = cpuSeconds(relay.pid);
      const t0 = process.hrtime.bigint();
      const pairs = await Promise.all(Array.from({ length: TUNNELS }, async (_, i) => {
        const t = await api.call<{ sourceAccessToken: string; destinationAccessToken: string }>('OpenTunnel', { destinationConfig: { services: [`s${i}`] } });
        const src = await connectPeer(url, 'source', t.sourceAccessToken, ca);
        const dst = await connectPeer(url, 'destination', t.destinationAccessToken, ca);
        return { i, src, dst };
      }));
      const connectedRss = rssMiB(relay.pid);
      const each = Math.floor(MiB / PAYLOAD) * PAYLOAD;
      await Promise.all(pairs.map(async ({ i, src, dst }) => {
        src.ws.send(encodeFrame({ type: MessageType.STREAM_START, streamId: 1, serviceId: `s${i}`, connectionId: 1 }));
        await Promise.all([pump(src, `s${i}`, each), pump(dst, `s${i}`, each), waitReceived(dst, each), waitReceived(src, each)]);
      }));
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      rows.push([`${TUNNELS} tunnels, ${2 * TUNNELS} peers, 1 MiB each way`, `${((2 * TUNNELS * each) / MiB / seconds).toFixed(0)} MiB/s`, `${seconds.toFixed(1)} s`, `${(cpuSeconds(relay.pid) - cpu0).toFixed(1)} s`, `${peakRssMiB(relay.pid).toFixed(0)} MiB (${connectedRss.toFixed(0)} MiB connected, idle)`]);
      for (const { src, dst } of pairs) {
        src.ws.terminate();
        dst.ws.terminate();
      }
    }

    console.log(`relay idle RSS: ${idleRss.toFixed(0)} MiB (node ${process.version}, plain node, bundled)`);
    console.log('| workload | throughput | wall time | relay CPU | relay peak RSS |');
    console.log('|---|---|---|---|---|');
    for (const row of rows) console.log(`| ${row.join(' | ')} |`);
  } finally {
    await relay.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(`bench/relay: ${(err as Error).message}`);
  process.exit(1);
});
