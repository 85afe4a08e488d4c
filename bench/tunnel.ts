/**
 * Tunnel benchmark (not a test): what the tunnel costs next to a direct TCP connection.
 *
 *   node --import tsx bench/tunnel.ts [--quick] [--runs N] [--no-write] [--json FILE]
 *                                     [--only bulk1,echo,versus,versusEcho,...] [--profile DIR] [--target-delay MS]
 *                                     [--proxy-log-level N] [--reference-log-level N]
 *                                     [--behind-paths direct,ours,reference]
 *
 * Starts our relay (TLS, self-signed) and a source and a destination proxy as processes of the
 * built CLI (`node dist/localproxy.cjs`) on loopback, one application server in this process, and runs every workload once over a
 * direct connection to the server and once through the tunnel, alternating, `runs` times
 * (default 3). The echo-behind-bulk workloads (`behind`, `behindCapped`, and `behindLink` with
 * the destination behind a 1 MB/s link, test/helpers/link.ts) time their echoes in two
 * processes of their own (bench/echo-child.ts), apart from the bulk clients and server here;
 * `--behind-paths` runs them over some paths only, `--reference-log-level 6` (with BENCH_LOG=1)
 * shows every message the C++ reference sends and receives. Prints the tables and, unless
 * --no-write or --quick, replaces the part of
 * docs/BENCHMARKS.md between `<!-- bench:tunnel:start -->` and `<!-- bench:tunnel:end -->`.
 * --quick uses small sizes, for trying the harness out; --only runs some workloads (and never
 * writes the docs); --profile DIR has the child processes write V8 CPU profiles (.cpuprofile) there.
 * `versus` (part of every full run) runs the C++ reference pair through the same relay beside
 * ours, bulk both ways and 1-byte echoes; a full run and `--only versus` rewrite the side-by-side
 * table in docs/BENCHMARKS.md and README.md (between `<!-- bench:versus:start -->` and
 * `<!-- bench:versus:end -->`).
 */
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import mri from 'mri';
import { AppServer, burst, connectToFirstByte, download, downloadSegments, echoRounds, patternDigest, slowConsumer, upload, type UploadResult } from './apps';
import { EchoProcesses, EchoWaited } from './echoes';
import { CLI, cpuSeconds, syscalls, peakRssMiB, profileChildren, resetPeakRss, rssMiB, spawnChild, type Child } from './procs';
import { README_BEHIND_END, README_BEHIND_START, renderBehindSummary, renderTables, renderVersus, updateDocs, VERSUS_END, VERSUS_START, type BehindRecord, type Report, type VersusRecord } from './report';
import { GiB, MiB, percentile, secondsSince } from './stats';
import { slowLink, type SlowLink } from '../test/helpers/link';
import { execFileSync } from 'node:child_process';

const root = new URL('..', import.meta.url).pathname;

const args = mri(process.argv.slice(2), {
  boolean: ['quick', 'write'],
  string: ['json', 'only', 'profile', 'target-delay', 'proxy-log-level', 'reference-log-level', 'behind-paths'],
  default: { write: true },
});
const quick = Boolean(args.quick);
const RUNS = Number(args.runs ?? 3);
const only = typeof args.only === 'string' ? args.only.split(',') : undefined;
if (typeof args.profile === 'string') profileChildren(args.profile);
/** `--proxy-log-level N`: our proxies' -v (default 4; 5 logs the pacer's state every second, with BENCH_LOG=1). */
const PROXY_LOG_LEVEL = String(args['proxy-log-level'] ?? 4);
/** `--reference-log-level N`: the C++ reference's -v (default 4; 6 logs every message it sends and receives, with BENCH_LOG=1). */
const REFERENCE_LOG_LEVEL = String(args['reference-log-level'] ?? 4);
/** `--behind-paths direct,ours,reference`: the echo-behind-bulk comparison over some paths only (default all), to look into one. */
const BEHIND_PATHS = typeof args['behind-paths'] === 'string' ? args['behind-paths'].split(',') : ['direct', 'ours', 'reference'];
/** `--target-delay MS`: our proxies run with flow.target_delay_ms MS (0: no pacing), to compare. */
const OUR_SETTINGS: Record<string, Record<string, string>> = args['target-delay'] !== undefined ? { flow: { target_delay_ms: String(args['target-delay']) } } : {};

/** Workload sizes; the 1 GiB single-connection transfer is a real 1 GiB in a full run. */
const SIZES = quick
  ? { bulk1: 64 * MiB, bulk8Each: 8 * MiB, echoRounds: 500, connects: 50, fairnessRounds: 500, slowOther: 32 * MiB, burst: 200 }
  : { bulk1: GiB, bulk8Each: 64 * MiB, echoRounds: 2000, connects: 200, fairnessRounds: 2000, slowOther: 256 * MiB, burst: 200 };
const SLOW_RATE = MiB;
/** Below the proxies' default 16 MiB inbound budget: the case the flow control promises to absorb. */
const SLOW_BOUNDED_BYTES = 8 * MiB;
/** A stalled transfer is cut off after this and reported with what it moved. */
const TRANSFER_LIMIT_MS = quick ? 10_000 : 20_000;
/** Echo rounds under load stop after this even if fewer than asked (each may wait behind megabytes of bulk data). */
const FAIRNESS_LIMIT_MS = quick ? 5_000 : 15_000;
/** Why connections of the burst were not served, per path: reason → count over all runs. */
const burstFailures = new Map<string, Map<string, number>>();

type PathName = 'direct' | 'tunnel';
interface Path {
  name: PathName;
  port: number;
}

