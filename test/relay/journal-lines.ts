/**
 * A `--state` journal read back for assertions, independently of the relay's own reader:
 * `{"format":3}`, then `<16 hex digits of SHA-256 of the JSON> <JSON>` per line. Throws on a
 * line that is torn or fails its sum.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

export interface Journal {
  entries: Array<{ put?: Record<string, unknown> & { tunnelId: string }; delete?: string }>;
  puts: Array<Record<string, unknown> & { tunnelId: string }>;
  /** The records, replayed. */
  live: Map<string, Record<string, unknown>>;
}

export function sumOf(json: string): string {
  return createHash('sha256').update(json, 'utf8').digest('hex').slice(0, 16);
}

/** One journal line (newline included), as the relay writes it. */
export function journalLine(entry: object): string {
  const json = JSON.stringify(entry);
  return `${sumOf(json)} ${json}\n`;
}

export function journalLines(path: string): Journal {
  const text = readFileSync(path, 'utf8');
  if (!text.endsWith('\n')) throw new Error(`${path} ends in a torn line`);
  const [header, ...rest] = text.slice(0, -1).split('\n');
  if (header !== '{"format":3}') throw new Error(`${path}: header ${header}`);
  const entries = rest.map((line, i) => {
    const m = /^([0-9a-f]{16}) (.*)$/.exec(line);
    if (!m || sumOf(m[2]) !== m[1]) throw new Error(`${path} line ${i + 2} fails its checksum: ${line.slice(0, 80)}`);
    return JSON.parse(m[2]) as Journal['entries'][number];
  });
  const live = new Map<string, Record<string, unknown>>();
  for (const e of entries) {
    if (e.put) live.set(e.put.tunnelId, e.put);
    else if (e.delete) live.delete(e.delete);
  }
  return { entries, puts: entries.flatMap((e) => (e.put ? [e.put] : [])), live };
}
