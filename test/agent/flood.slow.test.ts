/**
 * A flood on the thing's notify topic: whoever may publish there sends thousands of well-formed
 * notifications with tokens the relay refuses. `localproxy agent` (a process of the built CLI,
 * behind a real mosquitto with TLS client certificates, `-c` a directory of ~150 CA files) must
 * keep its file descriptors, memory and log lines bounded, stop loading CA files for tunnels it
 * closed, and still serve the legitimate tunnel that comes after the flood.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter, once } from 'node:events';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Logger } from '../../src/log';
import { connectBroker, type BrokerLink } from '../../src/mqtt/link';
import { encodeNotification, notificationTopic } from '../../src/mqtt/notification';
import type { PeerEvent } from '../../src/relay/link';
import { startRelay } from '../../src/relay/server';
import { startProxy } from '../../src/tunnel/proxy';
import { echoServer, sendPattern, type AppServer } from '../helpers/apps';
import { CLI } from '../helpers/child';
import { proxyOptions, testLogger, type LocalProxy, type Relay } from '../helpers/tunnel';
import { waitUntil, within } from '../helpers/wait';
import { Broker, TestPki } from './broker';

const FLOOD = 5000;
const THING = 'flood1';
/** What the agent may reach at worst during the flood (before the bounds: ~4,300 fds, RSS past 1.3 GB). */
const MAX_FDS = 60;
const MAX_RSS_MIB = 200;
/** Lines the agent may write for the whole flood (before: four lines per notification and more). */
const MAX_LINES = 1000;

interface Ctx {
  dir: string;
  pki: TestPki;
  broker: Broker;
  relay: Relay;
  events: EventEmitter;
  echo: AppServer;
  publisher: BrokerLink;
  agent: ChildProcess;
  output: string;
  source?: LocalProxy;
}

const test = suite<Ctx>('agent: a flood of notifications is absorbed with bounded resources');

/** Open file descriptors and resident memory of a live process, from /proc. */
function usage(pid: number): { fds: number; rssMiB: number } {
  const rss = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return { fds: readdirSync(`/proc/${pid}/fd`).length, rssMiB: Number(rss?.[1] ?? 0) / 1024 };
}

/** A CA directory as an operator's `-c` may be: the relay's certificate among the system's. */
function caDirectory(dir: string, relayCa: string): string {
  const ca = join(dir, 'ca');
  mkdirSync(ca);
  writeFileSync(join(ca, 'relay.pem'), relayCa);
  const system = readdirSync('/etc/ssl/certs').filter((name) => name.endsWith('.pem')).slice(0, 150);
  for (const name of system) copyFileSync(join('/etc/ssl/certs', name), join(ca, name));
  return ca;
}

test.before(async (ctx) => {
  ctx.dir = mkdtempSync(join(tmpdir(), 'localproxy-agent-flood-'));
  ctx.pki = await new TestPki().init();
  // The broker queues the whole flood for the agent instead of dropping past its default 1,000.
  ctx.broker = await Broker.start(ctx.pki, { extra: ['max_queued_messages 20000'] });
  ctx.events = new EventEmitter();
  ctx.relay = await startRelay({ port: 0, tls: 'self-signed', log: testLogger('relay'), onEvent: (event: PeerEvent) => ctx.events.emit('peer', event) });
  ctx.echo = await echoServer();
  const device = await ctx.pki.issue(THING);
  const publisherCert = await ctx.pki.issue('flooder');
  ctx.publisher = connectBroker({ url: ctx.broker.url, clientId: 'flooder', cert: publisherCert.cert, key: publisherCert.key, ca: ctx.pki.caPem, log: new Logger({ level: 0 }) });
  await ctx.broker.waitFor(/as flooder/, 10_000, 'publisher connected');
  ctx.output = '';
  // XDG_STATE_HOME, not --state-dir: the same command line runs an agent without a state file.
  ctx.agent = spawn(process.execPath, [CLI, 'agent', '--mqtt-url', ctx.broker.url, '--thing-name', THING,
    '--mqtt-cert', device.certFile, '--mqtt-key', device.keyFile, '--mqtt-ca', ctx.pki.caFile,
    '--service', `SSH=${ctx.echo.port}`, '-e', `127.0.0.1:${ctx.relay.port}`, '-c', caDirectory(ctx.dir, ctx.relay.caPem!)],
  { env: { ...process.env, XDG_STATE_HOME: join(ctx.dir, 'state') }, stdio: ['ignore', 'ignore', 'pipe'] });
  ctx.agent.stderr!.on('data', (d: Buffer) => {
    ctx.output += d.toString();
    if (process.env.LOCALPROXY_TEST_LOG) process.stderr.write(`agent: ${d}`);
    ctx.agent.emit('output');
  });
  await waitUntil(ctx.agent, 'output', () => /subscribed to \$aws\/things\/flood1\/tunnels\/notify/.test(ctx.output), 15_000, 'agent subscribed');
});

