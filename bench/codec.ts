/**
 * Codec benchmark (not a test): encode + frame + decode throughput.
 *   node --import tsx bench/codec.ts [--json]
 * Prints MB/s for 64512-byte DATA messages and messages/s for 1-byte DATA messages,
 * median and range of 5 runs of about one second each.
 */
import os from 'node:os';
import { encodeFrame, FrameDecoder, packFrames } from '../src/protocol/framing';
import { MessageType } from '../src/protocol/message';

function measure(payloadBytes: number, batch: number): { msgsPerSec: number; mbPerSec: number } {
  const payload = new Uint8Array(payloadBytes).fill(7);
  const decoder = new FrameDecoder();
  let decoded = 0;
  let checksum = 0;
  const onMessage = (m: { payload: Uint8Array }) => { decoded++; checksum += m.payload.length; };
  const onError = (e: Error) => { throw e; };
  const started = process.hrtime.bigint();
  let elapsedNs = 0n;
  let sent = 0;
  while (elapsedNs < 1_000_000_000n) {
    const frames: Buffer[] = [];
    for (let i = 0; i < batch; i++) frames.push(encodeFrame({ type: MessageType.DATA, streamId: 1, serviceId: 'SSH1', connectionId: (sent + i) % 128 + 1, payload }));
    for (const wsMessage of packFrames(frames)) decoder.push(wsMessage, onMessage, onError);
    sent += batch;
    elapsedNs = process.hrtime.bigint() - started;
  }
  if (decoded !== sent || checksum !== sent * payloadBytes) throw new Error(`integrity: sent ${sent}, decoded ${decoded}`);
  const seconds = Number(elapsedNs) / 1e9;
  return { msgsPerSec: sent / seconds, mbPerSec: (sent * payloadBytes) / seconds / 1024 / 1024 };
}

function median(xs: number[]) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

const RUNS = 5;
const large = Array.from({ length: RUNS }, () => measure(64512, 16).mbPerSec);
const small = Array.from({ length: RUNS }, () => measure(1, 1000).msgsPerSec);
const result = {
  date: new Date().toISOString().slice(0, 10),
  node: process.version,
  cpus: `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'unknown'}`,
  largeMiBps: { median: median(large), min: Math.min(...large), max: Math.max(...large) },
  smallMsgsPerSec: { median: median(small), min: Math.min(...small), max: Math.max(...small) },
};
if (process.argv.includes('--json')) {
  process.stdout.write(JSON.stringify(result) + '\n');
} else {
  const f = (n: number) => n.toFixed(0);
  process.stdout.write(`codec (${result.date}, Node ${result.node}, ${result.cpus})\n`);
  process.stdout.write(`  64512-byte DATA, encode+pack+decode: ${f(result.largeMiBps.median)} MiB/s (range ${f(result.largeMiBps.min)}-${f(result.largeMiBps.max)})\n`);
  process.stdout.write(`  1-byte DATA, encode+pack+decode:     ${f(result.smallMsgsPerSec.median)} msg/s (range ${f(result.smallMsgsPerSec.min)}-${f(result.smallMsgsPerSec.max)})\n`);
}
