/**
 * End to end, nothing handed to the device: mosquitto (TLS, client certificates required),
 * `localproxy relay --mqtt-url` and `localproxy agent` as processes of the built CLI, a real sshd
 * behind the agent. The AWS SDK opens a tunnel for thing pi1; the relay notifies pi1; the agent
 * starts the destination; a source proxy and a real `ssh` command go through. A rotated
 * destination token reaches the agent the same way.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent as HttpsAgent } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IoTSecureTunnelingClient, ListTunnelsCommand, OpenTunnelCommand, RotateTunnelAccessTokenCommand } from '@aws-sdk/client-iotsecuretunneling';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { defaultSettings } from '../../src/settings';
import { startProxy, type LocalProxy } from '../../src/tunnel/proxy';
import { CLI } from '../helpers/child';
import { testLogger } from '../helpers/tunnel';
import { freePort, within } from '../helpers/wait';
import { Broker, TestPki } from './broker';

const CREDENTIALS = { accessKeyId: 'AKIDAGENTE2E', secretAccessKey: 'agent-e2e-secret-key-0123456789' };

/** A process of the built CLI whose output is awaited. */
class Cli {
  readonly child: ChildProcess;
  output = '';
  readonly exited: Promise<number | null>;

  constructor(readonly name: string, args: string[], env: NodeJS.ProcessEnv = {}) {
    this.child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const onData = (d: Buffer) => {
      this.output += d.toString();
      if (process.env.LOCALPROXY_TEST_LOG) process.stderr.write(`${name}: ${d}`);
      this.child.emit('output');
    };
    this.child.stdout!.on('data', onData);
    this.child.stderr!.on('data', onData);
    this.exited = once(this.child, 'exit').then(([code]) => code as number | null);
  }

  waitFor(pattern: RegExp, ms: number, what: string): Promise<RegExpMatchArray> {
    const found = new Promise<RegExpMatchArray>((resolve, reject) => {
      const check = () => {
        const match = pattern.exec(this.output);
        if (match) {
          this.child.off('output', check);
          resolve(match);
        }
      };
      this.child.on('output', check);
      void this.exited.then((code) => reject(new Error(`${this.name} exited (${code}) before: ${what}\n${this.output}`)));
      check();
    });
    found.catch(() => {});
    return within(found, ms, `${what} (${this.name} output:\n${this.output.slice(-3000)})`);
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }
}

function run(command: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { timeout: timeoutMs, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${command} failed: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
  });
}

interface Ctx {
  dir: string;
  pki: TestPki;
  broker: Broker;
  sshd: ChildProcess;
  sshdPort: number;
  relay: Cli;
  relayPort: number;
  relayCa: string;
  agent: Cli;
  sdk: IoTSecureTunnelingClient;
  https: HttpsAgent;
  sources: LocalProxy[];
}

const test = suite<Ctx>('agent e2e: open-tunnel for a thing, the relay notifies over MQTT, ssh through the agent');

function sshOptions(ctx: Ctx): string[] {
  return ['-F', '/dev/null', '-i', join(ctx.dir, 'id_ed25519'), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR'];
}

async function startSshd(ctx: Ctx): Promise<void> {
  // sshd refuses to start without its privilege separation directory.
  mkdirSync('/run/sshd', { recursive: true });
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(ctx.dir, 'host_ed25519')], 10_000);
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(ctx.dir, 'id_ed25519')], 10_000);
  ctx.sshdPort = await freePort();
  writeFileSync(join(ctx.dir, 'sshd_config'), [
    `Port ${ctx.sshdPort}`,
    'ListenAddress 127.0.0.1',
    `HostKey ${join(ctx.dir, 'host_ed25519')}`,
    `AuthorizedKeysFile ${join(ctx.dir, 'id_ed25519.pub')}`,
    `PidFile ${join(ctx.dir, 'sshd.pid')}`,
    'StrictModes no',
    'UsePAM no',
    'PermitRootLogin prohibit-password',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    '',
  ].join('\n'));
  ctx.sshd = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', join(ctx.dir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  const listening = new Promise<void>((resolve, reject) => {
    ctx.sshd.stderr!.on('data', (data: Buffer) => {
      log += data.toString();
      if (log.includes('Server listening on 127.0.0.1')) resolve();
    });
    ctx.sshd.once('exit', (code) => reject(new Error(`sshd exited with ${code}: ${log}`)));
  });
  await within(listening, 10_000, 'sshd listening');
}

/** A source proxy for `token` (in-process; the relay's certificate trusted); resolves with its SSH port. */
async function source(ctx: Ctx, token: string): Promise<number> {
  const proxy = startProxy({
    mode: 'source',
    accessToken: token,
    endpoint: { host: '127.0.0.1', port: ctx.relayPort },
    services: new Map([['SSH', { kind: 'tcp', port: 0 }]]),
    ca: [ctx.relayCa],
    settings: defaultSettings(),
    log: testLogger('source'),
  });
  ctx.sources.push(proxy);
  await within(proxy.ready, 15_000, 'source ready');
  return proxy.ports().get('SSH')!;
}

