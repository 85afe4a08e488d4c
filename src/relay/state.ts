/**
 * `--state FILE`: the tunnel records, kept across restarts as an append-only journal.
 *
 *   {"format":2}                      first line
 *   {"put":{...tunnel record...}}     a tunnel as it now is (opened, rotated, closed, tagged, token spent)
 *   {"delete":"<tunnel id>"}          a tunnel forgotten
 *
 * A change costs one appended line and one fdatasync, whatever the number of tunnels; changes
 * queued while a write is under way share the next one (group commit). When the journal has
 * grown past twice the size of the live records (plus 64 KiB) it is rewritten with one line per
 * tunnel: temporary file, fsync, rename, fsync of the directory. Loading replays the lines; a
 * torn last line (a crash mid-append) is ignored, anything else wrong names the file and line.
 *
 * Durability: `commit()` resolves once the change is on disk. The management API answers
 * OpenTunnel, CloseTunnel, RotateTunnelAccessToken and the tag operations only then, so a
 * change the API confirmed survives a crash or power loss. A token spent by a handshake is
 * written without holding the handshake back (within one write cycle, milliseconds).
 */
import { closeSync, fsyncSync, lstatSync, openSync, readFileSync, readlinkSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, resolve as resolvePath } from 'node:path';
import { checkRecord, StateFileError, type TunnelRecord } from './record';

export { StateFileError } from './record';

const FORMAT = 2;
/** The format main wrote before the journal: one JSON document. Loaded, then rewritten as a journal. */
const LEGACY_FORMAT = 1;
const COMPACT_SLACK_BYTES = 64 * 1024;

/**
 * Where tunnel records are kept. The registry keeps its own in-memory view and calls one
 * operation per atomic change; a store shared by several relays (issue 19) implements the same.
 */
export interface TunnelStore {
  /** The records a previous run left (called once, before any change). */
  load(): TunnelRecord[];
  /** The tunnel as it now is; resolves once durable. */
  put(record: TunnelRecord): Promise<void>;
  /** The tunnel is forgotten; resolves once durable. */
  delete(tunnelId: string): Promise<void>;
  /** Resolves when every change so far is durable (or failed). */
  flush(): Promise<void>;
  close(): Promise<void>;
}

export interface StateFileOptions {
  /** Every live record, for a rewrite. */
  snapshot: () => TunnelRecord[];
  /** A write failed (`ok` false) or, after failures, succeeded again (`ok` true). Once per change of state. */
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

export class StateFile implements TunnelStore {
  /** The file written: the state path, or what a symbolic link there points to (the link is kept). */
  readonly path: string;
  private readonly given: string;
  private readonly options: StateFileOptions;
  private handle?: FileHandle;
  private fileBytes = 0;
  private liveBytes = 0;
  /** A write failed part-way: the file may end in a torn line, so the next write rewrites it whole. */
  private dirty = false;
  private failing = false;
  private queue: string[] = [];
  private waiters: Waiter[] = [];
  /** The write loop; `draining` is set and cleared synchronously with the checks of the queue. */
  private running: Promise<void> = Promise.resolve();
  private draining = false;
  private closed = false;

  /** Throws StateFileError when the path is not a usable file. */
  constructor(path: string, options: StateFileOptions) {
    this.given = path;
    this.options = options;
    this.path = StateFile.resolve(path);
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

  load(): TunnelRecord[] {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new StateFileError(`cannot read state file ${this.given}: ${errorText(err)}`);
    }
    const records = text.trimStart().startsWith('{"format":2') || text.trim() === '' ? this.replay(text) : this.legacy(text);
    return [...records.values()];
  }

  /** Writes every live record now, synchronously (at start: proves the file is writable). */
  rewriteNow(): void {
    const text = this.render();
    const tmp = `${this.path}.${process.pid}.tmp`;
    try {
      const fd = openSync(tmp, 'w', 0o600);
      try {
        writeSync(fd, text);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, this.path);
      this.syncDirectory();
    } catch (err) {
      try {
        unlinkSync(tmp);
      } catch {
        // Never created, or not ours to remove.
      }
      throw new StateFileError(`cannot write state file ${this.given}: ${errorText(err)}`);
    }
    this.fileBytes = this.liveBytes = Buffer.byteLength(text);
  }

