/** Renders bench/tunnel.ts results as Markdown and keeps them between markers in docs/BENCHMARKS.md. */
import { readFileSync, writeFileSync } from 'node:fs';
import { GiB, MiB, spread, type Spread } from './stats';
import type { RunRecord } from './tunnel';

/** One run of the echo-behind-bulk comparison over one path (bench/tunnel.ts runBehind). */
export interface BehindRecord {
  path: string;
  capped: boolean;
  /** up: source → destination side; down: the reverse; both: one of each at once; alone: an upload without echoes. */
  direction: 'up' | 'down' | 'both' | 'alone';
  /** p50/p99 in ms, rounds, upKBps/downKBps in kB/s; through a tunnel sourceRssMiB/destinationRssMiB (highest RSS). */
  figures: Record<string, number>;
  /** What the path did instead of completing the case (e.g. "echo waited > 30 s"): a measured outcome, not a harness failure. */
  outcome?: string;
  /** The destination reached the relay over a link this fast towards it (bytes per second); undefined: loopback. */
  link?: number;
}

/** One run of one workload of the side-by-side comparison (bench/tunnel.ts runVersus). */
export interface VersusRecord {
  side: 'localproxy' | 'C++ reference';
  /** up: bulk source → destination side; down: the reverse; echo: 1-byte echoes, one at a time. */
  workload: 'up' | 'down' | 'echo';
  /** mibps and bytes (bulk), p50/p99 in µs and rounds (echo). */
  figures: Record<string, number>;
  /** CPU seconds (user + system) each process used during the workload: relay, source, destination. */
  cpu: Record<string, number>;
}

export interface Report {
  date: string;
  node: string;
  cpus: string;
  kind: string;
  runs: number;
  quick: boolean;
  sizes: { bulk1: number; bulk8Each: number; echoRounds: number; connects: number; fairnessRounds: number; slowOther: number; burst: number };
  slow: { rateBytes: number; boundedBytes: number; limitMs: number };
  fairnessLimitMs: number;
  /** Runs that failed (a refused connection, an integrity error), one line each. */
  failures: string[];
  /** Per "<workload> <path>": why connections of the burst were not served → count over all runs. */
  burstFailures: Record<string, Record<string, number>>;
  idleRss: Record<string, number>;
  afterRss: Record<string, number>;
  peakResettable: boolean;
  seconds: number;
  /** Load averages (1 min) when the run started and ended: figures are only comparable on a quiet machine. */
  load: { start: number; end: number };
  records: Record<string, RunRecord[]>;
  behind: BehindRecord[];
  behindSetup: { capBytesPerS: number; linkBytesPerS?: number; uncappedMs: number; cappedMs: number; uncappedSegment: number; cappedSegment: number; reference: boolean };
  versus: VersusRecord[];
  versusSetup: { bulkBytes: number; echoRounds: number };
}

export const START_MARKER = '<!-- bench:tunnel:start -->';
export const END_MARKER = '<!-- bench:tunnel:end -->';
/** The side-by-side table's place in README.md. */
export const VERSUS_START = '<!-- bench:versus:start -->';
export const VERSUS_END = '<!-- bench:versus:end -->';

