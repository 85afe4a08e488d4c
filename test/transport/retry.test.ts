import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Backoff, connectWithRetry, type RetryOutcome, type ServiceConnection } from '../../src/transport/index';
import { within } from '../helpers/wait';
import { captureLog, makePki, optionsFor, startFakeService, type FakeService, type Pki } from './fixtures';

const backoff = suite('Backoff');

backoff('full jitter: each delay lies in [0, min(cap, base * 2^n)]', () => {
  const top = new Backoff(100, 1000, () => 0.999999);
  assert.equal([1, 2, 3, 4, 5, 6].map(() => top.next()), [100, 200, 400, 800, 1000, 1000]);
  const bottom = new Backoff(100, 1000, () => 0);
  assert.equal([1, 2, 3].map(() => bottom.next()), [0, 0, 0]);
  const real = new Backoff(50, 5000);
  for (let n = 0; n < 200; n++) {
    const ceiling = real.ceiling();
    assert.is(ceiling, Math.min(5000, 50 * 2 ** n));
    const d = real.next();
    assert.ok(d >= 0 && d <= ceiling && Number.isInteger(d), `delay ${d} for retry ${n}`);
  }
});

backoff('reset starts again from the base delay', () => {
  const b = new Backoff(100, 10_000, () => 0.999999);
  b.next();
  b.next();
  b.next();
  b.reset();
  assert.is(b.next(), 100);
});

backoff('a cap below the base is raised to the base; base 0 never waits', () => {
  assert.is(new Backoff(500, 100, () => 0.999999).next(), 500);
  const zero = new Backoff(0, 0, () => 0.999999);
  assert.equal([zero.next(), zero.next()], [0, 0]);
});

backoff.run();

const retry = suite('connectWithRetry');
let pki: Pki;
let service: FakeService;

retry.before(async () => {
  pki = makePki();
  service = await startFakeService(pki);
});
retry.after(async () => {
  await service.close();
  pki.remove();
});
retry.before.each(() => {
  service.behaviour = {};
  service.requests.length = 0;
});

/** The connection of a 'connected' outcome (fails the test otherwise). */
function connected(outcome: RetryOutcome): ServiceConnection {
  if (outcome.kind !== 'connected') throw new Error(`expected a connection, got ${outcome.kind}`);
  return outcome.connection;
}

/** A failed outcome of the given kind, with its message. */
async function expectFailure(promise: Promise<RetryOutcome>, kind: 'refused' | 'gave-up'): Promise<{ message: string }> {
  const outcome = await within(promise, 20_000, 'connectWithRetry');
  if (outcome.kind !== kind) throw new Error(`expected ${kind}, got ${outcome.kind}`);
  return outcome;
}

retry('503 three times, then accepted: connects after three logged failures', async () => {
  service.behaviour.rejectNext = { status: 503, count: 3 };
  const { log, lines } = captureLog();
  const conn = connected(await within(connectWithRetry(optionsFor(service.port, log, { ca: [pki.caPem] })), 20_000, 'connect'));
  conn.ws.terminate();
  assert.is(service.requests.length, 4);
  const failures = lines.filter((l) => l.includes('[error] Proxy server rejected web socket upgrade request: (HTTP/1.1 503 Service Unavailable) "injected"'));
  assert.is(failures.length, 3);
  const retries = lines.filter((l) => /\[info\] Retrying connection to wss:\/\/127\.0\.0\.1:\d+ in \d+ ms \(retry \d\)/.test(l));
  assert.is(retries.length, 3);
});

retry('fixes reference bug 3.6: connect_retry_count N means N retries, then it gives up', async () => {
  service.behaviour.reject = { status: 503 };
  const { log } = captureLog();
  const err = await expectFailure(connectWithRetry(optionsFor(service.port, log, { ca: [pki.caPem] }, { connectRetryCount: 2 })), 'gave-up');
  assert.is(service.requests.length, 3);
  assert.match(err.message, 'gave up after 2 retries');
  assert.match(err.message, '503');
});

