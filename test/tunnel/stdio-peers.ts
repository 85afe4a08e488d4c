/**
 * The pieces of the `-s stdio` tests: our relay over TLS in this process, an in-process
 * destination in front of real TCP applications, and the built CLI as the source process with
 * piped stdin, stdout and stderr.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import type { Test } from 'uvu';
import type { Settings } from '../../src/settings';
import { startProxy } from '../../src/tunnel/proxy';
import type { AppServer } from '../helpers/apps';
import { caDir, CLI } from '../helpers/child';
import { proxyOptions, startRelayForTests, type LocalProxy, type Relay } from '../helpers/tunnel';
import { within } from '../helpers/wait';

export interface Ctx {
  relay: Relay;
  ca: ReturnType<typeof caDir>;
  cleanup: Array<() => Promise<unknown> | unknown>;
}

/** A relay and its CA directory for the suite; each test's cleanup steps run after it, last first. */
export function setUp(test: Test<Ctx>): void {
  test.before(async (ctx) => {
    ctx.relay = await startRelayForTests();
    ctx.ca = caDir(ctx.relay);
  });
  test.before.each((ctx) => {
    ctx.cleanup = [];
  });
  test.after.each(async (ctx) => {
    for (const step of ctx.cleanup.reverse()) await step();
  });
  test.after(async (ctx) => {
    await ctx.relay.close();
    ctx.ca.remove();
  });
}

export interface Source {
  child: ChildProcess;
  stderr(): string;
  exited: Promise<number | null>;
}

/** `localproxy -e relay -c DIR -s MAPPING` with the token in the environment and piped stdio. */
export function source(ctx: Ctx, token: string, mapping: string, endpoint = `127.0.0.1:${ctx.relay.port}`): Source {
  const child = spawn(process.execPath, [CLI, '-e', endpoint, '-c', ctx.ca.dir, '-s', mapping], {
    env: { ...process.env, AWSIOT_TUNNEL_ACCESS_TOKEN: token },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => { stderr += d; });
  child.stdin!.on('error', () => {});
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  ctx.cleanup.push(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return { child, stderr: () => stderr, exited: within(exited, 60_000, `localproxy -s ${mapping} to exit`) };
}

/** A tunnel with the services of `targets`, its destination in this process mapping each to its port. */
export async function tunnelTo(ctx: Ctx, targets: Record<string, number>, settings?: Partial<Settings>): Promise<{ sourceAccessToken: string; tunnelId: string }> {
  const tunnel = await ctx.relay.openTunnel({ services: Object.keys(targets) });
  const destination: LocalProxy = startProxy(proxyOptions(ctx.relay, 'destination', tunnel.destinationAccessToken, targets, settings));
  ctx.cleanup.push(() => destination.close());
  await within(destination.ready, 10_000, 'destination ready');
  return tunnel;
}

/** An application server, closed after the test. */
export async function app<T extends AppServer>(ctx: Ctx, made: Promise<T>): Promise<T> {
  const server = await made;
  ctx.cleanup.push(() => server.close());
  return server;
}

/** Hashes a stream until it ends. */
export async function hashAll(stream: NodeJS.ReadableStream): Promise<{ bytes: number; sha256: string }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of stream) {
    bytes += (chunk as Buffer).length;
    hash.update(chunk as Buffer);
  }
  return { bytes, sha256: hash.digest('hex') };
}

export const MIB = 1024 * 1024;
