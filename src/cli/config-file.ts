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
import { readSmallTextFile } from './read-file';

/** Options read before the file is, so the reference ignores them there; we refuse them. */
const NOT_IN_FILE = new Set(['help', 'version', 'export-default-settings', 'config']);

function parseSwitch(key: string, value: string): boolean {
  const v = value.toLowerCase();
  if (['true', 'yes', 'on', '1', ''].includes(v)) return true;
  if (['false', 'no', 'off', '0'].includes(v)) return false;
  throw usageError(`the argument ('${shownValue(value)}') for option '--${key}' is invalid`);
}

export function parseConfigText(text: string): RawArgs {
  const out: RawArgs = new Map();
  let section = '';
  for (const raw of text.split(/\r?\n/)) {
    const hash = raw.indexOf('#');
    const line = (hash === -1 ? raw : raw.slice(0, hash)).trim();
    if (line === '') continue;
    if (line.startsWith('[') && line.endsWith(']')) {
      section = `${line.slice(1, -1).trim()}.`;
      continue;
    }
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
  }
  return out;
}

/** Reads `path` (relative to `cwd`); messages show it as given. */
export function readConfigFile(path: string, cwd: string): RawArgs {
  let text: string;
  try {
    text = readSmallTextFile(resolve(cwd, path));
  } catch (err) {
    throw usageError(`can not read options configuration file '${path}': ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  try {
    return parseConfigText(text);
  } catch (err) {
    throw usageError(`${(err as Error).message} (in ${path})`);
  }
}
