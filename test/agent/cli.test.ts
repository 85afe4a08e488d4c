/**
 * `localproxy agent` as a process (the built CLI): usage errors exit 2 with one line; a running
 * agent serves a notified tunnel and, on SIGTERM, closes it and exits 0.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { connectBroker, type BrokerLink } from '../../src/mqtt/link';
import { encodeNotification, notificationTopic } from '../../src/mqtt/notification';
import { Logger } from '../../src/log';
import { startProxy } from '../../src/tunnel/proxy';
import { echoServer, sendPattern, type AppServer } from '../helpers/apps';
import { caDir, CLI } from '../helpers/child';
import { proxyOptions, startRelayForTests, type Relay } from '../helpers/tunnel';
import { freePort, within } from '../helpers/wait';
import { Broker, TestPki, type Credential } from './broker';

interface Ctx {
  pki: TestPki;
  broker: Broker;
  relay: Relay;
  relayCa: ReturnType<typeof caDir>;
  echo: AppServer;
  device: Credential;
  publisher: BrokerLink;
  dir: string;
  agents: number;
}

const test = suite<Ctx>('agent: the `localproxy agent` command');
/** The version the built CLI carries (build.mjs takes it from package.json). */
const PACKAGE_VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

function run(args: string[], ms = 15_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, 'agent', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => { stdout += d; });
  child.stderr!.on('data', (d: Buffer) => { stderr += d; });
  return within(once(child, 'close').then(([code]) => ({ code: code as number | null, stdout, stderr })), ms, `localproxy agent ${args.join(' ')}`);
}

/** A running agent whose output can be awaited. */
class AgentProcess {
  readonly child: ChildProcess;
  output = '';
  private readonly exited: Promise<number | null>;

