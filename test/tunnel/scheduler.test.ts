/**
 * The scheduler and the pacer on their own: synthetic queues, no sockets, no timers.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Pacer, WS_SEND_WINDOW_BYTES } from '../../src/tunnel/pacer';
import { Scheduler } from '../../src/tunnel/scheduler';

const scheduler = suite('scheduler');

/** A frame whose first byte names its producer and whose second its sequence number. */
function frame(producer: string, seq: number, bytes = 2): Buffer {
  const b = Buffer.alloc(bytes);
  b[0] = producer.charCodeAt(0);
  b[1] = seq;
  return b;
}
const label = (b: Buffer): string => `${String.fromCharCode(b[0])}${b[1]}`;

scheduler('round robin: one frame per producer per turn, each producer in order', () => {
  const s = new Scheduler<string>();
  for (let i = 0; i < 3; i++) s.push('a', frame('a', i));
  s.push('b', frame('b', 0));
  for (let i = 0; i < 2; i++) s.push('c', frame('c', i));
  const out: Buffer[] = [];
  const emptied: string[] = [];
  s.take(Infinity, out, emptied);
  assert.equal(out.map(label), ['a0', 'b0', 'c0', 'a1', 'c1', 'a2']);
  assert.equal(emptied, ['b', 'c', 'a']);
  assert.is(s.queuedBytes, 0);
});

scheduler('an interactive frame pushed behind a bulk backlog goes out second', () => {
  const s = new Scheduler<string>();
  for (let i = 0; i < 40; i++) s.push('bulk', frame('b', i, 60_000));
  s.push('key', frame('k', 0));
  const out: Buffer[] = [];
  s.take(1, out, []);
  s.take(1, out, []);
  assert.equal(out.map(label), ['b0', 'k0']);
});

scheduler('take stops once the byte count is reached, and goes on from there next time', () => {
  const s = new Scheduler<string>();
  for (let i = 0; i < 4; i++) s.push('a', frame('a', i, 100));
  for (let i = 0; i < 4; i++) s.push('b', frame('b', i, 100));
  const first: Buffer[] = [];
  assert.is(s.take(250, first, []), 300, 'the frame that crosses the limit is taken whole');
  assert.equal(first.map(label), ['a0', 'b0', 'a1']);
  assert.is(s.queuedBytes, 500);
  assert.is(s.queued('a'), 200);
  assert.is(s.queued('b'), 300);
  const rest: Buffer[] = [];
  s.take(Infinity, rest, []);
  assert.equal(rest.map(label), ['b1', 'a2', 'b2', 'a3', 'b3']);
});

scheduler('drop forgets one producer; the others keep their turns', () => {
  const s = new Scheduler<string>();
  for (const p of ['a', 'b', 'c']) for (let i = 0; i < 2; i++) s.push(p, frame(p, i, 10));
  assert.is(s.drop('b'), 20);
  assert.is(s.drop('b'), 0, 'dropping twice is harmless');
  assert.is(s.queuedBytes, 40);
  const out: Buffer[] = [];
  s.take(Infinity, out, []);
  assert.equal(out.map(label), ['a0', 'c0', 'a1', 'c1']);
});

scheduler('a producer that empties and pushes again rejoins at the end of the ring', () => {
  const s = new Scheduler<string>();
  s.push('a', frame('a', 0));
  s.push('b', frame('b', 0));
  s.push('b', frame('b', 1));
  const out: Buffer[] = [];
  s.take(4, out, []);
  s.push('a', frame('a', 1));
  s.take(Infinity, out, []);
  assert.equal(out.map(label), ['a0', 'b0', 'b1', 'a1']);
});

scheduler('clear forgets everything', () => {
  const s = new Scheduler<string>();
  s.push('a', frame('a', 0));
  s.clear();
  const out: Buffer[] = [];
  assert.is(s.take(Infinity, out, []), 0);
  assert.is(s.queuedBytes, 0);
});

scheduler.run();

const pacer = suite('pacer');

pacer('room is the window less what ws holds unwritten', () => {
  const p = new Pacer();
  assert.is(p.room(0), WS_SEND_WINDOW_BYTES);
  assert.is(p.room(WS_SEND_WINDOW_BYTES - 1), 1);
  assert.ok(p.room(WS_SEND_WINDOW_BYTES) <= 0, 'a full window leaves no room');
  assert.is(new Pacer(1000).room(400), 600);
});

pacer.run();
