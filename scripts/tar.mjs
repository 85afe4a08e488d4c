// A ustar writer for reproducible archives: every entry's owner, mode and time come from the
// caller (never from the file system), entries are written in the order given, and nothing
// varies between runs (no pax headers with access times, no user or group names).
const BLOCK = 512;

export class TarError extends Error {
  code = 'ERR_TAR';
}

function octal(value, width) {
  const text = value.toString(8);
  if (text.length > width - 1) throw new TarError(`tar: ${value} does not fit a ${width}-byte field`);
  return `${text.padStart(width - 1, '0')}\0`;
}

/** `name` split into ustar's prefix (155) and name (100) fields at a slash. */
function splitName(name) {
  if (Buffer.byteLength(name) <= 100) return { prefix: '', name };
  const cut = name.lastIndexOf('/', 155);
  if (cut <= 0 || Buffer.byteLength(name.slice(cut + 1)) > 100) throw new TarError(`tar: path too long for ustar: ${name}`);
  return { prefix: name.slice(0, cut), name: name.slice(cut + 1) };
}

/**
 * @param {{ path: string, type: 'file' | 'dir' | 'symlink', mode: number, uid?: number, gid?: number,
 *   mtime: number, data?: Buffer, target?: string }} entry  `path` without a leading slash;
 *   directories end in "/"; `mtime` in seconds
 */
function header(entry) {
  const block = Buffer.alloc(BLOCK);
  const { prefix, name } = splitName(entry.path);
  const size = entry.type === 'file' ? entry.data.length : 0;
  block.write(name, 0, 100, 'utf8');
  block.write(octal(entry.mode & 0o7777, 8), 100, 'latin1');
  block.write(octal(entry.uid ?? 0, 8), 108, 'latin1');
  block.write(octal(entry.gid ?? 0, 8), 116, 'latin1');
  block.write(octal(size, 12), 124, 'latin1');
  block.write(octal(entry.mtime, 12), 136, 'latin1');
  block.write(' '.repeat(8), 148, 'latin1');
  block.write(entry.type === 'file' ? '0' : entry.type === 'dir' ? '5' : '2', 156, 'latin1');
  if (entry.type === 'symlink') {
    if (Buffer.byteLength(entry.target) > 100) throw new TarError(`tar: link target too long: ${entry.target}`);
    block.write(entry.target, 157, 100, 'utf8');
  }
  block.write('ustar\0', 257, 'latin1');
  block.write('00', 263, 'latin1');
  block.write(prefix, 345, 155, 'utf8');
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return block;
}

/** The archive of `entries`, in the order given, ending with the two zero blocks. */
export function tar(entries) {
  const parts = [];
  for (const entry of entries) {
    parts.push(header(entry));
    if (entry.type === 'file') {
      parts.push(entry.data);
      const pad = (BLOCK - (entry.data.length % BLOCK)) % BLOCK;
      if (pad > 0) parts.push(Buffer.alloc(pad));
    }
  }
  parts.push(Buffer.alloc(2 * BLOCK));
  return Buffer.concat(parts);
}
