/**
 * Issue 21: one application that stops reading pauses the tunnel (flow control, as the README
 * documents) and must not cost the service connection, however long it lasts.
 *
 * Through our relay over TLS, with the proxies as processes at their default settings: services
 * STALL (an application that accepts and does not read) and FAST (echo). A 64 MiB echo through
 * FAST; a client writes 256 MiB to STALL; 3 s after that write blocks, a new 64 MiB echo
 * through FAST; the stall is held for 90 s. Neither proxy may reconnect and the relay may see no
 * disconnect; once the application reads, every byte of both connections arrives intact.
 *
 * The source is ours, then the C++ reference; the destination is ours. Both run at once (each
 * with its own relay): the 90 s are the applications' behaviour, not synchronisation, and
 * running them side by side keeps this file at one hold's length.
 *
 * Between our two proxies per-connection credit applies (issue 14): only the STALL connection
 * stops (its write blocks at its window), and the second echo completes during the stall. With
 * the C++ source (no credit) the tunnel pauses as described above.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { defaultSettings, Logger, startRelay, type Relay } from '../../src/index';
import { connectTo, echoServer, hashUntilClose, pattern, patternSha256, sendPattern, type AppServer, type Received } from '../helpers/apps';
import { caDir, spawnProxy, type ChildProxy } from '../helpers/child';
import { CPP_LOCALPROXY, cppListening } from '../helpers/cpp';
import { freePort, within } from '../helpers/wait';

const MiB = 1024 * 1024;
const ECHO_BYTES = 64 * MiB;
const STALL_BYTES = 256 * MiB;
/** The destination's default inbound budget: the tunnel can pause only after this much. */
const INBOUND_BUDGET_BYTES = defaultSettings().inboundBudgetBytes;
/** From the blocked write to the second echo, and to the application reading (issue 21). */
const SECOND_ECHO_AFTER_MS = 3_000;
const HOLD_MS = 90_000;

/** An application that accepts one connection and reads nothing until `read()`. */
interface StalledApp {
  port: number;
  accepted: Promise<void>;
  read(): void;
  received: Promise<Received>;
  close(): void;
}

async function stalledApp(): Promise<StalledApp> {
  let socket: Socket | undefined;
  let onAccept!: () => void;
  let onReceived!: (r: Received) => void;
  const accepted = new Promise<void>((resolve) => { onAccept = resolve; });
  const received = new Promise<Received>((resolve) => { onReceived = resolve; });
  const server: Server = createServer((s) => {
    socket = s;
    s.pause();
    void hashUntilClose(s).then(onReceived);
    onAccept();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as { port: number }).port,
    accepted,
    read: () => socket?.resume(),
    received,
    close: () => {
      socket?.destroy();
      server.close();
    },
  };
}

/**
 * Writes `bytes` pattern bytes and ends; `blocked` resolves the first time a write has to wait
 * after more than the inbound budget went out (the tunnel is pausing).
 */
function writeStalling(socket: Socket, bytes: number, seed: number, blockedAfter: number): { blocked: Promise<void>; done: Promise<void> } {
  let onBlocked!: () => void;
  const blocked = new Promise<void>((resolve) => { onBlocked = resolve; });
  const done = (async () => {
    let sent = 0;
    for (const chunk of pattern(bytes, seed)) {
      sent += chunk.length;
      if (socket.write(chunk)) continue;
      if (sent > blockedAfter) onBlocked();
      await drained(socket, sent);
    }
    socket.end();
  })();
  return { blocked, done };
}

function drained(socket: Socket, sent: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onDrain = (): void => {
      socket.off('close', onClose);
      resolve();
    };
    const onClose = (): void => {
      socket.off('drain', onDrain);
      reject(new Error(`the STALL connection closed after ${sent} bytes`));
    };
    socket.once('drain', onDrain);
    socket.once('close', onClose);
  });
}

/** The C++ reference as a source process (its README: `-e`, a hashed `-c` directory, token in the environment). */
interface ReferenceSource {
  process: ChildProcess;
  ports: Record<string, number>;
  output(): string;
  stop(): Promise<void>;
}

