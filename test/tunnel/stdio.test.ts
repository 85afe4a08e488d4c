/**
 * `-s stdio`: the built CLI as a source process whose stdin and stdout are the connection (what
 * ssh's ProxyCommand gives it), through our relay over TLS to an in-process destination in front
 * of real TCP applications. Every transfer is checked by sha256; the exit codes and stderr lines
 * are what ssh's user sees. Flow control and the start deadline: stdio-flow.slow.test.ts.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { echoServer, pattern, patternSha256, sinkServer, writeAll } from '../helpers/apps';
import { within } from '../helpers/wait';
import { app, MIB, setUp, source, tunnelTo, type Ctx } from './stdio-peers';

const test = suite<Ctx>('-s stdio: one connection over stdin/stdout');
setUp(test);

test('-s stdio on a one-service tunnel: 4 MiB echoed byte-exact, EOF on stdin ends it; exit 0 and nothing on stderr', async (ctx) => {
  const echo = await app(ctx, echoServer());
  const tunnel = await tunnelTo(ctx, { SSH: echo.port });
  const proxy = source(ctx, tunnel.sourceAccessToken, 'stdio');
  const bytes = 4 * MIB;
  let seen = 0;
  const hash = createHash('sha256');
  proxy.child.stdout!.on('data', (chunk: Buffer) => {
    hash.update(chunk);
    seen += chunk.length;
    if (seen >= bytes) proxy.child.stdin!.end();
  });
  await writeAll(proxy.child.stdin!, pattern(bytes, 7));
  assert.is(await proxy.exited, 0, proxy.stderr());
  assert.is(seen, bytes);
  assert.is(hash.digest('hex'), patternSha256(bytes, 7));
  assert.is(proxy.stderr(), '');
});

test('-s SSH=stdio on a tunnel of two services: what was written before EOF on stdin all reaches the application, which then sees the close', async (ctx) => {
  const sink = await app(ctx, sinkServer());
  const echo = await app(ctx, echoServer());
  const tunnel = await tunnelTo(ctx, { SSH: sink.port, HTTP: echo.port });
  const proxy = source(ctx, tunnel.sourceAccessToken, 'SSH=stdio');
  await writeAll(proxy.child.stdin!, pattern(8 * MIB, 3));
  proxy.child.stdin!.end();
  const [received] = await within(sink.waitFor(1), 20_000, 'the application sees the close');
  assert.equal({ bytes: received.bytes, sha256: received.sha256 }, { bytes: 8 * MIB, sha256: patternSha256(8 * MIB, 3) });
  assert.is(await proxy.exited, 0, proxy.stderr());
  assert.is(proxy.stderr(), '');
});

test('a token the service refuses: exit 3 and one line on stderr', async (ctx) => {
  const echo = await app(ctx, echoServer());
  const tunnel = await tunnelTo(ctx, { SSH: echo.port });
  const proxy = source(ctx, `${tunnel.sourceAccessToken}x`, 'stdio');
  assert.is(await proxy.exited, 3);
  assert.match(proxy.stderr(), /^localproxy: [^\n]+\n$/);
});

test('nothing listens behind the destination: exit 1 and one line saying so', async (ctx) => {
  const gone = await echoServer();
  await gone.close();
  // The destination's connect is not retried: the reset follows at once.
  const tunnel = await tunnelTo(ctx, { SSH: gone.port }, { tcpConnectionRetryCount: 0 });
  const proxy = source(ctx, tunnel.sourceAccessToken, 'stdio');
  proxy.child.stdin!.write('SSH-2.0-test\r\n');
  assert.is(await proxy.exited, 1);
  assert.is(proxy.stderr(), 'localproxy: the destination closed the connection before sending anything: is its application running?\n');
});

test('SIGHUP (ssh ends its ProxyCommand so): exit 0, nothing on stderr', async (ctx) => {
  const echo = await app(ctx, echoServer());
  const tunnel = await tunnelTo(ctx, { SSH: echo.port });
  const proxy = source(ctx, tunnel.sourceAccessToken, 'stdio');
  proxy.child.stdin!.write('ping');
  await within(once(proxy.child.stdout!, 'data'), 10_000, 'the echo');
  proxy.child.kill('SIGHUP');
  assert.is(await proxy.exited, 0);
  assert.is(proxy.stderr(), '');
});

test('stdio mapped with another service is a usage error (exit 2)', async (ctx) => {
  const proxy = source(ctx, 'token', 'SSH=stdio,HTTP=8080');
  assert.is(await proxy.exited, 2);
  assert.match(proxy.stderr(), /^stdio carries one connection and cannot be mapped with other services: give it alone, e.g. -s SSH=stdio \(-s\)\n/);
});

test.run();
