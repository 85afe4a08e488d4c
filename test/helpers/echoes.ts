/**
 * 1-byte echoes, one at a time, on one connection while something else runs: the round trips
 * an interactive session sees (issue 13). Used by the echo-behind-bulk tests.
 */
import { performance } from 'node:perf_hooks';
import type { Socket } from 'node:net';
import * as assert from 'uvu/assert';
import { connectTo } from './apps';
import { within } from './wait';

/** 1-byte echo round trips (ms) on one connection until `done()` says so. */
export async function echoes(port: number, done: () => boolean): Promise<number[]> {
  const socket: Socket = await connectTo(port);
  let waiter: { resolve: (data: Buffer) => void; reject: (err: Error) => void } | undefined;
  socket.on('data', (data: Buffer) => waiter?.resolve(data));
  socket.on('close', () => waiter?.reject(new Error('the echo connection closed')));
  const rtts: number[] = [];
  try {
    for (let i = 0; !done(); i++) {
      const byte = Buffer.of(i & 0xff);
      const reply = new Promise<Buffer>((resolve, reject) => { waiter = { resolve, reject }; });
      const sent = performance.now();
      socket.write(byte);
      const data = await within(reply, 30_000, `echo ${i}`);
      rtts.push(performance.now() - sent);
      assert.ok(data.equals(byte), `echo ${i} came back as ${data.toString('hex')}`);
    }
    return rtts;
  } finally {
    socket.destroy();
  }
}

export function p99(samples: number[]): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.ceil(sorted.length * 0.99) - 1];
}
