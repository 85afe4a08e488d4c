/**
 * Relay benchmark (not part of the tests):
 *   `node --import tsx bench/relay.ts [--gib N] [--tunnels N] [--bulk-only] [--floor] [--profile DIR]`.
 *
 * 1. Throughput: one tunnel, a raw source peer pushes N GiB (default 1) of 64512-byte DATA
 *    messages through the relay (TLS) to a raw destination peer that checks every byte count;
 *    once with peers that mask with the all-zero key (as our proxies do), once with random
 *    keys (as the C++ proxy does: the relay unmasks every byte).
 * 2. Slow reader: the destination stops reading for a while; the source keeps offering data.
 *    The relay's peak RSS must not grow with the amount offered (bounded backlog).
 * 3. Many tunnels: N (default 100) tunnels with both peers connected exchange 1 MiB each way.
 *
 * --bulk-only runs phase 1 alone. --floor then carries the same bytes through the least a Node
 * process can do (bench/relay-floor.ts: TCP pipe, TLS pipe, ws over TLS), measured the same
 * way in the same run: how far the relay is from Node's floor on this machine.
 * --profile DIR: the relay (and floor) processes write V8 CPU profiles (.cpuprofile) there;
 * RELAY_NODE_FLAGS (environment) adds node flags to them (e.g. `--trace-gc`).
 *
 * The relay runs as a separate process (bench/relay-child.ts bundled with esbuild, plain node);
 * its peak RSS (VmHWM, reset between phases) and CPU time come from /proc.
 */
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import tls from 'node:tls';
import { join } from 'node:path';
import { build } from 'esbuild';
import { TunnelApiClient } from '../src/api/client';
import { socketOf } from '../src/flow/writer';
import { encodeFrame } from '../src/protocol/framing';
import { MessageType } from '../src/protocol/message';
import { cpuSeconds, peakRssMiB, profileChildren, resetPeakRss, rssMiB, spawnChild, type Child } from './procs';
import { connectPeer, PAYLOAD, pump, waitReceived, type MaskKeys } from './raw-peer';

const args = process.argv.slice(2);
const arg = (name: string, fallback: number) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const GIB = arg('--gib', 1);
const TUNNELS = arg('--tunnels', 100);
const BULK_ONLY = args.includes('--bulk-only');
const FLOOR = args.includes('--floor');
const profileAt = args.indexOf('--profile');
if (profileAt >= 0) profileChildren(args[profileAt + 1]);
const NODE_FLAGS = process.env.RELAY_NODE_FLAGS?.split(' ').filter(Boolean) ?? [];
const MiB = 1024 * 1024;
const CREDENTIALS = { accessKeyId: 'AKIDBENCH', secretAccessKey: 'bench-secret' };


/** One row of the table: what moved, how fast, and the CPU the forwarding process spent. */
function bulkRow(what: string, bytes: number, seconds: number, cpu: number, rss: string): string[] {
  return [what, `${(bytes / MiB / seconds).toFixed(0)} MiB/s`, `${seconds.toFixed(1)} s`, `${cpu.toFixed(2)} s (${(cpu / (bytes / GiB_BYTES)).toFixed(2)} s/GiB)`, rss];
}
const GiB_BYTES = 1024 * MiB;
/** As in build.mjs: ws masks with src/relay/ws-mask.ts (its `bufferutil` hook), as in the product. */
const WS_ALIAS = { bufferutil: join(__dirname, '../src/relay/ws-mask.ts') };
const bulkBytes = () => Math.floor((GIB * GiB_BYTES) / PAYLOAD) * PAYLOAD;

/** `bytes` of DATA from a source peer to a destination peer through `url`; the forwarder's CPU. */
async function bulk(child: Child, url: string, tokens: { source: string; destination: string }, ca: string, mask: MaskKeys, bytes: number, fragmentBytes = 0): Promise<{ seconds: number; cpu: number; cipher: string }> {
  const src = await connectPeer(url, 'source', tokens.source, ca, mask);
  const dst = await connectPeer(url, 'destination', tokens.destination, ca, mask);
  try {
    src.ws.send(encodeFrame({ type: MessageType.STREAM_START, streamId: 1, serviceId: 'bulk', connectionId: 1 }));
    const cpu0 = cpuSeconds(child.pid);
    const t0 = process.hrtime.bigint();
    await Promise.all([pump(src, 'bulk', bytes, fragmentBytes), waitReceived(dst, bytes)]);
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    if (dst.received !== bytes) throw new Error(`received ${dst.received} of ${bytes} bytes`);
    const cipher = (socketOf(src.ws) as tls.TLSSocket).getCipher().standardName;
    return { seconds, cpu: cpuSeconds(child.pid) - cpu0, cipher };
  } finally {
    src.ws.terminate();
    dst.ws.terminate();
  }
}

