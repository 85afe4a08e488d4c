// Offline ad-hoc code signing of a thin 64-bit Mach-O executable, the equivalent of
// `codesign -s - --force`: Apple silicon kills unsigned executables, and postject drops the
// original signature. Written from the layout in xnu's cs_blobs.h:
//   LC_CODE_SIGNATURE → SuperBlob { CodeDirectory (SHA-256, 4 KiB pages), empty Requirements }.
// All code-signing structures are big-endian; the Mach-O headers are little-endian.
import { createHash } from 'node:crypto';

const MH_MAGIC_64 = 0xfeedfacf;
const LC_SEGMENT_64 = 0x19;
const LC_CODE_SIGNATURE = 0x1d;
const CPU_TYPE_ARM64 = 0x0100000c;

const CSMAGIC_EMBEDDED_SIGNATURE = 0xfade0cc0;
const CSMAGIC_CODEDIRECTORY = 0xfade0c02;
const CSMAGIC_REQUIREMENTS = 0xfade0c01;
const CSSLOT_CODEDIRECTORY = 0;
const CSSLOT_REQUIREMENTS = 2;
const CS_ADHOC = 0x2;
const CS_HASHTYPE_SHA256 = 2;
const CS_EXECSEG_MAIN_BINARY = 0x1;
const CD_VERSION_EXECSEG = 0x20400;
const CD_HEADER_SIZE = 88; // through execSegFlags in version 0x20400
const PAGE_SHIFT = 12;
const PAGE_SIZE = 1 << PAGE_SHIFT;
const HASH_SIZE = 32;
const SPECIAL_SLOTS = 2; // -1 Info.plist (none: zeros), -2 Requirements

export class MachOError extends Error {
  code = 'ERR_MACHO';
}

const alignUp = (n, to) => Math.ceil(n / to) * to;
const sha256 = (buf) => createHash('sha256').update(buf).digest();

/** Load commands of a thin 64-bit little-endian Mach-O: [{cmd, offset, size}]. */
export function loadCommands(buf) {
  if (buf.length < 32 || buf.readUInt32LE(0) !== MH_MAGIC_64) throw new MachOError('not a thin 64-bit Mach-O file');
  const ncmds = buf.readUInt32LE(16);
  const out = [];
  let at = 32;
  for (let i = 0; i < ncmds; i++) {
    const cmd = buf.readUInt32LE(at);
    const size = buf.readUInt32LE(at + 4);
    if (size < 8 || at + size > buf.length) throw new MachOError(`load command ${i} is truncated`);
    out.push({ cmd, offset: at, size });
    at += size;
  }
  return out;
}

/** Segment fields of an LC_SEGMENT_64 at `offset`. */
export function readSegment(buf, offset) {
  return {
    name: buf.toString('latin1', offset + 8, offset + 24).replace(/\0+$/, ''),
    vmaddr: Number(buf.readBigUInt64LE(offset + 24)),
    vmsize: Number(buf.readBigUInt64LE(offset + 32)),
    fileoff: Number(buf.readBigUInt64LE(offset + 40)),
    filesize: Number(buf.readBigUInt64LE(offset + 48)),
    nsects: buf.readUInt32LE(offset + 64),
  };
}

function codeDirectory(image, codeLimit, identifier, requirementsHash, text) {
  const ident = Buffer.from(`${identifier}\0`, 'utf8');
  const nCodeSlots = Math.ceil(codeLimit / PAGE_SIZE);
  const hashOffset = CD_HEADER_SIZE + ident.length + SPECIAL_SLOTS * HASH_SIZE;
  const cd = Buffer.alloc(hashOffset + nCodeSlots * HASH_SIZE);
  cd.writeUInt32BE(CSMAGIC_CODEDIRECTORY, 0);
  cd.writeUInt32BE(cd.length, 4);
  cd.writeUInt32BE(CD_VERSION_EXECSEG, 8);
  cd.writeUInt32BE(CS_ADHOC, 12);
  cd.writeUInt32BE(hashOffset, 16);
  cd.writeUInt32BE(CD_HEADER_SIZE, 20); // identOffset
  cd.writeUInt32BE(SPECIAL_SLOTS, 24);
  cd.writeUInt32BE(nCodeSlots, 28);
  cd.writeUInt32BE(codeLimit, 32);
  cd.writeUInt8(HASH_SIZE, 36);
  cd.writeUInt8(CS_HASHTYPE_SHA256, 37);
  cd.writeUInt8(0, 38); // platform
  cd.writeUInt8(PAGE_SHIFT, 39);
  // 40 spare2, 44 scatterOffset, 48 teamOffset, 52 spare3, 56 codeLimit64: all zero
  cd.writeBigUInt64BE(BigInt(text.fileoff), 64); // execSegBase
  cd.writeBigUInt64BE(BigInt(text.filesize), 72); // execSegLimit
  cd.writeBigUInt64BE(BigInt(CS_EXECSEG_MAIN_BINARY), 80);
  ident.copy(cd, CD_HEADER_SIZE);
  // Special slot -n lives n hashes before hashOffset; -1 (Info.plist) stays zero.
  requirementsHash.copy(cd, hashOffset - CSSLOT_REQUIREMENTS * HASH_SIZE);
  for (let page = 0; page < nCodeSlots; page++) {
    const start = page * PAGE_SIZE;
    sha256(image.subarray(start, Math.min(start + PAGE_SIZE, codeLimit))).copy(cd, hashOffset + page * HASH_SIZE);
  }
  return cd;
}

