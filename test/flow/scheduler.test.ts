/**
 * The scheduler on its own (issue 13): synthetic queues, no sockets, no timers. Sparse
 * producers first (RFC 8290's new list), deficit round robin by bytes among the rest.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Scheduler } from '../../src/flow/scheduler';

const scheduler = suite('scheduler');

/** A frame whose first byte names its producer and whose second its sequence number. */
function frame(producer: string, seq: number, bytes = 2): Buffer {
  const b = Buffer.alloc(bytes);
  b[0] = producer.charCodeAt(0);
  b[1] = seq;
  return b;
}
const label = (b: Buffer): string => `${String.fromCharCode(b[0])}${b[1]}`;

/** Takes frames one at a time (the smallest take) until nothing is left; returns their labels. */
function drain(s: Scheduler<string>, limit = 10_000): string[] {
  const out: Buffer[] = [];
  for (let i = 0; i < limit && s.queuedBytes > 0; i++) s.take(1, out, []);
  return out.map(label);
}

scheduler('each producer keeps its own order, and every byte comes out once', () => {
  const s = new Scheduler<string>(10);
  for (let i = 0; i < 5; i++) s.push('a', frame('a', i, 7));
  for (let i = 0; i < 3; i++) s.push('b', frame('b', i, 3));
  const out = drain(s);
  assert.equal(out.filter((l) => l[0] === 'a'), ['a0', 'a1', 'a2', 'a3', 'a4']);
  assert.equal(out.filter((l) => l[0] === 'b'), ['b0', 'b1', 'b2']);
  assert.is(s.queuedBytes, 0);
});

scheduler('a producer that sends little goes before a backlog that was there first', () => {
  const s = new Scheduler<string>(16 * 1024);
  for (let i = 0; i < 40; i++) s.push('bulk', frame('b', i, 60_000));
  const out: Buffer[] = [];
  s.take(1, out, []);   // the bulk transfer is under way
  s.push('key', frame('k', 0));
  s.take(1, out, []);
  assert.equal(out.map(label), ['b0', 'k0'], 'the keystroke is next, not behind 39 queued frames');
});

scheduler('deficit round robin shares bytes evenly between bulk producers, whatever their frame sizes', () => {
  const s = new Scheduler<string>(4096);
  for (let i = 0; i < 400; i++) s.push('small', frame('s', i % 256, 1000));
  for (let i = 0; i < 100; i++) s.push('large', frame('l', i % 256, 4000));
  const bytes = { s: 0, l: 0 };
  const out: Buffer[] = [];
  // The first 200 kB taken, while both still have plenty queued.
  while (bytes.s + bytes.l < 200_000) {
    out.length = 0;
    s.take(1, out, []);
    for (const f of out) bytes[String.fromCharCode(f[0]) as 's' | 'l'] += f.length;
  }
  const share = bytes.s / (bytes.s + bytes.l);
  assert.ok(share > 0.45 && share < 0.55, `the 1000-byte producer got ${(share * 100).toFixed(1)} % of the bytes`);
});

scheduler('a producer that keeps its queue full leaves the new list after one quantum', () => {
  const s = new Scheduler<string>(1000);
  for (let i = 0; i < 10; i++) s.push('old', frame('o', i, 500));
  const out: Buffer[] = [];
  for (let i = 0; i < 3; i++) s.take(1, out, []);   // o0, o1: its first quantum; o2 from the old list
  for (let i = 0; i < 10; i++) s.push('greedy', frame('g', i, 500));
  out.length = 0;
  s.take(3000, out, []);
  // greedy is new: its quantum (two frames) goes first; then it is an old producer like the
  // other, one quantum each in turn ('old' had half of its quantum left).
  assert.equal(out.map(label), ['g0', 'g1', 'o3', 'g2', 'g3', 'o4']);
});

