// `npm run demo`: a real tunnel on this machine, no cloud account needed.
//
//   you (curl) → source proxy → relay (TLS, self-signed) → destination proxy → local HTTP service
//
// Starts an HTTP service that answers "hello through the tunnel", our relay with a self-signed
// certificate in a temp directory, opens a tunnel on it, then a destination proxy in front of the
// service and a source proxy, fetches through the tunnel once to prove it works, prints what to
// connect to and keeps running until Ctrl-C.
//   --once     exit 0 right after the self-check (the test suite runs this)
//   --verbose  show the relay's and proxies' logs
//
// Everything runs as real processes of the built CLI (`node dist/localproxy.cjs relay`,
// `... tunnel open`, `... -d`, `... -s`). A build whose CLI cannot do that yet falls back to the
// library API in this process, and says so.
import { execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, get } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const cli = join(root, 'dist/localproxy.cjs');
const onceOnly = process.argv.includes('--once');
const verbose = process.argv.includes('--verbose');
const GREETING = 'hello through the tunnel\n';
const STEP_TIMEOUT_MS = 20_000;

const cleanups = [];
let stopping = false;
let up = false;

async function cleanup() {
  for (const fn of cleanups.reverse()) {
    try { await fn(); } catch { /* best effort while shutting down */ }
  }
}

async function fail(message) {
  stopping = true;
  process.stderr.write(`demo: ${message}\n`);
  await cleanup();
  process.exit(1);
}

function bounded(promise, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} did not happen within ${STEP_TIMEOUT_MS / 1000} s`)), STEP_TIMEOUT_MS); }),
  ]).finally(() => clearTimeout(timer));
}

async function freePort() {
  const server = createNetServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function cliHelp(args) {
  try {
    return execFileSync(process.execPath, [cli, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch {
    return '';
  }
}

function cliCanRunTheDemo() {
  return existsSync(cli)
    && cliHelp(['--help']).includes('--destination-app')
    && cliHelp(['relay', '--help']).includes('--tls-self-signed')
    && cliHelp(['tunnel', '--help']).includes('open');
}

/** A long-running CLI process; resolves with the first match of `readyLine` in its output. */
async function spawnCli(name, args, env, readyLine) {
  const child = spawn(process.execPath, [cli, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  cleanups.push(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(timer);
  });
  let output = '';
  const ready = new Promise((resolve, reject) => {
    const onData = (data) => {
      output += data;
      if (verbose) process.stderr.write(String(data).replace(/^(?=.)/gm, `[${name}] `));
      const match = readyLine.exec(output);
      if (match) resolve(match);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code, signal) => {
      if (stopping) return;
      const error = new Error(`${name} exited (${code ?? signal}):\n${output}`);
      reject(error);
      // Once the demo is up, a process that dies ends the demo instead of leaving half a tunnel.
      if (up) void fail(error.message);
    });
  });
  return bounded(ready, `${name} ready`);
}

/** A one-shot CLI command; resolves with its stdout. */
function runCli(args, env) {
  return bounded(new Promise((resolve, reject) => {
    execFile(process.execPath, [cli, ...args], { env }, (err, stdout, stderr) => {
      if (err) reject(new Error(`localproxy ${args[0]} ${args[1] ?? ''} failed: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
  }), `localproxy ${args.slice(0, 2).join(' ')}`);
}

/** Relay, tunnel and both proxies as processes of the CLI. */
async function startWithCli(dir, servicePort) {
  const certDir = join(dir, 'relay');
  // Management API credentials for this relay only: the demo never touches AWS.
  const keyId = `demo${randomBytes(4).toString('hex')}`;
  const secret = randomBytes(24).toString('hex');
  const [, relayPort] = await spawnCli('relay', ['relay', '--listen', '127.0.0.1:0', '--tls-self-signed', certDir, '-v', verbose ? '4' : '3'],
    { LOCALPROXY_RELAY_ACCESS_KEY_ID: keyId, LOCALPROXY_RELAY_SECRET_ACCESS_KEY: secret }, /listening on wss:\/\/127\.0\.0\.1:(\d+)/);
  const apiEnv = { ...process.env, AWS_ACCESS_KEY_ID: keyId, AWS_SECRET_ACCESS_KEY: secret };
  delete apiEnv.AWS_SESSION_TOKEN;
  const tunnel = JSON.parse(await runCli(['tunnel', 'open', '--services', 'HTTP', '--endpoint', `https://127.0.0.1:${relayPort}`, '--ca', join(certDir, 'cert.pem')], apiEnv));
  const common = ['-e', `127.0.0.1:${relayPort}`, '-c', certDir, '-v', '4'];
  await spawnCli('destination', [...common, '-d', `HTTP=${servicePort}`], { AWSIOT_TUNNEL_ACCESS_TOKEN: tunnel.destinationAccessToken }, /Successfully established websocket connection/);
  const sourcePort = await freePort();
  await spawnCli('source', [...common, '-s', `HTTP=${sourcePort}`], { AWSIOT_TUNNEL_ACCESS_TOKEN: tunnel.sourceAccessToken }, /Listening for new connection on port/);
  return {
    sourcePort,
    how: 'four processes of dist/localproxy.cjs',
    commands: [
      `localproxy relay --listen 127.0.0.1:${relayPort} --tls-self-signed ${certDir}`,
      `localproxy tunnel open --services HTTP --endpoint https://127.0.0.1:${relayPort} --ca ${join(certDir, 'cert.pem')}`,
      `AWSIOT_TUNNEL_ACCESS_TOKEN=<destinationAccessToken> localproxy -e 127.0.0.1:${relayPort} -c ${certDir} -d HTTP=${servicePort}`,
      `AWSIOT_TUNNEL_ACCESS_TOKEN=<sourceAccessToken> localproxy -e 127.0.0.1:${relayPort} -c ${certDir} -s HTTP=${sourcePort}`,
    ],
  };
}