async function spawnReferenceSource(relay: Relay, caDirPath: string, token: string, services: string[]): Promise<ReferenceSource> {
  execFileSync('openssl', ['rehash', caDirPath], { stdio: 'ignore' });
  const ports: Record<string, number> = {};
  for (const id of services) ports[id] = await freePort();
  const mapping = services.map((id) => `${id}=${ports[id]}`).join(',');
  const child = spawn(CPP_LOCALPROXY, ['-e', `127.0.0.1:${relay.port}`, '-c', caDirPath, '-s', mapping], {
    env: { ...process.env, AWSIOT_TUNNEL_ACCESS_TOKEN: token },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const exited = once(child, 'exit');
  const ready = new Promise<void>((resolve, reject) => {
    const onData = (data: Buffer): void => {
      output += data.toString();
      if (process.env.LOCALPROXY_TEST_LOG) process.stderr.write(data);
      if ((output.match(/Listening for new connection on port/g) ?? []).length >= services.length) resolve();
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    void exited.then(() => reject(new Error(`the C++ source exited before ready:\n${output}`)));
  });
  await within(ready, 15_000, 'C++ source ready');
  await Promise.all(Object.values(ports).map((port) => cppListening(port)));
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

/** Every line our proxies write goes here too: spawnProxy keeps only the last 64 KiB. */
function collect(child: ChildProxy): () => string {
  let all = '';
  const add = (data: Buffer): void => { all += data.toString(); };
  child.process.stdout!.on('data', add);
  child.process.stderr!.on('data', add);
  return () => all;
}

interface Outcome {
  error?: Error;
  /** The second echo had not finished when the application started reading (the tunnel was paused). */
  pausedAtRead: boolean;
  first?: { sha256: string; echo: string };
  second?: { sha256: string; echo?: Received };
  stalled?: Received;
  /** Logs snapshotted when the application started reading, and at the end. */
  atRead: { relay: string; source: string; destination: string };
  atEnd: { relay: string; source: string; destination: string };
}

async function scenario(sourceKind: 'ours' | 'reference'): Promise<Outcome> {
  const relayLines: string[] = [];
  const relay = await startRelay({ port: 0, tls: 'self-signed', log: new Logger({ level: 5, id: 'relay', sink: (line) => relayLines.push(line) }) });
  const tunnel = await relay.openTunnel({ services: ['STALL', 'FAST'] });
  const ca = caDir(relay);
  const stall = await stalledApp();
  const echo: AppServer = await echoServer();
  const outcome: Outcome = { pausedAtRead: false, atRead: { relay: '', source: '', destination: '' }, atEnd: { relay: '', source: '', destination: '' } };
  let destination: ChildProxy | undefined;
  let source: { ports: Record<string, number>; output(): string; stop(): Promise<void> } | undefined;
  let destinationLog = (): string => '';
  const logs = () => ({ relay: relayLines.join(''), source: source?.output() ?? '', destination: destinationLog() });
  try {
    destination = await spawnProxy({ relay, ca, mode: 'destination', accessToken: tunnel.destinationAccessToken, services: { STALL: stall.port, FAST: echo.port } });
    destinationLog = collect(destination);
    await destination.ready;
    if (sourceKind === 'ours') {
      const ours = await spawnProxy({ relay, ca, mode: 'source', accessToken: tunnel.sourceAccessToken, services: { STALL: 0, FAST: 0 } });
      const sourceLog = collect(ours);
      await ours.ready;
      source = { ports: ours.ports, output: sourceLog, stop: () => ours.stop() };
    } else {
      source = await spawnReferenceSource(relay, ca.dir, tunnel.sourceAccessToken, ['STALL', 'FAST']);
    }

    const first = await within(sendPattern(source.ports.FAST, ECHO_BYTES, { seed: 21, expectEcho: true }), 60_000, 'the first 64 MiB echo');
    outcome.first = { sha256: first.sha256, echo: first.echo!.sha256 };

    const client = await connectTo(source.ports.STALL);
    client.on('error', () => {});
    // With credit (ours) the write blocks once the connection's window and socket buffers are full.
    const writing = writeStalling(client, STALL_BYTES, 22, sourceKind === 'ours' ? 0 : INBOUND_BUDGET_BYTES);
    writing.done.catch(() => {});
    await within(Promise.race([writing.blocked, writing.done]), 60_000, 'the write to STALL blocks');
    await within(stall.accepted, 10_000, 'the stalled application accepts');
    const blockedAt = Date.now();

    // From here on the timers are the applications' behaviour (the issue's steps).
    await new Promise((resolve) => setTimeout(resolve, SECOND_ECHO_AFTER_MS));
    let secondDone = false;
    const second = sendPattern(source.ports.FAST, ECHO_BYTES, { seed: 23, expectEcho: true }).finally(() => { secondDone = true; });
    await new Promise((resolve) => setTimeout(resolve, HOLD_MS - (Date.now() - blockedAt)));

    outcome.pausedAtRead = !secondDone;
    outcome.atRead = logs();
    stall.read();
    await within(writing.done, 120_000, 'the client writes all 256 MiB');
    outcome.stalled = await within(stall.received, 60_000, 'the stalled application receives everything');
    const secondResult = await within(second, 60_000, 'the second 64 MiB echo');
    outcome.second = { sha256: secondResult.sha256, echo: secondResult.echo };
  } catch (err) {
    outcome.error = err as Error;
  } finally {
    outcome.atEnd = logs();
    await source?.stop();
    await destination?.stop();
    await relay.close();
    ca.remove();
    stall.close();
    await echo.close();
  }
  return outcome;
}

function assertConnectionKept(outcome: Outcome, sourceKind: 'ours' | 'reference'): void {
  if (outcome.error) {
    const { relay, source, destination } = outcome.atEnd;
    throw new Error(`${outcome.error.message}\n--- relay\n${relay.slice(-3000)}\n--- ${sourceKind} source\n${source.slice(-3000)}\n--- destination\n${destination.slice(-3000)}`);
  }
  for (const [when, logs] of [['when the application started reading', outcome.atRead], ['at the end', outcome.atEnd]] as const) {
    const relayLog = logs.relay;
    assert.is((relayLog.match(/ source: (re)?connected/g) ?? []).length, 1, `relay, ${when}: the source connected once\n${relayLog.slice(-4000)}`);
    assert.is((relayLog.match(/ destination: (re)?connected/g) ?? []).length, 1, `relay, ${when}: the destination connected once`);
    assert.not.match(relayLog, /disconnected \(code/, `relay, ${when}: no peer disconnected`);
    assert.is((logs.destination.match(/Successfully established websocket connection/g) ?? []).length, 1, `destination, ${when}: one service connection\n${logs.destination.slice(-4000)}`);
    assert.not.match(logs.destination, /reconnecting|connection was lost/, `destination, ${when}: no reconnect`);
    assert.is((logs.source.match(/Successfully established websocket connection/g) ?? []).length, 1, `${sourceKind} source, ${when}: one service connection\n${logs.source.slice(-4000)}`);
    assert.not.match(logs.source, /reconnecting|connection was lost/, `${sourceKind} source, ${when}: no reconnect`);
  }
}

function assertBytes(outcome: Outcome, sourceKind: 'ours' | 'reference'): void {
  if (outcome.error) throw outcome.error;
  assert.is(outcome.first!.echo, outcome.first!.sha256, 'the first echo is byte-exact');
  if (sourceKind === 'ours') assert.not.ok(outcome.pausedAtRead, 'per-connection credit: the second echo did not wait for the stalled application');
  else assert.ok(outcome.pausedAtRead, 'the tunnel was paused: the second echo waited for the stalled application');
  assert.is(outcome.stalled!.bytes, STALL_BYTES, 'the stalled application received every byte');
  assert.is(outcome.stalled!.sha256, patternSha256(STALL_BYTES, 22), 'and in order');
  assert.is(outcome.second!.echo?.bytes, ECHO_BYTES, 'the second echo came back whole');
  assert.is(outcome.second!.echo?.sha256, outcome.second!.sha256, 'and byte-exact');
}

const stalled = suite('e2e: a stalled application for 90 s does not cost the service connection (issue 21)');
let ours: Promise<Outcome>;
let reference: Promise<Outcome>;

stalled.before(() => {
  ours = scenario('ours');
  reference = scenario('reference');
});

stalled('our source and destination as processes: the service connections stay up, and both connections deliver every byte', async () => {
  const outcome = await ours;
  assertConnectionKept(outcome, 'ours');
  assertBytes(outcome, 'ours');
});

stalled('the C++ reference as the source, ours as the destination: the same', async () => {
  const outcome = await reference;
  assertConnectionKept(outcome, 'reference');
  assertBytes(outcome, 'reference');
});

stalled.run();
