/**
 * `-s stdio` under flow control, through the relay as in stdio.test.ts: a reader of stdout or an
 * application that stops reading holds the other end at the tunnel's bounds (nothing piles up in
 * the proxy), and every byte arrives once it reads again. And the start deadline: a service that
 * cannot be reached ends the run after 30 s with the reason, as ssh's user needs it.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Socket } from 'node:net';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { pattern, patternSha256 } from '../helpers/apps';
import { peakRssMiB } from '../helpers/child';
import { freePort, within } from '../helpers/wait';
import { hashAll, MIB, setUp, source, tunnelTo, type Ctx } from './stdio-peers';

const test = suite<Ctx>('-s stdio: flow control and the start deadline');
setUp(test);

/** More than a pipe's buffer (64 KiB): bytes beyond it were read by the proxy. */
const STARTED_BYTES = 256 * 1024;

/**
 * Resolves once `progress()` passed STARTED_BYTES (the transfer runs: more than a pipe holds)
 * and then stopped growing (the same value three samples in a row, 200 ms apart); bounded.
 */
function stalled(progress: () => number, what: string): Promise<number> {
  return within(new Promise<number>((resolve) => {
    let last = -1;
    let same = 0;
    const timer = setInterval(() => {
      const now = progress();
      if (now < STARTED_BYTES) return;
      same = now === last ? same + 1 : 0;
      last = now;
      if (same >= 2) {
        clearInterval(timer);
        resolve(now);
      }
    }, 200);
  }), 30_000, what);
}

test('backpressure towards stdout: while it is not read, the application is held at the tunnel\'s bounds; then all 64 MiB arrive and the end of the application ends the run (exit 0)', async (ctx) => {
  const bytes = 64 * MIB;
  let taken = 0;
  const server = createServer((socket: Socket) => {
    socket.on('error', () => socket.destroy());
    void (async () => {
      for (const chunk of pattern(bytes, 11)) {
        const written = new Promise<void>((resolve, reject) => socket.write(chunk, (err) => (err ? reject(err) : resolve())));
        await written.catch(() => socket.destroy());
        if (socket.destroyed) return;
        taken += chunk.length;
      }
      socket.end();
    })();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  ctx.cleanup.push(() => new Promise((resolve) => server.close(resolve)));
  const tunnel = await tunnelTo(ctx, { DATA: (server.address() as { port: number }).port });
  const proxy = source(ctx, tunnel.sourceAccessToken, 'DATA=stdio');
  // Nobody reads the child's stdout: the pipe fills, then the tunnel's flow control holds the application.
  const held = await stalled(() => taken, 'the application stalls');
  assert.ok(held < bytes / 2, `the application wrote ${held} bytes while stdout was not read`);
  assert.ok(peakRssMiB(proxy.child.pid!) < 150, `peak RSS ${peakRssMiB(proxy.child.pid!)} MiB`);
  const received = await within(hashAll(proxy.child.stdout!), 60_000, 'every byte on stdout');
  assert.equal(received, { bytes, sha256: patternSha256(bytes, 11) });
  assert.is(await proxy.exited, 0, proxy.stderr());
});

test('backpressure from stdin: while the application does not read, stdin is not read either; then all 64 MiB arrive', async (ctx) => {
  const bytes = 64 * MIB;
  let resume!: () => void;
  const resumed = new Promise<void>((resolve) => { resume = resolve; });
  const sha = createHash('sha256');
  let got = 0;
  let closed!: () => void;
  const appClosed = new Promise<void>((resolve) => { closed = resolve; });
  const server = createServer((socket: Socket) => {
    socket.pause();
    socket.on('data', (chunk: Buffer) => { got += chunk.length; sha.update(chunk); });
    socket.on('close', closed);
    void resumed.then(() => socket.resume());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  ctx.cleanup.push(() => new Promise((resolve) => server.close(resolve)));
  const tunnel = await tunnelTo(ctx, { DATA: (server.address() as { port: number }).port });
  const proxy = source(ctx, tunnel.sourceAccessToken, 'DATA=stdio');
  const stdin = proxy.child.stdin!;
  let written = 0;
  const writing = (async () => {
    for (const chunk of pattern(bytes, 5)) {
      await new Promise<void>((resolve) => stdin.write(chunk, () => resolve()));
      written += chunk.length;
    }
    stdin.end();
  })();
  const held = await stalled(() => written, 'stdin stalls');
  resume();
  await within(writing, 60_000, 'every byte written to stdin');
  await within(appClosed, 60_000, 'the application sees the close');
  assert.ok(held < bytes / 2, `stdin took ${held} bytes while the application did not read`);
  assert.equal({ got, sha256: sha.digest('hex') }, { got: bytes, sha256: patternSha256(bytes, 5) });
  assert.is(await proxy.exited, 0, proxy.stderr());
});

test('no service connection within 30 s: exit 1 and one line with the last connect error', async (ctx) => {
  const port = await freePort();
  const proxy = source(ctx, 'token-for-nowhere', 'SSH=stdio', `127.0.0.1:${port}`);
  assert.is(await proxy.exited, 1);
  assert.match(proxy.stderr(), /^localproxy: no connection to the service within 30 s: [^\n]*ECONNREFUSED[^\n]*\n$/);
});

test.run();
