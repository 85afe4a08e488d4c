/**
 * The whole user story, every part a real process: mosquitto (TLS, client certificates),
 * `localproxy relay --mqtt-url` and `localproxy agent` of the built CLI, a real sshd behind the
 * agent, and a real OpenSSH client whose ProxyCommand is `localproxy connect %h SSH` (or
 * `localproxy -s SSH=stdio` with a token). Credentials come from a temporary HOME with two
 * profiles, one with the relay's key pair and one the relay refuses. After each run the
 * tunnel is closed, as the management API says.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { TunnelApiClient } from '../../src/api/client';
import { Broker, TestPki } from '../agent/broker';
import { CLI } from '../helpers/child';
import { fileSha256, startSshd, type Sshd } from '../interop/sshd';
import { within } from '../helpers/wait';

const RELAY_KEY = { accessKeyId: 'AKIDCONNECTE2E', secretAccessKey: 'connect-e2e-secret-0123456789' };

/** A process of the built CLI whose output is awaited. */
class Cli {
  readonly child: ChildProcess;
  output = '';
  stdout = '';
  readonly exited: Promise<number | null>;

  constructor(readonly name: string, args: string[], env: NodeJS.ProcessEnv = {}) {
    this.child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const onData = (stream: 'stdout' | 'stderr') => (d: Buffer) => {
      this.output += d.toString();
      if (stream === 'stdout') this.stdout += d.toString();
      if (process.env.LOCALPROXY_TEST_LOG) process.stderr.write(`${name}: ${d}`);
      this.child.emit('output');
    };
    this.child.stdout!.on('data', onData('stdout'));
    this.child.stderr!.on('data', onData('stderr'));
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

interface Run { code: number | null; stdout: string; stderr: string }

function run(command: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 60_000): Promise<Run> {
  return within(new Promise<Run>((resolve) => {
    execFile(command, args, { env, timeout: timeoutMs, maxBuffer: 1 << 20 }, (err, stdout, stderr) => resolve({ code: err ? (err as { code?: number }).code ?? 1 : 0, stdout, stderr }));
  }), timeoutMs + 10_000, `${command} ${args.at(-1)}`);
}

interface Ctx {
  dir: string;
  home: string;
  pki: TestPki;
  broker: Broker;
  sshd: Sshd;
  relay: Cli;
  relayPort: number;
  relayCaFile: string;
  relayDir: string;
  agent: Cli;
  api: TunnelApiClient;
}

const test = suite<Ctx>('localproxy connect: ssh through the relay, mosquitto and the agent');

test.before(async (ctx) => {
  ctx.dir = mkdtempSync(join(tmpdir(), 'localproxy-connect-e2e-'));
  ctx.pki = await new TestPki().init();
  ctx.broker = await Broker.start(ctx.pki);
  ctx.sshd = await startSshd();
  const relayCert = await ctx.pki.issue('relay');
  const device = await ctx.pki.issue('pi1');
  ctx.relayDir = join(ctx.dir, 'relay');
  ctx.relay = new Cli('relay', ['relay', '--listen', '127.0.0.1:0', '--tls-self-signed', ctx.relayDir,
    '--mqtt-url', ctx.broker.url, '--mqtt-cert', relayCert.certFile, '--mqtt-key', relayCert.keyFile, '--mqtt-ca', ctx.pki.caFile], {
    LOCALPROXY_RELAY_ACCESS_KEY_ID: RELAY_KEY.accessKeyId,
    LOCALPROXY_RELAY_SECRET_ACCESS_KEY: RELAY_KEY.secretAccessKey,
  });
  const [, port] = await ctx.relay.waitFor(/listening on wss:\/\/127\.0\.0\.1:(\d+)/, 15_000, 'relay listening');
  ctx.relayPort = Number(port);
  ctx.relayCaFile = join(ctx.relayDir, 'cert.pem');
  await ctx.relay.waitFor(/mqtt: connected to/, 15_000, 'relay connected to the broker');
  ctx.agent = new Cli('agent', ['agent', '--mqtt-url', ctx.broker.url, '--thing-name', 'pi1',
    '--mqtt-cert', device.certFile, '--mqtt-key', device.keyFile, '--mqtt-ca', ctx.pki.caFile,
    '--service', `SSH=${ctx.sshd.port}`, '-e', `127.0.0.1:${ctx.relayPort}`, '-c', ctx.relayDir]);
  await ctx.agent.waitFor(/subscribed to \$aws\/things\/pi1\/tunnels\/notify/, 15_000, 'agent subscribed');
  ctx.api = new TunnelApiClient({ endpoint: `https://127.0.0.1:${ctx.relayPort}`, region: 'us-east-1', credentials: RELAY_KEY, ca: readFileSync(ctx.relayCaFile, 'utf8') });
  // The user's AWS configuration: the relay's key pair as profile "lab", another account's as "other".
  ctx.home = join(ctx.dir, 'home');
  mkdirSync(join(ctx.home, '.aws'), { recursive: true });
  writeFileSync(join(ctx.home, '.aws', 'credentials'), [
    '[lab]', `aws_access_key_id = ${RELAY_KEY.accessKeyId}`, `aws_secret_access_key = ${RELAY_KEY.secretAccessKey}`, '',
    '[other]', 'aws_access_key_id = AKIDOTHERACCOUNT', 'aws_secret_access_key = other-secret', '',
  ].join('\n'));
});

test.after(async (ctx) => {
  if (ctx.agent) assert.is(await ctx.agent.stop('SIGTERM'), 0, 'the agent exits 0 on SIGTERM');
  if (ctx.relay) assert.is(await ctx.relay.stop('SIGTERM'), 0, 'the relay exits 0 on SIGTERM');
  await ctx.sshd?.close();
  await ctx.broker?.stop();
  ctx.pki?.remove();
  if (ctx.dir) rmSync(ctx.dir, { recursive: true, force: true });
});

/** The environment of the user's shell: HOME with the two profiles, nothing of AWS set but `aws`. */
function userEnv(ctx: Ctx, aws: Record<string, string> = {}): NodeJS.ProcessEnv {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('AWS_') && !key.startsWith('AWSIOT_')));
  return { ...clean, HOME: ctx.home, AWS_EC2_METADATA_DISABLED: 'true', ...aws };
}