  constructor(args: string[], env: NodeJS.ProcessEnv = {}) {
    this.child = spawn(process.execPath, [CLI, 'agent', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const onData = (d: Buffer) => {
      this.output += d.toString();
      if (process.env.LOCALPROXY_TEST_LOG) process.stderr.write(`agent: ${d}`);
      this.child.emit('output');
    };
    this.child.stdout!.on('data', onData);
    this.child.stderr!.on('data', onData);
    this.exited = once(this.child, 'exit').then(([code]) => code as number | null);
  }

  waitFor(pattern: RegExp, ms: number, what: string): Promise<void> {
    const found = new Promise<void>((resolve, reject) => {
      const check = () => {
        if (pattern.test(this.output)) {
          this.child.off('output', check);
          resolve();
        }
      };
      this.child.on('output', check);
      void this.exited.then((code) => reject(new Error(`agent exited (${code}) before: ${what}\n${this.output}`)));
      check();
    });
    found.catch(() => {});
    return within(found, ms, `${what} (agent output:\n${this.output})`);
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM', ms = 10_000): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return within(this.exited, ms, `agent exit after ${signal}`);
  }
}

test.before(async (ctx) => {
  ctx.pki = await new TestPki().init();
  ctx.broker = await Broker.start(ctx.pki);
  ctx.relay = await startRelayForTests();
  ctx.relayCa = caDir(ctx.relay);
  ctx.echo = await echoServer();
  ctx.device = await ctx.pki.issue('pi1');
  const publisher = await ctx.pki.issue('relay');
  ctx.publisher = connectBroker({ url: ctx.broker.url, clientId: 'test-publisher', cert: publisher.cert, key: publisher.key, ca: ctx.pki.caPem, log: new Logger({ level: 0 }) });
  await ctx.broker.waitFor(/as test-publisher/, 10_000, 'publisher connected');
  ctx.dir = mkdtempSync(join(tmpdir(), 'localproxy-agent-cli-'));
  ctx.agents = 0;
});

test.after(async (ctx) => {
  await ctx.publisher?.close();
  await ctx.broker?.stop();
  await ctx.relay?.close();
  ctx.relayCa?.remove();
  await ctx.echo?.close();
  ctx.pki?.remove();
  if (ctx.dir) rmSync(ctx.dir, { recursive: true, force: true });
});

/** A state directory of its own for each agent started, so none resumes another's tunnels. */
function stateDir(ctx: Ctx): string {
  return join(ctx.dir, `state-${++ctx.agents}`);
}

function deviceArgs(ctx: Ctx, extra: string[] = [], state = stateDir(ctx)): string[] {
  return [
    '--state-dir', state,
    '--mqtt-url', ctx.broker.url, '--thing-name', 'pi1',
    '--mqtt-cert', ctx.device.certFile, '--mqtt-key', ctx.device.keyFile, '--mqtt-ca', ctx.pki.caFile,
    '--service', `SSH=${ctx.echo.port}`,
    '-e', `127.0.0.1:${ctx.relay.port}`, '-c', ctx.relayCa.dir,
    ...extra,
  ];
}

const USAGE_CASES: Array<[string, string[], RegExp]> = [
  ['no --mqtt-url', ['--thing-name', 'pi1', '--service', 'SSH=22'], /--mqtt-url is required/],
  ['an http:// URL', ['--mqtt-url', 'http://broker:80', '--thing-name', 'pi1', '--service', 'SSH=22'], /the scheme must be mqtts:\/\//],
  ['credentials in the URL', ['--mqtt-url', 'mqtts://user:secret@broker', '--thing-name', 'pi1', '--service', 'SSH=22'], /user names and passwords are not supported/],
  ['no --thing-name', ['--mqtt-url', 'mqtts://broker', '--service', 'SSH=22'], /--thing-name is required/],
  ['a wildcard in the thing name', ['--mqtt-url', 'mqtts://broker', '--thing-name', 'pi/#', '--service', 'SSH=22'], /invalid --thing-name 'pi\/#'/],
  ['no services', ['--mqtt-url', 'mqtts://broker', '--thing-name', 'pi1'], /no services to serve/],
  ['a bare port for --service', ['--mqtt-url', 'mqtts://broker', '--thing-name', 'pi1', '--service', '22'], /--service takes ID=TARGET items/],
  ['a bad target', ['--mqtt-url', 'mqtts://broker', '--thing-name', 'pi1', '--service', 'SSH=host:'], /Endpoint has no port after ':'/],
  ['--mqtt-cert without --mqtt-key', ['--mqtt-url', 'mqtts://broker', '--thing-name', 'pi1', '--service', 'SSH=22', '--mqtt-cert', '/etc/hostname'], /must be given together/],
  ['an unreadable certificate', ['--mqtt-url', 'mqtts://broker', '--thing-name', 'pi1', '--service', 'SSH=22', '--mqtt-ca', '/nonexistent/ca.pem'], /cannot read --mqtt-ca '\/nonexistent\/ca\.pem': ENOENT/],
  ['a client certificate over mqtt://', ['--mqtt-url', 'mqtt://broker', '--thing-name', 'pi1', '--service', 'SSH=22', '--mqtt-cert', '/etc/hostname', '--mqtt-key', '/etc/hostname'], /a client certificate needs TLS: use an mqtts:\/\/ URL/],
  ['--max-tunnels 0', ['--mqtt-url', 'mqtts://broker', '--thing-name', 'pi1', '--service', 'SSH=22', '--max-tunnels', '0'], /invalid --max-tunnels '0': expected 1-64/],
  ['a missing --config-dir', ['--mqtt-url', 'mqtts://broker', '--thing-name', 'pi1', '--config-dir', '/nonexistent/dir'], /Invalid configuration directory: \/nonexistent\/dir \(does not exist\)/],
  ['a bad endpoint', ['--mqtt-url', 'mqtts://broker', '--thing-name', 'pi1', '--service', 'SSH=22', '-e', 'a b'], /Proxy endpoint contains invalid characters/],
  ['an unknown flag', ['--mqtt-url', 'mqtts://broker', '--thing-name', 'pi1', '--service', 'SSH=22', '--no-such-flag'], /unrecognised option '--no-such-flag'/],
  ['--state-dir a file', ['--mqtt-url', 'mqtts://broker', '--thing-name', 'pi1', '--service', 'SSH=22', '--state-dir', '/etc/hostname'], /--state-dir \/etc\/hostname is not a directory/],
  ['--service twice', ['--mqtt-url', 'mqtts://broker', '--thing-name', 'pi1', '--service', 'SSH=22', '--service', 'HTTP=80'], /option '--service' cannot be specified more than once/],
];

test('usage errors: one line naming the problem, exit 2, no stack trace', async () => {
  for (const [what, args, expected] of USAGE_CASES) {
    const result = await run(args);
    assert.is(result.code, 2, `${what}: exit code\n${result.stderr}`);
    assert.match(result.stderr, expected, what);
    assert.is(result.stderr.trim().split('\n').length, 1, `${what}: one line\n${result.stderr}`);
    assert.not.match(result.stderr, /\n\s+at /, `${what}: no stack trace`);
  }
});

test('--help lists the flags and exits 0', async () => {
  const result = await run(['--help']);
  assert.is(result.code, 0);
  for (const flag of ['--mqtt-url', '--thing-name', '--mqtt-cert', '--service', '--config-dir', '--max-tunnels', '--state-dir', '--proxy-endpoint', '--capath', '--no-ssl-host-verify']) {
    assert.ok(result.stdout.includes(flag), flag);
  }
});

test('a --config-dir mapping serves a notified tunnel; SIGTERM closes it and exits 0; no token in the output', async (ctx) => {
  const services = join(ctx.dir, 'services');
  mkdirSync(services);
  writeFileSync(join(services, 'device.ini'), `# services of this device\nSSH = 127.0.0.1:${ctx.echo.port}\n`);
  const args = deviceArgs(ctx).filter((a, i, all) => a !== '--service' && all[i - 1] !== '--service');
  const agent = new AgentProcess([...args, '--config-dir', services]);
  try {
    await agent.waitFor(/subscribed to \$aws\/things\/pi1\/tunnels\/notify/, 15_000, 'agent subscribed');
    const tunnel = await ctx.relay.openTunnel({ services: ['SSH'] });
    await ctx.publisher.publish(notificationTopic('pi1'), encodeNotification({ clientAccessToken: tunnel.destinationAccessToken, clientMode: 'destination', region: 'local', services: ['SSH'] }));
    await agent.waitFor(/tunnel #1: Successfully established websocket connection/, 15_000, 'tunnel #1 connected');
    const source = startProxy(proxyOptions(ctx.relay, 'source', tunnel.sourceAccessToken, { SSH: { kind: 'tcp', port: 0 } }));
    try {
      await within(source.ready, 10_000, 'source ready');
      const result = await within(sendPattern(source.ports().get('SSH')!, 256 * 1024, { expectEcho: true }), 15_000, 'echo');
      assert.is(result.echo!.sha256, result.sha256);
      const code = await agent.stop('SIGTERM');
      assert.is(code, 0, agent.output);
      assert.match(agent.output, /Received SIGTERM, closing 1 tunnel and stopping/);
      assert.match(agent.output, /tunnel #1: ended \(exit code 0: closed\)/);
      assert.not.ok(agent.output.includes(tunnel.destinationAccessToken), 'no destination token in the output');
    } finally {
      await source.close();
    }
  } finally {
    await agent.stop('SIGKILL');
  }
});

test('-c takes the relay\'s CA file as well as a directory (no warning), and the first line names the version', async (ctx) => {
  const args = deviceArgs(ctx, ['--mqtt-client-id', 'pi1-ca-file']).map((a) => (a === ctx.relayCa.dir ? ctx.relayCa.file : a));
  const agent = new AgentProcess(args);
  try {
    await agent.waitFor(/subscribed to \$aws\/things\/pi1\/tunnels\/notify/, 15_000, 'agent subscribed');
    assert.match(agent.output.split('\n')[0], new RegExp(`localproxy ${PACKAGE_VERSION.replace(/\./g, '\\.')} agent for thing pi1`));
    const tunnel = await ctx.relay.openTunnel({ services: ['SSH'] });
    await ctx.publisher.publish(notificationTopic('pi1'), encodeNotification({ clientAccessToken: tunnel.destinationAccessToken, clientMode: 'destination', region: 'local', services: ['SSH'], tunnelId: tunnel.tunnelId }));
    await agent.waitFor(/Successfully established websocket connection/, 15_000, 'the tunnel connected with the CA file');
    assert.not.match(agent.output, /CA (file or )?directory|only the system CAs/);
    assert.is(await agent.stop('SIGTERM'), 0, agent.output);
  } finally {
    await agent.stop('SIGKILL');
  }
});

test('plain mqtt:// works with a warning; SIGINT exits 0', async (ctx) => {
  const args = ['--state-dir', stateDir(ctx), '--mqtt-url', ctx.broker.plainUrl, '--thing-name', 'pi1', '--mqtt-client-id', 'pi1-plain', '--service', `SSH=${ctx.echo.port}`, '-e', `127.0.0.1:${ctx.relay.port}`, '-c', ctx.relayCa.dir];
  const agent = new AgentProcess(args);
  try {
    await agent.waitFor(/--mqtt-url mqtt:\/\/: no TLS to the broker/, 10_000, 'the plain-text warning');
    await agent.waitFor(/subscribed to \$aws\/things\/pi1\/tunnels\/notify/, 15_000, 'agent subscribed over plain MQTT');
    assert.match(ctx.broker.log, /New client connected from 127\.0\.0\.1:\d+ as pi1-plain/);
    assert.is(await agent.stop('SIGINT'), 0, agent.output);
    assert.match(agent.output, /Received SIGINT, closing 0 tunnels and stopping/);
  } finally {
    await agent.stop('SIGKILL');
  }
});

test('a broker that is not there is retried until SIGTERM, which exits 0', async (ctx) => {
  const url = `mqtts://127.0.0.1:${await freePort()}`;
  const agent = new AgentProcess(deviceArgs(ctx).map((a) => (a === ctx.broker.url ? url : a)));
  try {
    await agent.waitFor(/mqtt: cannot connect to mqtts:\/\/127\.0\.0\.1:\d+ as pi1: .*ECONNREFUSED/, 15_000, 'a refused attempt');
    assert.is(await agent.stop('SIGTERM'), 0, agent.output);
  } finally {
    await agent.stop('SIGKILL');
  }
});

test('mqtts:// to a plain MQTT port: the line says the port does not speak TLS, not only ECONNRESET', async (ctx) => {
  const plainAsTls = ctx.broker.plainUrl.replace('mqtt://', 'mqtts://');
  const agent = new AgentProcess(deviceArgs(ctx).map((a) => (a === ctx.broker.url ? plainAsTls : a)));
  try {
    await agent.waitFor(/mqtt: cannot connect to mqtts:\/\/127\.0\.0\.1:\d+ as pi1: .*: the port does not seem to speak TLS \(a plain MQTT port needs mqtt:\/\/; the TLS port is usually 8883\)/, 15_000, 'the not-TLS line');
    assert.is(await agent.stop('SIGTERM'), 0, agent.output);
  } finally {
    await agent.stop('SIGKILL');
  }
});

test('a notification from our relay without -e: one line saying to give -e; the cloud endpoint is never tried', async (ctx) => {
  const args = deviceArgs(ctx, ['--mqtt-client-id', 'pi1-no-endpoint']);
  const at = args.indexOf('-e');
  args.splice(at, 2);
  const agent = new AgentProcess(args);
  try {
    await agent.waitFor(/subscribed to \$aws\/things\/pi1\/tunnels\/notify/, 15_000, 'agent subscribed');
    const tunnel = await ctx.relay.openTunnel({ services: ['SSH'] });
    await ctx.publisher.publish(notificationTopic('pi1'), encodeNotification({ clientAccessToken: tunnel.destinationAccessToken, clientMode: 'destination', region: 'local', services: ['SSH'], tunnelId: tunnel.tunnelId }));
    await agent.waitFor(/refused a tunnel: its notification comes from a localproxy relay \(region "local"\), whose address only you know: give -e\/--proxy-endpoint HOST:PORT of that relay/, 15_000, 'the give -e line');
    assert.is(await agent.stop('SIGTERM'), 0, agent.output);
    assert.not.match(agent.output, /amazonaws\.com|Attempting to establish|starting for/);
    assert.is(agent.output.split('give -e/--proxy-endpoint').length - 1, 1, 'one line');
  } finally {
    await agent.stop('SIGKILL');
  }
});

test('a damaged state file: one line, set aside as .corrupt, and the agent starts', async (ctx) => {
  const dir = stateDir(ctx);
  mkdirSync(dir);
  writeFileSync(join(dir, 'agent-pi1.json'), '{"version": 1, "thingName": "pi1", "tunnels": [{"accessToken": ');
  const agent = new AgentProcess(deviceArgs(ctx, ['--mqtt-client-id', 'pi1-damaged'], dir));
  try {
    await agent.waitFor(/subscribed to \$aws\/things\/pi1\/tunnels\/notify/, 15_000, 'agent subscribed');
    assert.match(agent.output, /\[error\] the state file \S+agent-pi1\.json is damaged \(not JSON\); set aside as \S+agent-pi1\.json\.corrupt; starting without resumed tunnels/);
    assert.is(agent.output.split('state file').length - 1, 1, agent.output);
    assert.ok(existsSync(join(dir, 'agent-pi1.json.corrupt')), 'the damaged file is kept for a look');
    assert.is(await agent.stop('SIGTERM'), 0, agent.output);
  } finally {
    await agent.stop('SIGKILL');
  }
});

test('a state file that cannot be read (a directory in its place): one line, and the agent starts', async (ctx) => {
  const dir = stateDir(ctx);
  mkdirSync(join(dir, 'agent-pi1.json'), { recursive: true });
  const agent = new AgentProcess(deviceArgs(ctx, ['--mqtt-client-id', 'pi1-unreadable'], dir));
  try {
    await agent.waitFor(/subscribed to \$aws\/things\/pi1\/tunnels\/notify/, 15_000, 'agent subscribed');
    assert.match(agent.output, /\[error\] cannot read the state file \S+agent-pi1\.json: not a file; starting without resumed tunnels/);
    assert.is(await agent.stop('SIGTERM'), 0, agent.output);
  } finally {
    await agent.stop('SIGKILL');
  }
});

test('without --state-dir, systemd\'s $STATE_DIRECTORY is where the state goes', async (ctx) => {
  const dir = stateDir(ctx);
  const args = deviceArgs(ctx, ['--mqtt-client-id', 'pi1-systemd']);
  args.splice(args.indexOf('--state-dir'), 2);
  const agent = new AgentProcess(args, { STATE_DIRECTORY: dir, XDG_STATE_HOME: join(ctx.dir, 'not-this-one') });
  try {
    await agent.waitFor(/subscribed to \$aws\/things\/pi1\/tunnels\/notify/, 15_000, 'agent subscribed');
    assert.ok(agent.output.includes(`state in ${join(dir, 'agent-pi1.json')}`), agent.output);
    assert.is(await agent.stop('SIGTERM'), 0, agent.output);
  } finally {
    await agent.stop('SIGKILL');
  }
});

test.run();
