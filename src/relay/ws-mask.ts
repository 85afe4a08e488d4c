/**
 * WebSocket masking four bytes at a time, for ws's optional `bufferutil` hook (build.mjs gives
 * this module to the bundle under that name; without it ws XORs byte by byte in JavaScript).
 *
 * Every frame a client sends is masked (RFC 6455 5.3). Our proxies mask with the all-zero key,
 * which ws then skips, but the C++ reference and other clients use random keys: the relay
 * unmasks every byte they send, and the byte loop was its largest single cost on their bulk
 * data (1.6 s of CPU per GiB on the bench machine). XOR over a Uint32Array view of
 * the 4-byte-aligned middle of the buffer does the same work in a quarter of the steps; the
 * bytes before and after it go through the byte loop. The key is rotated to the alignment and
 * built in the platform's byte order, so the result is the same on any endianness.
 */

/** Below this many bytes the byte loop is as fast as setting up the word view. */
const WORDWISE_MIN_BYTES = 32;

/** XORs `buffer` in place with the 4-byte key `mask`, key byte 0 at buffer byte 0. */
export function unmask(buffer: Uint8Array, mask: Uint8Array): void {
  const length = buffer.length;
  if (length < WORDWISE_MIN_BYTES) {
    for (let i = 0; i < length; i++) buffer[i] ^= mask[i & 3];
    return;
  }
  // Bytes up to the first 4-byte boundary of the underlying memory.
  const head = (4 - (buffer.byteOffset & 3)) & 3;
  for (let i = 0; i < head; i++) buffer[i] ^= mask[i & 3];
  const words = (length - head) >>> 2;
  const key = wordKey(mask, head);
  const view = new Uint32Array(buffer.buffer, buffer.byteOffset + head, words);
  for (let i = 0; i < words; i++) view[i] ^= key;
  for (let i = head + words * 4; i < length; i++) buffer[i] ^= mask[i & 3];
}

/** Writes `source[0, length)` masked with `mask` into `output` from `offset` (ws's `mask`). */
export function mask(source: Uint8Array, mask: Uint8Array, output: Uint8Array, offset: number, length: number): void {
  if (source !== output || offset !== 0) output.set(source.subarray(0, length), offset);
  unmask(output.subarray(offset, offset + length), mask);
}

const keyBytes = new Uint8Array(4);
const keyWord = new Uint32Array(keyBytes.buffer);

/** The key as one 32-bit word for bytes that start at key position `start`, in native byte order. */
function wordKey(mask: Uint8Array, start: number): number {
  for (let i = 0; i < 4; i++) keyBytes[i] = mask[(start + i) & 3];
  return keyWord[0];
}
