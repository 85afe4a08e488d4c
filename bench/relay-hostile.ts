/**
 * The relay under hostile clients (not part of the tests; small bounded versions are in
 * test/relay/hostile.test.ts and hostile-load.test.ts): `npm run build && node --import tsx bench/relay-hostile.ts`
 * [--idle N] [--slowloris N] [--refused N].
 *
 * `localproxy relay` (the built CLI, default limits) with a real tunnel: a destination and a
 * source proxy (the CLI) in front of an application server in this process. While 256 MiB go
 * up the tunnel (checked by sha256) and 1-byte echoes measure latency, at once:
 *   - 2,000 TCP connections that never start TLS,
 *   - 500 slowloris clients: TLS, then one header byte per second, never finishing,
 *   - 2,000 upgrades with a bad token whose refusal is never read,
 * from 500 loopback source addresses (127.1.x.y), and none of them ever closes. Measured: the
 * relay's descriptors and memory (from /proc), how long until its descriptors are back at the
 * baseline (the relay's own timeouts must do it), and the tunnel's throughput and echo
 * latency before and during the attack. Loopback only.
 *
 * `--one-byte-messages [--whole] [--cli PATH] [--rounds N]`: instead, one accepted peer
 * attacks. It opens a tunnel of its own, connects as its source and destination (raw WebSocket
 * clients in this process) and writes each byte of 64 KB DATA frames as a masked WebSocket
 * message of its own (7 bytes on the wire per byte), as fast as the relay reads them. Measured:
 * the 1-byte echo of the real tunnel (CLI proxies) before, during and after the attack, the
 * relay's CPU and what the attack got through. `--cli` runs another build (e.g. one made before
 * the fix); `--whole` sends the same frames as whole messages, a bulk transfer to compare with.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import { connect as netConnect, createServer, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import WebSocket from 'ws';
import { socketOf } from '../src/flow/writer';
import { SUBPROTOCOL_V3 } from '../src/protocol/constants';
import { encodeFrame, FrameDecoder } from '../src/protocol/framing';
import { MessageType } from '../src/protocol/message';
import { Flood, oneBytePerMessage } from '../test/relay/hostile-peers';
import { AppServer, echoRounds, upload } from './apps';
import { CLI, cpuSeconds, peakRssMiB, resetPeakRss, rssMiB, spawnChild, type Child } from './procs';
import { MiB, percentile } from './stats';

const args = process.argv.slice(2);
const arg = (name: string, fallback: number) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const IDLE = arg('--idle', 2000);
const SLOWLORIS = arg('--slowloris', 500);
const REFUSED = arg('--refused', 2000);
const ADDRESSES = 500;
const UPLOAD_BYTES = 256 * MiB;
const ONE_BYTE_MESSAGES = args.includes('--one-byte-messages');
const cliAt = args.indexOf('--cli');
const BUILD = cliAt >= 0 ? args[cliAt + 1] : CLI;
const ROUNDS = arg('--rounds', 1000);
const WHOLE = args.includes('--whole');
const KEY_ID = 'AKIDRELAYHOSTILE';
const SECRET = 'relay-hostile-bench-secret';

/** A port that was free a moment ago (the source proxy cannot report the one it picked). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const fds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;
const sourceAddress = (i: number) => `127.1.${Math.floor((i % ADDRESSES) / 250)}.${(i % 250) + 1}`;

function badUpgrade(): string {
  return 'GET /tunnel?local-proxy-mode=source HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
    + 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: aws.iot.securetunneling-3.0\r\n'
    + 'access-token: AQGnot-a-valid-token\r\n\r\n';
}

interface Hostile {
  sockets: Socket[];
  /** Connections the relay closed or reset while the attack ran (per kind). */
  closedByRelay: Record<string, number>;
  timers: NodeJS.Timeout[];
}

function track(h: Hostile, kind: string, socket: Socket): void {
  h.sockets.push(socket);
  socket.on('error', () => {});
  socket.once('close', () => { h.closedByRelay[kind] = (h.closedByRelay[kind] ?? 0) + 1; });
}

