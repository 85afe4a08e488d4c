/**
 * The one logger of all the agent's tunnels: forks share one line budget, one set of
 * `limited()` counts and one set of secrets, and a tunnel's tokens are forgotten when it ends.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { TunnelLog } from '../../src/agent/tunnel-log';
import { Logger, LogLevel } from '../../src/log';
import { Lines } from './lines';

const test = suite('agent: one logger for all tunnels');

function setup(budget: number, windowMs: number): { lines: Lines; log: TunnelLog } {
  const lines = new Lines();
  const agentLog = new Logger({ level: 4, sink: lines.sink });
  return { lines, log: new TunnelLog({ level: 4, sink: lines.sink }, agentLog, budget, windowMs) };
}

test('lines of many tunnels share one budget; the rest are counted in one line when the window ends', async () => {
  const { lines, log } = setup(10, 300);
  for (let tunnel = 1; tunnel <= 50; tunnel++) {
    const fork = log.root.fork(`tunnel #${tunnel}`);
    fork.info('starting');
    fork.warn('Could not connect');
  }
  assert.is(lines.count('tunnel #'), 10, 'the budget, across tunnels');
  await lines.waitFor(/90 log lines of tunnels left out: over 10 in 0\.3 s/, 5000, 'the count line');
  // A new window writes again.
  log.root.fork('tunnel #51').info('starting');
  assert.is(lines.count('tunnel #51: starting'), 1);
});

test('limited() kinds are counted across tunnels, not per tunnel', () => {
  const { lines, log } = setup(1000, 10_000);
  for (let tunnel = 1; tunnel <= 20; tunnel++) log.root.fork(`tunnel #${tunnel}`).limited(LogLevel.WARNING, 'ca problem', 'CA directory /x does not exist');
  assert.is(lines.count('CA directory /x does not exist'), 5);
  log.root.flushLimited();
  assert.is(lines.count('15 similar messages suppressed (ca problem)'), 1);
});

test('a token redacted in one tunnel is redacted in all of them, and forgotten when asked', () => {
  const { lines, log } = setup(1000, 10_000);
  const a = log.root.fork('tunnel #1');
  const b = log.root.fork('tunnel #2');
  a.redact('AQGtoken-of-tunnel-1');
  b.info('saw AQGtoken-of-tunnel-1');
  assert.ok(lines.text.includes('saw ***'));
  log.root.forget('AQGtoken-of-tunnel-1');
  b.info('now AQGtoken-of-tunnel-1');
  assert.ok(lines.text.includes('now AQGtoken-of-tunnel-1'), 'forgotten: the set does not grow with every tunnel');
});

test.run();
