/**
 * Reads a small text file (`--config`, `--settings-json`, `--config-dir` files) without
 * trusting its size: a device such as /dev/zero, or a /proc file that reports size 0,
 * would otherwise be read until memory runs out.
 */
import { closeSync, openSync, readSync } from 'node:fs';

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