function sshArgs(ctx: Ctx, proxyCommand: string, command: string): string[] {
  return ['-F', '/dev/null', '-i', join(ctx.sshd.dir, 'id_ed25519'), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
    '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR', '-o', `ProxyCommand=${proxyCommand}`, 'root@pi1', command];
}

/** `localproxy connect %h SSH` against the relay, as a ProxyCommand (ssh substitutes %h). */
function connectCommand(ctx: Ctx, extra = ''): string {
  return `${process.execPath} ${CLI} connect %h SSH --endpoint https://127.0.0.1:${ctx.relayPort} --ca ${ctx.relayCaFile}${extra}`;
}

/** The thing's tunnels, by id, with their status. */
async function tunnels(ctx: Ctx, thingName: string): Promise<Map<string, string>> {
  const { tunnelSummaries } = await ctx.api.call<{ tunnelSummaries: Array<{ tunnelId: string; status: string }> }>('ListTunnels', { thingName });
  return new Map(tunnelSummaries.map((t) => [t.tunnelId, t.status]));
}

/** Resolves once the relay logged the close of a tunnel after `from`; the id closed. */
async function closedAfter(ctx: Ctx, from: number, what: string): Promise<string> {
  const [, id] = await ctx.relay.waitFor(/tunnel (\S+) closed: /, 20_000, what, from);
  return id;
}

test('ssh -o ProxyCommand=\'localproxy connect %h SSH --endpoint ...\' root@pi1 runs a command on the device (AWS_PROFILE); the tunnel is closed afterwards', async (ctx) => {
  const before = await tunnels(ctx, 'pi1');
  const mark = ctx.relay.output.length;
  const ssh = await run('ssh', sshArgs(ctx, connectCommand(ctx), 'echo hello from $((6 * 7))'), userEnv(ctx, { AWS_PROFILE: 'lab' }));
  assert.is(ssh.code, 0, ssh.stderr);
  assert.is(ssh.stdout, 'hello from 42\n', 'the command ran in the device\'s shell');
  assert.is(ssh.stderr, '', 'nothing on the ssh prompt');
  const id = await closedAfter(ctx, mark, 'the tunnel closed after ssh ended');
  const after = await tunnels(ctx, 'pi1');
  assert.not.ok(before.has(id), 'a new tunnel was opened');
  assert.is(after.get(id), 'CLOSED');
});

test('--profile wins over AWS_PROFILE; a profile the relay does not know: exit 1, one line naming it, no tunnel opened', async (ctx) => {
  const ok = await run('ssh', sshArgs(ctx, connectCommand(ctx, ' --profile lab'), 'echo via --profile'), userEnv(ctx, { AWS_PROFILE: 'other' }));
  assert.is(ok.code, 0, ok.stderr);
  assert.is(ok.stdout, 'via --profile\n');
  const count = (await tunnels(ctx, 'pi1')).size;
  const refused = await run(process.execPath, [CLI, 'connect', 'pi1', 'SSH', '--endpoint', `https://127.0.0.1:${ctx.relayPort}`, '--ca', ctx.relayCaFile], userEnv(ctx, { AWS_PROFILE: 'other' }));
  assert.is(refused.code, 1);
  assert.is(refused.stderr, "localproxy connect: OpenTunnel failed: UnrecognizedClientException: The security token included in the request is invalid. (credentials from profile 'other')\n");
  assert.is((await tunnels(ctx, 'pi1')).size, count);
});

