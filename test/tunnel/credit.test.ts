/**
 * The credit module on its own (issue 14): negotiation and per-connection windows, fed with
 * synthetic events — two Credit instances play the two peers, with the messages between them
 * carried by hand, in order, as the tunnel would.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Credit, REJECTION_WINDOW_MS, type CreditSettings, type Grant } from '../../src/tunnel/credit';

const credit = suite('credit');

const KiB = 1024;
const settings: CreditSettings = { initialWindow: 256 * KiB, maxWindow: 4096 * KiB, totalBytes: 8192 * KiB };

function hello(c: Credit<string>) {
  return { version: 1, nonce: c.nonce };
}

/** Two peers that have exchanged HELLOs, with connection `c` open on both. */
function pairWith(conn = 'c', s: CreditSettings = settings): { a: Credit<string>; b: Credit<string> } {
  const a = new Credit<string>(s, 'aaaaaaaaaaaaaaaa');
  const b = new Credit<string>(s, 'bbbbbbbbbbbbbbbb');
  a.open(conn);
  b.open(conn);
  b.onHello(hello(a));
  a.onHello(hello(b));
  return { a, b };
}

credit('HELLO: a new nonce is answered once; our own and a known one are not; a new one voids what was agreed', () => {
  const a = new Credit<string>(settings, '0000000000000001');
  assert.not.ok(a.peerKnown);
  assert.equal(a.onHello({ version: 1, nonce: a.nonce }), { newPeer: false, reply: false }, 'our own HELLO (echoed) is not a peer');
  assert.equal(a.onHello({ version: 1, nonce: '00000000000000b1' }), { newPeer: true, reply: true });
  assert.ok(a.peerKnown);
  assert.equal(a.onHello({ version: 1, nonce: '00000000000000b1' }), { newPeer: false, reply: false }, 'the same peer again: no reply (no HELLO ping-pong)');
  a.open('c');
  assert.ok(a.firstGrant('c'));
  a.onWindow('c', { limit: 1000, ack: true });
  assert.is(a.room('c'), 1000);
  assert.equal(a.onHello({ version: 1, nonce: '00000000000000b2' }), { newPeer: true, reply: true }, 'the peer reconnected');
  assert.is(a.room('c'), Infinity, 'no grant from the new peer: unlimited, never waiting for the old one');
  assert.not.ok(a.isGranted('c'));
  assert.ok(a.firstGrant('c'), 'a first grant again, for the new peer');
});

credit('nothing is granted before the peer is known; a sender without a grant is unlimited', () => {
  const a = new Credit<string>(settings);
  a.open('c');
  assert.is(a.firstGrant('c'), undefined);
  assert.is(a.consumed('c', 100), undefined);
  assert.is(a.room('c'), Infinity);
  assert.is(a.onWindow('c', { limit: 10, ack: false }), undefined, 'a WINDOW before the HELLO is ignored');
  assert.is(a.room('c'), Infinity);
  assert.is(a.received('c', 1_000_000_000), 'unbounded');
});

credit('activation: first grants cross, each side acknowledges once; the sender stops at the limit and resumes on the next grant', () => {
  const { a, b } = pairWith();
  // a started the connection: its grant follows its START; b grants on receiving the START.
  const fromA = a.firstGrant('c')!;
  const fromB = b.firstGrant('c')!;
  assert.equal(fromA, { limit: 256 * KiB, ack: false });
  assert.equal(fromB, { limit: 256 * KiB, ack: false });
  assert.is(a.firstGrant('c'), undefined, 'one first grant');
  // a sent 1000 bytes before b's grant arrived.
  a.sent('c', 1000);
  assert.equal(b.received('c', 1000), 'unbounded', 'bytes before the ACK are not bound by the grant');
  assert.equal(a.onWindow('c', fromB), { ackDue: true });
  const ackFromA = a.ackGrant('c')!;
  assert.equal(ackFromA, { limit: 256 * KiB, ack: true });
  assert.equal(b.onWindow('c', fromA), { ackDue: true });
  const ackFromB = b.ackGrant('c')!;
  b.onWindow('c', ackFromA);
  a.onWindow('c', ackFromB);
  assert.ok(b.isGranted('c'), 'b now bounds what a sends');
  assert.ok(a.isGranted('c'));
  assert.equal(a.onWindow('c', { limit: 256 * KiB, ack: true }), { ackDue: false }, 'later WINDOWs need no ACK');

  assert.is(a.room('c'), 256 * KiB - 1000);
  a.sent('c', 256 * KiB - 1000);
  assert.is(a.room('c'), 0, 'at the limit');
  assert.is(b.received('c', 256 * KiB - 1000), 'granted');
  assert.is(b.consumed('c', 100 * KiB), undefined, 'no grant before half the window is taken');
  const more = b.consumed('c', 40 * KiB)!;
  assert.equal(more, { limit: 140 * KiB + 256 * KiB, ack: true });
  a.onWindow('c', more);
  assert.is(a.room('c'), 140 * KiB);
  a.onWindow('c', { limit: 10, ack: true });
  assert.is(a.room('c'), 140 * KiB, 'limits never go down: WINDOWs are idempotent');
});

credit('a sender that had sent past the first grant waits until a grant passes what it sent; the receiver takes that as the floor', () => {
  const { a, b } = pairWith();
  const fromB = b.firstGrant('c')!;
  a.sent('c', 300 * KiB);
  b.received('c', 300 * KiB);
  a.onWindow('c', fromB);
  assert.is(a.room('c'), 0, 'already past the grant');
  b.onWindow('c', a.ackGrant('c')!);
  assert.is(b.received('c', 0), 'granted', 'the 300 KiB before the ACK are within the floor');
  assert.is(b.received('c', 1), 'violation', 'one byte more is not');
});

