/**
 * `--config-dir` service mapping files (behaviour spec 1.14, Decisions 9), read once at start.
 *
 *   # SSHDestination.ini
 *   SSH1 = 22
 *   SSH2 = 10.0.0.1:80
 *
 * Every regular file under the directory, recursively, in name order. Unlike the
 * reference, values are validated like `-s`/`-d` values, and one id defined differently
 * in two files is an error naming both, instead of "first file wins" in iteration order.
 */
import { readdirSync, realpathSync, statSync, type Stats } from 'node:fs';
import { dirname, join } from 'node:path';
import { usageError } from '../exit';
import { MAX_PRINTED_PATH_CHARS, printable } from '../printable';
import type { Mode, ServiceTarget } from '../options';
import { fileProblem, readSmallTextFile } from './read-file';
import { formatTarget, parseTarget } from './service-spec';
import { validateServiceId } from './validate';

/** Bounds a runaway directory (a mount point, a symlink loop). */
const MAX_CONFIG_FILES = 1000;

export interface ConfigDirResult {
  mappings: Map<string, ServiceTarget>;
  files: string[];
  /** Lines to log once a logger exists (skipped files). */
  warnings: string[];
}


/**
 * Regular files under `dir`, recursively. A directory reached twice (a symlink back to a
 * parent) is read once, and an entry that cannot be examined (a symlink loop, no permission)
 * is an error naming it, instead of an endless descent or an internal error.
 */
function listFiles(dir: string, out: string[], visited = new Set<string>()): void {
  let names: string[];
  try {
    const real = realpathSync(dir);
    if (visited.has(real)) return;
    visited.add(real);
    names = readdirSync(dir).sort();
  } catch (err) {
    throw usageError(`Cannot read configuration directory ${dir}: ${fileProblem(err)}`);
  }
  for (const name of names) {
    const path = join(dir, name);
    let st: Stats | undefined;
    try {
      st = statSync(path, { throwIfNoEntry: false });
    } catch (err) {
      throw usageError(`Cannot read configuration file ${path}: ${fileProblem(err)}`);
    }
    if (!st) continue;
    if (st.isDirectory()) listFiles(path, out, visited);
    else if (st.isFile()) out.push(path);
    if (out.length > MAX_CONFIG_FILES) throw usageError(`Configuration directory has more than ${MAX_CONFIG_FILES} files: ${dir}`);
  }
}

/** `ID = value` lines of one file; a line that is not of that form makes the file "not ours". */
function parseFile(text: string): { entries: Array<[string, string, number]>; notIni?: string } {
  const entries: Array<[string, string, number]> = [];
  let inSection = false;
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    if (line.startsWith('[') && line.endsWith(']')) {
      // Keys under a section are not top-level ids; the reference never finds them either.
      inSection = true;
      continue;
    }
    const eq = line.indexOf('=');
    if (eq <= 0) return { entries, notIni: `line ${i + 1} is not "ID = value": ${printable(line, 60)}` };
    if (!inSection) entries.push([line.slice(0, eq).trim(), line.slice(eq + 1).trim(), i + 1]);
  }
  return { entries };
}

export function readConfigDir(dir: string, mode: Mode): ConfigDirResult {
  const files: string[] = [];
  listFiles(dir, files);
  const mappings = new Map<string, ServiceTarget>();
  const origin = new Map<string, string>();
  const warnings: string[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = readSmallTextFile(file);
    } catch (err) {
      throw usageError(`Cannot read configuration file ${file}: ${fileProblem(err)}`);
    }
    const { entries, notIni } = parseFile(text);
    if (notIni) {
      // As the reference: a file that is not in this format is skipped with a warning.
      warnings.push(`Fail to parse ${printable(file, MAX_PRINTED_PATH_CHARS)} .Please make sure your file is in .ini format. (${notIni}) Continue to the next file.`);
      continue;
    }
    for (const [id, value, line] of entries) {
      let target: ServiceTarget;
      try {
        validateServiceId(id);
        target = parseTarget(value, mode);
      } catch (err) {
        throw usageError(`${file}:${line}: ${(err as Error).message}`);
      }
      const previous = mappings.get(id);
      if (previous) {
        if (formatTarget(previous) === formatTarget(target)) continue;
        throw usageError(`Service id ${id} is defined twice with different values: ${formatTarget(previous)} in ${origin.get(id)} and ${formatTarget(target)} in ${file}:${line}`);
      }
      mappings.set(id, target);
      origin.set(id, `${file}:${line}`);
    }
  }
  return { mappings, files, warnings };
}

/** The explicit `--config-dir`: must be an existing, non-empty directory (as the reference). */
export function checkConfigDir(dir: string): void {
  let st: Stats | undefined;
  try {
    st = statSync(dir, { throwIfNoEntry: false });
  } catch (err) {
    throw usageError(`Invalid configuration directory: ${dir} (${fileProblem(err)})`);
  }
  if (!st) throw usageError(`Invalid configuration directory: ${dir} (does not exist)`);
  if (!st.isDirectory()) throw usageError(`Invalid configuration directory: ${dir} (not a directory)`);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    throw usageError(`Invalid configuration directory: ${dir} (${fileProblem(err)})`);
  }
  if (names.length === 0) throw usageError(`Invalid configuration directory: ${dir} (empty)`);
}

/**
 * Without `--config-dir`: `<cwd>/config` as the reference's code does, else `config/`
 * beside the executable as its documentation says (Decisions 9). Undefined when neither
 * is a non-empty directory.
 */
export function defaultConfigDir(cwd: string, executable: string): string | undefined {
  for (const dir of [join(cwd, 'config'), join(dirname(executable), 'config')]) {
    let st: Stats | undefined;
    try {
      st = statSync(dir, { throwIfNoEntry: false });
    } catch {
      // Not examinable: treated like a missing directory, as the reference's debug line says.
      continue;
    }
    if (st?.isDirectory()) {
      try {
        if (readdirSync(dir).length > 0) return dir;
      } catch {
        return dir;
      }
    }
  }
  return undefined;
}
