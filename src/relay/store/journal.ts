/**
 * `--state FILE`: the tunnel records, kept across restarts as an append-only journal of
 * checksummed lines (journal-format.ts has the format).
 *
 * A change costs one appended line and one fdatasync, whatever the number of tunnels; changes
 * queued while a write is under way share the next one (group commit). When the journal has
 * grown past twice the size of the live records (plus 64 KiB) it is rewritten with one line per
 * tunnel: temporary file written whole, fsync, rename, fsync of the directory.
 *
 * Every write is checked to its last byte. A write that fails, or moves fewer bytes than it
 * was given (a full disk), fails the changes it carried, and the file is cut back to its last
 * whole line, so no record is ever torn in the middle of the file; the next write then rewrites
 * the file whole, so it holds again what the relay has in memory. Loading sets damaged lines
 * aside in FILE.damaged (one error line says which) and starts without them.
 *
 * Durability: `commit()` resolves once the change is on disk. The management API answers
 * OpenTunnel, CloseTunnel, RotateTunnelAccessToken and the tag operations only then, so a
 * change the API confirmed survives a crash or power loss. A token spent by a handshake is
 * written without holding the handshake back (within one write cycle, milliseconds).
 */
import { closeSync, fsyncSync, ftruncateSync, lstatSync, openSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, resolve as resolvePath } from 'node:path';
import { deleteLine, putLine, renderJournal, replayJournal, StateFileError } from './journal-format';
import type { TunnelRecord } from './record';

const COMPACT_SLACK_BYTES = 64 * 1024;
/** Damaged lines named in the one log line about them. */
const DAMAGED_SHOWN = 3;

export interface JournalOptions {
  /** Every live record, for a rewrite. */
  snapshot: () => TunnelRecord[];
  /**
   * Something is wrong with the file (`ok` false): a write failed, or damaged lines were set
   * aside at load; or, after failures, writes succeed again (`ok` true). Once per change of state.
   */
  onProblem?: (message: string, ok: boolean) => void;
}

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
}

/** A change could not be written (disk full, directory gone); the message names the file. */
export class StateWriteError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StateWriteError';
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Writes all of `data` at the handle's position; a write that moves no byte is a failure. */
async function writeAll(handle: FileHandle, data: Buffer): Promise<void> {
  for (let done = 0; done < data.length;) {
    const { bytesWritten } = await handle.write(data, done, data.length - done);
    if (bytesWritten <= 0) throw new Error(`short write: ${done} of ${data.length} bytes (is the disk full?)`);
    done += bytesWritten;
  }
}

function writeAllSync(fd: number, data: Buffer): void {
  for (let done = 0; done < data.length;) {
    const written = writeSync(fd, data, done, data.length - done);
    if (written <= 0) throw new Error(`short write: ${done} of ${data.length} bytes (is the disk full?)`);
    done += written;
  }
}

/** The journal of one state file: its records at load, then one appended line per change. */
export class Journal {
  /** The file written: the state path, or what a symbolic link there points to (the link is kept). */
  readonly path: string;
  private readonly given: string;
  private readonly options: JournalOptions;
  private handle?: FileHandle;
  /** The file's length up to its last whole line: where a failed append is cut back to. */
  private fileBytes = 0;
  private liveBytes = 0;
  /** The journal grows to this before it is rewritten. */
  private compactAt = COMPACT_SLACK_BYTES;
  /** What load() found: the file is to be written whole (new, or damaged lines), or cut back (a torn last line). */
  private repair: 'none' | 'rewrite' | 'cut' = 'rewrite';
  /** A write failed: the file lacks changes the relay has in memory, so the next write rewrites it whole. */
  private dirty = false;
  private failing = false;
  private queue: string[] = [];
  private waiters: Waiter[] = [];
  /** The write loop; `draining` is set and cleared synchronously with the checks of the queue. */
  private running: Promise<void> = Promise.resolve();
  private draining = false;
  private closed = false;

  /** Throws StateFileError when the path is not a usable file. */
  constructor(path: string, options: JournalOptions) {
    this.given = path;
    this.options = options;
    this.path = Journal.resolve(path);
  }

