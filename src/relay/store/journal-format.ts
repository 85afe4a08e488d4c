/**
 * The lines of the `--state` journal (journal.ts), without I/O:
 *
 *   {"format":3}                                  first line
 *   <sum> {"put":{...tunnel record...}}           a tunnel as it now is
 *   <sum> {"delete":"<tunnel id>"}                a tunnel forgotten
 *
 * `<sum>` is the first 16 hex digits of the SHA-256 of the JSON after the space (its UTF-8
 * bytes), so a line changed on disk, even by one bit that keeps the JSON valid, is found out.
 * A line that fails its sum or does not hold a valid entry is damaged: it is reported with
 * its line number and never loaded as anything. A last line without its newline is an append
 * cut short by a crash (never confirmed) and is left out.
 */
import { createHash } from 'node:crypto';
import { TUNNEL_ID_PATTERN } from '../../api/model';
import { RelayConfigError } from '../errors';
import { checkRecord, RecordError, type TunnelRecord } from './record';

/** A state file that cannot be used; the message is one line naming the file. */
export class StateFileError extends RelayConfigError {
  constructor(message: string) {
    super(message);
    this.name = 'StateFileError';
  }
}

export const FORMAT = 3;
export const HEADER = `{"format":${FORMAT}}`;
const SUM_CHARS = 16;
const NEWLINE = 0x0a;

function sum(json: Buffer | string): string {
  return createHash('sha256').update(json).digest('hex').slice(0, SUM_CHARS);
}

/** One journal line, newline included. */
function line(entry: object): string {
  const json = JSON.stringify(entry);
  return `${sum(json)} ${json}\n`;
}

export function putLine(record: TunnelRecord): string {
  return line({ put: record });
}

export function deleteLine(tunnelId: string): string {
  return line({ delete: tunnelId });
}

/** A whole journal holding `records`. */
export function renderJournal(records: TunnelRecord[]): string {
  return `${HEADER}\n${records.map(putLine).join('')}`;
}

export interface DamagedLine {
  /** As it is in the file, without its newline. */
  bytes: Buffer;
  /** `line N: what is wrong`. */
  why: string;
}

export interface Replayed {
  records: Map<string, TunnelRecord>;
  damaged: DamagedLine[];
  /** Bytes up to the end of the last whole line: what the file keeps. */
  goodBytes: number;
  /** A last line without its newline was left out. */
  torn: boolean;
}

type Entry = { put: TunnelRecord } | { delete: string };

/** The entry a checksummed line holds; throws a reason when it holds none. */
function entryOf(bytes: Buffer, where: string): Entry {
  const text = bytes.toString('utf8');
  const m = /^([0-9a-f]{16}) (.*)$/s.exec(text);
  if (!m) throw new Error('no checksum');
  const json = bytes.subarray(SUM_CHARS + 1);
  if (sum(json) !== m[1]) throw new Error('checksum does not match');
  let value: unknown;
  try {
    value = JSON.parse(m[2]);
  } catch {
    throw new Error('not JSON');
  }
  const e = value as { put?: unknown; delete?: unknown } | null;
  if (typeof e === 'object' && e !== null && 'put' in e) return { put: checkRecord(e.put, where) };
  if (typeof e === 'object' && e !== null && typeof e.delete === 'string' && TUNNEL_ID_PATTERN.test(e.delete)) return { delete: e.delete };
  throw new Error('expected {"put": tunnel} or {"delete": id}');
}

/** The lines of `data`, each without its newline; the last is what follows the last newline. */
function splitLines(data: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let start = 0;
  for (let at = data.indexOf(NEWLINE); at >= 0; at = data.indexOf(NEWLINE, start)) {
    out.push(data.subarray(start, at));
    start = at + 1;
  }
  out.push(data.subarray(start));
  return out;
}

/**
 * Replays a journal. Throws StateFileError (one line naming `name`) when the file is not a
 * journal of this format at all; damaged lines are returned, not thrown.
 */
export function replayJournal(data: Buffer, name: string): Replayed {
  const lines = splitLines(data);
  const tail = lines.pop()!;
  const records = new Map<string, TunnelRecord>();
  const damaged: DamagedLine[] = [];
  const first = lines[0]?.toString('utf8');
  let sound = 0;
  lines.forEach((bytes, i) => {
    if (i === 0 && first === HEADER) return;
    if (bytes.length === 0) return;
    try {
      const entry = entryOf(bytes, `line ${i + 1}`);
      sound++;
      if ('put' in entry) records.set(entry.put.tunnelId, entry.put);
      else records.delete(entry.delete);
    } catch (err) {
      damaged.push({ bytes, why: err instanceof RecordError ? err.message : `line ${i + 1}: ${(err as Error).message}` });
    }
  });
  if (first !== HEADER) {
    const format = formatOf(data.subarray(0, 64).toString('utf8'));
    if (format !== undefined && format !== FORMAT) throw new StateFileError(`state file ${name} is in format ${format}, which this relay does not read (it writes format ${FORMAT}); move it away to start without its tunnels`);
    // A header changed on disk, under lines that prove the file ours: set aside like any line.
    if (format === undefined && sound === 0) throw new StateFileError(`state file ${name}: not a localproxy relay state file (format ${FORMAT})`);
  }
  return { records, damaged, goodBytes: data.length - tail.length, torn: tail.length > 0 };
}

/** The `format` a state file's start names (an earlier document or journal), if any. */
function formatOf(text: string): number | undefined {
  // A document of an earlier format may span lines: its first line alone need not be JSON.
  const m = /^\{\s*"format"\s*:\s*(\d+)/.exec(text);
  return m ? Number(m[1]) : undefined;
}
