// Figures for docs/BENCHMARKS.md "Executables": size of each dist/bin executable, start-up time of
// the linux-x64 one (`--version`, median of 20, against `node dist/localproxy.cjs --version`) and
// its idle RSS as a relay and as a connected destination proxy. Run on a quiet machine:
//   npm run dist && node scripts/bench-dist.mjs
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

const root = new URL('..', import.meta.url).pathname;
const binDir = join(root, 'dist', 'bin');
const exe = join(binDir, 'localproxy-linux-x64');
const env = { ...process.env };
delete env.NODE_OPTIONS;

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function timeRuns(command, args, runs) {
  const times = [];
  for (let i = 0; i < runs; i++) {
    const started = process.hrtime.bigint();
    execFileSync(command, args, { env, stdio: 'ignore' });
    times.push(Number(process.hrtime.bigint() - started) / 1e6);
  }
  return median(times);
}

function startProgram(args, extraEnv, command = exe) {
  const child = spawn(command, args, { env: { ...env, ...extraEnv }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const waitFor = (pattern, ms) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${pattern} within ${ms} ms:\n${output}`)), ms);
    const check = () => {
      const match = pattern.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve(match);
      }
    };
    child.stdout.on('data', (d) => { output += d; check(); });
    child.stderr.on('data', (d) => { output += d; check(); });
    check();
  });
  return { child, waitFor };
}

const rssMiB = (pid) => Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;
const idle = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const targets = Object.fromEntries(readdirSync(join(root, 'targets')).filter((f) => f.endsWith('.json') && f !== 'blob-generators.json')
  .map((f) => JSON.parse(readFileSync(join(root, 'targets', f), 'utf8'))).map((t) => [t.output, t]));
const mib = (n) => `${(n / 2 ** 20).toFixed(1)} MiB`;
const sizes = readdirSync(binDir).filter((f) => f.startsWith('localproxy-')).sort().map((f) => {
  const image = readFileSync(join(binDir, f));
  return `| ${f} | Node ${targets[f]?.version ?? '?'} | ${mib(image.length)} | ${mib(gzipSync(image).length)} |`;
});

const startExe = timeRuns(exe, ['--version'], 20);
const startNode = timeRuns(process.execPath, [join(root, 'dist', 'localproxy.cjs'), '--version'], 20);
const startFloor = timeRuns(process.execPath, ['-e', '0'], 20);

const dir = mkdtempSync(join(tmpdir(), 'localproxy-bench-dist-'));
const keys = { LOCALPROXY_RELAY_ACCESS_KEY_ID: 'AKIDBENCH', LOCALPROXY_RELAY_SECRET_ACCESS_KEY: 'bench-secret-key-0123456789' };
const relay = startProgram(['relay', '--listen', '127.0.0.1:0', '--tls-self-signed', dir], keys);
let relayRss;
let destRss;
let destination;
let nodeDestination;
let nodeDestRss;
try {
  const [, port] = await relay.waitFor(/listening on wss:\/\/127\.0\.0\.1:(\d+)/, 20_000);
  const opened = JSON.parse(execFileSync(exe, ['tunnel', 'open', '--endpoint', `https://127.0.0.1:${port}`, '--region', 'us-east-1',
    '--services', 'SSH1', '--ca', join(dir, 'cert.pem')], { env: { ...env, AWS_ACCESS_KEY_ID: keys.LOCALPROXY_RELAY_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: keys.LOCALPROXY_RELAY_SECRET_ACCESS_KEY } }).toString());
  const destArgs = ['-e', `127.0.0.1:${port}`, '-c', dir, '-d', 'SSH1=22', '-v', '4'];
  destination = startProgram(destArgs, { AWSIOT_TUNNEL_ACCESS_TOKEN: opened.destinationAccessToken });
  await destination.waitFor(/Successfully established websocket connection/, 20_000);
  // The same destination under the host's node, for comparison (a second tunnel).
  const second = JSON.parse(execFileSync(exe, ['tunnel', 'open', '--endpoint', `https://127.0.0.1:${port}`, '--region', 'us-east-1',
    '--services', 'SSH1', '--ca', join(dir, 'cert.pem')], { env: { ...env, AWS_ACCESS_KEY_ID: keys.LOCALPROXY_RELAY_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: keys.LOCALPROXY_RELAY_SECRET_ACCESS_KEY } }).toString());
  nodeDestination = startProgram([join(root, 'dist', 'localproxy.cjs'), ...destArgs], { AWSIOT_TUNNEL_ACCESS_TOKEN: second.destinationAccessToken }, process.execPath);
  await nodeDestination.waitFor(/Successfully established websocket connection/, 20_000);
  // Idle means idle: let start-up garbage settle before reading the resident set.
  await idle(5000);
  relayRss = rssMiB(relay.child.pid);
  destRss = rssMiB(destination.child.pid);
  nodeDestRss = rssMiB(nodeDestination.child.pid);
} finally {
  destination?.child.kill('SIGTERM');
  nodeDestination?.child.kill('SIGTERM');
  relay.child.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}

const cpu = cpus()[0]?.model ?? 'unknown CPU';
process.stdout.write([
  `Measured ${new Date().toISOString().slice(0, 10)} on ${cpus().length} vCPU (${cpu}), ${execFileSync('uname', ['-sr']).toString().trim()}, host Node ${process.version}.`,
  '',
  '| executable | base | size | gzip -6 |',
  '|---|---|---|---|',
  ...sizes,
  '',
  '| linux-x64 | value |',
  '|---|---|',
  `| start-up, \`localproxy-linux-x64 --version\` (spawn to exit, median of 20) | ${startExe.toFixed(0)} ms |`,
  `| same with \`node dist/localproxy.cjs --version\` (host Node) | ${startNode.toFixed(0)} ms |`,
  `| \`node -e 0\` on this machine (floor) | ${startFloor.toFixed(0)} ms |`,
  `| idle RSS, relay with one tunnel and a connected destination | ${relayRss.toFixed(1)} MiB |`,
  `| idle RSS, destination proxy connected to the relay | ${destRss.toFixed(1)} MiB |`,
  `| same destination with \`node dist/localproxy.cjs\` (host Node ${process.version}) | ${nodeDestRss.toFixed(1)} MiB |`,
  '',
].join('\n'));