interface Stack {
  kind: string;
  relay: Child;
  source: Child;
  destination: Child;
  sourcePort: number;
  stop(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Starting the relay and the proxies

function freePort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  return once(server, 'listening').then(() => {
    const port = (server.address() as net.AddressInfo).port;
    return new Promise<number>((resolve) => server.close(() => resolve(port)));
  });
}

interface RelayReady {
  port: number;
  caPem: string;
  tokens: { sourceAccessToken: string; destinationAccessToken: string };
}

const BENCH_KEY_ID = 'AKIDLOCALPROXYBENCH';
const BENCH_SECRET = 'bench-secret-not-a-real-credential';

/** `localproxy relay` with a self-signed certificate in `dir`, and a tunnel opened through its management API with `localproxy tunnel open`. */
async function startCliRelay(dir: string, started: Child[], bandwidth?: number, extraArgs: string[] = []): Promise<{ relay: Child; ready: RelayReady }> {
  const limit = bandwidth ? ['--bandwidth', String(bandwidth)] : [];
  const relay = spawnChild('relay', [CLI, 'relay', '--listen', '127.0.0.1:0', '--tls-self-signed', dir, '-v', '3', ...limit, ...extraArgs], {
    LOCALPROXY_RELAY_ACCESS_KEY_ID: BENCH_KEY_ID,
    LOCALPROXY_RELAY_SECRET_ACCESS_KEY: BENCH_SECRET,
  });
  started.push(relay);
  const url = (await relay.waitFor(/listening on (wss:\/\/\S+)/, 20_000))[1];
  const port = Number(new URL(url).port);
  const opened = execFileSync(process.execPath, [CLI, 'tunnel', 'open', '--endpoint', `https://127.0.0.1:${port}`, '--services', 'SSH1', '--ca', join(dir, 'cert.pem')], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 20_000,
    env: { ...process.env, AWS_ACCESS_KEY_ID: BENCH_KEY_ID, AWS_SECRET_ACCESS_KEY: BENCH_SECRET, AWS_REGION: 'us-east-1' },
  });
  const tokens = JSON.parse(opened) as RelayReady['tokens'];
  if (!tokens.sourceAccessToken || !tokens.destinationAccessToken) throw new Error('`localproxy tunnel open` returned no access tokens');
  return { relay, ready: { port, caPem: readFileSync(join(dir, 'cert.pem'), 'utf8'), tokens } };
}

/** The C++ reference kept in the repository (test/peers/cpp-localproxy), or `$LOCALPROXY_CPP`. */
const REFERENCE = [process.env.LOCALPROXY_CPP, join(root, 'test/peers/cpp-localproxy/localproxy')].find((path) => path && existsSync(path));

interface StackOptions {
  /** Overrides tcp.max_active_connections on both proxies. */
  maxActiveConnections?: number;
  /** `localproxy relay --bandwidth`: bytes per second per tunnel direction. */
  bandwidth?: number;
  /** The proxies at both ends: ours (default) or the C++ reference. */
  proxies?: 'ours' | 'reference';
  /** Extra proxy settings (ours), as `--settings-json` keys below tunneling.proxy. */
  settings?: Record<string, Record<string, string>>;
  /** `extensions.credit` on our proxies (default auto: on, through our relay). */
  credit?: 'auto' | 'on' | 'off';
  /** The destination reaches the relay over a link that carries this many bytes per second towards it (test/helpers/link.ts). */
  destinationLink?: number;
  /** Extra arguments of `localproxy relay` (`--no-pacing`). */
  relayArgs?: string[];
}

