/**
 * Reads a small text file (`--config`, `--settings-json`, `--config-dir` files) without
 * trusting its size: a device such as /dev/zero, or a /proc file that reports size 0,
 * would otherwise be read until memory runs out.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { printable } from '../printable';

export const MAX_INPUT_FILE_BYTES = 1024 * 1024;

export class FileTooLargeError extends Error {
  constructor(readonly maxBytes: number) {
    super(`larger than ${maxBytes / (1024 * 1024)} MiB`);
  }
}

/** The file as UTF-8 text; throws the fs error, or FileTooLargeError past `maxBytes`. */
export function readSmallTextFile(path: string, maxBytes = MAX_INPUT_FILE_BYTES): string {
  const fd = openSync(path, 'r');
  try {
    const buffer = Buffer.allocUnsafe(maxBytes + 1);
    let length = 0;
    while (length <= maxBytes) {
      const n = readSync(fd, buffer, length, maxBytes + 1 - length, null);
      if (n === 0) break;
      length += n;
    }
    if (length > maxBytes) throw new FileTooLargeError(maxBytes);
    return buffer.toString('utf8', 0, length);
  } finally {
    closeSync(fd);
  }
}

/**
 * Why a file could not be read or written, in words: "it does not exist" rather than the
 * bare ENOENT, which means nothing to most users. Unknown errors keep Node's own message.
 */
export function fileProblem(err: unknown): string {
  if (err instanceof FileTooLargeError) return err.message;
  switch ((err as NodeJS.ErrnoException).code) {
    case 'ENOENT': return 'it does not exist';
    case 'EISDIR': return 'it is a directory, not a file';
    case 'ENOTDIR': return 'a part of the path is a file, not a directory';
    case 'EACCES':
    case 'EPERM': return 'permission denied';
    case 'ELOOP': return 'too many symbolic links (a loop?)';
    case 'ENAMETOOLONG': return 'the path is too long';
    case 'EROFS': return 'the file system is read-only';
    case 'ENOSPC': return 'no space left on the device';
    case 'EEXIST': return 'it already exists';
    default: return printable((err as Error)?.message ?? String(err));
  }
}