/** Opens every hostile connection, a few at a time so the kernel's accept queue keeps up. */
async function attack(port: number, ca: string, h: Hostile): Promise<void> {
  const jobs: Array<() => void> = [];
  for (let i = 0; i < IDLE; i++) {
    jobs.push(() => track(h, 'idle', netConnect({ port, host: '127.0.0.1', localAddress: sourceAddress(i) })));
  }
  for (let i = 0; i < SLOWLORIS; i++) {
    jobs.push(() => {
      const tcp = netConnect({ port, host: '127.0.0.1', localAddress: sourceAddress(IDLE + i) });
      tcp.on('error', () => {});
      const socket = tlsConnect({ socket: tcp, ca, servername: 'localhost' });
      track(h, 'slowloris', socket);
      socket.once('secureConnect', () => {
        socket.write('GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ');
        const drip = setInterval(() => { if (!socket.destroyed) socket.write('a'); }, 1000);
        drip.unref();
        h.timers.push(drip);
      });
    });
  }
  for (let i = 0; i < REFUSED; i++) {
    jobs.push(() => {
      const tcp = netConnect({ port, host: '127.0.0.1', localAddress: sourceAddress(IDLE + SLOWLORIS + i) });
      tcp.on('error', () => {});
      const socket = tlsConnect({ socket: tcp, ca, servername: 'localhost' });
      track(h, 'refused', socket);
      socket.once('secureConnect', () => {
        socket.pause(); // never reads the refusal
        socket.write(badUpgrade());
      });
    });
  }
  // Interleave the kinds, as real attackers would not wait for one another.
  const order = jobs.map((job, i) => ({ job, key: (i * 7919) % jobs.length })).sort((a, b) => a.key - b.key);
  for (let i = 0; i < order.length; i += 50) {
    for (const { job } of order.slice(i, i + 50)) job();
    await new Promise((resolve) => setImmediate(resolve));
  }
}

interface Tokens { sourceAccessToken: string; destinationAccessToken: string }

/** `localproxy relay` (the CLI `cli`) and a real tunnel through it: CLI proxies in front of `app`. */
async function startRelayAndTunnel(cli: string, dir: string, app: AppServer, started: Child[]) {
  const relay = spawnChild('relay', [cli, 'relay', '--listen', '127.0.0.1:0', '--tls-self-signed', dir, '-v', '3'], { LOCALPROXY_RELAY_ACCESS_KEY_ID: KEY_ID, LOCALPROXY_RELAY_SECRET_ACCESS_KEY: SECRET });
  started.push(relay);
  const port = Number(new URL((await relay.waitFor(/listening on (wss:\/\/\S+)/, 20_000))[1]).port);
  const ca = readFileSync(join(dir, 'cert.pem'), 'utf8');
  const open = (): Tokens => JSON.parse(execFileSync(process.execPath, [cli, 'tunnel', 'open', '--endpoint', `https://127.0.0.1:${port}`, '--services', 'BULK', '--ca', join(dir, 'cert.pem')], {
    encoding: 'utf8', timeout: 20_000, env: { ...process.env, AWS_ACCESS_KEY_ID: KEY_ID, AWS_SECRET_ACCESS_KEY: SECRET, AWS_REGION: 'us-east-1' },
  })) as Tokens;
  const opened = open();
  const common = ['-e', `127.0.0.1:${port}`, '-c', dir];
  const destination = spawnChild('destination', [cli, ...common, '-d', `BULK=127.0.0.1:${app.port}`, '-v', '4'], { AWSIOT_TUNNEL_ACCESS_TOKEN: opened.destinationAccessToken });
  started.push(destination);
  await destination.waitFor(/Successfully established websocket connection/, 20_000);
  const sourcePort = await freePort();
  const source = spawnChild('source', [cli, ...common, '-s', `BULK=${sourcePort}`, '-v', '4'], { AWSIOT_TUNNEL_ACCESS_TOKEN: opened.sourceAccessToken });
  started.push(source);
  await source.waitFor(/Listening for new connection on port \d+/, 20_000);
  await echoRounds(sourcePort, 10);
  return { relay, port, ca, sourcePort, open };
}