  /**
   * The file to write: `path`, or where symbolic links there lead (the links are kept: a
   * rename over a link would replace it). Throws when that is not a regular file.
   */
  private static resolve(path: string): string {
    let current = path;
    for (let hops = 0; hops < 40; hops++) {
      let stat;
      try {
        stat = lstatSync(current);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return current;
        throw new StateFileError(`cannot use state file ${path}: ${errorText(err)}`);
      }
      if (stat.isSymbolicLink()) {
        current = resolvePath(dirname(current), readlinkSync(current));
        continue;
      }
      if (!stat.isFile()) throw new StateFileError(`state file ${path} is not a regular file`);
      return current;
    }
    throw new StateFileError(`state file ${path}: too many levels of symbolic links`);
  }

  /** Where damaged lines are set aside. */
  get damagedPath(): string {
    return `${this.path}.damaged`;
  }

  /** The records a previous run left (called once, before any change). */
  load(): TunnelRecord[] {
    let data: Buffer;
    try {
      data = readFileSync(this.path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new StateFileError(`cannot read state file ${this.given}: ${errorText(err)}`);
    }
    if (data.length === 0) return [];
    const journal = replayJournal(data, this.given);
    this.fileBytes = journal.goodBytes;
    this.repair = journal.goodBytes === 0 ? 'rewrite' : journal.torn ? 'cut' : 'none';
    if (journal.damaged.length > 0) {
      // Kept for whoever looks into it (on disk before the rewrite at start leaves them out of the journal).
      try {
        const fd = openSync(this.damagedPath, 'a', 0o600);
        try {
          writeAllSync(fd, Buffer.concat(journal.damaged.flatMap((d) => [d.bytes, Buffer.from('\n')])));
          fsyncSync(fd);
        } finally {
          closeSync(fd);
        }
      } catch (err) {
        throw new StateFileError(`state file ${this.given}: cannot set its damaged lines aside in ${this.damagedPath}: ${errorText(err)}`);
      }
      this.repair = 'rewrite';
      const shown = journal.damaged.slice(0, DAMAGED_SHOWN).map((d) => d.why).join('; ');
      const more = journal.damaged.length > DAMAGED_SHOWN ? `; and ${journal.damaged.length - DAMAGED_SHOWN} more` : '';
      this.options.onProblem?.(`state file ${this.given}: ${journal.damaged.length} damaged line(s) set aside in ${this.damagedPath}, not loaded (${shown}${more}); the tunnels they changed are as the lines before them left them`, false);
    }
    return [...journal.records.values()];
  }

  /**
   * At start, after load(), synchronously: makes the file ready for appends and proves it
   * writable. A sound journal is only opened (a full disk must not keep the relay from
   * starting); a new or damaged one is written whole, a torn last line cut off.
   */
  openNow(): void {
    this.removeStaleTemporaries();
    try {
      if (this.repair === 'rewrite') {
        this.rewriteSync();
      } else {
        const fd = openSync(this.path, 'r+');
        try {
          if (this.repair === 'cut') {
            ftruncateSync(fd, this.fileBytes);
            fsyncSync(fd);
          }
        } finally {
          closeSync(fd);
        }
      }
    } catch (err) {
      throw new StateFileError(`cannot write state file ${this.given}: ${errorText(err)}`);
    }
    this.repair = 'none';
    this.liveBytes = Buffer.byteLength(renderJournal(this.options.snapshot()));
    this.compactAt = 2 * this.liveBytes + COMPACT_SLACK_BYTES;
  }

  /** The tunnel as it now is; resolves once durable. */
  put(record: TunnelRecord): Promise<void> {
    return this.enqueue(putLine(record));
  }

  /** The tunnel is forgotten; resolves once durable. */
  delete(tunnelId: string): Promise<void> {
    return this.enqueue(deleteLine(tunnelId));
  }

  /** Resolves when every change so far is durable (or failed). */
  flush(): Promise<void> {
    return this.draining ? this.running.then(() => this.flush()) : Promise.resolve();
  }

  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
    await this.handle?.close().catch(() => {});
    this.handle = undefined;
  }

  private enqueue(line: string): Promise<void> {
    if (this.closed) return Promise.reject(new Error(`state file ${this.given} is closed`));
    const done = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    this.queue.push(line);
    if (!this.draining) {
      this.draining = true;
      this.running = this.drain();
    }
    return done;
  }

