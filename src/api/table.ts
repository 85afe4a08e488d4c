/**
 * `--output table` as the AWS CLI draws it (awscli/formatter.py TableFormatter and awscli/table.py
 * without colour): a section per object or list of objects, titled with the operation or the key
 * it sits under and indented one `|` per level; scalar keys become columns in key order, a
 * section of one row with headers is turned into key/value rows when the table is wider than the
 * terminal (80 columns when stdout is not one), and column widths are scaled to the widest section.
 */
import { textWidth } from './text-width';
import { pythonStr, sortedKeys } from './text';

type Json = unknown;
type JsonObject = Record<string, unknown>;

function isObject(value: Json): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isScalar(value: Json): boolean {
  return typeof value !== 'object' || value === null;
}

/** Python's truthiness of a JSON value. */
function truthy(value: Json): boolean {
  if (Array.isArray(value)) return value.length > 0;
  if (isObject(value)) return Object.keys(value).length > 0;
  return Boolean(value);
}

/** Python's round(): halves to even. */
function roundHalfEven(x: number): number {
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff !== 0.5) return Math.round(x);
  return floor % 2 === 0 ? floor : floor + 1;
}

class Section {
  title = '';
  headers: string[] = [];
  rows: string[][] = [];
  indentLevel = 0;
  private maxWidths: number[] = [];

  columnWidths(padding = 0, maxWidth?: number): number[] {
    const unscaled = this.maxWidths.map((w) => w + padding);
    if (maxWidth === undefined || unscaled.length === 0) return unscaled;
    const scale = maxWidth / unscaled.reduce((a, b) => a + b, 0);
    const scaled = unscaled.map((w) => roundHalfEven(scale * w));
    let offBy = scaled.reduce((a, b) => a + b, 0) - maxWidth;
    while (offBy !== 0) {
      const order = [...scaled.keys()];
      if (offBy < 0) order.reverse();
      for (const i of order) {
        if (offBy > 0) {
          scaled[i] -= 1;
          offBy -= 1;
        } else {
          scaled[i] += 1;
          offBy += 1;
        }
        if (offBy === 0) break;
      }
    }
    return scaled;
  }

  totalWidth(padding: number, outerPadding: number): number {
    const total = this.columnWidths().reduce((sum, w) => sum + w + padding, 0) + 2 + 2 * outerPadding;
    return Math.max(textWidth(this.title) + 2 + 2 * outerPadding, total);
  }

  addHeader(headers: string[]): void {
    this.updateMaxWidths(headers);
    this.headers = headers;
  }

  addRow(row: Json[]): void {
    const cells = row.map(pythonStr);
    this.rows.push(cells);
    this.updateMaxWidths(cells);
  }

  private updateMaxWidths(row: string[]): void {
    if (this.maxWidths.length === 0) this.maxWidths = row.map(textWidth);
    else row.forEach((cell, i) => { this.maxWidths[i] = Math.max(textWidth(cell), this.maxWidths[i] ?? 0); });
  }
}

function spaces(n: number): string {
  return n > 0 ? ' '.repeat(n) : '';
}

function centerText(text: string, length: number, left: string, right: string): string {
  const width = textWidth(text);
  const start = Math.floor(length / 2) - Math.floor(width / 2) - 1;
  const soFar = left.length + start + width;
  return `${left}${spaces(start)}${text}${spaces(length - right.length - soFar)}${right}`;
}

function alignLeft(text: string, length: number, left: string, right: string): string {
  const width = textWidth(text);
  const padding = length - (width + 2 + left.length + right.length) >= 0 ? 2 : 0;
  const soFar = left.length + padding + width;
  return `${left}${spaces(padding)}${text}${spaces(length - soFar - right.length)}${right}`;
}

class MultiTable {
  private readonly sections: Section[] = [];
  private current?: Section;

  newSection(title: string, indentLevel = 0): void {
    this.current = new Section();
    this.current.title = title;
    this.current.indentLevel = indentLevel;
    this.sections.push(this.current);
  }

  addHeader(headers: string[]): void {
    this.current!.addHeader(headers);
  }

  addRow(row: Json[]): void {
    this.current!.addRow(row);
  }

  render(terminalWidth: number): string {
    let maxWidth = this.maxWidth();
    if (maxWidth > terminalWidth) {
      this.toVertical();
      maxWidth = this.maxWidth();
    }
    const out = [`${'-'.repeat(maxWidth)}\n`];
    for (const section of this.sections) this.renderSection(section, maxWidth, out);
    return out.join('');
  }