async function main(): Promise<void> {
  try {
    readFileSync(BUILD);
  } catch {
    throw new Error(`${BUILD} is missing: run npm run build first`);
  }
  if (ONE_BYTE_MESSAGES) return oneByteMessages();
  const dir = mkdtempSync(join(os.tmpdir(), 'relay-hostile-'));
  const started: Child[] = [];
  const app = await AppServer.start();
  const h: Hostile = { sockets: [], closedByRelay: {}, timers: [] };
  try {
    const { relay, port, ca, sourcePort } = await startRelayAndTunnel(CLI, dir, app, started);

    const limits = readFileSync(`/proc/${relay.pid}/limits`, 'utf8').split('\n').find((l) => l.startsWith('Max open files'))?.trim().split(/\s+/)[3];
    const baselineFds = fds(relay.pid);
    const idleRss = rssMiB(relay.pid);
    const before = await upload(sourcePort, { bytes: UPLOAD_BYTES, segmentBytes: 16 * MiB, limitMs: 120_000 });
    const echoBefore = await echoRounds(sourcePort, 500);

    resetPeakRss(relay.pid);
    let peakFds = baselineFds;
    let lastAboveAt = 0;
    const sampler = setInterval(() => {
      const now = fds(relay.pid);
      peakFds = Math.max(peakFds, now);
      if (now > baselineFds) lastAboveAt = Date.now();
    }, 100);
    const attackStarted = Date.now();
    let attackOpenedAt = 0;
    const attacking = attack(port, ca, h).then(() => { attackOpenedAt = Date.now(); });
    const [during, echoDuring] = await Promise.all([
      upload(sourcePort, { bytes: UPLOAD_BYTES, segmentBytes: 16 * MiB, limitMs: 180_000 }),
      echoRounds(sourcePort, 500),
      attacking,
    ]);
    const peakRss = peakRssMiB(relay.pid);
    // Nobody closes anything: the relay's timeouts must bring its descriptors back.
    const waitStarted = Date.now();
    while (fds(relay.pid) > baselineFds && Date.now() - waitStarted < 120_000) await new Promise((resolve) => setTimeout(resolve, 100));
    clearInterval(sampler);
    const attackSeconds = (attackOpenedAt - attackStarted) / 1000;
    const backAfter = (Math.max(lastAboveAt, attackOpenedAt) - attackOpenedAt) / 1000;
    const finalFds = fds(relay.pid);
    const echoAfter = await echoRounds(sourcePort, 100);
    const stillOpen = h.sockets.filter((s) => !s.destroyed).length;

    const mibps = (r: { bytes: number; seconds: number }) => (r.bytes / MiB / r.seconds).toFixed(0);
    const p50 = (xs: number[]) => percentile(xs, 50).toFixed(0);
    const p99 = (xs: number[]) => percentile(xs, 99).toFixed(0);
    const date = new Date().toISOString().slice(0, 16).replace('T', ' ');
    const cpu = os.cpus();
    console.log(`Measured ${date} UTC · Node ${process.version} · ${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'} · relay: \`localproxy relay\` (CLI, default limits, open-file limit ${limits}) · tunnel: source and destination CLI proxies`);
    console.log('');
    console.log('| | value |');
    console.log('|---|---|');
    console.log(`| hostile connections opened (idle TCP / slowloris / refused upgrade), from ${ADDRESSES} addresses | ${IDLE} / ${SLOWLORIS} / ${REFUSED} in ${attackSeconds.toFixed(1)} s |`);
    console.log(`| … seen closed by the relay, client side (idle / slowloris / refused; a refused client never reads, so it never sees it) | ${h.closedByRelay.idle ?? 0} / ${h.closedByRelay.slowloris ?? 0} / ${h.closedByRelay.refused ?? 0} |`);
    console.log(`| … not closed on the client side at the end (no client closes by itself) | ${stillOpen} |`);
    console.log(`| relay descriptors: baseline / peak / at the end | ${baselineFds} / ${peakFds} / ${finalFds} |`);
    console.log(`| relay descriptors back to the baseline, after the last hostile connection was opened | ${finalFds <= baselineFds ? `${backAfter.toFixed(1)} s` : `not within ${backAfter.toFixed(0)} s`} |`);
    console.log(`| relay RSS: idle / peak during the attack | ${idleRss.toFixed(0)} / ${peakRss.toFixed(0)} MiB |`);
    console.log(`| tunnel upload, 256 MiB (sha256 checked): before / during (MiB/s) | ${mibps(before)} / ${mibps(during)} |`);
    console.log(`| tunnel 1-byte echo p50 / p99 (µs): before / during / after | ${p50(echoBefore)} / ${p99(echoBefore)} · ${p50(echoDuring)} / ${p99(echoDuring)} · ${p50(echoAfter)} / ${p99(echoAfter)} |`);
    if (!during.completed || finalFds > baselineFds) process.exitCode = 1;
  } finally {
    for (const t of h.timers) clearInterval(t);
    for (const s of h.sockets) s.destroy();
    for (const child of started.reverse()) await child.stop();
    await app.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A raw tunnel peer of the attacker: a WebSocket client that has read the relay's SERVICE_IDS. */
async function rawPeer(port: number, ca: string, mode: 'source' | 'destination', token: string): Promise<WebSocket> {
  const ws = new WebSocket(`wss://127.0.0.1:${port}/tunnel?local-proxy-mode=${mode}`, [SUBPROTOCOL_V3], { headers: { 'access-token': token }, ca, perMessageDeflate: false });
  await new Promise<void>((resolve, reject) => {
    ws.once('message', () => resolve());
    ws.once('error', reject);
  });
  return ws;
}

/** The real tunnel's echo while one accepted peer sends each byte as a WebSocket message of its own. */
async function oneByteMessages(): Promise<void> {
  const dir = mkdtempSync(join(os.tmpdir(), 'relay-hostile-'));
  const started: Child[] = [];
  const app = await AppServer.start();
  const peers: WebSocket[] = [];
  let flood: Flood | undefined;
  try {
    const { relay, port, ca, sourcePort, open } = await startRelayAndTunnel(BUILD, dir, app, started);
    const attack = open();
    const attackerDst = await rawPeer(port, ca, 'destination', attack.destinationAccessToken);
    const attacker = await rawPeer(port, ca, 'source', attack.sourceAccessToken);
    peers.push(attacker, attackerDst);
    const payload = Buffer.alloc(64_000, 0x5a);
    let frames = 0;
    const decoder = new FrameDecoder();
    attackerDst.on('message', (chunk: Buffer) => decoder.push(chunk, (msg) => {
      if (msg.type === MessageType.DATA) frames++;
    }, (err) => { throw err; }));
    attacker.send(encodeFrame({ type: MessageType.STREAM_START, streamId: 1, serviceId: 'BULK', connectionId: 1 }));
    const frame = encodeFrame({ type: MessageType.DATA, streamId: 1, serviceId: 'BULK', connectionId: 1, payload });
    // A whole message: FIN + binary, masked, 16-bit length, an all-zero mask key.
    const wire = WHOLE ? Buffer.concat([Buffer.of(0x82, 0xfe, frame.length >> 8, frame.length & 0xff, 0, 0, 0, 0), frame]) : oneBytePerMessage(frame, true);
    flood = new Flood(socketOf(attacker)!, wire);
    const waitFrames = async (n: number, limitMs: number): Promise<boolean> => {
      const until = Date.now() + limitMs;
      while (frames < n && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 20));
      return frames >= n;
    };

    const echoBefore = await echoRounds(sourcePort, ROUNDS);
    flood.start();
    // The attack is on once the relay has passed its first frame on (seconds before the fix).
    if (!await waitFrames(1, 120_000)) throw new Error('the relay passed no attack frame on within 120 s');
    const cpu0 = cpuSeconds(relay.pid);
    const frames0 = frames;
    const t0 = Date.now();
    const echoDuring = await echoRounds(sourcePort, ROUNDS, () => Date.now() - t0 > 120_000);
    const seconds = (Date.now() - t0) / 1000;
    const relayCpu = (cpuSeconds(relay.pid) - cpu0) / seconds;
    const attackRate = (frames - frames0) * wire.length / MiB / seconds;
    flood.stop();
    const drained = await waitFrames(flood.rounds, 300_000);
    const echoAfter = await echoRounds(sourcePort, ROUNDS);

    const ms = (xs: number[], p: number) => (percentile(xs, p) / 1000).toFixed(2);
    const date = new Date().toISOString().slice(0, 16).replace('T', ' ');
    const cpu = os.cpus();
    console.log(`Measured ${date} UTC · Node ${process.version} · ${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'} · relay: ${BUILD} · ${WHOLE ? 'whole messages' : 'one byte per message'} · load average ${os.loadavg()[0].toFixed(1)}`);
    console.log('');
    console.log('| | value |');
    console.log('|---|---|');
    console.log(`| tunnel 1-byte echo p50 / p99 / max (ms): before the attack | ${ms(echoBefore, 50)} / ${ms(echoBefore, 99)} / ${(Math.max(...echoBefore) / 1000).toFixed(1)} |`);
    console.log(`| … during it (${echoDuring.length} rounds in ${seconds.toFixed(1)} s) | ${ms(echoDuring, 50)} / ${ms(echoDuring, 99)} / ${(Math.max(...echoDuring) / 1000).toFixed(1)} |`);
    console.log(`| … after it | ${ms(echoAfter, 50)} / ${ms(echoAfter, 99)} / ${(Math.max(...echoAfter) / 1000).toFixed(1)} |`);
    console.log(`| attack read by the relay meanwhile (wire MiB/s) / relay CPU | ${attackRate.toFixed(2)} / ${(relayCpu * 100).toFixed(0)} % |`);
    console.log(`| attack frames sent / passed on | ${flood.rounds} / ${frames}${drained ? '' : ' (not all within 300 s)'} |`);
    if (!drained) process.exitCode = 1;
  } finally {
    flood?.stop();
    for (const ws of peers) ws.terminate();
    for (const child of started.reverse()) await child.stop();
    await app.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(`bench/relay-hostile: ${(err as Error).message}`);
  process.exit(1);
});
