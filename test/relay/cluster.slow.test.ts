/**
 * Three relays (`dist/localproxy.cjs relay --store`) on one real redis-server, proxies and
 * OpenSSH as processes (issue 19). The tunnel is opened through node 1; its destination
 * connects to node 2, its source to node 3, so every byte crosses a bridge between nodes.
 *
 * The destination reaches the relays through a small TCP forwarder in this test that tries
 * node 2 first and node 1 when node 2 refuses: what a TCP load balancer with a health check
 * does for a real cluster. The proxy itself is not changed or restarted: it reconnects to the
 * same endpoint, as it would behind a load balancer, and lands on a live node.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ApiError, TunnelApiClient } from '../../src/api/client';
import { patternSha256, sendPattern, sinkServer, type SinkServer } from '../helpers/apps';
import { CLI, spawnProxy, type ChildProxy } from '../helpers/child';
import type { Relay } from '../helpers/tunnel';
import { freePort, waitUntil, within } from '../helpers/wait';
import { EventEmitter } from 'node:events';
import Redis from 'ioredis';
import { connectPeer } from './peer';
import { startRedis, type RedisServer } from './redis';

const MiB = 1024 * 1024;
const test = suite('relay cluster: three relay processes, peers on different nodes');

const CREDENTIALS = { accessKeyId: 'AKIDCLUSTERSLOW', secretAccessKey: 'cluster-slow-secret' };
const ENV = {
  LOCALPROXY_RELAY_ACCESS_KEY_ID: CREDENTIALS.accessKeyId,
  LOCALPROXY_RELAY_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey,
  LOCALPROXY_RELAY_CLUSTER_SECRET: 'the secret of the slow cluster test',
};

/** A relay process and its output, awaited line by line. */
class NodeProcess extends EventEmitter {
  readonly port: number;
  child!: ChildProcess;
  text = '';
  id = '';
  constructor(port: number) {
    super();
    this.port = port;
  }

  start(redisUrl: string, tlsDir: string): Promise<void> {
    this.child = spawn(process.execPath, [CLI, 'relay', '--listen', `127.0.0.1:${this.port}`, '--tls-self-signed', tlsDir, '--store', redisUrl, '--node-url', `wss://127.0.0.1:${this.port}`, '--lease-seconds', '2', '-v', '4'], {
      env: { ...process.env, ...ENV }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    const onData = (data: Buffer): void => {
      this.text += data.toString();
      if (process.env.LOCALPROXY_TEST_LOG) process.stderr.write(`relay :${this.port}: ${data}`);
      this.emit('line');
    };
    this.child.stdout!.on('data', onData);
    this.child.stderr!.on('data', onData);
    return this.waitFor(/tunnel store redis:\S+ connected/, 20_000, `relay on ${this.port} ready`).then(() => {
      this.id = /cluster node (\S+),/.exec(this.text)![1];
    });
  }

  waitFor(pattern: RegExp, ms: number, what: string, from = 0): Promise<void> {
    return waitUntil(this, 'line', () => pattern.test(this.text.slice(from)), ms, what).catch((err: Error) => {
      throw new Error(`${err.message}\nrelay ${this.port} log:\n${this.text.slice(-3000)}`);
    });
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = once(this.child, 'exit');
    this.child.kill(signal);
    await within(exited, 10_000, `relay ${this.port} exit`);
  }
}

/** Forwards each connection to the first backend that accepts it, in order (a load balancer with a health check). */
async function failover(ports: () => number[]): Promise<{ server: Server; port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => client.destroy());
    client.pause();
    const tryNext = (list: number[]): void => {
      if (list.length === 0 || client.destroyed) return void client.destroy();
      const upstream = connect(list[0], '127.0.0.1');
      upstream.once('error', () => tryNext(list.slice(1)));
      upstream.once('connect', () => {
        sockets.add(upstream);
        upstream.on('close', () => { sockets.delete(upstream); client.destroy(); });
        upstream.removeAllListeners('error');
        upstream.on('error', () => upstream.destroy());
        client.on('close', () => upstream.destroy());
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
      });
    };
    tryNext(ports());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    server,
    port: (server.address() as { port: number }).port,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

let dir: string;
let tlsDir: string;
let redis: RedisServer;
const nodes: NodeProcess[] = [];
let forwarder: Awaited<ReturnType<typeof failover>>;
let sshd: ChildProcess;
let sshdPort: number;
const sshdLog: string[] = [];
let sink: SinkServer;
let source: ChildProxy;
let destination: ChildProxy;
let opened: { tunnelId: string; sourceAccessToken: string; destinationAccessToken: string };

function run(command: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { timeout: timeoutMs, maxBuffer: 1 << 20, env: { ...process.env, ...ENV, AWS_ACCESS_KEY_ID: CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey } }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${command} ${args.slice(0, 2).join(' ')} failed: ${stderr.trim() || err.message}\nsshd said:\n${sshdLog.join('').slice(-2000)}`));
      else resolve(stdout);
    });
  });
}

function sshArgs(): string[] {
  return ['-p', String(source.ports.SSH), '-F', '/dev/null', '-i', join(dir, 'id_ed25519'), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR', 'root@127.0.0.1'];
}

function api(node: NodeProcess): TunnelApiClient {
  return new TunnelApiClient({ endpoint: `https://127.0.0.1:${node.port}`, region: 'us-east-1', credentials: CREDENTIALS, ca: readFileSync(join(tlsDir, 'cert.pem'), 'utf8') });
}

/** `connectPeer` wants a Relay: the node's URL and the certificate to trust. */
function asRelay(node: NodeProcess): Relay {
  return { url: `wss://127.0.0.1:${node.port}`, caPem: readFileSync(join(tlsDir, 'cert.pem'), 'utf8'), port: node.port } as unknown as Relay;
}

test.before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'localproxy-cluster-'));
  tlsDir = join(dir, 'tls');
  redis = await startRedis();
  // One certificate for every node (as behind one load balancer name): node 1 creates it.
  for (let i = 0; i < 3; i++) nodes.push(new NodeProcess(await freePort()));
  await nodes[0].start(redis.url, tlsDir);
  await Promise.all([nodes[1].start(redis.url, tlsDir), nodes[2].start(redis.url, tlsDir)]);

  mkdirSync('/run/sshd', { recursive: true });
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'host_ed25519')], 10_000);
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'id_ed25519')], 10_000);
  sshdPort = await freePort();
  writeFileSync(join(dir, 'sshd_config'), [
    `Port ${sshdPort}`, 'ListenAddress 127.0.0.1', `HostKey ${join(dir, 'host_ed25519')}`, `AuthorizedKeysFile ${join(dir, 'id_ed25519.pub')}`,
    `PidFile ${join(dir, 'sshd.pid')}`, 'StrictModes no', 'UsePAM no', 'PermitRootLogin prohibit-password', 'PasswordAuthentication no', 'KbdInteractiveAuthentication no', '',
  ].join('\n'));
  sshd = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', join(dir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
  await within(new Promise<void>((resolve, reject) => {
    sshd.stderr!.on('data', (data: Buffer) => {
      sshdLog.push(data.toString());
      if (sshdLog.join('').includes('Server listening on 127.0.0.1')) resolve();
    });
    sshd.once('exit', (code) => reject(new Error(`sshd exited with ${code}: ${sshdLog.join('')}`)));
  }), 10_000, 'sshd listening');
  sink = await sinkServer();
  forwarder = await failover(() => [nodes[1].port, nodes[0].port]);
});

