/**
 * The `--config` file (behaviour spec 1.5): Boost program_options config-file syntax.
 *
 *   # comment
 *   region = us-east-1
 *   access-token = foobar      # inline comment
 *   no-ssl-host-verify = true
 *
 * Keys are long option names; a value is cut at `#` as in the reference.
 */
import { resolve } from 'node:path';
import { OPTION_BY_NAME, shownValue, usageError, type RawArgs } from './args';
import { fileProblem, readSmallTextFile } from './read-file';

/** Options read before the file is, so the reference ignores them there; we refuse them. */
const NOT_IN_FILE = new Set(['help', 'version', 'export-default-settings', 'config']);

function parseSwitch(key: string, value: string): boolean {
  const v = value.toLowerCase();
  if (['true', 'yes', 'on', '1', ''].includes(v)) return true;
  if (['false', 'no', 'off', '0'].includes(v)) return false;
  throw usageError(`the argument ('${shownValue(value)}') for option '--${key}' is invalid`);
}

/** A problem on one line of the file: the line number goes with the message. */
export class ConfigLineError extends Error {
  constructor(message: string, readonly line: number) {
    super(message);
  }
}

export function parseConfigText(text: string): RawArgs {
  const out: RawArgs = new Map();
  let section = '';
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    try {
      section = parseLine(lines[i], section, out);
    } catch (err) {
      throw new ConfigLineError((err as Error).message, i + 1);
    }
  }
  return out;
}

/** One line into `out`; returns the section the following lines are in. */
function parseLine(raw: string, section: string, out: RawArgs): string {
  const hash = raw.indexOf('#');
  const line = (hash === -1 ? raw : raw.slice(0, hash)).trim();
  if (line === '') return section;
  if (line.startsWith('[') && line.endsWith(']')) return `${line.slice(1, -1).trim()}.`;
  const eq = line.indexOf('=');
  if (eq === -1) throw usageError(`the options configuration file contains an invalid line '${shownValue(line)}'`);
  const key = section + line.slice(0, eq).trim();
  const value = line.slice(eq + 1).trim();
  const spec = OPTION_BY_NAME.get(key);
  if (!spec) throw usageError(`unrecognised option '${shownValue(key)}'`);
  if (NOT_IN_FILE.has(key)) throw usageError(`option '${key}' cannot be used in a configuration file`);
  if (out.has(key)) throw usageError(`option '--${key}' cannot be specified more than once`);
  if (spec.value) out.set(key, value);
  else if (parseSwitch(key, value)) out.set(key, true);
  return section;
}

/** Reads `path` (relative to `cwd`); messages show it as given. */
export function readConfigFile(path: string, cwd: string): RawArgs {
  let text: string;
  try {
    text = readSmallTextFile(resolve(cwd, path));
  } catch (err) {
    throw usageError(`can not read options configuration file '${path}': ${fileProblem(err)}`);
  }
  try {
    return parseConfigText(text);
  } catch (err) {
    if (err instanceof ConfigLineError) throw usageError(`${err.message} (${path}, line ${err.line})`);
    throw err;
  }
}