  private async drain(): Promise<void> {
    // Let changes made in the same tick join this write.
    await new Promise<void>((resolve) => setImmediate(resolve));
    // No await between the last look at the queue and clearing `draining` (the loop body
    // catches every failure): a change enqueued meanwhile would otherwise wait forever.
    while (this.queue.length > 0) {
      const lines = Buffer.from(this.queue.join(''));
      const waiters = this.waiters;
      this.queue = [];
      this.waiters = [];
      let failure: Error | undefined;
      try {
        if (this.dirty) await this.rewrite();
        else if (this.fileBytes + lines.length > this.compactAt) await this.compact(lines);
        else await this.append(lines);
      } catch (err) {
        failure = new StateWriteError(`cannot write state file ${this.given}: ${errorText(err)}`);
      }
      this.report(failure);
      for (const w of waiters) if (failure) w.reject(failure); else w.resolve();
    }
    this.draining = false;
  }

  private report(failure: Error | undefined): void {
    if (failure && !this.failing) this.options.onProblem?.(`${failure.message}; changes will not survive a restart until it can be written`, false);
    else if (!failure && this.failing) this.options.onProblem?.(`state file ${this.given} written again`, true);
    this.failing = failure !== undefined;
  }

  private async append(lines: Buffer): Promise<void> {
    try {
      this.handle ??= await open(this.path, 'a', 0o600);
      await writeAll(this.handle, lines);
      await this.handle.datasync();
      this.fileBytes += lines.length;
    } catch (err) {
      this.dirty = true;
      await this.cutBack();
      throw err;
    }
  }

  /** After a failed append: the file is cut back to its last whole line (a crash now loses no confirmed line). */
  private async cutBack(): Promise<void> {
    const handle = this.handle;
    this.handle = undefined;
    if (!handle) return;
    try {
      await handle.truncate(this.fileBytes);
      await handle.datasync();
    } catch {
      // Left with a torn last line: loading leaves it out, and the next write replaces the file.
    }
    await handle.close().catch(() => {});
  }

  /** A rewrite that fails for room leaves the journal whole: the change is appended instead. */
  private async compact(lines: Buffer): Promise<void> {
    try {
      await this.rewrite();
    } catch {
      // Not tried again before the journal has grown by the slack once more.
      this.compactAt = this.fileBytes + lines.length + COMPACT_SLACK_BYTES;
      await this.append(lines);
    }
  }

  private async rewrite(): Promise<void> {
    const data = Buffer.from(renderJournal(this.options.snapshot()));
    const tmp = this.temporaryPath();
    let tmpHandle: FileHandle | undefined;
    try {
      tmpHandle = await open(tmp, 'w', 0o600);
      await writeAll(tmpHandle, data);
      await tmpHandle.sync();
      await tmpHandle.close();
      tmpHandle = undefined;
      await this.handle?.close().catch(() => {});
      this.handle = undefined;
      // Only a file written whole and on disk takes the journal's place.
      await rename(tmp, this.path);
      this.syncDirectory();
    } catch (err) {
      await tmpHandle?.close().catch(() => {});
      await unlink(tmp).catch(() => {});
      throw err;
    }
    this.written(data.length);
  }

  private rewriteSync(): void {
    const data = Buffer.from(renderJournal(this.options.snapshot()));
    const tmp = this.temporaryPath();
    try {
      const fd = openSync(tmp, 'w', 0o600);
      try {
        writeAllSync(fd, data);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, this.path);
      this.syncDirectory();
    } catch (err) {
      rmSync(tmp, { force: true });
      throw err;
    }
    this.written(data.length);
  }

  private written(bytes: number): void {
    this.dirty = false;
    this.fileBytes = this.liveBytes = bytes;
    this.compactAt = 2 * this.liveBytes + COMPACT_SLACK_BYTES;
  }

  private temporaryPath(): string {
    return `${this.path}.${process.pid}.tmp`;
  }

  /** Temporary files a killed relay left next to the journal: on a small disk they hold its room. */
  private removeStaleTemporaries(): void {
    const dir = dirname(this.path);
    const prefix = `${basename(this.path)}.`;
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return;
    }
    for (const name of names) {
      if (!name.startsWith(prefix) || !/^\d+\.tmp$/.test(name.slice(prefix.length))) continue;
      try {
        unlinkSync(join(dir, name));
      } catch {
        // Another's to remove, or gone already.
      }
    }
  }

  /** The rename is durable only once the directory entry is. */
  private syncDirectory(): void {
    let fd: number | undefined;
    try {
      fd = openSync(dirname(this.path), 'r');
      fsyncSync(fd);
    } catch {
      // Not every platform can open or fsync a directory (Windows); the rename still happened.
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
  }
}