/** Fallback while the CLI cannot run the demo: the same tunnel through the library API, in this process. */
async function startWithLibrary(dir, servicePort) {
  // The sources are TypeScript compiled as CommonJS: load them through tsx's require hook.
  const { require: requireTs } = await import('tsx/cjs/api');
  const lib = requireTs('../src/index.ts', import.meta.url);
  const { startRelay } = requireTs('../src/relay/server.ts', import.meta.url);
  const startProxy = lib.startProxy ?? requireTs('../src/tunnel/proxy.ts', import.meta.url).startProxy;
  const log = (id) => new lib.Logger({ level: verbose ? 4 : 2, id });
  const relay = await startRelay({ port: 0, selfSignedDir: join(dir, 'relay'), log: log('relay') });
  cleanups.push(() => relay.close());
  const tunnel = await relay.openTunnel({ services: ['HTTP'] });
  const start = async (mode, accessToken, target) => {
    const proxy = startProxy({
      mode, accessToken,
      endpoint: { host: '127.0.0.1', port: relay.port },
      services: new Map([['HTTP', target]]),
      ca: [relay.caPem],
      settings: lib.defaultSettings(),
      log: log(mode),
    });
    cleanups.push(() => proxy.close());
    await bounded(proxy.ready, `${mode} ready`);
    return proxy;
  };
  await start('destination', tunnel.destinationAccessToken, { kind: 'tcp', host: '127.0.0.1', port: servicePort });
  const source = await start('source', tunnel.sourceAccessToken, { kind: 'tcp', port: 0 });
  return { sourcePort: source.ports().get('HTTP'), how: 'in this process through the library API (this build\'s CLI cannot run the demo yet)', commands: [] };
}

function fetchText(port) {
  return bounded(new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => { body += chunk; });
      res.on('end', () => resolve(body));
      res.on('error', reject);
    }).on('error', reject);
  }), 'the fetch through the tunnel');
}

try {
  const dir = mkdtempSync(join(tmpdir(), 'localproxy-demo-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));

  const service = createServer((req, res) => res.end(GREETING));
  service.listen(0, '127.0.0.1');
  await once(service, 'listening');
  cleanups.push(() => { service.closeAllConnections(); service.close(); });
  const servicePort = service.address().port;

  const { sourcePort, how, commands } = cliCanRunTheDemo() ? await startWithCli(dir, servicePort) : await startWithLibrary(dir, servicePort);

  const body = await fetchText(sourcePort);
  if (body !== GREETING) await fail(`expected ${JSON.stringify(GREETING)} through the tunnel, got ${JSON.stringify(body)}`);

  process.stdout.write([
    'localproxy demo: a real tunnel on this machine',
    '',
    `  you → source 127.0.0.1:${sourcePort} → relay (TLS) → destination → service 127.0.0.1:${servicePort}`,
    `  running as ${how}`,
    ...(commands.length > 0 ? ['', '  what it ran (tokens come from `tunnel open` and go in the environment, never on the command line):', ...commands.map((c) => `    ${c}`)] : []),
    '',
    `self-check: fetched "${body.trim()}" through the tunnel`,
    '',
    `Try it:  curl http://127.0.0.1:${sourcePort}/`,
    onceOnly ? '' : 'Press Ctrl-C to stop.',
    '',
  ].join('\n'));

  up = true;
  if (onceOnly) {
    stopping = true;
    await cleanup();
    process.exit(0);
  }
  const stop = async () => {
    if (stopping) process.exit(0);
    stopping = true;
    process.stdout.write('\nstopping\n');
    await cleanup();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
} catch (err) {
  await fail(err instanceof Error ? err.message : String(err));
}
