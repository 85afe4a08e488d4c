/** The smoke tests of a Linux ARM executable under qemu-user; one file per architecture calls this. */
import { readFileSync } from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { sameAsBundle } from './behaviour';
import { executable, platforms, run, tunnelThrough } from './harness';

// Emulated start-up takes about a second; the bounds are failure limits, never assertions on speed.
const MS = 60_000;

export interface ArmTarget {
  /** Platform name in targets/ (linux-arm64, linux-armv7). */
  name: string;
  /** ELF class (32/64) and e_machine (183 AArch64, 40 ARM). */
  wordSize: 32 | 64;
  machine: number;
  /** How the ELF is described in the test title. */
  described: string;
  /** Who wrote the SEA blob, for the title (the armv7 one is ours). */
  blobWriter: string;
}

function elfHeader(path: string): { wordSize: number; machine: number } {
  const image = readFileSync(path);
  assert.is(image.subarray(0, 4).toString('latin1'), '\x7fELF');
  return { wordSize: image[4] === 2 ? 64 : 32, machine: image.readUInt16LE(18) };
}

export function qemuSuite(target: ArmTarget) {
  const platform = platforms[target.name]!;
  const sizeT = target.wordSize / 8;
  const test = suite(`dist: ${target.name} executable under qemu-user`);

  test(`the executable is ${target.described}`, () => {
    assert.equal(elfHeader(executable(platform)), { wordSize: target.wordSize, machine: target.machine });
  });

  test(`${platform.name}: --version and --help as node dist/localproxy.cjs`, async () => {
    const result = await run(platform, ['--version'], {}, MS);
    assert.is(result.code, 0, result.stderr);
    assert.match(result.stdout, /^localproxy \d+\.\d+\.\d+/);
    await sameAsBundle(platform, ['--version'], MS);
    await sameAsBundle(platform, ['--help'], MS);
  });

  test(`the injected SEA blob has the ${target.wordSize}-bit layout (${sizeT}-byte size_t lengths, written by ${target.blobWriter})`, () => {
    // A 64-bit blob in the armv7 binary aborts it at start-up (V8 "Empty MaybeLocal"): check the widths.
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
  });

  test(`${platform.name}: a real tunnel on loopback, every program from the executable, carries 512 KiB byte-exactly`, async () => {
    const result = await tunnelThrough(platform, 512 << 10, MS);
    assert.is(result.length, 512 << 10);
    assert.is(result.received, result.sent);
  });

  return test;
}
