/**
 * `--output text` as the AWS CLI writes it (awscli/text.py): the scalars of an object on one
 * tab-separated line in key order, prefixed with the upper-cased key it sits under; lists of
 * objects share the columns of all their scalar keys; nested values follow on their own lines.
 */

type Json = unknown;
type JsonObject = Record<string, unknown>;

function isObject(value: Json): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isScalar(value: Json): boolean {
  return typeof value !== 'object' || value === null;
}

/** A scalar as Python's str() shows the value json.loads made of it. */
export function pythonStr(value: Json): string {
  if (value === null || value === undefined) return 'None';
  if (value === true) return 'True';
  if (value === false) return 'False';
  if (typeof value === 'string') return value;
  if (typeof value === 'number') return Number.isInteger(value) || !Number.isFinite(value) ? String(value) : pythonFloat(value);
  return JSON.stringify(value);
}

/** Python's repr of a float: the shortest digits that read back, in exponent form below 1e-4 and from 1e16. */
function pythonFloat(value: number): string {
  const [mantissa, exponentText] = value.toExponential().split('e');
  const exponent = Number(exponentText);
  const sign = mantissa.startsWith('-') ? '-' : '';
  const digits = mantissa.replace('-', '').replace('.', '');
  if (exponent < -4 || exponent >= 16) {
    return `${sign}${digits[0]}${digits.length > 1 ? `.${digits.slice(1)}` : ''}e${exponent < 0 ? '-' : '+'}${String(Math.abs(exponent)).padStart(2, '0')}`;
  }
  if (exponent < 0) return `${sign}0.${'0'.repeat(-exponent - 1)}${digits}`;
  if (digits.length <= exponent + 1) return `${sign}${digits}${'0'.repeat(exponent + 1 - digits.length)}.0`;
  return `${sign}${digits.slice(0, exponent + 1)}.${digits.slice(exponent + 1)}`;
}

/** Keys in Python's sorted() order (by code point). */
export function sortedKeys(keys: Iterable<string>): string[] {
  return [...keys].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

export function formatText(data: Json): string {
  const out: string[] = [];
  formatItem(data, out, undefined, undefined);
  return out.join('');
}

function formatItem(item: Json, out: string[], identifier: string | undefined, scalarKeys: string[] | undefined): void {
  if (isObject(item)) formatObject(scalarKeys, item, identifier, out);
  else if (Array.isArray(item)) formatList(item, identifier, out);
  else out.push(`${pythonStr(item)}\n`);
}

function formatList(item: Json[], identifier: string | undefined, out: string[]): void {
  if (item.length === 0) return;
  if (item.some(isObject)) {
    const keys = allScalarKeys(item);
    for (const element of item) formatItem(element, out, identifier, keys);
  } else if (item.some(Array.isArray)) {
    const scalars = item.filter(isScalar);
    if (scalars.length > 0) formatScalarList(scalars, identifier, out);
    for (const nonScalar of item.filter((el) => !isScalar(el))) formatItem(nonScalar, out, identifier, undefined);
  } else {
    formatScalarList(item, identifier, out);
  }
}

function formatScalarList(elements: Json[], identifier: string | undefined, out: string[]): void {
  if (identifier !== undefined) {
    for (const element of elements) out.push(`${identifier.toUpperCase()}\t${pythonStr(element)}\n`);
  } else {
    out.push(`${elements.map(pythonStr).join('\t')}\n`);
  }
}

function formatObject(scalarKeys: string[] | undefined, item: JsonObject, identifier: string | undefined, out: string[]): void {
  const { scalars, nonScalars } = partition(item, scalarKeys);
  if (scalars.length > 0) {
    if (identifier !== undefined) scalars.unshift(identifier.toUpperCase());
    out.push(`${scalars.join('\t')}\n`);
  }
  for (const [key, value] of nonScalars) formatItem(value, out, key, undefined);
}

function allScalarKeys(list: Json[]): string[] {
  const seen = new Set<string>();
  for (const item of list) {
    if (!isObject(item)) continue;
    for (const [key, value] of Object.entries(item)) if (isScalar(value)) seen.add(key);
  }
  return sortedKeys(seen);
}

function partition(item: JsonObject, scalarKeys: string[] | undefined): { scalars: string[]; nonScalars: Array<[string, Json]> } {
  const scalars: string[] = [];
  const nonScalars: Array<[string, Json]> = [];
  if (scalarKeys === undefined) {
    for (const key of sortedKeys(Object.keys(item))) {
      if (isScalar(item[key])) scalars.push(pythonStr(item[key]));
      else nonScalars.push([key, item[key]]);
    }
  } else {
    for (const key of scalarKeys) scalars.push(key in item ? pythonStr(item[key]) : '');
    for (const key of sortedKeys(Object.keys(item).filter((k) => !scalarKeys.includes(k)))) nonScalars.push([key, item[key]]);
  }
  return { scalars, nonScalars };
}