retry('fixes reference bug 3.6: connect_retry_count 0 means one attempt, then it gives up (the reference exits 0 silently)', async () => {
  service.behaviour.reject = { status: 502 };
  const { log } = captureLog();
  const err = await expectFailure(connectWithRetry(optionsFor(service.port, log, { ca: [pki.caPem] }, { connectRetryCount: 0 })), 'gave-up');
  assert.is(service.requests.length, 1);
  assert.match(err.message, 'retries are disabled');
});

retry('connect_retry_count -1 keeps retrying until the service accepts', async () => {
  service.behaviour.rejectNext = { status: 500, count: 8 };
  const { log } = captureLog();
  const conn = connected(await within(connectWithRetry(optionsFor(service.port, log, { ca: [pki.caPem] }, { connectRetryCount: -1, retryDelayMs: 1, retryMaxDelayMs: 5 })), 20_000, 'connect'));
  conn.ws.terminate();
  assert.is(service.requests.length, 9);
});

retry('fixes reference bug 3.4: a 4xx is not retried: refused, with the reason and a hint', async () => {
  service.behaviour.reject = { status: 400, text: 'Bad Request', body: 'Invalid access token: The access token was previously used and cannot be used again' };
  const { log, text } = captureLog();
  const err = await expectFailure(connectWithRetry(optionsFor(service.port, log, { ca: [pki.caPem] }, { connectRetryCount: -1 })), 'refused');
  assert.is(service.requests.length, 1);
  assert.match(err.message, 'previously used');
  assert.match(err.message, 'already used by another client');
  assert.not.match(text(), 'AQGAAXi-access-token');
});

retry('the delays follow the backoff and stay within its bounds', async () => {
  service.behaviour.reject = { status: 503 };
  const { log, lines } = captureLog();
  await expectFailure(connectWithRetry(optionsFor(service.port, log, { ca: [pki.caPem] }, { connectRetryCount: 5 }), { backoff: new Backoff(4, 20, () => 0.999999) }), 'gave-up');
  const delays = lines.map((l) => /Retrying connection to \S+ in (\d+) ms/.exec(l)?.[1]).filter((d) => d !== undefined).map(Number);
  assert.equal(delays, [4, 8, 16, 20, 20]);
});

retry('delayFirst waits one backoff step before the first attempt', async () => {
  const { log } = captureLog();
  const started = Date.now();
  const conn = connected(await within(connectWithRetry(optionsFor(service.port, log, { ca: [pki.caPem] }), { delayFirst: true, backoff: new Backoff(150, 150, () => 0.999999) }), 10_000, 'connect'));
  conn.ws.terminate();
  assert.ok(Date.now() - started >= 140, 'waited before connecting');
});

retry('abort during the delay ends at once with the signal reason', async () => {
  service.behaviour.reject = { status: 503 };
  const { log, waitFor } = captureLog();
  const controller = new AbortController();
  const reason = new Error('shutting down');
  const attempt = connectWithRetry(optionsFor(service.port, log, { ca: [pki.caPem] }), { signal: controller.signal, backoff: new Backoff(60_000, 60_000, () => 0.5) });
  await waitFor('Retrying connection');
  controller.abort(reason);
  const outcome = await within(attempt, 1000, 'abort');
  assert.equal(outcome, { kind: 'aborted', reason });
});

retry('network failures (nothing listening) are retried, then it gives up', async () => {
  const gone = await startFakeService(pki);
  const port = gone.port;
  await gone.close();
  const { log, lines } = captureLog();
  await expectFailure(connectWithRetry(optionsFor(port, log, { ca: [pki.caPem] }, { connectRetryCount: 2 })), 'gave-up');
  assert.is(lines.filter((l) => l.includes('[error] Could not connect to proxy server:')).length, 3);
});

retry.run();
