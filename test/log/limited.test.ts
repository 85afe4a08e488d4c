/**
 * Logger.limited: lines a peer or client can repeat at will are bounded per kind and window,
 * and what was held back is counted in one line.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Logger, LogLevel } from '../../src/log';
import { within } from '../helpers/wait';

const limited = suite('Logger.limited');

function capture(options: { burst?: number; windowMs?: number; level?: number } = {}) {
  const lines: string[] = [];
  let waiter: { re: RegExp; resolve: (line: string) => void } | undefined;
  const log = new Logger({
    level: options.level ?? LogLevel.INFO,
    limitBurst: options.burst,
    limitWindowMs: options.windowMs,
    sink: (line) => {
      lines.push(line);
      if (waiter?.re.test(line)) waiter.resolve(line);
    },
  });
  const next = (re: RegExp) => new Promise<string>((resolve) => { waiter = { re, resolve }; });
  return { log, lines, next };
}

limited('20 lines of one kind: the first 5 are written, the other 15 reported in one line when the window ends', async () => {
  const { log, lines, next } = capture({ windowMs: 300 });
  const report = next(/suppressed/);
  for (let i = 0; i < 20; i++) log.limited(LogLevel.WARNING, 'refused upgrade', `refused upgrade ${i}`);
  assert.is(lines.length, 5);
  assert.match(lines[4], '[warning] refused upgrade 4');
  const line = await within(report, 3000, 'the suppressed count');
  assert.match(line, /\[warning\] 15 similar messages suppressed \(refused upgrade\)\n$/);
  // A new window writes again.
  log.limited(LogLevel.WARNING, 'refused upgrade', 'refused upgrade again');
  assert.match(lines[lines.length - 1], 'refused upgrade again');
});

limited('kinds are counted apart, forks share the limit and report with their own prefix', async () => {
  const { log, lines, next } = capture({ burst: 2, windowMs: 300 });
  const a = log.fork('tunnel a');
  const b = log.fork('tunnel b');
  const report = next(/suppressed/);
  for (let i = 0; i < 3; i++) a.limited(LogLevel.INFO, 'start', `start a${i}`);
  for (let i = 0; i < 3; i++) b.limited(LogLevel.INFO, 'start', `start b${i}`);
  for (let i = 0; i < 2; i++) b.limited(LogLevel.INFO, 'other', `other b${i}`);
  assert.equal(lines.map((l) => l.replace(/^.*\] /, '').trim()), ['tunnel a: start a0', 'tunnel a: start a1', 'tunnel b: other b0', 'tunnel b: other b1']);
  assert.match(await within(report, 3000, 'the suppressed count'), /tunnel a: 4 similar messages suppressed \(start\)/);
});

limited('a level that is off neither writes nor counts; flushLimited reports pending counts at once', () => {
  const { log, lines } = capture({ windowMs: 60_000, level: LogLevel.WARNING });
  for (let i = 0; i < 10; i++) log.limited(LogLevel.INFO, 'quiet', 'not shown');
  for (let i = 0; i < 7; i++) log.limited(LogLevel.ERROR, 'loud', 'shown');
  assert.is(lines.length, 5);
  log.flushLimited();
  assert.is(lines.length, 6);
  assert.match(lines[5], '[error] 2 similar messages suppressed (loud)');
  log.flushLimited();
  assert.is(lines.length, 6, 'a count is reported once');
});

limited('secrets are scrubbed from limited lines too', () => {
  const { log, lines } = capture();
  log.redact('very-secret-token');
  log.limited(LogLevel.INFO, 'x', 'token very-secret-token refused');
  assert.match(lines[0], 'token *** refused');
});

limited.run();
