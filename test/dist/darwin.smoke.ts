/**
 * macOS executables cannot run here: structural checks instead. The verifier below re-reads the
 * Mach-O and its embedded code signature independently of scripts/macho-sign.mjs and re-hashes
 * every 4 KiB page, as the kernel does when it maps them.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { cacheRoot } from '../../scripts/fetch-node.mjs';
import { adhocSign } from '../../scripts/macho-sign.mjs';
import { bundle, executable, platforms, root } from './harness';

const LC_SEGMENT_64 = 0x19;
const LC_CODE_SIGNATURE = 0x1d;

interface Segment { name: string; fileoff: number; filesize: number; sections: { name: string; offset: number; size: number }[] }

interface Checked {
  cputype: number;
  filetype: number;
  segments: Map<string, Segment>;
  seaBlob: Buffer | undefined;
  signature: { dataoff: number; datasize: number };
  directory: { version: number; flags: number; hashType: number; pageShift: number; codeLimit: number; identifier: string; execSegBase: number; execSegLimit: number; execSegFlags: number };
  pages: number;
  hashes(page: number): Buffer;
  badPages: number[];
  requirementsHashOk: boolean;
}

function verifyMachO(image: Buffer): Checked {
  assert.is(image.readUInt32LE(0), 0xfeedfacf, 'thin 64-bit Mach-O');
  const ncmds = image.readUInt32LE(16);
  const segments = new Map<string, Segment>();
  let signature: { dataoff: number; datasize: number } | undefined;
  let at = 32;
  for (let i = 0; i < ncmds; i++) {
    const cmd = image.readUInt32LE(at);
    const size = image.readUInt32LE(at + 4);
    if (cmd === LC_SEGMENT_64) {
      const name = image.toString('latin1', at + 8, at + 24).replace(/\0+$/, '');
      const sections = [];
      for (let s = 0; s < image.readUInt32LE(at + 64); s++) {
        const sect = at + 72 + s * 80;
        sections.push({
          name: image.toString('latin1', sect, sect + 16).replace(/\0+$/, ''),
          size: Number(image.readBigUInt64LE(sect + 40)),
          offset: image.readUInt32LE(sect + 48),
        });
      }
      segments.set(name, { name, fileoff: Number(image.readBigUInt64LE(at + 40)), filesize: Number(image.readBigUInt64LE(at + 48)), sections });
    }
    if (cmd === LC_CODE_SIGNATURE) signature = { dataoff: image.readUInt32LE(at + 8), datasize: image.readUInt32LE(at + 12) };
    at += size;
  }
  assert.ok(signature, 'LC_CODE_SIGNATURE present');
  const sea = segments.get('NODE_SEA')?.sections.find((s) => s.name === '__NODE_SEA_BLOB');

  const sig = signature.dataoff;
  assert.is(image.readUInt32BE(sig), 0xfade0cc0, 'embedded signature SuperBlob');
  const count = image.readUInt32BE(sig + 8);
  const slots = new Map<number, number>();
  for (let i = 0; i < count; i++) slots.set(image.readUInt32BE(sig + 12 + i * 8), sig + image.readUInt32BE(sig + 16 + i * 8));
  // Slot 0 holds the primary CodeDirectory, 0x1000+ alternates (Apple's own signatures carry a
  // SHA-1 one plus a SHA-256 one): check the SHA-256 directory, wherever it is.
  const cd = [0, 0x1000, 0x1001, 0x1002, 0x1003, 0x1004].map((slot) => slots.get(slot))
    .find((offset) => offset !== undefined && image[offset + 37] === 2);
  assert.ok(cd !== undefined, 'a SHA-256 CodeDirectory');
  assert.is(image.readUInt32BE(cd), 0xfade0c02);
  const hashOffset = image.readUInt32BE(cd + 16);
  const identOffset = image.readUInt32BE(cd + 20);
  const nSpecial = image.readUInt32BE(cd + 24);
  const nCode = image.readUInt32BE(cd + 28);
  const codeLimit = image.readUInt32BE(cd + 32);
  const hashSize = image[cd + 36]!;
  const pageShift = image[cd + 39]!;
  const directory = {
    version: image.readUInt32BE(cd + 8),
    flags: image.readUInt32BE(cd + 12),
    hashType: image[cd + 37]!,
    pageShift,
    codeLimit,
    identifier: image.toString('utf8', cd + identOffset, image.indexOf(0, cd + identOffset)),
    execSegBase: Number(image.readBigUInt64BE(cd + 64)),
    execSegLimit: Number(image.readBigUInt64BE(cd + 72)),
    execSegFlags: Number(image.readBigUInt64BE(cd + 80)),
  };
  assert.is(hashSize, 32);
  const pageSize = 1 << pageShift;
  assert.is(nCode, Math.ceil(codeLimit / pageSize), 'one hash per page up to the code limit');
  const badPages: number[] = [];
  for (let page = 0; page < nCode; page++) {
    const data = image.subarray(page * pageSize, Math.min((page + 1) * pageSize, codeLimit));
    const expected = image.subarray(cd + hashOffset + page * hashSize, cd + hashOffset + (page + 1) * hashSize);
    if (!createHash('sha256').update(data).digest().equals(expected)) badPages.push(page);
  }
  let requirementsHashOk = false;
  const req = slots.get(2);
  if (req !== undefined && nSpecial >= 2) {
    const blob = image.subarray(req, req + image.readUInt32BE(req + 4));
    requirementsHashOk = createHash('sha256').update(blob).digest().equals(image.subarray(cd + hashOffset - 2 * hashSize, cd + hashOffset - hashSize));
  }
  return {
    cputype: image.readUInt32LE(4),
    filetype: image.readUInt32LE(12),
    segments,
    seaBlob: sea ? image.subarray(sea.offset, sea.offset + sea.size) : undefined,
    hashes: (page: number) => image.subarray(cd + hashOffset + page * hashSize, cd + hashOffset + (page + 1) * hashSize),
    signature,
    directory,
    pages: nCode,
    badPages,
    requirementsHashOk,
  };
}

const test = suite('dist: darwin-x64 and darwin-arm64 executables (structure and ad-hoc signature)');
const code = readFileSync(bundle, 'utf8').replace(/^#!.*\n/, '');

for (const [name, cputype] of [['darwin-x64', 0x01000007], ['darwin-arm64', 0x0100000c]] as const) {
  test(`${name}: Mach-O executable for its CPU, NODE_SEA segment holding our blob, every page hash of the ad-hoc signature verifies`, () => {
    const image = readFileSync(executable(platforms[name] ?? { name, file: `localproxy-${name}` } as never));
    const checked = verifyMachO(image);
    assert.is(checked.cputype, cputype);
    assert.is(checked.filetype, 2, 'MH_EXECUTE');
    assert.ok(checked.seaBlob, 'segment NODE_SEA with section __NODE_SEA_BLOB');
    assert.is(checked.seaBlob.readUInt32LE(0), 0x0143da20, 'SEA blob magic');
    assert.ok(checked.seaBlob.includes(Buffer.from(code)), 'the blob carries the bundle');
    assert.is(checked.directory.flags & 0x2, 0x2, 'CS_ADHOC');
    assert.is(checked.directory.hashType, 2, 'SHA-256');
    assert.is(checked.directory.pageShift, 12, '4 KiB pages');
    assert.ok(checked.directory.version >= 0x20400, 'CodeDirectory with the exec segment fields');
    assert.is(checked.directory.identifier, 'localproxy');
    assert.is(checked.directory.codeLimit, checked.signature.dataoff, 'the signature covers everything before it');
    const text = checked.segments.get('__TEXT')!;
    assert.equal([checked.directory.execSegBase, checked.directory.execSegLimit, checked.directory.execSegFlags], [text.fileoff, text.filesize, 1]);
    const linkedit = checked.segments.get('__LINKEDIT')!;
    assert.is(linkedit.fileoff + linkedit.filesize, checked.signature.dataoff + checked.signature.datasize, '__LINKEDIT ends with the signature');
    assert.is(image.length, checked.signature.dataoff + checked.signature.datasize, 'nothing after the signature');
    assert.ok(checked.pages > 10_000, `${checked.pages} pages hashed`);
    assert.equal(checked.badPages, [], 'no page hash mismatch');
    assert.ok(checked.requirementsHashOk, 'the Requirements special slot hash matches');
  });
}

test('the verifier catches a changed byte: one flipped byte in the SEA blob gives exactly one bad page', () => {
  const image = Buffer.from(readFileSync(executable({ name: 'darwin-arm64', file: 'localproxy-darwin-arm64' } as never)));
  const sea = verifyMachO(image).seaBlob!;
  const offset = sea.byteOffset - image.byteOffset + 100;
  image[offset] = image[offset]! ^ 0xff;
  assert.equal(verifyMachO(image).badPages, [Math.floor(offset / 4096)]);
});

test('the signer hashes pages exactly as Apple does: re-signing the official Node binary matches its Developer ID page hashes on every page but the header', () => {
  const target = JSON.parse(readFileSync(join(root, 'targets', 'darwin-arm64.json'), 'utf8')) as { package: string; version: string; bin: string };
  // Where the build cached it (LOCALPROXY_CACHE_DIR moves the cache).
  const official = readFileSync(join(cacheRoot, 'node', `${target.package}-${target.version}`, target.bin));
  const apple = verifyMachO(official);
  assert.equal(apple.badPages, [], 'the verifier accepts Apple\'s own signature');
  const ours = verifyMachO(adhocSign(official, { identifier: 'node' }));
  assert.equal(ours.badPages, []);
  assert.is(ours.pages, apple.pages, 'same code limit, same page count');
  const differing = [];
  for (let page = 0; page < apple.pages; page++) if (!ours.hashes(page).equals(apple.hashes(page))) differing.push(page);
  // Page 0 holds the load commands, where LC_CODE_SIGNATURE's size changed.
  assert.equal(differing, [0]);
});

test.run();