  private maxWidth(): number {
    return Math.max(...this.sections.map((s) => s.totalWidth(4, s.indentLevel)));
  }

  /** Sections of one row with headers become rows of header and value. */
  private toVertical(): void {
    this.sections.forEach((section, i) => {
      if (section.rows.length !== 1 || section.headers.length === 0) return;
      const vertical = new Section();
      vertical.title = section.title;
      vertical.indentLevel = section.indentLevel;
      section.headers.forEach((header, j) => {
        if (j < section.rows[0].length) vertical.addRow([header, section.rows[0][j]]);
      });
      this.sections[i] = vertical;
    });
  }

  private renderSection(section: Section, maxWidth: number, out: string[]): void {
    const indent = '|'.repeat(section.indentLevel);
    const line = (text: string) => out.push(`${indent}${text}${indent}\n`);
    const width = maxWidth - section.indentLevel * 2;
    if (section.title) {
      line(centerText(section.title, width, '|', '|'));
      if (section.headers.length === 0 && section.rows.length === 0) line(`+${'-'.repeat(Math.max(0, width - 2))}+`);
    }
    if (section.headers.length > 0) {
      const widths = section.columnWidths(4, width);
      line(lineBreak(widths));
      line(zip(widths, section.headers).map(([w, header], i) => centerText(header, w, i === 0 ? '|' : '', '|')).join(''));
    }
    if (section.rows.length === 0) return;
    const widths = section.columnWidths(4, width);
    if (widths.length === 0) return;
    line(lineBreak(widths));
    for (const row of section.rows) line(zip(widths, row).map(([w, cell], i) => alignLeft(cell, w, i === 0 ? '|' : '', '|')).join(''));
    line(lineBreak(widths));
  }
}

function zip<T>(widths: number[], items: T[]): Array<[number, T]> {
  return widths.slice(0, items.length).map((w, i) => [w, items[i]]);
}

function lineBreak(widths: number[]): string {
  return widths.map((w, i) => (i === 0 ? `+${'-'.repeat(Math.max(0, w - 2))}+` : `${'-'.repeat(Math.max(0, w - 1))}+`)).join('');
}

/** Scalar keys (the columns) and the others, each in key order. */
function groupKeys(item: JsonObject): { headers: string[]; more: string[] } {
  const keys = sortedKeys(Object.keys(item));
  return { headers: keys.filter((k) => isScalar(item[k])), more: keys.filter((k) => !isScalar(item[k])) };
}

function build(table: MultiTable, title: string | undefined, current: Json, indentLevel: number): boolean {
  if (!truthy(current)) return false;
  if (title !== undefined) table.newSection(title, indentLevel);
  if (Array.isArray(current)) {
    if (isObject(current[0])) {
      buildFromList(table, current, indentLevel, title);
    } else {
      for (const item of current) {
        if (isScalar(item)) table.addRow([item]);
        else if (isObject(item)) table.addRow(Object.keys(item));
        else if ((item as Json[]).every(isScalar)) table.addRow(item as Json[]);
        else build(table, undefined, item, 0);
      }
    }
  }
  if (isObject(current)) buildFromObject(table, current, indentLevel);
  return true;
}

function buildFromObject(table: MultiTable, current: JsonObject, indentLevel: number): void {
  const { headers, more } = groupKeys(current);
  if (headers.length === 1) {
    table.addRow([headers[0], current[headers[0]]]);
  } else if (headers.length > 0) {
    table.addHeader(headers);
    table.addRow(headers.map((k) => current[k]));
  }
  for (const key of more) build(table, key, current[key], indentLevel + 1);
}

function buildFromList(table: MultiTable, current: Json[], indentLevel: number, title: string | undefined): void {
  const objects = current.filter(isObject);
  const headers = sortedKeys(new Set(objects.flatMap((item) => groupKeys(item).headers)));
  const more = sortedKeys(new Set(objects.flatMap((item) => groupKeys(item).more)));
  table.addHeader(headers);
  objects.forEach((element, i) => {
    if (i > 0 && more.length > 0) {
      table.newSection(title ?? '', indentLevel);
      table.addHeader(headers);
    }
    table.addRow(headers.map((header) => (header in element ? element[header] : '')));
    for (const key of more) if (key in element) build(table, key, element[key], indentLevel + 1);
  });
}

/** The table for `data` titled `title` (the operation's name); '' for what the AWS CLI leaves empty. */
export function formatTable(title: string, data: Json, terminalWidth = 80): string {
  const table = new MultiTable();
  return build(table, title, data, 0) ? table.render(terminalWidth) : '';
}