/** Relay, destination (in front of `app`) and source. */
async function startStack(app: AppServer, options: StackOptions = {}): Promise<Stack> {
  const temp = mkdtempSync(join(os.tmpdir(), 'localproxy-bench-'));
  const started: Child[] = [];
  let link: SlowLink | undefined;
  const stopAll = async () => {
    for (const child of started.reverse()) await child.stop();
    await link?.close();
    rmSync(temp, { recursive: true, force: true });
  };
  try {
    const { relay, ready } = await startCliRelay(temp, started, options.bandwidth, options.relayArgs);
    const sourcePort = await freePort();
    const level = ['-v', options.proxies === 'reference' ? REFERENCE_LOG_LEVEL : PROXY_LOG_LEVEL];
    const common = ['-e', `127.0.0.1:${ready.port}`, '-c', temp, ...level];
    if (options.destinationLink) link = await slowLink(ready.port, options.destinationLink);
    const reference = options.proxies === 'reference';
    const proxy = { ...(options.proxies === 'reference' ? {} : OUR_SETTINGS), ...options.settings };
    if (options.credit) proxy.extensions = { ...proxy.extensions, credit: options.credit };
    if (options.maxActiveConnections) proxy.tcp = { ...proxy.tcp, max_active_connections: String(options.maxActiveConnections) };
    // The reference aborts when a local reader lags by more than its write buffer (its README).
    if (reference) proxy.tcp = { ...proxy.tcp, write_buffer_size: '1073741824' };
    if (Object.keys(proxy).length > 0) {
      const file = join(temp, 'settings.json');
      writeFileSync(file, JSON.stringify({ tunneling: { proxy } }));
      common.push('--settings-json', file);
    }
    if (reference && !REFERENCE) throw new Error('the C++ reference (test/peers/cpp-localproxy/localproxy) is not there');
    const spawnProxy = (name: string, args: string[], token: string) => reference
      ? spawnChild(name, args, { AWSIOT_TUNNEL_ACCESS_TOKEN: token }, REFERENCE)
      : spawnChild(name, [CLI, ...args], { AWSIOT_TUNNEL_ACCESS_TOKEN: token });
    const toRelay = link ? ['-e', `127.0.0.1:${link.port}`, ...common.slice(2)] : common;
    const destination = spawnProxy('destination', [...toRelay, '-d', `SSH1=127.0.0.1:${app.port}`], ready.tokens.destinationAccessToken);
    started.push(destination);
    const source = spawnProxy('source', [...common, '-s', `SSH1=${sourcePort}`], ready.tokens.sourceAccessToken);
    started.push(source);
    await destination.waitFor(/Successfully established websocket connection/, 20_000);
    await source.waitFor(/Listening for new connection on port \d+/, 20_000);
    // Both proxies report ready on their own; one echo proves the whole path before timing anything.
    await probe(sourcePort);
    const proxies = reference ? `the C++ reference v3.3.1 (\`-v ${REFERENCE_LOG_LEVEL}\`)` : 'the CLI (`node dist/localproxy.cjs -s|-d`, default log level 4)';
    const relayFlags = [...(options.bandwidth ? [`--bandwidth ${options.bandwidth}`] : []), ...(options.relayArgs ?? [])];
    const kind = `relay: \`localproxy relay\` (CLI${relayFlags.map((f) => `, ${f}`).join('')}); proxies: ${proxies}${link ? `; the destination on a ${options.destinationLink! / 1e6} MB/s link` : ''}`;
    return { kind, relay, source, destination, sourcePort, stop: stopAll };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

async function probe(port: number): Promise<void> {
  let lastError: unknown;
  for (let attempt = 0; attempt < 20; attempt++) {
    try {
      await connectToFirstByte(port);
      return;
    } catch (err) {
      lastError = err;
      // The destination may still be settling its session; retry a bounded number of times.
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
  throw new Error(`no echo through the tunnel: ${(lastError as Error).message}`);
}

// ---------------------------------------------------------------------------------------------
// Workloads: each returns named figures for one run over one path

type Figures = Record<string, number>;

async function bulkOne(path: Path): Promise<Figures> {
  const result = await upload(path.port, { bytes: SIZES.bulk1, limitMs: 600_000 });
  return { mibps: result.bytes / MiB / result.seconds, bytes: result.bytes };
}

async function bulkDown(path: Path): Promise<Figures> {
  const result = await download(path.port, SIZES.bulk1, 600_000);
  return { mibps: result.bytes / MiB / result.seconds, bytes: result.bytes };
}

async function bulkEight(path: Path): Promise<Figures> {
  const startedNs = process.hrtime.bigint();
  const results = await Promise.all(Array.from({ length: 8 }, () => upload(path.port, { bytes: SIZES.bulk8Each, limitMs: 600_000 })));
  const seconds = secondsSince(startedNs);
  const bytes = results.reduce((sum, r) => sum + r.bytes, 0);
  return { mibps: bytes / MiB / seconds, bytes, slowestMibps: Math.min(...results.map((r) => r.bytes / MiB / r.seconds)) };
}

async function echo(path: Path): Promise<Figures> {
  const rtts = await echoRounds(path.port, SIZES.echoRounds);
  return { p50: percentile(rtts, 50), p99: percentile(rtts, 99), rounds: rtts.length };
}

async function connectFirstByte(path: Path): Promise<Figures> {
  const times: number[] = [];
  for (let i = 0; i < SIZES.connects; i++) times.push(await connectToFirstByte(path.port));
  return { p50: percentile(times, 50), p99: percentile(times, 99), samples: times.length };
}

async function fairness(path: Path): Promise<Figures> {
  let echoDone = false;
  const bulk = upload(path.port, { bytes: 64 * GiB, segmentBytes: 16 * MiB, until: () => echoDone, limitMs: 600_000 });
  const deadline = Date.now() + FAIRNESS_LIMIT_MS;
  const rtts = await echoRounds(path.port, SIZES.fairnessRounds, () => Date.now() > deadline).finally(() => {
    echoDone = true;
  });
  const loaded = await bulk;
  return { p50: percentile(rtts, 50), p99: percentile(rtts, 99), rounds: rtts.length, bulkMibps: loaded.bytes / MiB / loaded.seconds };
}

/** The slow cases' other transfer on its own: the speed the slow reader should leave it. */
async function slowAlone(path: Path): Promise<Figures> {
  const other = await upload(path.port, { bytes: SIZES.slowOther, segmentBytes: 16 * MiB, limitMs: TRANSFER_LIMIT_MS });
  return { otherMibps: other.bytes / MiB / other.seconds, otherCompleted: other.completed ? 1 : 0 };
}

function slowCase(app: AppServer, slowBytes: number) {
  return async (path: Path): Promise<Figures> => {
    const readers = app.slowReaders.length;
    const writer = slowConsumer(path.port, SLOW_RATE, slowBytes);
    try {
      // The other transfer starts once the slow reader has its first bytes (it is then holding data).
      await waitFor(() => app.slowReaders.length > readers && app.slowReaders[readers].bytes > 0, 10_000, 'slow reader gets data');
      const other = await upload(path.port, { bytes: SIZES.slowOther, segmentBytes: 16 * MiB, limitMs: TRANSFER_LIMIT_MS });
      const reader = app.slowReaders[readers];
      if (!reader.ok) throw new Error('integrity: the slow reader received bytes that differ from what was sent');
      return {
        otherMibps: other.bytes / MiB / other.seconds,
        otherCompleted: other.completed ? 1 : 0,
        slowMibps: reader.bytes / MiB / secondsSince(reader.startedNs),
      };
    } finally {
      writer.stop();
      app.slowReaders[readers]?.close();
    }
  };
}

function burstCase(name: string) {
  return async (path: Path): Promise<Figures> => {
    const result = await burst(path.port, SIZES.burst, 30_000);
    const key = `${name} ${path.name}`;
    const tally = burstFailures.get(key) ?? new Map<string, number>();
    burstFailures.set(key, tally);
    for (const [why, n] of result.failures) tally.set(why, (tally.get(why) ?? 0) + n);
    return { served: result.served, ms: result.seconds * 1000 };
  };
}

// ---------------------------------------------------------------------------------------------
// Echo behind bulk (issue 13): 1-byte echoes on one connection while bulk transfers run on
// others of the same tunnel, uncapped and through a relay that caps each direction.

/** The capped relay's rate: the cloud's class of per-tunnel limit (bytes per second, each direction). */
const CAP_BYTES_PER_S = 800_000;
/** `behindLink`: the destination behind a link this fast towards it (a device's slow last mile), the relay uncapped. */
const LINK_BYTES_PER_S = 1_000_000;
type BulkDirection = 'up' | 'down' | 'both' | 'alone';
/** How long echoes are timed behind the bulk transfers, and the size of the transfers' confirmed segments. */
const BEHIND = quick
  ? { uncappedMs: 2_000, cappedMs: 4_000, uncappedSegment: 4 * MiB, cappedSegment: 64 * 1024 }
  : { uncappedMs: 5_000, cappedMs: 10_000, uncappedSegment: 4 * MiB, cappedSegment: 64 * 1024 };

interface Progress {
  /** Confirmed bytes and the time (ms, performance.now()) of each confirmed segment. */
  marks: Array<[number, number]>;
}

/** Bytes per second between the first confirmation at or after `from` and the last one at or before `to`. */
function rateWithin(progress: Progress, from: number, to: number): number {
  const inside = progress.marks.filter(([at]) => at >= from && at <= to);
  if (inside.length < 2) return NaN;
  const [t0, b0] = inside[0];
  const [t1, b1] = inside[inside.length - 1];
  return ((b1 - b0) * 1000) / (t1 - t0);
}

/**
 * What a path did that ends a case before its figures are complete — an echo with no reply, a
 * transfer that confirms nothing, a proxy whose memory grows without bound — as opposed to a
 * failure of the harness or of integrity. The table shows it in place of the figures.
 */
class Outcome extends Error {}

/** How long an echo may wait for its reply (echoRounds), and a transfer for its first confirmed segment. */
const BEHIND_WAIT_MS = 30_000;
/** A proxy process that holds more than this (RSS) ends the case: a queue without bound, on a shared machine. */
const BEHIND_RSS_LIMIT_MIB = 6 * 1024;
/** After a case, how long its connections may take to close at the server before the path counts as still busy. */
const BEHIND_QUIET_MS = 20_000;

/** The error for a bulk transfer that ended on its own (it runs until the echoes are done): why, and what it had confirmed. */
function endedEarly(name: 'up' | 'down', outcome: PromiseSettledResult<UploadResult>, progress: Progress, phase: string, limitMs: number): Error {
  const what = name === 'up' ? 'the upload' : 'the download';
  if (outcome.status === 'rejected') return new Error(`${what} failed ${phase}: ${(outcome.reason as Error).message}`);
  const result = outcome.value;
  const why = result.ended === 'limit' ? `ran out of its ${limitMs / 1000} s limit` : result.ended === 'done' ? 'completed' : 'was aborted';
  const last = progress.marks.at(-1);
  const confirmed = last ? `${(last[1] / MiB).toFixed(2)} MiB confirmed, the last ${((performance.now() - last[0]) / 1000).toFixed(1)} s before` : 'not one segment confirmed';
  return new Error(`${what} ${why} ${phase}, after ${result.seconds.toFixed(1)} s: ${confirmed}`);
}

/** Rejects with an Outcome when a proxy of `stack` holds more than BEHIND_RSS_LIMIT_MIB; `peaks` gets each one's highest RSS. */
function watchMemory(stack: Stack | undefined, peaks: Record<string, number>): { tripped: Promise<never>; stop(): void } {
  let timer: NodeJS.Timeout | undefined;
  const tripped = new Promise<never>((_, reject) => {
    if (!stack) return;
    const startedAt = performance.now();
    const sample = () => {
      for (const proc of [stack.source, stack.destination]) {
        let mib: number;
        try {
          mib = rssMiB(proc.pid);
        } catch {
          continue; // exited: the case fails on its own
        }
        peaks[proc.name] = Math.max(peaks[proc.name] ?? 0, mib);
        if (mib > BEHIND_RSS_LIMIT_MIB) {
          const seconds = ((performance.now() - startedAt) / 1000).toFixed(0);
          reject(new Outcome(`stopped after ${seconds} s: the ${proc.name} held ${(mib / 1024).toFixed(1)} GiB`));
        }
      }
    };
    timer = setInterval(sample, 250);
  });
  tripped.catch(() => {});
  return { tripped, stop: () => clearInterval(timer) };
}

/**
 * Starts the bulk transfers of `direction`, waits until each has confirmed a segment (the queues
 * are full by then), times echoes for `durationMs` ('alone': no echoes, only the bulk upload),
 * then ends the transfers. The echoes run in processes of their own (`echoes`), the transfers
 * in this one. Figures: echo p50/p99 in ms, each transfer's rate (kB/s) while the echoes ran,
 * and (through a tunnel) each proxy's highest RSS in MiB. What the path did instead, when it did
 * not let the case finish, rejects as an Outcome.
 */
function behindBulk(app: AppServer, echoes: EchoProcesses, stack: Stack | undefined, direction: BulkDirection, durationMs: number, segmentBytes: number) {
  return async (path: { port: number }): Promise<Figures> => {
    const abort = new AbortController();
    const transfers: Array<{ name: 'up' | 'down'; progress: Progress; done: Promise<UploadResult> }> = [];
    const started: Promise<void>[] = [];
    const limitMs = durationMs + 120_000;
    const begin = (name: 'up' | 'down') => {
      const progress: Progress = { marks: [] };
      let first!: () => void;
      started.push(new Promise<void>((resolve) => { first = resolve; }));
      const onSegment = (bytes: number) => {
        progress.marks.push([performance.now(), bytes]);
        first();
      };
      const done = name === 'up'
        ? upload(path.port, { bytes: 1024 * GiB, segmentBytes, until: () => abort.signal.aborted, onSegment, signal: abort.signal, limitMs })
        : downloadSegments(path.port, { segmentBytes, until: () => abort.signal.aborted, onSegment, signal: abort.signal, limitMs });
      transfers.push({ name, progress, done });
    };
    const peaks: Record<string, number> = {};
    const memory = watchMemory(stack, peaks);
    if (direction !== 'down') begin('up');
    if (direction === 'down' || direction === 'both') begin('down');
    let phase = 'before the echoes began';
    // Any transfer that ends before it is told to invalidates the run; the error says how it ended.
    const failed = Promise.race([memory.tripped, ...transfers.map((t) => t.done.then(
      (value) => { throw endedEarly(t.name, { status: 'fulfilled', value }, t.progress, phase, limitMs); },
      (reason: unknown) => { throw endedEarly(t.name, { status: 'rejected', reason }, t.progress, phase, limitMs); },
    ))]);
    failed.catch(() => {});
    let echoing: Promise<number[]> | undefined;
    let waitTimer: NodeJS.Timeout | undefined;
    let from = NaN;
    /** Each transfer's rate (kB/s) from the start of the echoes until now. */
    const rates = (): Figures => Object.fromEntries(transfers.map((t) => [`${t.name}KBps`, rateWithin(t.progress, from, performance.now()) / 1000]));
    try {
      const firstSegments = new Promise<never>((_, reject) => {
        waitTimer = setTimeout(() => {
          const waiting = transfers.filter((t) => t.progress.marks.length === 0).map((t) => (t.name === 'up' ? 'upload' : 'download'));
          reject(new Outcome(`no ${waiting.join(' or ')} segment confirmed in ${BEHIND_WAIT_MS / 1000} s`));
        }, BEHIND_WAIT_MS);
      });
      await Promise.race([Promise.all(started), failed, firstSegments]);
      clearTimeout(waitTimer);
      phase = 'while the echoes ran';
      from = performance.now();
      let rtts: number[] = [];
      if (direction === 'alone') await Promise.race([new Promise((resolve) => setTimeout(resolve, durationMs)), failed]);
      else {
        echoing = echoes.run(app, path.port, Number.MAX_SAFE_INTEGER, durationMs).catch((err: Error) => {
          if (!(err instanceof EchoWaited)) throw err;
          throw new Outcome(`echo waited > ${err.limitMs / 1000} s${err.rounds > 0 ? ` (after ${err.rounds} echoes)` : ''}`);
        });
        rtts = await Promise.race([echoing, failed]);
      }
      const figures: Figures = {};
      if (rtts.length > 0) Object.assign(figures, { p50: percentile(rtts, 50) / 1000, p99: percentile(rtts, 99) / 1000, rounds: rtts.length });
      return Object.assign(figures, rates(), rssFigures(peaks));
    } catch (err) {
      // An outcome keeps what was measured until then: the transfers' rates while the echo waited.
      if (err instanceof Outcome) throw Object.assign(err, { figures: { ...(Number.isNaN(from) ? {} : rates()), ...rssFigures(peaks) } });
      throw err;
    } finally {
      clearTimeout(waitTimer);
      memory.stop();
      phase = 'after the echoes';
      abort.abort();
      if (echoing) {
        echoes.stop();
        await echoing.catch(() => undefined);
      }
      await Promise.allSettled(transfers.map((t) => t.done));
    }
  };
}

/** The proxies' highest RSS during a case, as figures (sourceRssMiB, destinationRssMiB). */
function rssFigures(peaks: Record<string, number>): Figures {
  return Object.fromEntries(Object.entries(peaks).map(([name, mib]) => [`${name}RssMiB`, mib]));
}

/** Waits until the app server in this process has no connection left open (the path delivered what it held); bounded. */
async function quiet(app: AppServer, limitMs: number): Promise<number | undefined> {
  const startedAt = performance.now();
  while (app.openConnections > 0) {
    if (performance.now() - startedAt > limitMs) return undefined;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return performance.now() - startedAt;
}

interface BehindPath {
  label: string;
  capped: boolean;
  /** The destination's link (bytes per second towards it); undefined: loopback. */
  link?: number;
  /** Started on first use, stopped at the end; undefined: direct TCP. */
  stack?: () => Promise<Stack>;
  /** Stops the stack, so that the next use starts a fresh one; undefined: it cannot be restarted (the shared one). */
  restart?: () => Promise<void>;
}

/** Every path × direction of the echo-behind-bulk comparison, `runs` times, alternating paths within a run. */
async function runBehind(app: AppServer, ours: Stack, groups: string[], log: (line: string) => void, failures: string[]): Promise<BehindRecord[]> {
  const stacks = new Map<string, Promise<Stack>>();
  const lazy = (key: string, options: StackOptions) => () => {
    let stack = stacks.get(key);
    if (!stack) stacks.set(key, (stack = startStack(app, options)));
    return stack;
  };
  const restart = (key: string) => async () => {
    const stack = stacks.get(key);
    stacks.delete(key);
    await (await stack?.catch(() => undefined))?.stop();
  };
  const wanted = (path: string) => BEHIND_PATHS.includes(path);
  const paths: BehindPath[] = [];
  if (groups.includes('behind')) {
    if (wanted('direct')) paths.push({ label: 'direct TCP', capped: false });
    if (wanted('ours')) paths.push({ label: 'localproxy', capped: false, stack: async () => ours });
    if (REFERENCE && wanted('reference')) paths.push({ label: 'C++ reference', capped: false, stack: lazy('reference', { proxies: 'reference' }), restart: restart('reference') });
  }
  if (groups.includes('behindCapped')) {
    if (wanted('ours')) paths.push({ label: 'localproxy', capped: true, stack: lazy('ours-capped', { bandwidth: CAP_BYTES_PER_S }), restart: restart('ours-capped') });
    if (REFERENCE && wanted('reference')) paths.push({ label: 'C++ reference', capped: true, stack: lazy('reference-capped', { proxies: 'reference', bandwidth: CAP_BYTES_PER_S }), restart: restart('reference-capped') });
  }
  if (groups.includes('behindLink')) {
    const link = LINK_BYTES_PER_S;
    if (wanted('ours')) {
      paths.push({ label: 'localproxy', capped: false, link, stack: lazy('ours-link', { destinationLink: link }), restart: restart('ours-link') });
      paths.push({ label: 'localproxy, relay --no-pacing', capped: false, link, stack: lazy('ours-link-unpaced', { destinationLink: link, relayArgs: ['--no-pacing'] }), restart: restart('ours-link-unpaced') });
    }
    if (REFERENCE && wanted('reference')) paths.push({ label: 'C++ reference', capped: false, link, stack: lazy('reference-link', { proxies: 'reference', destinationLink: link }), restart: restart('reference-link') });
  }
  const records: BehindRecord[] = [];
  const echoes = await EchoProcesses.start();
  try {
    // Warm-up of the echo processes (JIT), on the direct path: not measured.
    await echoes.run(app, app.port, 2000, 10_000);
    for (let run = 1; run <= RUNS; run++) {
      for (const p of paths) {
        // Behind a slow link only the upload crosses it (alone, then with echoes); the download goes the link's fast way.
        const directions: BulkDirection[] = p.link ? ['alone', 'up'] : p.capped ? ['alone', 'up', 'down', 'both'] : ['up', 'down', 'both'];
        for (const direction of directions) {
          const stack = p.stack ? await p.stack() : undefined;
          const port = stack ? stack.sourcePort : app.port;
          const slow = p.capped || p.link !== undefined;
          const ms = slow ? BEHIND.cappedMs : BEHIND.uncappedMs;
          const segment = slow ? BEHIND.cappedSegment : BEHIND.uncappedSegment;
          const where = `${p.label}${p.capped ? ' capped' : ''}${p.link ? `, destination link ${p.link / 1e6} MB/s` : ''}`;
          const name = `behind ${direction} run ${run} ${where}`;
          let figures: Figures = {};
          let outcome: string | undefined;
          try {
            figures = await behindBulk(app, echoes, stack, direction, direction === 'alone' ? ms / 2 : ms, segment)({ port });
          } catch (err) {
            if (err instanceof Outcome) {
              outcome = err.message;
              figures = (err as Outcome & { figures?: Figures }).figures ?? {};
            } else {
              failures.push(`echo behind bulk (${direction}) run ${run} over ${where}: ${(err as Error).message.split('\n')[0]}`);
              log(`${name} FAILED: ${(err as Error).message}`);
            }
          }
          records.push({ path: p.label, capped: p.capped, ...(p.link ? { link: p.link } : {}), direction, figures, ...(outcome ? { outcome } : {}) });
          log(`${name}: ${outcome ? `${outcome}; ` : ''}${Object.entries(figures).map(([k, v]) => `${k}=${v.toFixed(2)}`).join(' ')}`);
          // The next case starts on a path that holds nothing of this one: what a proxy still had
          // queued for a closed connection would otherwise be measured with the next case.
          const quietMs = await quiet(app, BEHIND_QUIET_MS);
          if (quietMs === undefined) {
            log(`${name}: the path still delivered this case's data ${BEHIND_QUIET_MS / 1000} s after it ended${p.restart ? '; its relay and proxies are restarted' : ''}`);
            await p.restart?.();
          } else if (quietMs > 1000) log(`${name}: the path delivered the rest of this case's data in ${(quietMs / 1000).toFixed(1)} s`);
        }
      }
    }
  } finally {
    await echoes.close();
    for (const stack of stacks.values()) await (await stack.catch(() => undefined))?.stop();
  }
  return records;
}

// ---------------------------------------------------------------------------------------------
// Side by side with the C++ reference (issue 15): the same workloads through the same relay, our
// proxies and the reference's in turn, with every process's CPU time.

/** Bulk size and echo rounds of the side-by-side comparison. */
const VERSUS = quick ? { bulkBytes: 64 * MiB, echoRounds: 500 } : { bulkBytes: 256 * MiB, echoRounds: 1000 };

async function runVersus(app: AppServer, ours: Stack, wanted: (workload: VersusRecord['workload']) => boolean, log: (line: string) => void, failures: string[]): Promise<VersusRecord[]> {
  if (!REFERENCE) {
    failures.push('side by side: the C++ reference is not on this machine');
    return [];
  }
  const reference = await startStack(app, { proxies: 'reference' });
  const sides: Array<[VersusRecord['side'], Stack]> = [['localproxy', ours], ['C++ reference', reference]];
  const workloads: Array<[VersusRecord['workload'], (port: number) => Promise<Figures>]> = [
    ['up', async (port) => {
      const r = await upload(port, { bytes: VERSUS.bulkBytes, limitMs: 600_000 });
      return { mibps: r.bytes / MiB / r.seconds, bytes: r.bytes };
    }],
    ['down', async (port) => {
      const r = await download(port, VERSUS.bulkBytes, 600_000);
      return { mibps: r.bytes / MiB / r.seconds, bytes: r.bytes };
    }],
    ['echo', async (port) => {
      const rtts = await echoRounds(port, VERSUS.echoRounds);
      return { p50: percentile(rtts, 50), p99: percentile(rtts, 99), rounds: rtts.length };
    }],
  ];
  const records: VersusRecord[] = [];
  workloads.splice(0, workloads.length, ...workloads.filter(([name]) => wanted(name)));
  try {
    // Warm-up of the reference's path (ours was warmed up by main): not measured.
    await upload(reference.sourcePort, { bytes: 32 * MiB, segmentBytes: 16 * MiB, limitMs: 60_000 });
    // Echo warm-up on both pairs, long enough for V8 to optimise our echo path (with 200 rounds
    // the first measured run was still twice as slow as the next ones).
    for (const [, stack] of sides) await echoRounds(stack.sourcePort, 1000);
    for (let run = 1; run <= RUNS; run++) {
      for (const [workload, measure] of workloads) {
        for (const [side, stack] of sides) {
          const procs = [stack.relay, stack.source, stack.destination];
          const before = procs.map((p) => cpuSeconds(p.pid));
          const ioBefore = procs.map((p) => syscalls(p.pid));
          let figures: Figures = {};
          try {
            figures = await measure(stack.sourcePort);
          } catch (err) {
            failures.push(`side by side ${workload} run ${run} over ${side}: ${(err as Error).message.split('\n')[0]}`);
          }
          const cpu = Object.fromEntries(procs.map((p, i) => [p.name, cpuSeconds(p.pid) - before[i]]));
          records.push({ side, workload, figures, cpu });
          // Reads and writes (syscalls) of each process during the workload: for the log only.
          const io = Object.fromEntries(procs.flatMap((p, i) => {
            const now = syscalls(p.pid);
            return [[`${p.name}Reads`, now.reads - ioBefore[i].reads], [`${p.name}Writes`, now.writes - ioBefore[i].writes]];
          }));
          log(`versus ${workload} run ${run} ${side}: ${Object.entries({ ...figures, ...cpu, ...io }).map(([k, v]) => `${k}=${Number.isInteger(v) ? v : v.toFixed(3)}`).join(' ')}`);
        }
      }
    }
  } finally {
    await reference.stop();
  }
  return records;
}

/** Polls a condition of this process's own application server; bounded. */
async function waitFor(check: () => boolean, limitMs: number, what: string): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${limitMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

// ---------------------------------------------------------------------------------------------
// Running

export interface ProcessFigures {
  cpuSeconds: number;
  peakRssMiB: number;
}

export interface RunRecord {
  path: PathName;
  figures: Figures;
  /** Tunnel runs only: relay, source, destination. */
  processes?: Record<string, ProcessFigures>;
}

async function main(): Promise<void> {
  const app = await AppServer.start();
  const stack = await startStack(app);
  const procs: Child[] = [stack.relay, stack.source, stack.destination];
  const direct: Path = { name: 'direct', port: app.port };
  const log = (line: string) => process.stderr.write(`${line}\n`);
  try {
    const idleRss = Object.fromEntries(procs.map((p) => [p.name, rssMiB(p.pid)]));
    const peakResettable = procs.every((p) => resetPeakRss(p.pid));
    for (const bytes of [SIZES.bulk1, SIZES.bulk8Each, SIZES.slowOther, 16 * MiB]) patternDigest(bytes);

    // Warm-up (JIT, TLS session, socket buffers): not measured.
    for (const path of [direct, { name: 'tunnel', port: stack.sourcePort }]) {
      await upload(path.port, { bytes: 32 * MiB, segmentBytes: 16 * MiB, limitMs: 60_000 });
      await echoRounds(path.port, 200);
    }

    const all: Array<[string, (path: Path) => Promise<Figures>]> = [
      ['bulk1', bulkOne],
      ['bulk1down', bulkDown],
      ['bulk8', bulkEight],
      ['echo', echo],
      ['connect', connectFirstByte],
      ['fairness', fairness],
      ['slowAlone', slowAlone],
      ['slowBounded', slowCase(app, SLOW_BOUNDED_BYTES)],
      ['slowUnbounded', slowCase(app, 1024 * GiB)],
      ['slowAloneNoCredit', slowAlone],
      ['slowBoundedNoCredit', slowCase(app, SLOW_BOUNDED_BYTES)],
      ['slowUnboundedNoCredit', slowCase(app, 1024 * GiB)],
      ['burst', burstCase('burst')],
      ['burst256', burstCase('burst256')],
    ];
    const workloads = all.filter(([name]) => !only || only.includes(name));
    const behindGroups = ['behind', 'behindCapped', 'behindLink'].filter((name) => !only || only.includes(name));
    /** `versus` runs every side-by-side workload; `versusUp`, `versusDown`, `versusEcho` one each. */
    const versusWanted = (workload: VersusRecord['workload']) => !only || only.includes('versus') || only.includes(`versus${workload[0].toUpperCase()}${workload.slice(1)}`);
    const anyVersus = (['up', 'down', 'echo'] as const).some(versusWanted);
    const records: Record<string, RunRecord[]> = {};
    const failures: string[] = [];
    const startedNs = process.hrtime.bigint();
    const loadStart = os.loadavg()[0];
    for (const [name, workload] of workloads) {
      // The default max_active_connections (128) refuses part of a 200-connection burst by design;
      // a second tunnel whose proxies allow 256 shows how the burst itself is handled. The slow
      // consumer runs again on proxies without per-connection credit (issue 14), for comparison.
      const own = name === 'burst256' ? await startStack(app, { maxActiveConnections: 256 })
        : name.endsWith('NoCredit') ? await startStack(app, { credit: 'off' })
        : stack;
      const ownProcs = [own.relay, own.source, own.destination];
      const tunnelPath: Path = { name: 'tunnel', port: own.sourcePort };
      records[name] = [];
      try {
        for (let run = 1; run <= RUNS; run++) {
          for (const path of [direct, tunnelPath]) {
            const before = ownProcs.map((p) => cpuSeconds(p.pid));
            if (path.name === 'tunnel') for (const p of ownProcs) resetPeakRss(p.pid);
            let figures: Figures = {};
            try {
              figures = await workload(path);
            } catch (err) {
              // One failed run must not hide the others; the table shows it as missing and lists why.
              failures.push(`${name} run ${run} over ${path.name}: ${(err as Error).message.split('\n')[0]}`);
              log(`${name} run ${run} ${path.name} FAILED: ${(err as Error).message}`);
            }
            const record: RunRecord = { path: path.name, figures };
            if (path.name === 'tunnel') {
              record.processes = Object.fromEntries(ownProcs.map((p, i) => [p.name, { cpuSeconds: cpuSeconds(p.pid) - before[i], peakRssMiB: peakRssMiB(p.pid) }]));
            }
            records[name].push(record);
            log(`${name} run ${run} ${path.name}: ${Object.entries(figures).map(([k, v]) => `${k}=${Number.isInteger(v) ? v : v.toFixed(2)}`).join(' ')}`);
          }
        }
      } finally {
        if (own !== stack) await own.stop();
      }
    }
    const versus = anyVersus ? await runVersus(app, stack, versusWanted, log, failures) : [];
    const behind = behindGroups.length > 0 ? await runBehind(app, stack, behindGroups, log, failures) : [];
    const afterRss = Object.fromEntries(procs.map((p) => [p.name, rssMiB(p.pid)]));
    const report: Report = {
      date: new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC',
      node: process.version,
      cpus: `${os.cpus().length} × ${os.cpus()[0]?.model.trim() ?? 'unknown'}`,
      kind: stack.kind,
      runs: RUNS,
      quick,
      sizes: SIZES,
      slow: { rateBytes: SLOW_RATE, boundedBytes: SLOW_BOUNDED_BYTES, limitMs: TRANSFER_LIMIT_MS },
      fairnessLimitMs: FAIRNESS_LIMIT_MS,
      failures,
      burstFailures: Object.fromEntries([...burstFailures].map(([key, tally]) => [key, Object.fromEntries(tally)])),
      idleRss,
      afterRss,
      peakResettable,
      seconds: secondsSince(startedNs),
      load: { start: loadStart, end: os.loadavg()[0] },
      records,
      behind,
      behindSetup: { capBytesPerS: CAP_BYTES_PER_S, linkBytesPerS: LINK_BYTES_PER_S, ...BEHIND, reference: REFERENCE !== undefined },
      versus,
      versusSetup: VERSUS,
    };
    const tables = renderTables(report);
    process.stdout.write(`${tables}\n`);
    if (typeof args.json === 'string') writeFileSync(args.json, JSON.stringify(report, null, 2));
    const versusTable = renderVersus(report, 'BENCHMARKS').join('\n');
    if (versusTable) process.stdout.write(`${versusTable}\n`);
    if (args.write && !quick && !only) {
      updateDocs(join(root, 'docs/BENCHMARKS.md'), tables);
      log('docs/BENCHMARKS.md updated (tunnel)');
      if (behind.length > 0) {
        updateDocs(join(root, 'README.md'), renderBehindSummary(report), README_BEHIND_START, README_BEHIND_END);
        log('README.md (echo behind bulk) updated');
      }
    }
    // The side-by-side table has places of its own: a full run or `--only versus` rewrites them.
    if (args.write && !quick && (!only || only.includes('versus')) && versus.length > 0) {
      updateDocs(join(root, 'docs/BENCHMARKS.md'), versusTable, VERSUS_START, VERSUS_END);
      updateDocs(join(root, 'README.md'), renderVersus(report, 'README').join('\n'), VERSUS_START, VERSUS_END);
      log('docs/BENCHMARKS.md and README.md updated (side by side with the C++ reference)');
    }
  } finally {
    await stack.stop();
    await app.close();
  }
}

main().catch((err: Error) => {
  process.stderr.write(`bench: ${err.message}\n`);
  process.exit(1);
});