test.before(async (ctx) => {
  ctx.dir = mkdtempSync(join(tmpdir(), 'localproxy-agent-e2e-'));
  ctx.sources = [];
  ctx.pki = await new TestPki().init();
  ctx.broker = await Broker.start(ctx.pki);
  await startSshd(ctx);
  const relayCert = await ctx.pki.issue('relay');
  const device = await ctx.pki.issue('pi1');
  const relayDir = join(ctx.dir, 'relay');
  ctx.relay = new Cli('relay', ['relay', '--listen', '127.0.0.1:0', '--tls-self-signed', relayDir,
    '--mqtt-url', ctx.broker.url, '--mqtt-cert', relayCert.certFile, '--mqtt-key', relayCert.keyFile, '--mqtt-ca', ctx.pki.caFile], {
    LOCALPROXY_RELAY_ACCESS_KEY_ID: CREDENTIALS.accessKeyId,
    LOCALPROXY_RELAY_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey,
  });
  const [, port] = await ctx.relay.waitFor(/listening on wss:\/\/127\.0\.0\.1:(\d+)/, 15_000, 'relay listening');
  ctx.relayPort = Number(port);
  ctx.relayCa = readFileSync(join(relayDir, 'cert.pem'), 'utf8');
  await ctx.relay.waitFor(/mqtt: connected to mqtts:\/\/127\.0\.0\.1:\d+ as localproxy-relay-[0-9a-f]{8}/, 15_000, 'relay connected to the broker');
  // The agent gets no token: only its broker identity, its services and where the relay is.
  ctx.agent = new Cli('agent', ['agent', '--mqtt-url', ctx.broker.url, '--thing-name', 'pi1',
    '--mqtt-cert', device.certFile, '--mqtt-key', device.keyFile, '--mqtt-ca', ctx.pki.caFile,
    '--service', `SSH=${ctx.sshdPort}`, '-e', `127.0.0.1:${ctx.relayPort}`, '-c', relayDir]);
  await ctx.agent.waitFor(/subscribed to \$aws\/things\/pi1\/tunnels\/notify/, 15_000, 'agent subscribed');
  ctx.https = new HttpsAgent({ ca: ctx.relayCa, keepAlive: false });
  ctx.sdk = new IoTSecureTunnelingClient({
    region: 'us-east-1', endpoint: `https://127.0.0.1:${ctx.relayPort}`, credentials: CREDENTIALS, maxAttempts: 1,
    requestHandler: new NodeHttpHandler({ httpsAgent: ctx.https }),
  });
});

test.after(async (ctx) => {
  await Promise.all(ctx.sources.map((s) => s.close()));
  ctx.sdk?.destroy();
  ctx.https?.destroy();
  if (ctx.agent) assert.is(await ctx.agent.stop('SIGTERM'), 0, 'the agent exits 0 on SIGTERM');
  if (ctx.relay) assert.is(await ctx.relay.stop('SIGTERM'), 0, 'the relay exits 0 on SIGTERM');
  if (ctx.sshd && ctx.sshd.exitCode === null) {
    ctx.sshd.kill('SIGTERM');
    await once(ctx.sshd, 'exit');
  }
  await ctx.broker?.stop();
  ctx.pki?.remove();
  if (ctx.dir) rmSync(ctx.dir, { recursive: true, force: true });
});

test('open-tunnel for pi1 (AWS SDK) → notification → the agent\'s destination → ssh runs a command', async (ctx) => {
  const opened = await ctx.sdk.send(new OpenTunnelCommand({ destinationConfig: { thingName: 'pi1', services: ['SSH'] }, timeoutConfig: { maxLifetimeTimeoutMinutes: 10 } }));
  await ctx.relay.waitFor(/notified thing pi1/, 10_000, 'relay notified pi1');
  await ctx.agent.waitFor(/tunnel 1: Successfully established websocket connection/, 15_000, 'agent destination connected');
  const port = await source(ctx, opened.sourceAccessToken!);
  const out = await run('ssh', ['-p', String(port), ...sshOptions(ctx), 'root@127.0.0.1', 'echo hello from pi1'], 30_000);
  assert.is(out, 'hello from pi1\n');
  for (const token of [opened.destinationAccessToken!, opened.sourceAccessToken!]) {
    assert.not.ok(ctx.agent.output.includes(token), 'no token in the agent output');
    assert.not.ok(ctx.relay.output.includes(token), 'no token in the relay output');
  }
});

test('RotateTunnelAccessToken DESTINATION: the new token reaches the agent, which reconnects; ssh works again', async (ctx) => {
  const before = ctx.agent.output.length;
  const { tunnelSummaries } = await ctx.sdk.send(new ListTunnelsCommand({ thingName: 'pi1' }));
  const tunnelId = tunnelSummaries![0].tunnelId!;
  const rotated = await ctx.sdk.send(new RotateTunnelAccessTokenCommand({ tunnelId, clientMode: 'DESTINATION' }));
  await ctx.agent.waitFor(/tunnel 2: Successfully established websocket connection/, 15_000, 'agent reconnected with the rotated token');
  assert.match(ctx.agent.output.slice(before), /tunnel 1: ended/);
  const port = ctx.sources[0].ports().get('SSH')!;
  const out = await run('ssh', ['-p', String(port), ...sshOptions(ctx), 'root@127.0.0.1', 'echo again'], 30_000);
  assert.is(out, 'again\n');
  assert.not.ok(ctx.agent.output.includes(rotated.destinationAccessToken!), 'no rotated token in the agent output');
});

test.run();