/** A byte stream of `bytes` through a TCP or TLS pipe (the floor), in 64 KiB writes. */
async function streamBytes(port: number, secure: boolean, ca: string, bytes: number): Promise<void> {
  const open = async (): Promise<net.Socket> => {
    const socket = secure ? tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost' }) : net.connect(port, '127.0.0.1');
    await once(socket, secure ? 'secureConnect' : 'connect');
    socket.setNoDelay(true);
    return socket;
  };
  const sender = await open();
  const receiver = await open();
  const chunk = Buffer.alloc(64 * 1024, 0x5a);
  let received = 0;
  const done = new Promise<void>((resolve) => receiver.on('data', (data: Buffer) => {
    received += data.length;
    if (received >= bytes) resolve();
  }));
  for (let sent = 0; sent < bytes; sent += chunk.length) {
    if (!sender.write(bytes - sent < chunk.length ? chunk.subarray(0, bytes - sent) : chunk)) await once(sender, 'drain');
  }
  await done;
  sender.destroy();
  receiver.destroy();
}

async function floor(kind: 'tcp' | 'tls' | 'ws', dir: string, ca: string, rows: string[][]): Promise<void> {
  const bundle = join(dir, 'floor.cjs');
  await build({ entryPoints: [join(__dirname, 'relay-floor.ts')], bundle: true, platform: 'node', format: 'cjs', target: 'node20', outfile: bundle, logLevel: 'error', alias: WS_ALIAS });
  const child = spawnChild(`floor-${kind}`, [...NODE_FLAGS, bundle, kind, join(dir, 'certs', 'cert.pem'), join(dir, 'certs', 'key.pem')], {});
  try {
    const port = Number((await child.waitFor(/floor listening on (\d+)/, 20000))[1]);
    const bytes = bulkBytes();
    if (kind === 'ws') {
      for (const [mask, fragmentBytes] of [['zero', 0], ['random', 0], ['random', 4096]] as const) {
        const { seconds, cpu } = await bulk(child, `wss://127.0.0.1:${port}`, { source: '-', destination: '-' }, ca, mask, bytes, fragmentBytes);
        rows.push(bulkRow(`floor: ws over TLS, forward each message (${mask} mask${fragmentBytes ? `, ${fragmentBytes / 1024} KiB fragments` : ''})`, bytes, seconds, cpu, `${peakRssMiB(child.pid).toFixed(0)} MiB`));
      }
      return;
    }
    const cpu0 = cpuSeconds(child.pid);
    const t0 = process.hrtime.bigint();
    await streamBytes(port, kind === 'tls', ca, bytes);
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    rows.push(bulkRow(`floor: ${kind === 'tls' ? 'TLS' : 'TCP'} pipe both ways`, bytes, seconds, cpuSeconds(child.pid) - cpu0, `${peakRssMiB(child.pid).toFixed(0)} MiB`));
  } finally {
    await child.stop();
  }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'relay-bench-'));
  const bundle = join(dir, 'relay.cjs');
  const load = loadavg()[0];
  await build({ entryPoints: [join(__dirname, 'relay-child.ts')], bundle: true, platform: 'node', format: 'cjs', target: 'node20', outfile: bundle, logLevel: 'error', alias: WS_ALIAS });
  const relay = spawnChild('relay', [...NODE_FLAGS, bundle, 'relay', '--listen', '127.0.0.1:0', '--tls-self-signed', join(dir, 'certs'), '-v', '3'], {
    LOCALPROXY_RELAY_ACCESS_KEY_ID: CREDENTIALS.accessKeyId,
    LOCALPROXY_RELAY_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey,
  });
  const rows: string[][] = [];
  let idleRss = 0;
  let tlsCipher = '';
  try {
    const url = (await relay.waitFor(/listening on (\S+)/, 20000))[1];
    const ca = readFileSync(join(dir, 'certs', 'cert.pem'), 'utf8');
    const api = new TunnelApiClient({ endpoint: url.replace('wss:', 'https:'), region: 'us-east-1', credentials: CREDENTIALS, ca });
    idleRss = rssMiB(relay.pid);
    const openTunnel = async (service: string) => {
      const t = await api.call<{ sourceAccessToken: string; destinationAccessToken: string }>('OpenTunnel', { destinationConfig: { services: [service] } });
      return { source: t.sourceAccessToken, destination: t.destinationAccessToken };
    };

    // 1. Throughput, with the masks of our proxies and of the C++ proxy (which also sends each
    //    message in 4 KiB fragments).
    for (const [mask, fragmentBytes] of [['zero', 0], ['random', 0], ['random', 4096]] as const) {
      resetPeakRss(relay.pid);
      const bytes = bulkBytes();
      const { seconds, cpu, cipher } = await bulk(relay, url, await openTunnel('bulk'), ca, mask, bytes, fragmentBytes);
      if (!tlsCipher) tlsCipher = cipher;
      rows.push(bulkRow(`${GIB} GiB through one tunnel (TLS, ${mask} mask${fragmentBytes ? `, ${fragmentBytes / 1024} KiB fragments` : ''})`, bytes, seconds, cpu, `${peakRssMiB(relay.pid).toFixed(0)} MiB`));
    }

    // 2. Slow reader: the destination stops reading while 256 MiB are offered.
    if (!BULK_ONLY) {
      const tokens = await openTunnel('bulk');
      const src = await connectPeer(url, 'source', tokens.source, ca);
      const dst = await connectPeer(url, 'destination', tokens.destination, ca);
      src.ws.send(encodeFrame({ type: MessageType.STREAM_START, streamId: 1, serviceId: 'bulk', connectionId: 1 }));
      const socket = socketOf(dst.ws)!;
      resetPeakRss(relay.pid);
      socket.pause();
      const offered = 256 * MiB;
      const pushing = pump(src, 'bulk', offered);
      // Let the relay fill its backlog and pause the source, then read again.
      await new Promise((resolve) => setTimeout(resolve, 3000));
      const stalledPeak = peakRssMiB(relay.pid);
      socket.resume();
      await Promise.all([pushing, waitReceived(dst, Math.floor(offered / PAYLOAD) * PAYLOAD)]);
      rows.push(['slow reader: 256 MiB offered, reader stalled 3 s', '-', '-', '-', `${stalledPeak.toFixed(0)} MiB while stalled, ${peakRssMiB(relay.pid).toFixed(0)} MiB overall`]);
      src.ws.terminate();
      dst.ws.terminate();
    }

    // 3. Many tunnels.
    if (!BULK_ONLY) {
      resetPeakRss(relay.pid);
      const cpu0 = cpuSeconds(relay.pid);
      const t0 = process.hrtime.bigint();
      const pairs = await Promise.all(Array.from({ length: TUNNELS }, async (_, i) => {
        const tokens = await openTunnel(`s${i}`);
        const src = await connectPeer(url, 'source', tokens.source, ca);
        const dst = await connectPeer(url, 'destination', tokens.destination, ca);
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
  } finally {
    await relay.stop();
  }
  try {
    if (FLOOR) {
      const ca = readFileSync(join(dir, 'certs', 'cert.pem'), 'utf8');
      for (const kind of ['tcp', 'tls', 'ws'] as const) await floor(kind, dir, ca, rows);
    }
    console.log(`relay idle RSS: ${idleRss.toFixed(0)} MiB (node ${process.version}, plain node, bundled); TLS ${tlsCipher}; load average ${load.toFixed(2)} at the start, ${loadavg()[0].toFixed(2)} at the end`);
    console.log('| workload | throughput | wall time | CPU of the forwarding process | its peak RSS |');
    console.log('|---|---|---|---|---|');
    for (const row of rows) console.log(`| ${row.join(' | ')} |`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(`bench/relay: ${(err as Error).message}`);
  process.exit(1);
});
