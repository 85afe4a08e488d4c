/**
 * `-s stdio`: the process's stdin and stdout as the one connection of a source service, the way
 * ssh's ProxyCommand hands a connection to a program. A Duplex with the few socket methods a
 * Connection uses, so the tunnel carries it like an accepted TCP socket.
 *
 * Backpressure both ways: stdin is paused while the connection does not read (flow control, the
 * peer's credit), and a write counts as done only once stdout took it, so the inbound budget and
 * credit see what ssh has not read yet. The tunnel has no half-close: EOF on stdin ends the
 * connection after the bytes read before it; ending our side stops reading stdin. stdout itself
 * is never closed (the process's stdout cannot be): its reader sees the end when the process exits.
 */
import type { Socket } from 'node:net';
import { Duplex, type Readable, type Writable } from 'node:stream';

export class StdioSocket extends Duplex {
  /** How log lines name the peer (Connection and Session show `address` alone when there is no port). */
  readonly remoteAddress = 'stdin/stdout';
  readonly remotePort = undefined;
  readonly localPort = undefined;
  /** Bytes stdout took. */
  bytesWritten = 0;
  /** stdin ended (the application closed its side first). */
  inputEnded = false;
  private idleMs = 0;
  private idleTimer?: NodeJS.Timeout;

  constructor(private readonly input: Readable, private readonly output: Writable) {
    super({ allowHalfOpen: false });
    input.on('data', this.onInputData);
    input.on('end', this.onInputEnd);
    input.on('error', this.onStreamError);
    output.on('error', this.onStreamError);
    // Reading starts when the connection reads (_read), not when the listener is added.
    input.pause();
  }

  /** The socket type the tunnel's connections take: this class has every member they use. */
  asSocket(): Socket {
    return this as unknown as Socket;
  }

  private readonly onInputData = (chunk: Buffer): void => {
    this.touch();
    if (!this.push(chunk)) this.input.pause();
  };

  private readonly onInputEnd = (): void => {
    this.inputEnded = true;
    this.push(null);
  };

  private readonly onStreamError = (err: Error): void => {
    this.destroy(err);
  };

  override _read(): void {
    this.input.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.output.write(chunk, (err) => this.written(chunk.length, err, callback));
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, callback: (err?: Error | null) => void): void {
    let bytes = 0;
    this.output.cork();
    for (let i = 0; i < chunks.length - 1; i++) {
      this.output.write(chunks[i].chunk);
      bytes += chunks[i].chunk.length;
    }
    const last = chunks[chunks.length - 1].chunk;
    this.output.write(last, (err) => this.written(bytes + last.length, err, callback));
    this.output.uncork();
  }

  private written(bytes: number, err: Error | null | undefined, callback: (err?: Error | null) => void): void {
    if (!err) {
      this.bytesWritten += bytes;
      this.touch();
    }
    callback(err ?? null);
  }

  /** Every write was taken by stdout (_final runs after the last callback): our side is done, stdin is no longer read. */
  override _final(callback: (err?: Error | null) => void): void {
    callback();
    this.stopReading();
    this.push(null);
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    clearTimeout(this.idleTimer);
    this.stopReading();
    this.output.off('error', this.onStreamError);
    callback(err);
  }

  private stopReading(): void {
    this.input.off('data', this.onInputData);
    this.input.off('end', this.onInputEnd);
    this.input.off('error', this.onStreamError);
    this.input.pause();
  }

  /** Nagle does not apply to pipes. */
  setNoDelay(): this {
    return this;
  }

  /** As net.Socket's: 'timeout' once nothing moved for `ms` (0 turns it off). */
  setTimeout(ms: number): this {
    this.idleMs = ms;
    this.touch();
    return this;
  }

  private touch(): void {
    clearTimeout(this.idleTimer);
    if (this.idleMs > 0 && !this.destroyed) this.idleTimer = setTimeout(() => this.emit('timeout'), this.idleMs);
  }
}