/**
 * Returns a new buffer: `input` with any old signature dropped and a fresh ad-hoc signature
 * appended at the end of __LINKEDIT. Deterministic: same input, same output.
 * @param {Buffer} input
 * @param {{ identifier: string }} options
 */
export function adhocSign(input, { identifier }) {
  const commands = loadCommands(input);
  let linkedit;
  let text;
  let firstSectionOffset = Infinity;
  for (const c of commands) {
    if (c.cmd !== LC_SEGMENT_64) continue;
    const seg = readSegment(input, c.offset);
    if (seg.name === '__LINKEDIT') linkedit = { ...seg, offset: c.offset };
    if (seg.name === '__TEXT') text = seg;
    for (let s = 0; s < seg.nsects; s++) {
      const sectOffset = input.readUInt32LE(c.offset + 72 + s * 80 + 48);
      if (sectOffset > 0) firstSectionOffset = Math.min(firstSectionOffset, sectOffset);
    }
  }
  if (!linkedit || !text) throw new MachOError('no __LINKEDIT or __TEXT segment');
  const old = commands.find((c) => c.cmd === LC_CODE_SIGNATURE);
  const linkeditEnd = linkedit.fileoff + linkedit.filesize;
  if (linkeditEnd > input.length) throw new MachOError('__LINKEDIT runs past the end of the file');

  // The signature goes where the old one was, else at the end of __LINKEDIT (16-byte aligned).
  const sigOffset = old ? input.readUInt32LE(old.offset + 8) : alignUp(linkeditEnd, 16);
  const sizeofcmds = input.readUInt32LE(20);
  if (!old && 32 + sizeofcmds + 16 > firstSectionOffset) throw new MachOError('no room for LC_CODE_SIGNATURE after the load commands');

  const requirements = Buffer.alloc(12);
  requirements.writeUInt32BE(CSMAGIC_REQUIREMENTS, 0);
  requirements.writeUInt32BE(12, 4);
  requirements.writeUInt32BE(0, 8); // no requirements
  const identBytes = Buffer.byteLength(identifier, 'utf8') + 1;
  const cdSize = CD_HEADER_SIZE + identBytes + (SPECIAL_SLOTS + Math.ceil(sigOffset / PAGE_SIZE)) * HASH_SIZE;
  const superHeader = 12 + 2 * 8;
  const sigSize = alignUp(superHeader + cdSize + requirements.length, 16);

  const image = Buffer.alloc(sigOffset + sigSize);
  input.copy(image, 0, 0, Math.min(input.length, sigOffset));

  // Header and load commands first: page 0 is hashed with them in place.
  let cmdAt;
  if (old) {
    cmdAt = old.offset;
  } else {
    cmdAt = 32 + sizeofcmds;
    image.writeUInt32LE(image.readUInt32LE(16) + 1, 16);
    image.writeUInt32LE(sizeofcmds + 16, 20);
  }
  image.writeUInt32LE(LC_CODE_SIGNATURE, cmdAt);
  image.writeUInt32LE(16, cmdAt + 4);
  image.writeUInt32LE(sigOffset, cmdAt + 8);
  image.writeUInt32LE(sigSize, cmdAt + 12);
  const segAlign = input.readUInt32LE(4) === CPU_TYPE_ARM64 ? 0x4000 : 0x1000;
  const newLinkeditSize = sigOffset + sigSize - linkedit.fileoff;
  image.writeBigUInt64LE(BigInt(newLinkeditSize), linkedit.offset + 48);
  image.writeBigUInt64LE(BigInt(alignUp(newLinkeditSize, segAlign)), linkedit.offset + 32);

  const cd = codeDirectory(image, sigOffset, identifier, sha256(requirements), text);
  let at = sigOffset;
  at = image.writeUInt32BE(CSMAGIC_EMBEDDED_SIGNATURE, at);
  at = image.writeUInt32BE(superHeader + cd.length + requirements.length, at);
  at = image.writeUInt32BE(2, at);
  at = image.writeUInt32BE(CSSLOT_CODEDIRECTORY, at);
  at = image.writeUInt32BE(superHeader, at);
  at = image.writeUInt32BE(CSSLOT_REQUIREMENTS, at);
  at = image.writeUInt32BE(superHeader + cd.length, at);
  at += cd.copy(image, at);
  requirements.copy(image, at);
  return image;
}
