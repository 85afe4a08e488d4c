/**
 * Waiting for the destination (src/connect/wait.ts) against an HTTP server that answers
 * DescribeTunnel from a script: what neither the cloud nor our relay does on demand
 * (throttling, a server error, a tunnel closed meanwhile), through the real API client.
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { TunnelApiClient } from '../../src/api/client';
import { ExitError } from '../../src/exit';
import { silentLogger } from '../../src/log';
import { waitForDestination } from '../../src/connect/wait';
import { within } from '../helpers/wait';

interface Answer { status: number; body: object }
interface Ctx { server: Server; client: TunnelApiClient; script: Answer[]; calls: number }

const test = suite<Ctx>('localproxy connect: waiting for the destination');

test.before.each(async (ctx) => {
  ctx.script = [];
  ctx.calls = 0;
  ctx.server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const answer = ctx.script[Math.min(ctx.calls++, ctx.script.length - 1)];
      res.writeHead(answer.status, { 'content-type': 'application/x-amz-json-1.1' });
      res.end(JSON.stringify(answer.body));
    });
  });
  ctx.server.listen(0, '127.0.0.1');
  await once(ctx.server, 'listening');
  ctx.client = new TunnelApiClient({ endpoint: `http://127.0.0.1:${(ctx.server.address() as { port: number }).port}`, region: 'us-east-1', credentials: { accessKeyId: 'A', secretAccessKey: 'S' } });
});
test.after.each((ctx) => {
  ctx.server.close();
});

const state = (status: string, tunnel = 'OPEN'): Answer => ({ status: 200, body: { tunnel: { status: tunnel, destinationConnectionState: { status } } } });
const error = (status: number, type: string): Answer => ({ status, body: { __type: type, message: `${type} for the test` } });

function wait(ctx: Ctx, seconds: number): Promise<unknown> {
  const run = waitForDestination({ client: ctx.client, tunnelId: 't-1', thingName: 'pi1', service: 'SSH', seconds, signal: new AbortController().signal, log: silentLogger() });
  return within(run.then(() => 'connected', (err: unknown) => err), (seconds + 10) * 1000, 'the wait to end');
}

test('throttling and a server error are tried again; then CONNECTED ends the wait', async (ctx) => {
  ctx.script = [state('DISCONNECTED'), error(400, 'ThrottlingException'), error(503, 'ServiceUnavailableException'), state('CONNECTED')];
  assert.is(await wait(ctx, 20), 'connected');
  assert.is(ctx.calls, 4);
});

test('an error that will not pass (the tunnel is unknown) ends the wait at once', async (ctx) => {
  ctx.script = [error(404, 'ResourceNotFoundException')];
  const err = await wait(ctx, 20);
  assert.instance(err, Error);
  assert.match((err as Error).message, /ResourceNotFoundException for the test/);
  assert.is(ctx.calls, 1);
});

test('a tunnel closed meanwhile, and the time running out, each a one-line error', async (ctx) => {
  ctx.script = [state('DISCONNECTED'), state('DISCONNECTED', 'CLOSED')];
  const closed = await wait(ctx, 20);
  assert.instance(closed, ExitError);
  assert.is((closed as ExitError).message, 'tunnel t-1 was closed while waiting for the agent of thing pi1');
  ctx.calls = 0;
  ctx.script = [state('DISCONNECTED')];
  const late = await wait(ctx, 1);
  assert.instance(late, ExitError);
  assert.match((late as ExitError).message, /^the agent of thing pi1 did not connect within 1 s \(--wait\)/);
  ctx.calls = 0;
  ctx.script = [error(500, 'InternalFailure')];
  const failing = await wait(ctx, 1);
  assert.is((failing as ExitError).message, 'could not learn within 1 s (--wait) whether the agent of thing pi1 connected: DescribeTunnel failed: InternalFailure for the test');
});

test.run();
