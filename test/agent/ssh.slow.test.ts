/**
 * End to end, nothing handed to the device: mosquitto (TLS, client certificates required,
 * persistence on disk), `localproxy relay --mqtt-url` and `localproxy agent` as processes of the
 * built CLI, a real sshd behind the agent. The AWS SDK opens a tunnel for thing pi1; the relay
 * notifies pi1; the agent starts the destination; a source proxy and a real `ssh` command go
 * through. A rotated destination token reaches the agent the same way. The agent survives its
 * own restarts (SIGTERM and SIGKILL), a tunnel opened while it is stopped, and a restart of the
 * broker; a closed tunnel leaves its state file.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, watch, writeFileSync } from 'node:fs';
import { Agent as HttpsAgent } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CloseTunnelCommand, IoTSecureTunnelingClient, OpenTunnelCommand, RotateTunnelAccessTokenCommand } from '@aws-sdk/client-iotsecuretunneling';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { defaultSettings } from '../../src/settings';
import { startProxy, type LocalProxy } from '../../src/tunnel/proxy';
import { CLI } from '../helpers/child';
import { testLogger } from '../helpers/tunnel';
import { freePort, within } from '../helpers/wait';
import { Broker, TestPki, type Credential } from './broker';

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

  /** Resolves with the first match of `pattern` in the output after offset `from`. */
  waitFor(pattern: RegExp, ms: number, what: string, from = 0): Promise<RegExpMatchArray> {
    const found = new Promise<RegExpMatchArray>((resolve, reject) => {
      const check = () => {
        const match = pattern.exec(this.output.slice(from));
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
  relayDir: string;
  device: Credential;
  stateDir: string;
  agent: Cli;
  /** The tunnel the agent serves now, and the SSH port of its source. */
  tunnelId: string;
  port: number;
  destinationToken: string;
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

/** Opens a tunnel for pi1 through the management API, with a source for it. */
async function openForPi1(ctx: Ctx): Promise<{ tunnelId: string; destinationToken: string; port: number }> {
  const opened = await ctx.sdk.send(new OpenTunnelCommand({ destinationConfig: { thingName: 'pi1', services: ['SSH'] }, timeoutConfig: { maxLifetimeTimeoutMinutes: 10 } }));
  const port = await source(ctx, opened.sourceAccessToken!);
  return { tunnelId: opened.tunnelId!, destinationToken: opened.destinationAccessToken!, port };
}

function sshEcho(ctx: Ctx, port: number, text: string): Promise<string> {
  return run('ssh', ['-p', String(port), ...sshOptions(ctx), 'root@127.0.0.1', `echo ${text}`], 30_000);
}

function startAgentProcess(ctx: Ctx): Cli {
  // The agent gets no token: only its broker identity, its services, where the relay is, and where to keep its state.
  ctx.agent = new Cli('agent', ['agent', '--mqtt-url', ctx.broker.url, '--thing-name', 'pi1',
    '--mqtt-cert', ctx.device.certFile, '--mqtt-key', ctx.device.keyFile, '--mqtt-ca', ctx.pki.caFile,
    '--service', `SSH=${ctx.sshdPort}`, '-e', `127.0.0.1:${ctx.relayPort}`, '-c', ctx.relayDir, '--state-dir', ctx.stateDir]);
  return ctx.agent;
}

function keptTokens(ctx: Ctx): string[] {
  const state = JSON.parse(readFileSync(join(ctx.stateDir, 'agent-pi1.json'), 'utf8')) as { tunnels: Array<{ accessToken: string }> };
  return state.tunnels.map((t) => t.accessToken);
}

/** A tunnel that comes to the agent while it runs: serves ssh, and becomes the current one. */
async function serveNewTunnel(ctx: Ctx, what: string): Promise<void> {
  const mark = ctx.agent.output.length;
  const opened = await openForPi1(ctx);
  await ctx.agent.waitFor(new RegExp(`tunnel ${opened.tunnelId}: Successfully established websocket connection`), 20_000, `${what}: the agent serves the new tunnel`, mark);
  assert.is(await sshEcho(ctx, opened.port, what.replace(/\W+/g, '-')), `${what.replace(/\W+/g, '-')}\n`);
  Object.assign(ctx, opened);
}

/** Stops the agent with `signal`, starts it again, and checks that ssh works within 15 s of the start. */
async function restartAgent(ctx: Ctx, signal: NodeJS.Signals): Promise<void> {
  const code = await ctx.agent.stop(signal);
  assert.is(code, signal === 'SIGTERM' ? 0 : null, `the agent's exit after ${signal}`);
  assert.equal(keptTokens(ctx), [ctx.destinationToken], 'the stopped agent kept its tunnel');
  const started = Date.now();
  const agent = startAgentProcess(ctx);
  await agent.waitFor(new RegExp(`tunnel ${ctx.tunnelId}: starting \\(resumed from the state file\\)`), 15_000, 'the agent resumes the kept tunnel');
  await agent.waitFor(new RegExp(`tunnel ${ctx.tunnelId}: Successfully established websocket connection`), 15_000, 'the resumed destination connects');
  assert.is(await sshEcho(ctx, ctx.port, `after-${signal}`), `after-${signal}\n`);
  const elapsed = Date.now() - started;
  assert.ok(elapsed < 15_000, `ssh works ${elapsed} ms after the restart (at most 15 s)`);
  assert.not.match(agent.output, /Invalid access token|already used|client token does not match/);
}

test.before(async (ctx) => {
  ctx.dir = mkdtempSync(join(tmpdir(), 'localproxy-agent-e2e-'));
  ctx.stateDir = join(ctx.dir, 'agent-state');
  ctx.sources = [];
  ctx.pki = await new TestPki().init();
  const brokerDir = join(ctx.dir, 'mosquitto');
  mkdirSync(brokerDir);
  ctx.broker = await Broker.start(ctx.pki, { persistenceDir: brokerDir });
  await startSshd(ctx);
  const relayCert = await ctx.pki.issue('relay');
  ctx.device = await ctx.pki.issue('pi1');
  ctx.relayDir = join(ctx.dir, 'relay');
  ctx.relay = new Cli('relay', ['relay', '--listen', '127.0.0.1:0', '--tls-self-signed', ctx.relayDir,
    '--mqtt-url', ctx.broker.url, '--mqtt-cert', relayCert.certFile, '--mqtt-key', relayCert.keyFile, '--mqtt-ca', ctx.pki.caFile], {
    LOCALPROXY_RELAY_ACCESS_KEY_ID: CREDENTIALS.accessKeyId,
    LOCALPROXY_RELAY_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey,
  });
  const [, port] = await ctx.relay.waitFor(/listening on wss:\/\/127\.0\.0\.1:(\d+)/, 15_000, 'relay listening');
  ctx.relayPort = Number(port);
  ctx.relayCa = readFileSync(join(ctx.relayDir, 'cert.pem'), 'utf8');
  await ctx.relay.waitFor(/mqtt: connected to mqtts:\/\/127\.0\.0\.1:\d+ as localproxy-relay-[0-9a-f]{8}/, 15_000, 'relay connected to the broker');
  await startAgentProcess(ctx).waitFor(/subscribed to \$aws\/things\/pi1\/tunnels\/notify/, 15_000, 'agent subscribed');
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

test('open-tunnel for pi1 (AWS SDK) → notification → the agent\'s destination, named by its tunnel id → ssh runs a command', async (ctx) => {
  const opened = await openForPi1(ctx);
  await ctx.relay.waitFor(new RegExp(`notified thing pi1 of tunnel ${opened.tunnelId}`), 10_000, 'relay notified pi1');
  await ctx.agent.waitFor(new RegExp(`tunnel ${opened.tunnelId}: starting for SSH = ${ctx.sshdPort} through 127\\.0\\.0\\.1:${ctx.relayPort}`), 15_000, 'agent names the tunnel');
  await ctx.agent.waitFor(new RegExp(`tunnel ${opened.tunnelId}: Successfully established websocket connection`), 15_000, 'agent destination connected');
  assert.is(await sshEcho(ctx, opened.port, 'hello-from-pi1'), 'hello-from-pi1\n');
  Object.assign(ctx, opened);
  assert.equal(keptTokens(ctx), [opened.destinationToken], 'the state file keeps the destination token');
  assert.is(statSync(join(ctx.stateDir, 'agent-pi1.json')).mode & 0o777, 0o600);
  assert.not.ok(ctx.agent.output.includes(opened.destinationToken), 'no token in the agent output');
  assert.not.ok(ctx.relay.output.includes(opened.destinationToken), 'no token in the relay output');
});

test('RotateTunnelAccessToken DESTINATION: the agent calls it a rotation, reconnects with the new token, keeps only it; ssh works again', async (ctx) => {
  const mark = ctx.agent.output.length;
  const rotated = await ctx.sdk.send(new RotateTunnelAccessTokenCommand({ tunnelId: ctx.tunnelId, clientMode: 'DESTINATION' }));
  await ctx.agent.waitFor(new RegExp(`tunnel ${ctx.tunnelId}: starting with the rotated access token`), 15_000, 'agent starts the rotated token', mark);
  await ctx.agent.waitFor(new RegExp(`tunnel ${ctx.tunnelId}: Successfully established websocket connection`), 15_000, 'agent reconnected with the rotated token', mark);
  assert.match(ctx.agent.output.slice(mark), new RegExp(`tunnel ${ctx.tunnelId}: (access token rotated: closing the connection that uses the old one|ended: its access token was rotated)`));
  assert.not.match(ctx.agent.output.slice(mark), /closing it for tunnel/, 'a rotation is not a new tunnel');
  assert.is(await sshEcho(ctx, ctx.port, 'again'), 'again\n');
  ctx.destinationToken = rotated.destinationAccessToken!;
  assert.equal(keptTokens(ctx), [ctx.destinationToken], 'the rotation replaced what is kept');
  assert.not.ok(ctx.agent.output.includes(ctx.destinationToken), 'no rotated token in the agent output');
});

test('SIGTERM, then a restart: the kept tunnel is resumed with the same client token and ssh works within 15 s', async (ctx) => {
  await restartAgent(ctx, 'SIGTERM');
});

test('SIGKILL, then a restart: the same', async (ctx) => {
  await restartAgent(ctx, 'SIGKILL');
});

test('a tunnel opened while the agent is stopped is served once it starts (the persistent MQTT session kept its notification)', async (ctx) => {
  assert.is(await ctx.agent.stop('SIGTERM'), 0);
  const opened = await openForPi1(ctx);
  await ctx.relay.waitFor(new RegExp(`notified thing pi1 of tunnel ${opened.tunnelId}`), 10_000, 'relay notified pi1 while the agent is away');
  const agent = startAgentProcess(ctx);
  await agent.waitFor(new RegExp(`tunnel ${opened.tunnelId}: Successfully established websocket connection`), 20_000, 'the agent serves the tunnel opened while it was stopped');
  assert.is(await sshEcho(ctx, opened.port, 'opened-while-away'), 'opened-while-away\n');
  Object.assign(ctx, opened);
  await within(waitKept(ctx, [opened.destinationToken]), 10_000, 'only the new tunnel kept (at most 1 at once)');
});

test('mosquitto restarted with persistence: a notification queued across the restart arrives, the running tunnel is untouched, the next one arrives', async (ctx) => {
  // Stopped agent, a tunnel opened, then the broker restarted before the agent comes back.
  assert.is(await ctx.agent.stop('SIGTERM'), 0);
  const opened = await openForPi1(ctx);
  await ctx.relay.waitFor(new RegExp(`notified thing pi1 of tunnel ${opened.tunnelId}`), 10_000, 'relay notified pi1');
  await ctx.broker.stop();
  await ctx.broker.run();
  const agent = startAgentProcess(ctx);
  await agent.waitFor(new RegExp(`tunnel ${opened.tunnelId}: Successfully established websocket connection`), 30_000, 'the notification survived the broker restart');
  assert.is(await sshEcho(ctx, opened.port, 'queued-across-restart'), 'queued-across-restart\n');
  Object.assign(ctx, opened);
  // The broker restarted under a running agent: the tunnel does not depend on it.
  const mark = agent.output.length;
  await ctx.broker.stop();
  await agent.waitFor(/connection to mqtts:\/\/127\.0\.0\.1:\d+ lost; reconnecting/, 15_000, 'the agent saw the broker go', mark);
  assert.is(await sshEcho(ctx, ctx.port, 'broker-down'), 'broker-down\n');
  await ctx.broker.run();
  await agent.waitFor(/subscribed to \$aws\/things\/pi1\/tunnels\/notify/, 60_000, 'the agent is back on the broker', mark);
  await serveNewTunnel(ctx, 'after the broker restart');
});

test('CloseTunnel: the agent\'s tunnel ends and leaves the state file', async (ctx) => {
  const mark = ctx.agent.output.length;
  await ctx.sdk.send(new CloseTunnelCommand({ tunnelId: ctx.tunnelId }));
  await ctx.agent.waitFor(new RegExp(`tunnel ${ctx.tunnelId}: ended`), 15_000, 'the agent\'s tunnel ended', mark);
  await within(waitKept(ctx, []), 10_000, 'nothing kept');
});

/**
 * Resolves once the state file holds exactly `tokens`. Checked whenever the state directory
 * changes (the agent renames a new file into place) or the agent prints: the agent may log a
 * tunnel's end before it has written the file, and print nothing after it.
 */
async function waitKept(ctx: Ctx, tokens: string[]): Promise<void> {
  const same = (): boolean => {
    try {
      return JSON.stringify(keptTokens(ctx)) === JSON.stringify(tokens);
    } catch {
      return false;   // between the agent's write and its rename
    }
  };
  const watcher = watch(ctx.stateDir);
  const child = ctx.agent.child;
  let check = (): void => {};
  try {
    await within(new Promise<void>((resolve) => {
      check = () => {
        if (same()) resolve();
      };
      watcher.on('change', check);
      child.on('output', check);
      check();
    }), 10_000, `kept ${tokens.length} token(s)`);
  } finally {
    watcher.close();
    child.off('output', check);
  }
}

test.run();