test.after(async () => {
  await Promise.allSettled([source?.stop(), destination?.stop()]);
  await Promise.allSettled(nodes.map((n) => n.stop()));
  await Promise.allSettled([forwarder?.close(), sink?.close(), redis?.remove()]);
  if (sshd && sshd.exitCode === null) {
    sshd.kill('SIGTERM');
    await once(sshd, 'exit');
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('opened on node 1, destination on node 2, source on node 3: 64 MiB byte-exact and a real ssh command', async () => {
  opened = JSON.parse(await run(process.execPath, [CLI, 'tunnel', 'open', '--services', 'SSH,DATA', '--endpoint', `https://127.0.0.1:${nodes[0].port}`, '--ca', join(tlsDir, 'cert.pem'), '--region', 'us-east-1'], 20_000));
  const ca = { dir: tlsDir, file: join(tlsDir, 'cert.pem') };
  destination = await spawnProxy({ relay: { port: forwarder.port } as unknown as Relay, ca, mode: 'destination', accessToken: opened.destinationAccessToken, services: { SSH: sshdPort, DATA: sink.port } });
  await destination.ready;
  source = await spawnProxy({ relay: { port: nodes[2].port } as unknown as Relay, ca, mode: 'source', accessToken: opened.sourceAccessToken, services: { SSH: 0, DATA: 0 } });
  await source.ready;
  await nodes[1].waitFor(new RegExp(`tunnel ${opened.tunnelId} destination: connected`), 10_000, 'destination on node 2');
  await nodes[2].waitFor(new RegExp(`tunnel ${opened.tunnelId}: bridge to node ${nodes[1].id}, which holds the destination, is up`), 15_000, 'bridge node 3 → node 2');

  const sent = await within(sendPattern(source.ports.DATA, 64 * MiB, { seed: 19 }), 90_000, '64 MiB sent');
  const [received] = await within(sink.waitFor(1), 30_000, '64 MiB received');
  assert.is(sent.sha256, patternSha256(64 * MiB, 19));
  assert.is(received.bytes, 64 * MiB);
  assert.is(received.sha256, sent.sha256, 'byte-exact across two nodes');

  assert.is(await run('ssh', [...sshArgs(), 'echo across the cluster'], 30_000), 'across the cluster\n');
});

test('node 2 is killed mid-session: the destination reconnects to node 1 and the next connection works', async () => {
  const session = spawn('ssh', [...sshArgs(), 'echo started; sleep 120'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const sessionEnded = once(session, 'exit');
  await within(new Promise<void>((resolve) => session.stdout!.on('data', (d: Buffer) => {
    out += d;
    if (out.includes('started')) resolve();
  })), 30_000, 'ssh session started');
  const mark = [nodes[0].text.length, nodes[2].text.length];
  await nodes[1].stop('SIGKILL');
  // Its connections are lost: the session through it ends, the tunnel does not.
  await within(sessionEnded, 30_000, 'the session through the dead node ended');
  await nodes[0].waitFor(new RegExp(`tunnel ${opened.tunnelId} destination: connected`), 30_000, 'destination reconnected to node 1', mark[0]);
  await nodes[2].waitFor(new RegExp(`tunnel ${opened.tunnelId}: bridge to node ${nodes[0].id}, which holds the destination, is up`), 30_000, 'bridge node 3 → node 1', mark[1]);
  assert.is(await run('ssh', [...sshArgs(), 'echo after the failover'], 30_000), 'after the failover\n');
  const sent = await within(sendPattern(source.ports.DATA, 4 * MiB, { seed: 20 }), 30_000, '4 MiB sent');
  const results = await within(sink.waitFor(2), 30_000, '4 MiB received');
  assert.is(results[1].sha256, sent.sha256);
  const { tunnel } = await api(nodes[2]).call<{ tunnel: { status: string; destinationConnectionState: { status: string } } }>('DescribeTunnel', { tunnelId: opened.tunnelId });
  assert.is(tunnel.status, 'OPEN', 'the tunnel survived its node');
  assert.is(tunnel.destinationConnectionState.status, 'CONNECTED');
});

test('concurrent CloseTunnel (node 1) and RotateTunnelAccessToken (node 3) over HTTP: closed, and no token lets anyone in', async () => {
  const one = api(nodes[0]);
  const three = api(nodes[2]);
  const tunnels = await Promise.all(Array.from({ length: 16 }, () => one.call<{ tunnelId: string; sourceAccessToken: string; destinationAccessToken: string }>('OpenTunnel', { destinationConfig: { services: ['SSH'] } })));
  const outcomes = await Promise.all(tunnels.map((t) => Promise.allSettled([
    one.call('CloseTunnel', { tunnelId: t.tunnelId }),
    three.call<{ sourceAccessToken: string; destinationAccessToken: string }>('RotateTunnelAccessToken', { tunnelId: t.tunnelId, clientMode: 'ALL' }),
  ])));
  for (const [i, t] of tunnels.entries()) {
    const [closed, rotated] = outcomes[i];
    assert.is(closed.status, 'fulfilled', 'CloseTunnel always succeeds');
    const { tunnel } = await three.call<{ tunnel: { status: string } }>('DescribeTunnel', { tunnelId: t.tunnelId });
    assert.is(tunnel.status, 'CLOSED');
    const tokens: Array<[string, 'source' | 'destination']> = [[t.sourceAccessToken, 'source'], [t.destinationAccessToken, 'destination']];
    if (rotated.status === 'fulfilled') {
      tokens.push([rotated.value.sourceAccessToken, 'source'], [rotated.value.destinationAccessToken, 'destination']);
    } else {
      assert.is((rotated.reason as ApiError).type, 'ValidationException');
    }
    for (const [token, mode] of tokens) {
      const answer = await connectPeer(asRelay(nodes[i % 2 === 0 ? 0 : 2]), token, { mode }).then(() => 'connected', (err: Error) => err.message);
      assert.match(answer, /^HTTP 403/, 'a token of a closed tunnel is refused');
    }
  }
});

test('node 3, holding the source, is killed: its lease runs out, the tunnel and its destination stay', async () => {
  const one = api(nodes[0]);
  type State = { tunnel: { status: string; sourceConnectionState: { status: string }; destinationConnectionState: { status: string } } };
  assert.is((await one.call<State>('DescribeTunnel', { tunnelId: opened.tunnelId })).tunnel.sourceConnectionState.status, 'CONNECTED');
  // Redis announces the key of the lease running out (keyspace notifications, switched on here).
  const events = new Redis(redis.url, { lazyConnect: true });
  await events.connect();
  await events.config('SET', 'notify-keyspace-events', 'Ex');
  const holderKey = `localproxy:h:${opened.tunnelId}:source`;
  const expired = new Promise<void>((resolve) => events.on('message', (_channel: string, key: string) => { if (key === holderKey) resolve(); }));
  await events.subscribe('__keyevent@0__:expired');
  try {
    await nodes[2].stop('SIGKILL');
    await within(expired, 15_000, 'the dead node\'s lease on the source ran out');
  } finally {
    events.disconnect();
  }
  const state = await one.call<State>('DescribeTunnel', { tunnelId: opened.tunnelId });
  assert.is(state.tunnel.sourceConnectionState.status, 'DISCONNECTED', 'the dead node\'s lease ran out');
  assert.is(state.tunnel.status, 'OPEN', 'no tunnel is lost with its node');
  assert.is(state.tunnel.destinationConnectionState.status, 'CONNECTED', 'the destination, on node 1, is untouched');
});

test.run();