scheduler('a new producer that emptied cannot come back as new at once (RFC 8290 §4.2)', () => {
  const s = new Scheduler<string>(1000);
  for (let i = 0; i < 20; i++) s.push('bulk', frame('b', i, 300));
  const out: Buffer[] = [];
  for (let i = 0; i < 5; i++) s.take(1, out, []);   // b0-b3 its first quantum, b4 from the old list
  s.push('chatty', frame('c', 0));
  s.take(1, out, []);                   // c0 goes first: chatty was idle
  s.take(1, out, []);                   // chatty found empty: it goes to the old list; b5
  s.push('chatty', frame('c', 1));      // chatty again: it waits for its turn behind bulk's quantum
  s.take(1, out, []);
  s.take(1, out, []);
  assert.equal(out.map(label), ['b0', 'b1', 'b2', 'b3', 'b4', 'c0', 'b5', 'b6', 'c1']);
  // After a turn in which it had nothing, it is forgotten, and new again when it sends.
  s.take(1, out, []);
  s.push('chatty', frame('c', 2));
  out.length = 0;
  s.take(1, out, []);
  assert.equal(out.map(label), ['c2']);
});

scheduler('take stops once the byte count is reached, and goes on from there next time', () => {
  const s = new Scheduler<string>(200);
  for (let i = 0; i < 4; i++) s.push('a', frame('a', i, 100));
  for (let i = 0; i < 4; i++) s.push('b', frame('b', i, 100));
  const first: Buffer[] = [];
  assert.is(s.take(250, first, []), 300, 'the frame that crosses the limit is taken whole');
  assert.equal(first.map(label), ['a0', 'a1', 'b0']);
  assert.is(s.queuedBytes, 500);
  assert.is(s.queued('a'), 200);
  assert.is(s.queued('b'), 300);
  const rest: Buffer[] = [];
  s.take(Infinity, rest, []);
  assert.equal(rest.map(label), ['b1', 'a2', 'a3', 'b2', 'b3']);
});

scheduler('emptied lists every producer whose queue a take emptied', () => {
  const s = new Scheduler<string>(1000);
  s.push('a', frame('a', 0));
  s.push('b', frame('b', 0));
  s.push('b', frame('b', 1));
  const out: Buffer[] = [];
  const emptied: string[] = [];
  s.take(3, out, emptied);
  assert.equal(out.map(label), ['a0', 'b0']);
  assert.equal(emptied, ['a']);
  s.take(Infinity, out, emptied);
  assert.equal(emptied, ['a', 'b']);
});

scheduler('newOnly takes from producers that send little and leaves the rest queued', () => {
  const s = new Scheduler<string>(1000);
  for (let i = 0; i < 5; i++) s.push('bulk', frame('b', i, 600));
  const out: Buffer[] = [];
  s.take(1, out, []);
  s.take(1, out, []);                    // bulk used its quantum: it is in the old list
  s.push('key', frame('k', 0));
  assert.ok(s.hasNewFlow);
  out.length = 0;
  s.take(10_000, out, [], true);
  assert.equal(out.map(label), ['k0']);
  assert.not.ok(s.hasNewFlow);
  assert.is(s.queued('bulk'), 3 * 600);
});

scheduler('drop forgets one producer; the others keep their turns', () => {
  const s = new Scheduler<string>(10);
  for (const p of ['a', 'b', 'c']) for (let i = 0; i < 2; i++) s.push(p, frame(p, i, 10));
  assert.is(s.drop('b'), 20);
  assert.is(s.drop('b'), 0, 'dropping twice is harmless');
  assert.is(s.queuedBytes, 40);
  const out: Buffer[] = [];
  s.take(Infinity, out, []);
  assert.equal(out.map(label), ['a0', 'c0', 'a1', 'c1']);
  s.push('b', frame('b', 7, 10));
  out.length = 0;
  s.take(Infinity, out, []);
  assert.equal(out.map(label), ['b7'], 'a dropped producer can queue again');
});

scheduler('clear forgets everything', () => {
  const s = new Scheduler<string>();
  s.push('a', frame('a', 0));
  s.clear();
  const out: Buffer[] = [];
  assert.is(s.take(Infinity, out, []), 0);
  assert.is(s.queuedBytes, 0);
  assert.not.ok(s.hasNewFlow);
});

scheduler.run();
