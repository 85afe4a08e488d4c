/**
 * process.stdout and process.stderr that exist whatever the output is connected to. On
 * Windows, Node opens a pipe as a libuv pipe handle; under wine that open fails (EBADF), and
 * the first use of process.stdout throws before a line is written, so `localproxy.exe ... |
 * findstr` or a service manager reading a pipe got a stack trace instead of output. Writing
 * to the descriptor itself works there, so such a stream is replaced by a synchronous writer.
 */
import { writeSync } from 'node:fs';
import { Writable } from 'node:stream';

/** A stream that writes each chunk to `fd` at once, as Node does for files. */
class DescriptorWriter extends Writable {
  readonly isTTY = false;

  constructor(readonly fd: number) {
    super({ decodeStrings: true });
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (err?: Error | null) => void): void {
    try {
      for (let at = 0; at < chunk.length;) at += writeSync(this.fd, chunk, at);
      done();
    } catch (err) {
      done(err as Error);
    }
  }
}

/** Replaces process.stdout/stderr by a descriptor writer where Node cannot open them. */
export function ensureStdio(): void {
  for (const [name, fd] of [['stdout', 1], ['stderr', 2]] as const) {
    try {
      void process[name];
    } catch {
      Object.defineProperty(process, name, { configurable: true, enumerable: true, writable: true, value: new DescriptorWriter(fd) });
    }
  }
}