function num(x: number): string {
  if (!Number.isFinite(x)) return '–';
  if (Math.abs(x) >= 100) return Math.round(x).toLocaleString('en-US');
  if (Math.abs(x) >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

function cell(s: Spread): string {
  if (!Number.isFinite(s.median)) return '–';
  return s.min === s.max ? num(s.median) : `${num(s.median)} (${num(s.min)}–${num(s.max)})`;
}

function size(bytes: number): string {
  return bytes >= GiB ? `${bytes / GiB} GiB` : `${bytes / MiB} MiB`;
}

function figure(records: RunRecord[] | undefined, path: 'direct' | 'tunnel', key: string): Spread {
  return spread((records ?? []).filter((r) => r.path === path).map((r) => r.figures[key] ?? NaN));
}

export function renderTables(report: Report): string {
  const { records, sizes } = report;
  const rows: string[] = [];
  const row = (label: string, name: string, key: string, ratio = true) => {
    const d = figure(records[name], 'direct', key);
    const t = figure(records[name], 'tunnel', key);
    const r = ratio && d.median > 0 ? `${num(t.median / d.median)}×` : '–';
    rows.push(`| ${label} | ${cell(d)} | ${cell(t)} | ${r} |`);
  };
  row(`Bulk, 1 connection, ${size(sizes.bulk1)}, source → destination side (MiB/s)`, 'bulk1', 'mibps');
  row(`Bulk, 1 connection, ${size(sizes.bulk1)}, destination → source side (MiB/s)`, 'bulk1down', 'mibps');
  row(`Bulk, 8 connections × ${size(sizes.bulk8Each)} at once, aggregate (MiB/s)`, 'bulk8', 'mibps');
  row(`1-byte echo round trip, p50 (µs), ${sizes.echoRounds} rounds`, 'echo', 'p50');
  row(`1-byte echo round trip, p99 (µs)`, 'echo', 'p99');
  row(`Connect → first echoed byte, p50 (ms), ${sizes.connects} connections in turn`, 'connect', 'p50');
  row(`Connect → first echoed byte, p99 (ms)`, 'connect', 'p99');
  row(`Fairness: 1-byte echo p50 (µs) while another connection runs a bulk transfer (up to ${sizes.fairnessRounds} rounds or ${report.fairnessLimitMs / 1000} s)`, 'fairness', 'p50');
  row(`Fairness: 1-byte echo p99 (µs) while another connection runs a bulk transfer`, 'fairness', 'p99');
  row(`Fairness: rounds done`, 'fairness', 'rounds', false);
  row(`Fairness: that bulk transfer (MiB/s)`, 'fairness', 'bulkMibps');
  const rate = `${num(report.slow.rateBytes / MiB)} MiB/s`;
  const finished = (name: string, path: 'direct' | 'tunnel') => (records[name] ?? []).filter((r) => r.path === path && r.figures.otherCompleted === 1).length;
  /** The other transfer's median speed next to the same transfer alone, per path. */
  const ofAlone = (name: string) => {
    const cellOf = (path: 'direct' | 'tunnel') => {
      const alone = figure(records.slowAlone, path, 'otherMibps').median;
      return alone > 0 ? `${Math.round((100 * figure(records[name], path, 'otherMibps').median) / alone)} %` : '–';
    };
    rows.push(`| … that is, of the same transfer alone | ${cellOf('direct')} | ${cellOf('tunnel')} | – |`);
  };
  row(`Slow consumer: another connection's ${size(sizes.slowOther)} alone, for comparison (MiB/s)`, 'slowAlone', 'otherMibps');
  row(`Slow consumer (${size(report.slow.boundedBytes)} for a reader at ${rate}): another connection's ${size(sizes.slowOther)} (MiB/s)`, 'slowBounded', 'otherMibps');
  row(`Slow consumer (endless data for a reader at ${rate}): another connection's ${size(sizes.slowOther)} (MiB/s)`, 'slowUnbounded', 'otherMibps');
  rows.push(`| … runs in which it finished within ${report.slow.limitMs / 1000} s (else: what it moved by then) | ${finished('slowUnbounded', 'direct')} of ${report.runs} | ${finished('slowUnbounded', 'tunnel')} of ${report.runs} | – |`);
  ofAlone('slowUnbounded');
  row(`Same, proxies without per-connection credit (\`extensions.credit\` off): the ${size(sizes.slowOther)} alone (MiB/s)`, 'slowAloneNoCredit', 'otherMibps');
  row(`Same without credit: ${size(report.slow.boundedBytes)} for the slow reader (MiB/s)`, 'slowBoundedNoCredit', 'otherMibps');
  row(`Same without credit: endless data for the slow reader (MiB/s)`, 'slowUnboundedNoCredit', 'otherMibps');
  rows.push(`| … runs in which it finished within ${report.slow.limitMs / 1000} s (else: what it moved by then) | ${finished('slowUnboundedNoCredit', 'direct')} of ${report.runs} | ${finished('slowUnboundedNoCredit', 'tunnel')} of ${report.runs} | – |`);
  row(`Burst of ${sizes.burst} connections at once: served (default max_active_connections 128)`, 'burst', 'served', false);
  row(`Burst of ${sizes.burst}: until every served one has its echo (ms)`, 'burst', 'ms');
  row(`Burst of ${sizes.burst} with max_active_connections 256: served`, 'burst256', 'served', false);
  row(`Burst of ${sizes.burst} with max_active_connections 256: until all have their echo (ms)`, 'burst256', 'ms');

  const names = ['relay', 'source', 'destination'];
  const perProcess = (name: string, proc: string, f: (p: { cpuSeconds: number; peakRssMiB: number }, r: RunRecord) => number) =>
    spread((records[name] ?? []).filter((r) => r.path === 'tunnel' && r.processes).map((r) => f(r.processes![proc], r)));
  const cpuPerGiB = (name: string, proc: string) => cell(perProcess(name, proc, (p, r) => p.cpuSeconds / (r.figures.bytes / GiB)));
  const peak = (name: string, proc: string) => num(perProcess(name, proc, (p) => p.peakRssMiB).max);
  const processRows = names.map((proc) => `| ${proc} | ${num(report.idleRss[proc])} | ${num(report.afterRss[proc])} | ${peak('bulk1', proc)} / ${peak('bulk1down', proc)} | ${peak('bulk8', proc)} | ${peak('slowBounded', proc)} / ${peak('slowUnbounded', proc)} | ${peak('burst', proc)} | ${cpuPerGiB('bulk1', proc)} | ${cpuPerGiB('bulk1down', proc)} | ${cpuPerGiB('bulk8', proc)} |`);

  const failureText = (key: string) => Object.entries(report.burstFailures[key] ?? {}).map(([why, n]) => `${n} × ${why}`).join(', ') || 'none';
  const notes = [
    `Burst connections not served, over all runs: direct ${failureText('burst direct')}; tunnel ${failureText('burst tunnel')};`,
    `with max_active_connections 256: direct ${failureText('burst256 direct')}; tunnel ${failureText('burst256 tunnel')}.`,
  ];
  notes.push(
    '',
    'Reading the figures:',
    '',
    '- Every tunnelled byte crosses three processes, is encrypted and decrypted twice (TLS to and',
    '  from the relay) and framed twice; on two shared cores the application, source, relay and',
    '  destination compete for the CPU, so throughput here is CPU-bound. CPU seconds per GiB is the',
    '  figure that carries over to other machines: divide a core\'s seconds by it for a ceiling.',
    '  `--profile DIR` shows where it goes.',
    '- Fairness and echo behind bulk: all connections share one TCP connection per hop. Each proxy',
    '  paces what it sends by the delay its pings measure, so the bytes beyond a short queue wait in',
    '  its per-connection queues, where a connection that sent little goes first (README,',
    '  "Interactive traffic behind bulk transfers"); our relay does the same towards our proxies.',
    '  On a capped tunnel the queue in front of the limit is what an echo waits for, and behind a',
    '  slow link the queue in front of the link. Uncapped, the echo client and server run in',
    '  processes of their own, and direct TCP keeps its p99 within a millisecond; through the tunnel',
    '  the relay and both proxies keep the two cores busy, and each hand-over of an echo waits until',
    '  the next process gets a CPU, with or without bulk data ahead of it (traced hop by hop below,',
    '  "Where an echo waits behind an uncapped upload"). Smaller queues (credit windows capped at 1',
    '  MiB, or a pacer target of two messages) halved the echo\'s wait here and cost 20-25 % of the',
    '  bulk rate, so the defaults keep the rate (`flow.credit_max_window_bytes` and',
    '  `flow.target_delay_ms` trade them).',
    '- Slow consumer: the tunnel protocol has no per-connection flow control; between two of our',
    '  proxies the credit/1 extension adds it (README, "Per-connection credit"): a slow reader\'s',
    '  connection stops at its window and the others go on. Without it (the rows "without credit":',
    '  a C++ or older peer, or `extensions.credit` off) the destination keeps up to',
    '  `flow.inbound_budget_bytes` (default 16 MiB, all connections together) for applications that',
    '  read slowly; within it nobody else waits (the bounded row). An application that keeps more',
    '  than that pending forces the destination to stop reading the WebSocket, and then every',
    '  connection of the tunnel moves at the slow reader\'s pace until it catches up or closes (the',
    '  endless row). A direct connection has no such coupling.',
    `- Burst: connections beyond \`tcp.max_active_connections\` (default 128, as in the reference)`,
    '  are refused at once with a log line (the client sees a reset); how many are active at the',
    '  same instant depends on how fast the first ones finish.',
  );
  if (report.failures.length > 0) notes.push('', `**Failed runs (${report.failures.length})**, left out of the figures:`, '', ...report.failures.map((f) => `- ${f}`));
  return [
    START_MARKER,
    '## Tunnel',
    '',
    '`npm run bench` (`node bench/run.mjs`; bench/tunnel.ts) — our relay over TLS (self-signed,',
    'verified) and a source and a destination proxy, each a child process, all on loopback; the',
    'applications at both ends live in the benchmark process (bench/apps.ts). Every workload runs',
    'over a direct TCP connection to the same application server and through the tunnel,',
    'alternating, so the ratio compares like with like on a shared, noisy machine. Cells are',
    `median (range) of ${report.runs} runs. Every upload is confirmed by the receiver's byte count`,
    'and sha256 (downloads by the client); echoes, the burst and the slow reader check every byte.',
    'Uploads go from the source side to the destination side. `--quick` runs small sizes, `--only bulk1,echo` some',
    'workloads, `--profile DIR` writes V8 CPU profiles of the three processes.',
    '',
    `Measured ${report.date} · Node ${report.node} · ${report.cpus} · load average ${report.load.start.toFixed(2)} at the start, ${report.load.end.toFixed(2)} at the end · ${report.kind}${report.quick ? ' · QUICK SIZES, not for comparison' : ''} · whole run ${Math.round(report.seconds)} s.`,
    '',
    '| workload | direct TCP | tunnel | tunnel ÷ direct |',
    '|---|---|---|---|',
    ...rows,
    '',
    'Memory and CPU of each process of the tunnel (MiB; CPU = user + system seconds from',
    `/proc/<pid>/stat per GiB moved). Peak RSS is VmHWM${report.peakResettable ? ', reset before each run through `clear_refs`, so each column is that workload\'s own peak (highest of the runs)' : ' (lifetime peak: clear_refs was not writable)'}; idle RSS is`,
    'VmRSS once the tunnel is up and before any traffic.',
    '',
    '| process | idle RSS | RSS after the run | peak: bulk, 1 connection, up / down | peak: bulk, 8 connections | peak: slow consumer, bounded / endless | peak: burst | CPU s per GiB, 1 connection up | CPU s per GiB, 1 connection down | CPU s per GiB, 8 connections |',
    '|---|---|---|---|---|---|---|---|---|---|',
    ...processRows,
    '',
    ...renderBehind(report),
    ...notes,
    END_MARKER,
  ].join('\n');
}

/**
 * Our proxies next to the C++ reference's, through the same relay in the same run: throughput,
 * CPU seconds per GiB of each process, echo round trips; the last column is ours ÷ reference.
 * Between its own markers both in docs/BENCHMARKS.md and (`where` 'README', with a line on how
 * it was measured) in README.md.
 */
export function renderVersus(report: Report, where: 'README' | 'BENCHMARKS'): string[] {
  if (report.versus.length === 0) return [];
  const { bulkBytes, echoRounds } = report.versusSetup;
  const of = (side: VersusRecord['side'], workload: VersusRecord['workload']) => report.versus.filter((r) => r.side === side && r.workload === workload);
  const rows: string[] = [];
  const row = (label: string, workload: VersusRecord['workload'], value: (r: VersusRecord) => number, goal = '') => {
    const ref = spread(of('C++ reference', workload).map(value));
    const ours = spread(of('localproxy', workload).map(value));
    const ratio = ref.median > 0 ? `${num(ours.median / ref.median)}×` : '–';
    rows.push(`| ${label} | ${cell(ref)} | ${cell(ours)} | ${ratio}${goal ? ` (goal ${goal})` : ''} |`);
  };
  const perGiB = (proc: string | string[]) => (r: VersusRecord) => {
    const procs = Array.isArray(proc) ? proc : [proc];
    return procs.reduce((sum, p) => sum + (r.cpu[p] ?? NaN), 0) / ((r.figures.bytes ?? NaN) / GiB);
  };
  for (const [workload, text] of [['up', 'source → destination side'], ['down', 'destination → source side']] as const) {
    row(`Bulk, 1 connection, ${size(bulkBytes)}, ${text} (MiB/s)`, workload, (r) => r.figures.mibps ?? NaN, '≥ 1');
    row('… CPU s per GiB, source + destination', workload, perGiB(['source', 'destination']), '≤ 1, aim 0.67');
    row('… CPU s per GiB, source', workload, perGiB('source'));
    row('… CPU s per GiB, destination', workload, perGiB('destination'));
    row('… CPU s per GiB, our relay (the same relay for both)', workload, perGiB('relay'));
  }
  row(`1-byte echo round trip, p50 (µs), ${echoRounds.toLocaleString('en-US')} rounds`, 'echo', (r) => r.figures.p50 ?? NaN, '≤ 1.1');
  row('1-byte echo round trip, p99 (µs)', 'echo', (r) => r.figures.p99 ?? NaN);
  row('… CPU µs per round, source + destination', 'echo', (r) => ((r.cpu.source + r.cpu.destination) * 1e6) / (r.figures.rounds ?? NaN));
  row('… CPU µs per round, our relay', 'echo', (r) => (r.cpu.relay * 1e6) / (r.figures.rounds ?? NaN));
  const table = [
    '| workload | C++ reference v3.3.1 | localproxy | localproxy ÷ reference |',
    '|---|---|---|---|',
    ...rows,
  ];
  const relayGoal = 'Goal for the relay: ≤ 1.0 s CPU per GiB.';
  if (where === 'README') {
    return [
      VERSUS_START,
      `Side by side with the C++ local proxy v3.3.1, from \`npm run bench\` (${report.date}, Node ${report.node}, ${report.cpus}):`,
      'both pairs of proxies through our relay over TLS on loopback, in the same run, alternating;',
      `median (range) of ${report.runs} runs. CPU is user + system seconds of each process per GiB moved.`,
      '',
      ...table,
      VERSUS_END,
    ];
  }
  return [
    VERSUS_START,
    '## Side by side with the C++ reference',
    '',
    'Our proxies and the C++ reference\'s (v3.3.1, `-v 4`), each pair through the same relay (ours,',
    'TLS), in the same run: each workload runs on one pair, then the other, `runs` times. CPU is user',
    '+ system seconds from /proc/<pid>/stat of each process during the workload, per GiB moved (bulk)',
    `or per echo round. Goals (issue 15): our source + destination ≤ 1.0× the reference's CPU per GiB, echo p50 ≤ 1.1× the reference's, no loss of throughput. ${relayGoal}`,
    'Written by a full `npm run bench` and by `npm run bench -- --only versus`.',
    '',
    `Measured ${report.date} · Node ${report.node} · ${report.cpus} · load average ${report.load.start.toFixed(2)} at the start, ${report.load.end.toFixed(2)} at the end · ${report.runs} runs.`,
    '',
    ...table,
    VERSUS_END,
  ];
}

const DIRECTION_TEXT: Record<BehindRecord['direction'], string> = {
  alone: 'upload alone, no echoes',
  up: 'upload (source → destination side)',
  down: 'download (destination → source side)',
  both: 'upload and download at once',
};

/** What the runs' paths did instead of finishing (BehindRecord.outcome), '' when every run finished. */
function outcomes(runs: BehindRecord[]): string {
  const ended = runs.filter((r) => r.outcome);
  if (ended.length === 0) return '';
  const texts = [...new Set(ended.map((r) => r.outcome))].join('; ');
  return ended.length === runs.length ? texts : `${texts} (${ended.length} of ${runs.length} runs)`;
}

/**
 * One sentence on what the C++ reference did where its cells hold an outcome instead of figures
 * (measured in this run: the largest RSS its proxies reached).
 */
function referenceNote(report: Report): string[] {
  const runs = report.behind.filter((r) => r.path === 'C++ reference');
  if (!runs.some((r) => r.outcome)) return [];
  const peak = Math.max(...runs.map((r) => Math.max(r.figures.sourceRssMiB ?? 0, r.figures.destinationRssMiB ?? 0)));
  return [
    '',
    'Where a C++ reference cell says what happened instead of figures, that is what the reference did:',
    'it reads a local connection as fast as the application writes and queues what the tunnel has not',
    'yet taken without bound, in one queue for every connection of the tunnel (behaviour-spec 4.11.1,',
    `9.4 #34), so behind an upload its source process grew to ${num(peak / 1024)} GiB and an echo, or the first bytes of`,
    'another connection, waited behind all of it; such a case is stopped there and its path restarted.',
  ];
}

/** The echo-behind-bulk table: one row per path and direction, cells median (range) of the runs. */
export function renderBehind(report: Report): string[] {
  if (report.behind.length === 0) return [];
  const { behindSetup: setup } = report;
  const keyOf = (r: BehindRecord) => `${r.capped ? 1 : 0}\u0000${r.path}\u0000${r.direction}\u0000${r.link ?? ''}`;
  const keys = [...new Set(report.behind.map(keyOf))];
  const rows = keys.map((key) => {
    const [capped, path, direction, link] = key.split('\u0000');
    const runs = report.behind.filter((r) => keyOf(r) === key);
    const f = (name: string) => cell(spread(runs.map((r) => r.figures[name] ?? NaN)));
    const where = capped === '1' ? `${path}, capped` : link ? `${path}, destination on a ${Number(link) / 1e6} MB/s link` : path;
    const ended = outcomes(runs);
    const p50 = !ended ? f('p50') : runs.every((r) => r.outcome) ? ended : `${f('p50')}; ${ended}`;
    return `| ${where} | ${DIRECTION_TEXT[direction as BehindRecord['direction']]} | ${p50} | ${f('p99')} | ${f('rounds')} | ${f('upKBps')} | ${f('downKBps')} |`;
  });
  const kB = (n: number) => `${n / 1000} kB/s`;
  return [
    '### Echo behind bulk',
    '',
    `1-byte echoes, one at a time, on one connection while bulk transfers run on other connections of`,
    `the same tunnel (issue 13). Echoes are timed for ${setup.uncappedMs / 1000} s uncapped and ${setup.cappedMs / 1000} s capped, once every`,
    `transfer has confirmed its first segment (${setup.uncappedSegment / MiB} MiB uncapped, ${setup.cappedSegment / 1024} KiB capped; each checked by sha256);`,
    'a transfer\'s rate counts the segments confirmed while the echoes ran. The echo client and the echo',
    'server each run in a process of their own, apart from the bulk clients and the bulk server (which',
    `hash every byte); a case starts once the previous one's connections have closed. "Capped": the relay runs with`,
    `\`--bandwidth ${setup.capBytesPerS}\` (${kB(setup.capBytesPerS)} per tunnel direction, the cloud's class of limit), so`,
    'direct TCP has no capped row. The C++ reference v3.3.1 (which does not pace) runs the same paths',
    `with the same relay${setup.reference ? '' : ' (not found on this machine: its rows are missing)'}. Goals: capped, echo p99 ≤ 150 ms while the upload moves ≥ 720 kB/s;`,
    'uncapped, echo p99 ≤ 5 ms with the bulk rate no lower than before.',
    ...(setup.linkBytesPerS ? [
      '',
      `"Destination on a ${setup.linkBytesPerS / 1e6} MB/s link": the relay uncapped, the destination reaching it through a link that`,
      `carries ${kB(setup.linkBytesPerS)} towards it (test/helpers/link.ts, with the socket buffers of a real link in front of it),`,
      'timed like the capped rows: the queue builds between the relay and the destination, where the',
      'source cannot see it. Our relay paces what it sends to our proxies (src/relay/paced.ts); the',
      '`--no-pacing` row is the same relay handing everything to its socket at once, and the C++',
      'reference, which declares no extension, is never paced.',
    ] : []),
    ...referenceNote(report),
    '',
    '| path | bulk transfer(s) | echo p50 (ms) | echo p99 (ms) | echoes | upload (kB/s) | download (kB/s) |',
    '|---|---|---|---|---|---|---|',
    ...rows,
    '',
  ];
}

export const README_BEHIND_START = '<!-- bench:behind:start -->';
export const README_BEHIND_END = '<!-- bench:behind:end -->';

const README_DIRECTION: Record<BehindRecord['direction'], string> = {
  alone: 'an upload alone, no echoes',
  up: 'behind an upload',
  down: 'behind a download',
  both: 'behind an upload and a download',
};

/**
 * The echo-behind-bulk figures for the README: one row per cap and direction, one column per
 * path, each cell the medians "p50 / p99 ms (bulk kB/s)"; between README_BEHIND_START/END.
 */
export function renderBehindSummary(report: Report): string {
  // A column per path of the loopback rows; the slow-link rows fill the same columns (their
  // `--no-pacing` comparison is in docs/BENCHMARKS.md only).
  const paths = [...new Set(report.behind.filter((r) => !r.link).map((r) => r.path))];
  const keyOf = (r: BehindRecord) => `${r.capped ? 1 : 0}\u0000${r.direction}\u0000${r.link ?? ''}`;
  const keys = [...new Set(report.behind.filter((r) => paths.includes(r.path)).map(keyOf))];
  const median = (values: number[]) => spread(values).median;
  const rows = keys.map((key) => {
    const [capped, direction, link] = key.split('\u0000') as [string, BehindRecord['direction'], string];
    const cells = paths.map((path) => {
      const runs = report.behind.filter((r) => r.path === path && keyOf(r) === key);
      if (runs.length === 0) return '–';
      const rate = (name: string) => median(runs.map((r) => r.figures[name] ?? NaN));
      const rates = ['upKBps', 'downKBps'].map(rate).filter((x) => Number.isFinite(x));
      const megabytes = rates.some((x) => x >= 10_000);
      const bulk = rates.length === 0 ? '' : `${rates.map((x) => num(megabytes ? x / 1000 : x)).join(' + ')} ${megabytes ? 'MB/s' : 'kB/s'}`;
      if (runs.every((r) => r.outcome)) return `${outcomes(runs)}${bulk ? ` (${bulk})` : ''}`;
      if (direction === 'alone') return bulk || '–';
      const p50 = median(runs.map((r) => r.figures.p50 ?? NaN));
      const p99 = median(runs.map((r) => r.figures.p99 ?? NaN));
      if (!Number.isFinite(p50)) return '–';
      return `${num(p50)} / ${num(p99)} ms${bulk ? ` (${bulk})` : ''}`;
    });
    const where = capped === '1' ? `capped at ${report.behindSetup.capBytesPerS / 1000} kB/s` : link ? `destination on a ${Number(link) / 1e6} MB/s link` : 'uncapped';
    return `| ${where}, ${README_DIRECTION[direction]} | ${cells.join(' | ')} |`;
  });
  return [
    README_BEHIND_START,
    `| 1-byte echo p50 / p99 (bulk rate meanwhile) | ${paths.join(' | ')} |`,
    `|---|${paths.map(() => '---').join('|')}|`,
    ...rows,
    '',
    `(\`npm run bench\`, ${report.date}, median of ${report.runs} run${report.runs === 1 ? '' : 's'}; load average ${report.load.start.toFixed(1)} → ${report.load.end.toFixed(1)}.)`,
    README_BEHIND_END,
  ].join('\n');
}

/** Replaces the part of `file` between `startMarker` and `endMarker` (appends `section` at the end the first time). */
export function updateDocs(file: string, section: string, startMarker = START_MARKER, endMarker = END_MARKER): void {
  const text = readFileSync(file, 'utf8');
  const start = text.indexOf(startMarker);
  const end = text.indexOf(endMarker);
  const next = start >= 0 && end > start
    ? text.slice(0, start) + section + text.slice(end + endMarker.length)
    : `${text.trimEnd()}\n\n${section}\n`;
  writeFileSync(file, next);
}
