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
import WebSocket from 'ws';
import { TunnelApiClient } from '../src/api/client';
import { SUBPROTOCOL_V3 } from '../src/protocol/constants';
import { encodeFrame, FrameDecoder } from '../src/protocol/framing';
import { MessageType } from '../src/protocol/message';
import { cpuSeconds, peakRssMiB, resetPeakRss, rssMiB, spawnChild } from './procs';

const args = process.argv.slice(2);
const arg = (name: string, fallback: number) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const GIB = arg('--gib', 1);
const TUNNELS = arg('--tunnels', 100);
const MiB = 1024 * 1024;
const PAYLOAD = 64512;
const SEND_WINDOW = 8 * MiB;
const CREDENTIALS = { accessKeyId: 'AKIDBENCH', secretAccessKey: 'bench-secret' };

interface Peer { ws: WebSocket; received: number; messages: number; onProgress?: () => void }

function connect(url: string, mode: 'source' | 'destination', token: string, ca: string): Promise<Peer> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url}/tunnel?local-proxy-mode=${mode}`, [SUBPROTOCOL_V3], { headers: { 'access-token': token }, ca, perMessageDeflate: false });
    const peer: Peer = { ws, received: 0, messages: 0 };
    const decoder = new FrameDecoder();
    ws.on('message', (data: Buffer) => {
      decoder.push(data, (msg) => {
        if (msg.type === MessageType.DATA) {
          peer.received += msg.payload.length;
          peer.messages++;
        }
      }, (err) => { throw err; });
      peer.onProgress?.();
    });
    ws.once('open', () => resolve(peer));
    ws.once('error', reject);
  });
}

/** Sends `bytes` of DATA from `src`, never more than SEND_WINDOW buffered locally. */
function pump(src: Peer, service: string, bytes: number): Promise<void> {
  const frame = encodeFrame({ type: MessageType.DATA, streamId: 1, serviceId: service, connectionId: 1, payload: Buffer.alloc(PAYLOAD, 0x5a) });
  let sent = 0;
  return new Promise((resolve) => {
    const step = () => {
      while (sent < bytes && src.ws.bufferedAmount < SEND_WINDOW) {
        src.ws.send(frame);
        sent += PAYLOAD;
      }
      if (sent < bytes) setTimeout(step, 1);
      else resolve();
    };
    step();
  });
}

function waitReceived(peer: Peer, bytes: number): Promise<void> {
  return new Promise((resolve) => {
    const check = () => { if (peer.received >= bytes) resolve(); };
    peer.onProgress = check;
    check();
  });
}

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
      const src = await connect(url, 'source', t.sourceAccessToken, ca);
      const dst = await connect(url, 'destination', t.destinationAccessToken, ca);
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
        const src = await connect(url, 'source', t.sourceAccessToken, ca);
        const dst = await connect(url, 'destination', t.destinationAccessToken, ca);
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
