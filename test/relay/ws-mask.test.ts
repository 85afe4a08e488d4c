/**
 * Word-wise WebSocket masking (src/relay/ws-mask.ts), which the bundle gives ws as its
 * `bufferutil` hook: the same bytes as RFC 6455's byte-by-byte XOR at every alignment and
 * length, and the built relay (`dist/localproxy.cjs relay`, where ws uses it) forwarding what
 * randomly masking clients send byte for byte.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { TunnelApiClient } from '../../src/api/client';
import { encodeFrame } from '../../src/protocol/framing';
import { MessageType } from '../../src/protocol/message';
import type { Relay } from '../../src/relay/server';
import { mask, unmask } from '../../src/relay/ws-mask';
import { CLI } from '../helpers/child';
import { within } from '../helpers/wait';
import { connectReady } from './peer';

const test = suite('ws masking four bytes at a time (the bundle\'s bufferutil)');

function reference(data: Uint8Array, key: Uint8Array): Buffer {
  const out = Buffer.from(data);
  for (let i = 0; i < out.length; i++) out[i] ^= key[i & 3];
  return out;
}

/** `n` bytes that differ per position and seed. */
function bytes(n: number, seed: number): Buffer {
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i++) out[i] = (seed * 131 + i * 7 + (i >> 8)) & 0xff;
  return out;
}

const KEYS = [Buffer.from([0x12, 0x34, 0x56, 0x78]), Buffer.from([0xff, 0x00, 0xa5, 0x01])];
const LENGTHS = [...Array.from({ length: 80 }, (_, i) => i), 1023, 4096, 65536 + 3, 131076];

test('unmask: the byte-wise XOR for every start alignment and length', () => {
  for (const key of KEYS) {
    for (const length of LENGTHS) {
      for (let start = 0; start < 4; start++) {
        const backing = bytes(length + 8, length + start);
        const view = backing.subarray(start, start + length);
        const expected = reference(view, key);
        unmask(view, key);
        assert.ok(view.equals(expected), `length ${length}, start ${start}, key ${key.toString('hex')}`);
        // The bytes around the view are untouched.
        assert.ok(backing.subarray(0, start).equals(bytes(length + 8, length + start).subarray(0, start)), `before the view, length ${length}`);
        assert.ok(backing.subarray(start + length).equals(bytes(length + 8, length + start).subarray(start + length)), `after the view, length ${length}`);
      }
    }
  }
});

test('mask: into another buffer at an offset, and in place', () => {
  for (const key of KEYS) {
    for (const length of LENGTHS) {
      for (let offset = 0; offset < 4; offset++) {
        const source = bytes(length + 5, length).subarray(1, 1 + length);
        const output = Buffer.alloc(length + 14, 0xee);
        mask(source, key, output, offset + 10, length);
        assert.ok(output.subarray(offset + 10, offset + 10 + length).equals(reference(source, key)), `length ${length}, offset ${offset}`);
        assert.ok(output.subarray(0, offset + 10).every((b) => b === 0xee), 'bytes before the offset are untouched');
        assert.ok(output.subarray(offset + 10 + length).every((b) => b === 0xee), 'bytes after the frame are untouched');
        assert.ok(source.equals(bytes(length + 5, length).subarray(1, 1 + length)), 'the source is untouched');
      }
      const data = bytes(length, 3);
      mask(data, key, data, 0, length);
      assert.ok(data.equals(reference(bytes(length, 3), key)), `in place, length ${length}`);
    }
  }
});

test('the built relay forwards what randomly masking clients send, byte for byte, both ways', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ws-mask-'));
  const credentials = { accessKeyId: 'AKIDMASK', secretAccessKey: 'mask-secret' };
  const child = spawn(process.execPath, [CLI, 'relay', '--listen', '127.0.0.1:0', '--tls-self-signed', join(dir, 'certs')], {
    env: { ...process.env, LOCALPROXY_RELAY_ACCESS_KEY_ID: credentials.accessKeyId, LOCALPROXY_RELAY_SECRET_ACCESS_KEY: credentials.secretAccessKey },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = once(child, 'close');
  const peers: Array<{ terminate(): void }> = [];
  try {
    let out = '';
    const url = await within(new Promise<string>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => {
        out += d;
        const m = /listening on (\S+)/.exec(out);
        if (m) resolve(m[1]);
      });
      void exited.then(() => reject(new Error(`relay exited: ${out}`)));
    }), 20000, 'the built relay to listen');
    const ca = readFileSync(join(dir, 'certs', 'cert.pem'), 'utf8');
    const relay = { url, caPem: ca } as unknown as Relay;
    const api = new TunnelApiClient({ endpoint: url.replace('wss:', 'https:'), region: 'us-east-1', credentials, ca });
    const t = await api.call<{ sourceAccessToken: string; destinationAccessToken: string }>('OpenTunnel', { destinationConfig: { services: ['data'] } });
    // ws clients mask with random keys by default (as the C++ proxy does).
    const src = await connectReady(relay, t.sourceAccessToken, { mode: 'source' });
    const dst = await connectReady(relay, t.destinationAccessToken, { mode: 'destination' });
    peers.push(src, dst);
    src.ws.send(encodeFrame({ type: MessageType.STREAM_START, serviceId: 'data', streamId: 1, connectionId: 1 }));
    assert.is((await dst.next()).type, MessageType.STREAM_START);
    // Payload lengths that put the word-aligned middle of each message at every offset.
    const lengths = [1, 2, 3, 5, 31, 32, 33, 34, 35, 1000, 4097, 16385, 64511, 64512];
    for (const [from, to] of [[src, dst], [dst, src]]) {
      for (const [i, length] of lengths.entries()) {
        const payload = bytes(length, i + (from === src ? 0 : 100));
        from.ws.send(encodeFrame({ type: MessageType.DATA, serviceId: 'data', streamId: 1, connectionId: 1, payload }));
        const got = await to.next();
        assert.is(got.type, MessageType.DATA);
        assert.ok(Buffer.from(got.payload).equals(payload), `${from === src ? 'source' : 'destination'} → payload of ${length} bytes intact`);
      }
    }
  } finally {
    for (const p of peers) p.terminate();
    child.kill('SIGTERM');
    await within(exited, 10000, 'the relay to exit');
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