  put(record: TunnelRecord): Promise<void> {
    return this.enqueue(`${JSON.stringify({ put: record })}\n`);
  }

  delete(tunnelId: string): Promise<void> {
    return this.enqueue(`${JSON.stringify({ delete: tunnelId })}\n`);
  }

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
      const lines = this.queue.join('');
      const waiters = this.waiters;
      this.queue = [];
      this.waiters = [];
      let failure: Error | undefined;
      try {
        const bytes = Buffer.byteLength(lines);
        if (this.dirty || this.fileBytes + bytes > 2 * this.liveBytes + COMPACT_SLACK_BYTES) await this.rewrite();
        else await this.append(lines, bytes);
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

  private async append(lines: string, bytes: number): Promise<void> {
    try {
      this.handle ??= await open(this.path, 'a', 0o600);
      await this.handle.write(lines);
      await this.handle.datasync();
      this.fileBytes += bytes;
    } catch (err) {
      this.dirty = true;
      await this.handle?.close().catch(() => {});
      this.handle = undefined;
      throw err;
    }
  }

  private async rewrite(): Promise<void> {
    const text = this.render();
    const tmp = `${this.path}.${process.pid}.tmp`;
    let tmpHandle: FileHandle | undefined;
    try {
      tmpHandle = await open(tmp, 'w', 0o600);
      await tmpHandle.write(text);
      await tmpHandle.sync();
      await tmpHandle.close();
      tmpHandle = undefined;
      await this.handle?.close().catch(() => {});
      this.handle = undefined;
      await rename(tmp, this.path);
      this.syncDirectory();
    } catch (err) {
      await tmpHandle?.close().catch(() => {});
      await unlink(tmp).catch(() => {});
      this.dirty = true;
      throw err;
    }
    this.dirty = false;
    this.fileBytes = this.liveBytes = Buffer.byteLength(text);
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

  private render(): string {
    return `${JSON.stringify({ format: FORMAT })}\n${this.options.snapshot().map((r) => `${JSON.stringify({ put: r })}\n`).join('')}`;
  }

  private replay(text: string): Map<string, TunnelRecord> {
    const records = new Map<string, TunnelRecord>();
    const lines = text.split('\n');
    // The last element is '' after a final newline, else an append cut short by a crash: skipped.
    for (let i = 0; i < lines.length - 1; i++) {
      const where = `state file ${this.given} line ${i + 1}`;
      if (lines[i].trim() === '') continue;
      let entry: unknown;
      try {
        entry = JSON.parse(lines[i]);
      } catch {
        throw new StateFileError(`${where}: not JSON`);
      }
      if (i === 0) {
        if ((entry as { format?: unknown })?.format !== FORMAT) throw new StateFileError(`${where}: not a localproxy relay state file (format ${FORMAT})`);
        continue;
      }
      const e = entry as { put?: unknown; delete?: unknown };
      if (typeof e === 'object' && e !== null && 'put' in e) {
        const record = checkRecord(e.put, where);
        records.set(record.tunnelId, record);
      } else if (typeof e === 'object' && e !== null && typeof e.delete === 'string') {
        records.delete(e.delete);
      } else {
        throw new StateFileError(`${where}: expected {"put": tunnel} or {"delete": id}`);
      }
    }
    return records;
  }

  private legacy(text: string): Map<string, TunnelRecord> {
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch {
      throw new StateFileError(`state file ${this.given}: not JSON, and not a localproxy relay state file`);
    }
    const doc = data as { format?: unknown; tunnels?: unknown };
    if (typeof doc !== 'object' || doc === null || doc.format !== LEGACY_FORMAT || !Array.isArray(doc.tunnels)) {
      throw new StateFileError(`state file ${this.given}: not a localproxy relay state file (format ${FORMAT}, or ${LEGACY_FORMAT} from earlier versions)`);
    }
    const records = new Map<string, TunnelRecord>();
    doc.tunnels.forEach((entry: unknown, i: number) => {
      const record = checkRecord(entry, `state file ${this.given} tunnel ${i + 1}`);
      records.set(record.tunnelId, record);
    });
    return records;
  }
}