test('--listen 127.0.0.1:0 prints its port and the ssh command; scp through it is byte-exact; Ctrl-C closes the tunnel and exits 0', async (ctx) => {
  const file = await ctx.sshd.makeFile('upload.bin', 8 * 1024 * 1024, 9);
  const connect = new Cli('connect', ['connect', 'pi1', 'SSH', '--listen', '127.0.0.1:0', '--endpoint', `https://127.0.0.1:${ctx.relayPort}`, '--ca', ctx.relayCaFile, '--profile', 'lab'], userEnv(ctx));
  const [line, port] = await connect.waitFor(/^SSH of pi1 listens on 127\.0\.0\.1:(\d+); ssh -p \d+ -o HostKeyAlias=pi1 USER@127\.0\.0\.1\n/m, 30_000, 'the listening line');
  assert.is(connect.stdout, line, 'one line on stdout');
  const key = join(ctx.sshd.dir, 'id_ed25519');
  const common = ['-F', '/dev/null', '-i', key, '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR', '-o', 'HostKeyAlias=pi1'];
  const copy = join(ctx.sshd.dir, 'copy.bin');
  const download = join(ctx.dir, 'download.bin');
  const up = await run('scp', ['-P', port, ...common, file.path, `root@127.0.0.1:${copy}`], userEnv(ctx));
  assert.is(up.code, 0, up.stderr);
  const down = await run('scp', ['-P', port, ...common, `root@127.0.0.1:${copy}`, download], userEnv(ctx));
  assert.is(down.code, 0, down.stderr);
  assert.is(await fileSha256(copy), file.sha256);
  assert.is(await fileSha256(download), file.sha256);
  const mark = ctx.relay.output.length;
  assert.is(await connect.stop('SIGINT'), 0);
  const id = await closedAfter(ctx, mark, 'the tunnel closed after Ctrl-C');
  assert.is((await tunnels(ctx, 'pi1')).get(id), 'CLOSED');
});

test('-s SSH=stdio with a token as the ProxyCommand: the tunnel opened through the API, the agent\'s destination, a command on the device', async (ctx) => {
  const mark = ctx.agent.output.length;
  const opened = await ctx.api.call<{ tunnelId: string; sourceAccessToken: string }>('OpenTunnel', { destinationConfig: { thingName: 'pi1', services: ['SSH'] } });
  try {
    await ctx.agent.waitFor(/tunnel \S+: Successfully established websocket connection/, 15_000, 'the agent connected the destination', mark);
    const { tunnel } = await ctx.api.call<{ tunnel: { destinationConnectionState: { status: string } } }>('DescribeTunnel', { tunnelId: opened.tunnelId });
    assert.is(tunnel.destinationConnectionState.status, 'CONNECTED');
    const proxy = `${process.execPath} ${CLI} -e 127.0.0.1:${ctx.relayPort} -c ${ctx.relayDir} -s SSH=stdio`;
    const ssh = await run('ssh', sshArgs(ctx, proxy, 'echo through stdio'), userEnv(ctx, { AWSIOT_TUNNEL_ACCESS_TOKEN: opened.sourceAccessToken }));
    assert.is(ssh.code, 0, ssh.stderr);
    assert.is(ssh.stdout, 'through stdio\n');
    assert.is(ssh.stderr, '');
  } finally {
    await ctx.api.call('CloseTunnel', { tunnelId: opened.tunnelId });
  }
});

test('a thing whose agent is not running: the --wait error, exit 1, and its tunnel closed', async (ctx) => {
  const mark = ctx.relay.output.length;
  const started = Date.now();
  const result = await run(process.execPath, [CLI, 'connect', 'pi2', 'SSH', '--wait', '2', '--endpoint', `https://127.0.0.1:${ctx.relayPort}`, '--ca', ctx.relayCaFile], userEnv(ctx, { AWS_PROFILE: 'lab' }));
  assert.is(result.code, 1);
  assert.is(result.stderr, "localproxy connect: the agent of thing pi2 did not connect within 2 s (--wait): is 'localproxy agent --thing-name pi2' (or the AWS IoT Device Client) running on the device, with service SSH?\n");
  assert.ok(Date.now() - started < 15_000, 'it gave up after about --wait seconds');
  // The one tunnel opened for pi2 is closed by the time connect exits. Not "the next close the
  // relay logs": a tunnel of an earlier test may close after the mark.
  const listed = [...(await tunnels(ctx, 'pi2'))];
  assert.is(listed.length, 1, `one tunnel opened for pi2: ${JSON.stringify(listed)}`);
  assert.is(listed[0][1], 'CLOSED');
  await ctx.relay.waitFor(new RegExp(`tunnel ${listed[0][0]} closed: `), 20_000, 'the relay logs its close', mark);
});

test.run();
