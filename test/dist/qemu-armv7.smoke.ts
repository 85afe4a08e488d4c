import { readFileSync } from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { sameAsBundle } from './behaviour';
import { executable, platforms, run, tunnelThrough } from './harness';

// Emulated start-up takes about a second; the bounds are failure limits, never assertions on speed.
const MS = 60_000;
const armv7 = platforms['linux-armv7']!;
const test = suite('dist: linux-armv7 executable under qemu-user');

function elfHeader(path: string): { wordSize: number; machine: number } {
  const image = readFileSync(path);
  assert.is(image.subarray(0, 4).toString('latin1'), '\x7fELF');
  return { wordSize: image[4] === 2 ? 64 : 32, machine: image.readUInt16LE(18) };
}

test('the executable is a 32-bit ELF for ARM', () => {
  assert.equal(elfHeader(executable(armv7)), { wordSize: 32, machine: 40 });
});

for (const platform of [armv7]) {
  test(`${platform.name}: --version and --help as node dist/localproxy.cjs`, async () => {
    const result = await run(platform, ['--version'], {}, MS);
    assert.is(result.code, 0, result.stderr);
    assert.match(result.stdout, /^localproxy \d+\.\d+\.\d+/);
    await sameAsBundle(platform, ['--version'], MS);
    await sameAsBundle(platform, ['--help'], MS);
  });
}

test('the injected SEA blob has the 32-bit layout (4-byte size_t lengths, written by scripts/sea-blob.mjs)', () => {
  // A 64-bit blob in the armv7 binary aborts it at start-up (V8 "Empty MaybeLocal"): check the widths.
  for (const [platform, sizeT] of [[armv7, 4 as number]] as const) {
    const image = readFileSync(executable(platform));
    const name = Buffer.from('localproxy-sea.cjs');
    const magic = Buffer.from([0x20, 0xda, 0x43, 0x01]);
    // Node 22+ put one more byte after the flags; the size_t length sits right before the name.
    let at = image.indexOf(magic);
    let nameAt = -1;
    while (at >= 0 && nameAt < 0) {
      const candidate = image.indexOf(name, at);
      if (candidate >= 0 && candidate - at <= 8 + 1 + 8) nameAt = candidate;
      else at = image.indexOf(magic, at + 1);
    }
    assert.ok(nameAt >= 0, `${platform.name}: a SEA blob naming localproxy-sea.cjs`);
    const nameLength = sizeT === 8 ? Number(image.readBigUInt64LE(nameAt - 8)) : image.readUInt32LE(nameAt - 4);
    assert.is(nameLength, name.length);
  }
});

for (const platform of [armv7]) {
  test(`${platform.name}: a real tunnel on loopback, every program from the executable, carries 512 KiB byte-exactly`, async () => {
    const result = await tunnelThrough(platform, 512 << 10, MS);
    assert.is(result.length, 512 << 10);
    assert.is(result.received, result.sent);
  });
}

test.run();
