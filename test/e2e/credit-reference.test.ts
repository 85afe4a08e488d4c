/**
 * Issue 14 with the C++ reference (v3.3.1) as either peer, through our relay over TLS: our proxy
 * announces credit/1 (the relay said it forwards it to us), the reference never declares it, so
 * the relay strips every extension message toward it. At `-v 6` the reference logs the type of
 * every message it receives: none may be an extension's; the relay's log shows it stripped our
 * HELLO. Data flows byte-exact both ways, as without the extension (which stays inactive: the
 * reference never grants, so nothing of ours is limited).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { once } from 'node:events';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Logger, startRelay, type Relay } from '../../src/index';
import { ExtensionType } from '../../src/protocol/extension';
import { echoServer, sendPattern, type AppServer } from '../helpers/apps';
import { caDir, spawnProxy, type ChildProxy } from '../helpers/child';
import { freePort, within } from '../helpers/wait';

/** The C++ reference beside the checkout (`../shared`), or beside the worktrees' parent (`../../shared`). */
const REFERENCE = ['../../../shared', '../../../../shared']
  .map((up) => new URL(`${up}/reference/cpp-localproxy/localproxy`, import.meta.url).pathname)
  .find((path) => existsSync(path)) ?? '../shared/reference/cpp-localproxy/localproxy (not found)';

const KiB = 1024;
const interop = suite('e2e: credit/1 and the C++ reference (issue 14)');

interface Reference {
  process: ChildProcess;
  ports: Record<string, number>;
  output(): string;
  stop(): Promise<void>;
}

/** The reference at -v 6, as source (`-s`, on free ports) or destination (`-d` to `targets`). */
async function spawnReference(relay: Relay, caDirPath: string, mode: 'source' | 'destination', token: string, targets: Record<string, number>): Promise<Reference> {
  execFileSync('openssl', ['rehash', caDirPath], { stdio: 'ignore' });
  const ports: Record<string, number> = {};
  for (const [id, port] of Object.entries(targets)) ports[id] = mode === 'source' ? await freePort() : port;
  const mapping = Object.entries(ports).map(([id, port]) => `${id}=${port}`).join(',');
  const child = spawn(REFERENCE, ['-e', `127.0.0.1:${relay.port}`, '-c', caDirPath, mode === 'source' ? '-s' : '-d', mapping, '-v', '6'], {
    env: { ...process.env, AWSIOT_TUNNEL_ACCESS_TOKEN: token },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const exited = once(child, 'exit');
  const ready = new Promise<void>((resolve, reject) => {
    const onData = (data: Buffer): void => {
      output += data.toString();
      if (process.env.LOCALPROXY_TEST_LOG) process.stderr.write(data);
      const wanted = mode === 'source' ? Object.keys(targets).length : 1;
      const pattern = mode === 'source' ? /Listening for new connection on port/g : /Successfully established websocket connection/g;
      if ((output.match(pattern) ?? []).length >= wanted) resolve();
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    void exited.then(() => reject(new Error(`the C++ ${mode} exited before ready:\n${output}`)));
  });
  await within(ready, 15_000, `C++ ${mode} ready`);
  return {
    process: child,
    ports,
    output: () => output,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** Lines of the reference's trace that name a received message's type (`... message type: 2`). */
function receivedTypes(output: string): string[] {
  return output.split('\n').filter((line) => /message type:\s*\d+/.test(line));
}

async function scenario(referenceMode: 'source' | 'destination'): Promise<void> {
  const relayLines: string[] = [];
  const relay = await startRelay({ port: 0, tls: 'self-signed', log: new Logger({ level: 5, id: 'relay', sink: (line) => relayLines.push(line) }) });
  const tunnel = relay.openTunnel({ services: ['ECHO'] });
  const ca = caDir(relay);
  const echo: AppServer = await echoServer();
  let reference: Reference | undefined;
  let ours: ChildProxy | undefined;
  try {
    if (referenceMode === 'destination') {
      reference = await spawnReference(relay, ca.dir, 'destination', tunnel.destinationAccessToken, { ECHO: echo.port });
      ours = await spawnProxy({ relay, ca, mode: 'source', accessToken: tunnel.sourceAccessToken, services: { ECHO: 0 } });
    } else {
      // The reference first: our HELLO then goes to a present peer (and is stripped on the way).
      reference = await spawnReference(relay, ca.dir, 'source', tunnel.sourceAccessToken, { ECHO: 0 });
      ours = await spawnProxy({ relay, ca, mode: 'destination', accessToken: tunnel.destinationAccessToken, services: { ECHO: echo.port } });
    }
    await ours.ready;
    const port = referenceMode === 'destination' ? ours.ports.ECHO : reference.ports.ECHO;
    // One connection: the reference as a destination does not serve a second stream (behaviour spec 9.3#20).
    const result = await within(sendPattern(port, 256 * KiB, { seed: 1, expectEcho: true }), 30_000, `an echo through the C++ ${referenceMode}`);
    assert.is(result.echo?.bytes, 256 * KiB);
    assert.is(result.echo?.sha256, result.sha256, 'byte-exact');
    const trace = reference.output();
    assert.ok(receivedTypes(trace).length > 0, `the reference's -v 6 log names the messages it handles:\n${trace.slice(-3000)}`);
    for (const type of [ExtensionType.CREDIT_HELLO, ExtensionType.CREDIT_WINDOW]) {
      assert.not.match(trace, new RegExp(`\\b${type}\\b`), `no message of type ${type} reached the reference`);
    }
    assert.not.match(trace, /Unrecognized message type|ignorable/i);
    const relayLog = relayLines.join('');
    assert.match(relayLog, `not forwarded: CREDIT_HELLO, which the ${referenceMode} did not declare`, 'ours announced the extension; the relay stripped it');
  } finally {
    await ours?.stop();
    await reference?.stop();
    await relay.close();
    ca.remove();
    await echo.close();
  }
}

interop('the C++ reference as the destination, ours as the source: echoes byte-exact; no extension message reaches it', async () => {
  await scenario('destination');
});

interop('the C++ reference as the source, ours as the destination: the same', async () => {
  await scenario('source');
});

interop.run();
