// What a dynamically linked ELF executable asks of the system it runs on, read from the file
// itself: its program interpreter (PT_INTERP) and the libraries it names (DT_NEEDED). The image
// build (scripts/image.mjs) follows these to copy exactly the runtime libraries an executable
// needs, for any architecture, without running it and without readelf.
import { readFileSync } from 'node:fs';

const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const PT_INTERP = 3;
const DT_NULL = 0;
const DT_NEEDED = 1;
const DT_STRTAB = 5;

export class ElfError extends Error {
  code = 'ERR_ELF';
}

/**
 * @param {string} path
 * @returns {{ wordSize: 32 | 64, machine: number, interpreter?: string, needed: string[] }}
 */
export function readElf(path) {
  const image = readFileSync(path);
  if (image.length < 52 || image.readUInt32BE(0) !== 0x7f454c46) throw new ElfError(`${path} is not an ELF file`);
  const wide = image[4] === 2;
  if (image[5] !== 1) throw new ElfError(`${path}: only little-endian ELF files are read`);
  const word = (at) => (wide ? Number(image.readBigUInt64LE(at)) : image.readUInt32LE(at));
  const machine = image.readUInt16LE(18);
  const phoff = word(wide ? 32 : 28);
  const phentsize = image.readUInt16LE(wide ? 54 : 42);
  const phnum = image.readUInt16LE(wide ? 56 : 44);

  const segments = [];
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    const type = image.readUInt32LE(at);
    // The field order differs: p_flags comes second in 64-bit headers, seventh in 32-bit ones.
    const offset = word(at + (wide ? 8 : 4));
    const vaddr = word(at + (wide ? 16 : 8));
    const filesz = word(at + (wide ? 32 : 16));
    segments.push({ type, offset, vaddr, filesz });
  }
  const interp = segments.find((s) => s.type === PT_INTERP);
  const interpreter = interp ? image.toString('latin1', interp.offset, interp.offset + interp.filesz).replace(/\0.*$/s, '') : undefined;

  const dynamic = segments.find((s) => s.type === PT_DYNAMIC);
  const needed = [];
  if (dynamic) {
    const entrySize = wide ? 16 : 8;
    const neededOffsets = [];
    let strtab;
    for (let at = dynamic.offset; at + entrySize <= dynamic.offset + dynamic.filesz; at += entrySize) {
      const tag = word(at);
      const value = word(at + entrySize / 2);
      if (tag === DT_NULL) break;
      if (tag === DT_NEEDED) neededOffsets.push(value);
      else if (tag === DT_STRTAB) strtab = value;
    }
    if (neededOffsets.length > 0) {
      if (strtab === undefined) throw new ElfError(`${path}: DT_NEEDED without a string table`);
      // DT_STRTAB is an address in memory: the PT_LOAD segment holding it maps it to the file.
      const load = segments.find((s) => s.type === PT_LOAD && strtab >= s.vaddr && strtab < s.vaddr + s.filesz);
      if (!load) throw new ElfError(`${path}: the dynamic string table is outside every loaded segment`);
      const base = load.offset + (strtab - load.vaddr);
      for (const offset of neededOffsets) {
        const start = base + offset;
        needed.push(image.toString('latin1', start, image.indexOf(0, start)));
      }
    }
  }
  return { wordSize: wide ? 64 : 32, machine, interpreter, needed };
}
