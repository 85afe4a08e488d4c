/**
 * The echo ends of the echo-behind-bulk benchmark, each in a process of its own, so that an echo
 * is not timed behind the bulk clients' and the bulk server's hashing in the benchmark process
 * (one event loop serving both measured the harness, not the path: 6 ms p50 behind an upload on
 * a direct TCP connection). Started by bench/tunnel.ts with `fork` (`--import tsx`):
 *
 *   echo-child.ts server   serves each connection it is handed ({ kind: 'socket' } with the socket,
 *                          from `AppServer.handNextTo`) as the application server does, and
 *                          answers { kind: 'served', mode } with the connection's mode byte
 *   echo-child.ts client   { kind: 'echo', port, rounds, durationMs }: 1-byte echoes on one new
 *                          connection until either runs out; answers { kind: 'echoed', rtts }
 *                          (microseconds) or { kind: 'failed', message, noReplyMs?, rounds? }
 *                          (noReplyMs: a reply did not come within that bound, after `rounds`
 *                          echoes); { kind: 'stop' } ends the round under way (its connection is closed)
 */
import type net from 'node:net';
import { echoRounds, NoReplyError, serveConnection, type SlowReader } from './apps';

export type EchoRequest =
  | { kind: 'socket' }
  | { kind: 'echo'; port: number; rounds: number; durationMs: number }
  | { kind: 'stop' };

export type EchoReply =
  | { kind: 'ready' }
  | { kind: 'served'; mode: string }
  | { kind: 'echoed'; rtts: number[] }
  | { kind: 'failed'; message: string; noReplyMs?: number; rounds?: number };

function reply(message: EchoReply): void {
  process.send!(message);
}

const role = process.argv[2];
if (!process.send) throw new Error('bench/echo-child.ts runs only as a forked child of bench/tunnel.ts');
// The parent ends this process by closing the channel (or by a signal).
process.on('disconnect', () => process.exit(0));

if (role === 'server') {
  const slowReaders: SlowReader[] = [];
  process.on('message', (message: EchoRequest, socket?: net.Socket) => {
    if (message.kind !== 'socket' || !socket) return;
    serveConnection(socket, slowReaders, (mode) => reply({ kind: 'served', mode }));
  });
} else if (role === 'client') {
  let current: AbortController | undefined;
  process.on('message', (message: EchoRequest) => {
    if (message.kind === 'stop') return current?.abort();
    if (message.kind !== 'echo') return;
    const abort = (current = new AbortController());
    const deadline = performance.now() + message.durationMs;
    let rounds = 0;
    const until = () => {
      rounds++;
      return performance.now() > deadline;
    };
    echoRounds(message.port, message.rounds, until, abort.signal).then(
      (rtts) => reply({ kind: 'echoed', rtts }),
      (err: Error) => reply({ kind: 'failed', message: err.message, ...(err instanceof NoReplyError ? { noReplyMs: err.limitMs, rounds: rounds - 1 } : {}) }),
    );
  });
} else {
  throw new Error(`bench/echo-child.ts: unknown role ${role}`);
}
reply({ kind: 'ready' });