test.after(async (ctx) => {
  await ctx.source?.close();
  if (ctx.agent && ctx.agent.exitCode === null) {
    ctx.agent.kill('SIGTERM');
    await within(once(ctx.agent, 'exit'), 15_000, 'agent exit');
  }
  await ctx.publisher?.close();
  await ctx.broker?.stop();
  await ctx.relay?.close();
  await ctx.echo?.close();
  ctx.pki?.remove();
  if (ctx.dir) rmSync(ctx.dir, { recursive: true, force: true });
});

test(`${FLOOD} notifications: fds, RSS and log lines stay bounded; the legitimate tunnel after them is served`, async (ctx) => {
  const pid = ctx.agent.pid!;
  const before = usage(pid);
  const peak = { ...before };
  // Sampling, not synchronisation: the peaks are what the bounds are checked against.
  const sampler = setInterval(() => {
    const now = usage(pid);
    peak.fds = Math.max(peak.fds, now.fds);
    peak.rssMiB = Math.max(peak.rssMiB, now.rssMiB);
  }, 20);
  const mark = ctx.broker.log.length;
  const linesBefore = ctx.output.split('\n').length;
  try {
    const topic = notificationTopic(THING);
    const published: Promise<void>[] = [];
    for (let i = 0; i < FLOOD; i++) {
      const token = `AQG${randomBytes(150).toString('base64url')}`;
      published.push(ctx.publisher.publish(topic, encodeNotification({ clientAccessToken: token, clientMode: 'destination', region: 'local', services: ['SSH'] })));
    }
    await within(Promise.all(published), 60_000, 'the flood published');
    // Every notification was handled (and acknowledged) by the agent.
    await ctx.broker.waitForCount(`Received PUBACK from ${THING}`, FLOOD, 120_000, 'the agent acknowledged the whole flood', mark);

    const tunnel = await ctx.relay.openTunnel({ services: ['SSH'] });
    const destination = new Promise<void>((resolve) => {
      const onPeer = (event: PeerEvent) => {
        if (event.type === 'connected' && event.tunnelId === tunnel.tunnelId && event.mode === 'destination') {
          ctx.events.off('peer', onPeer);
          resolve();
        }
      };
      ctx.events.on('peer', onPeer);
    });
    await ctx.publisher.publish(topic, encodeNotification({ clientAccessToken: tunnel.destinationAccessToken, clientMode: 'destination', region: 'local', services: ['SSH'], tunnelId: tunnel.tunnelId }));
    await within(destination, 30_000, 'the agent connected the legitimate tunnel\'s destination');
    ctx.source = startProxy(proxyOptions(ctx.relay, 'source', tunnel.sourceAccessToken, { SSH: { kind: 'tcp', port: 0 } }));
    await within(ctx.source.ready, 15_000, 'source ready');
    const echoed = await within(sendPattern(ctx.source.ports().get('SSH')!, 64 * 1024, { expectEcho: true }), 15_000, 'echo through the legitimate tunnel');
    assert.is(echoed.echo!.sha256, echoed.sha256);
  } finally {
    clearInterval(sampler);
  }
  const lines = ctx.output.split('\n').length - linesBefore;
  if (process.env.LOCALPROXY_TEST_LOG) process.stderr.write(`flood: before ${JSON.stringify(before)}, peak ${JSON.stringify(peak)}, ${lines} lines\n`);
  assert.ok(peak.fds <= MAX_FDS, `at most ${MAX_FDS} fds during the flood (peak ${peak.fds}, ${before.fds} before)`);
  assert.ok(peak.rssMiB <= MAX_RSS_MIB, `RSS at most ${MAX_RSS_MIB} MiB during the flood (peak ${peak.rssMiB.toFixed(0)} MiB, ${before.rssMiB.toFixed(0)} before)`);
  assert.ok(lines <= MAX_LINES, `at most ${MAX_LINES} log lines for the flood (${lines})`);
  // The newest notification wins: most of the flood never started a tunnel.
  assert.match(ctx.output, /dropped before it started: newer notifications came faster than tunnels could be started/);
  assert.ok(ctx.output.split('starting for SSH').length - 1 < FLOOD / 10, 'starts are paced');
});

test.run();