credit('a violation: more than max(grant, floor) after the ACK', () => {
  const { a, b } = pairWith();
  const fromB = b.firstGrant('c')!;
  a.onWindow('c', fromB);
  b.onWindow('c', a.ackGrant('c')!);
  assert.is(b.received('c', 256 * KiB), 'granted');
  assert.is(b.received('c', 1), 'violation');
});

interface Pair {
  a: Credit<string>;
  b: Credit<string>;
  /** b's grants on their way to a (they arrive one step, a round trip, later). */
  wire: Grant[];
}

/** Drives one direction: a sends as much as it may, b's app takes up to `appTakes` of what is pending per step (Infinity = all). */
function run(p: Pair, steps: number, appTakes: number): { sent: number; taken: number } {
  const { a, b } = p;
  let sent = 0;
  let taken = 0;
  for (let step = 0; step < steps; step++) {
    for (const g of p.wire) a.onWindow('c', g);
    p.wire = [];
    const n = Math.min(a.room('c'), 1 << 30);
    a.sent('c', n);
    sent += n;
    assert.is.not(b.received('c', n), 'violation');
    const w = b.inspect('c')!;
    const take = Math.min(w.received - w.consumed, appTakes);
    for (let done = 0; done < take;) {
      const piece = Math.min(64 * KiB, take - done);
      const g = b.consumed('c', piece);
      if (g) p.wire.push(g);
      done += piece;
    }
    taken += take;
  }
  return { sent, taken };
}

function activated(s: CreditSettings = settings): Pair {
  const { a, b } = pairWith('c', s);
  const fromB = b.firstGrant('c')!;
  const fromA = a.firstGrant('c')!;
  a.onWindow('c', fromB);
  b.onWindow('c', fromA);
  b.onWindow('c', a.ackGrant('c')!);
  a.onWindow('c', b.ackGrant('c')!);
  return { a, b, wire: [] };
}

credit('window growth: a fast app starved by the window doubles it up to the maximum; throughput per round trip follows', () => {
  const p = activated();
  const first = run(p, 1, Infinity);
  assert.is(first.sent, 256 * KiB);
  run(p, 20, Infinity);
  assert.is(p.b.inspect('c')!.size, settings.maxWindow, 'grown to the maximum');
  const later = run(p, 10, Infinity);
  assert.ok(later.sent >= 10 * (settings.maxWindow / 2), `with the grown window a round trip moves at least half of it (${later.sent} bytes in 10)`);
});

credit('window growth: an app that takes less than arrives (slow, or stalled) never grows its window', () => {
  const slow = activated();
  const r0 = run(slow, 50, 64 * KiB);
  assert.ok(r0.taken >= 49 * 64 * KiB, 'the slow app is never short of bytes');
  assert.is(slow.b.inspect('c')!.size, settings.initialWindow, 'slow app: the window stays');
  const stalled = activated();
  const r = run(stalled, 50, 0);
  assert.is(r.sent, settings.initialWindow, 'a stalled app gets one window and no more');
  assert.is(stalled.b.inspect('c')!.size, settings.initialWindow);
  assert.is(stalled.b.outstandingBytes, settings.initialWindow);
});

credit('window growth stops while the grants not yet taken, all connections together, would pass the total', () => {
  const small: CreditSettings = { initialWindow: 256 * KiB, maxWindow: 4096 * KiB, totalBytes: 1024 * KiB };
  const p = activated(small);
  const { b } = p;
  // A second connection that holds its whole window, unread.
  b.open('stalled');
  b.firstGrant('stalled');
  run(p, 30, Infinity);
  assert.ok(b.outstandingBytes <= small.totalBytes, `outstanding ${b.outstandingBytes} within the total`);
  assert.is(b.inspect('c')!.size, 512 * KiB, 'grew while the total allowed (256 KiB held + 512 KiB), then stopped');
  b.close('stalled');
  run(p, 30, Infinity);
  assert.is(b.inspect('c')!.size, 1024 * KiB, 'the closed connection\'s share lets it grow to the total, and no further');
});

credit('closing a connection forgets it and what it had outstanding', () => {
  const { a, b } = activated();
  assert.is(b.outstandingBytes, settings.initialWindow);
  b.close('c');
  assert.is(b.outstandingBytes, 0);
  assert.is(b.received('c', 10), 'unbounded');
  assert.is(b.consumed('c', 10), undefined);
  assert.is(a.room('c'), settings.initialWindow);
});

credit('rejection: a protocol or policy close soon after our HELLO, before any peer HELLO; not later, not with other codes, not once a peer spoke', () => {
  const a = new Credit<string>(settings);
  assert.not.ok(a.rejectedBy(1008, 1000), 'nothing announced');
  a.announced(1000);
  assert.ok(a.rejectedBy(1008, 1500));
  assert.ok(a.rejectedBy(1002, 1500));
  assert.not.ok(a.rejectedBy(1000, 1500), 'a normal close is the tunnel closing');
  assert.not.ok(a.rejectedBy(1006, 1500), 'an abrupt loss is retried as always');
  assert.not.ok(a.rejectedBy(1008, 1000 + REJECTION_WINDOW_MS + 1), 'too late to be a reply');
  a.onHello({ version: 1, nonce: '00000000000000b1' });
  assert.not.ok(a.rejectedBy(1008, 1500), 'the HELLO went through: the peer answered');
});

credit.run();
