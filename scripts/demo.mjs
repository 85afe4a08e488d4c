// `npm run demo`: a real tunnel on this machine, no cloud account needed.
//
//   local HTTP service ← destination proxy ← relay (TLS, self-signed) ← source proxy ← you (curl)
//
// Starts our relay with a self-signed certificate in a temp directory, an HTTP service that
// answers "hello through the tunnel", a destination proxy in front of it and a source proxy,
// fetches through the tunnel once to prove it works, prints what to connect to and keeps
// running until Ctrl-C. `--once`: exit 0 right after the self-check (used by the tests).
// `--verbose`: show the proxies' logs.
//
// The proxies run as real processes of the built CLI (`node dist/localproxy.cjs -s ... / -d ...`)
// when it supports proxy mode; otherwise in this process through the library API. The relay
// runs in this process through the library API (it hands out the tunnel's tokens directly).
import { spawn, execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, get } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
// The sources are TypeScript compiled as CommonJS: load them through tsx's require hook.
import { require as requireTs } from 'tsx/cjs/api';

const root = new URL('..', import.meta.url).pathname;
const cli = join(root, 'dist/localproxy.cjs');
const onceOnly = process.argv.includes('--once');
const verbose = process.argv.includes('--verbose');
const GREETING = 'hello through the tunnel\n';
const READY_TIMEOUT_MS = 20_000;

const lib = requireTs('../src/index.ts', import.meta.url);
const { startRelay } = requireTs('../src/relay/server.ts', import.meta.url);

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
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} did not happen within ${READY_TIMEOUT_MS / 1000} s`)), READY_TIMEOUT_MS); }),
  ]).finally(() => clearTimeout(timer));
}

async function freePort() {
  const server = createNetServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function cliRunsProxies() {
  if (!existsSync(cli)) return false;
  try {
    return execFileSync(process.execPath, [cli, '--help'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).includes('--destination-app');
  } catch {
    return false;
  }
}

/** One proxy as a process of the CLI; resolves when its readiness line shows up. */
async function spawnProxy(name, args, token, readyLine) {
  const child = spawn(process.execPath, [cli, ...args, '-v', '4'], {
    env: { ...process.env, AWSIOT_TUNNEL_ACCESS_TOKEN: token },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
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
      if (verbose) process.stderr.write(String(data).replace(/^/gm, `[${name}] `));
      if (readyLine.test(output)) resolve();
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code, signal) => {
      if (stopping) return;
      const error = new Error(`${name} exited (${code ?? signal}):\n${output}`);
      reject(error);
      // After the demo is up, a proxy that dies ends the demo instead of leaving half a tunnel.
      if (up) void fail(error.message);
    });
  });
  await bounded(ready, `${name} ready`);
  return child;
}

/** One proxy in this process through the library API. */
async function startLibraryProxy(mode, token, services, relay, ca) {
  const proxy = lib.startProxy ?? requireTs('../src/tunnel/proxy.ts', import.meta.url).startProxy;
  const instance = proxy({
    mode,
    accessToken: token,
    endpoint: { host: '127.0.0.1', port: relay.port },
    services,
    ca: [ca],
    settings: lib.defaultSettings(),
    log: new lib.Logger({ level: verbose ? 4 : 2, id: mode }),
  });
  cleanups.push(() => instance.close());
  await bounded(instance.ready, `${mode} ready`);
  return instance;
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

  const relay = await startRelay({ port: 0, selfSignedDir: join(dir, 'relay'), log: new lib.Logger({ level: verbose ? 4 : 2, id: 'relay' }) });
  cleanups.push(() => relay.close());
  const caDir = join(dir, 'ca');
  mkdirSync(caDir);
  writeFileSync(join(caDir, 'relay.pem'), relay.caPem);
  const tunnel = relay.openTunnel({ services: ['HTTP'] });

  let sourcePort;
  let how;
  if (cliRunsProxies()) {
    how = 'two processes of dist/localproxy.cjs';
    sourcePort = await freePort();
    const common = ['-e', `127.0.0.1:${relay.port}`, '-c', caDir];
    await spawnProxy('destination', [...common, '-d', `HTTP=${servicePort}`], tunnel.destinationAccessToken, /Successfully established websocket connection/);
    await spawnProxy('source', [...common, '-s', `HTTP=${sourcePort}`], tunnel.sourceAccessToken, /Listening for new connection on port/);
  } else {
    how = 'in this process through the library API (the CLI cannot run a proxy yet)';
    await startLibraryProxy('destination', tunnel.destinationAccessToken, new Map([['HTTP', { kind: 'tcp', host: '127.0.0.1', port: servicePort }]]), relay, relay.caPem);
    const source = await startLibraryProxy('source', tunnel.sourceAccessToken, new Map([['HTTP', { kind: 'tcp', port: 0 }]]), relay, relay.caPem);
    sourcePort = source.ports().get('HTTP');
  }

  const body = await fetchText(sourcePort);
  if (body !== GREETING) await fail(`expected ${JSON.stringify(GREETING)} through the tunnel, got ${JSON.stringify(body)}`);

  process.stdout.write([
    'localproxy demo: a real tunnel on this machine',
    `  service      http://127.0.0.1:${servicePort}/  (answers "${GREETING.trim()}")`,
    `  relay        ${relay.url}  (self-signed TLS, tunnel ${tunnel.tunnelId}, service id HTTP)`,
    `  destination  -d HTTP=${servicePort}`,
    `  source       -s HTTP=${sourcePort}`,
    `  proxies run  ${how}`,
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
