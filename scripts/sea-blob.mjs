// SEA preparation blobs. Node writes them with `--experimental-sea-config`, but only for its own
// word size: the Node 20 layout stores two lengths as size_t, so a blob made by a 64-bit node
// aborts the 32-bit armv7 binary. writeSeaBlob() writes that layout for either width;
// the build first checks its 64-bit output equals node's own, byte for byte, so a layout change
// in a future Node fails the build instead of shipping a broken binary.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const SEA_MAGIC = 0x0143da20;

export class SeaBlobError extends Error {
  code = 'ERR_SEA_BLOB';
}
const FLAG_DISABLE_EXPERIMENTAL_SEA_WARNING = 1;

/** The blob's execArgv: see generateSeaBlob. scripts/sea-prelude.cjs looks for this exact flag. */
export const SEA_EXEC_ARGV = ['--stack-trace-limit=10'];

/** The file name recorded in the blob; fixed so builds are reproducible wherever they run. */
export const SEA_MAIN_NAME = 'localproxy-sea.cjs';

/** Node 20.x layout: u32 magic | u32 flags | size_t len, path | size_t len, code (little-endian). */
export function writeSeaBlob({ mainName, code, wordSize }) {
  if (wordSize !== 32 && wordSize !== 64) throw new RangeError(`word size ${wordSize} is neither 32 nor 64`);
  const sizeT = wordSize / 8;
  const name = Buffer.from(mainName, 'utf8');
  const out = Buffer.alloc(8 + sizeT + name.length + sizeT + code.length);
  let at = out.writeUInt32LE(SEA_MAGIC, 0);
  at = out.writeUInt32LE(FLAG_DISABLE_EXPERIMENTAL_SEA_WARNING, at);
  const writeSize = (n) => (sizeT === 8 ? out.writeBigUInt64LE(BigInt(n), at) : out.writeUInt32LE(n, at));
  at = writeSize(name.length);
  at += name.copy(out, at);
  at = writeSize(code.length);
  code.copy(out, at);
  return out;
}

/** Runs `node --experimental-sea-config` with the given (linux-x64) node; returns the blob. */
export function generateSeaBlob(nodeExe, code, workDir) {
  rmSync(workDir, { recursive: true, force: true });
  mkdirSync(workDir, { recursive: true });
  writeFileSync(join(workDir, SEA_MAIN_NAME), code);
  writeFileSync(join(workDir, 'sea-config.json'), JSON.stringify({
    main: SEA_MAIN_NAME,
    output: 'sea.blob',
    disableExperimentalSEAWarning: true,
    // Snapshots and code cache are specific to the V8 build and CPU of the node that writes them;
    // they cannot be made for a foreign target and would gain nothing for a small bundle.
    useSnapshot: false,
    useCodeCache: false,
    // A NODE_OPTIONS left in the user's environment must not reach localproxy: with "none",
    // Node ignores it before any JavaScript runs, so even a `--require` of a missing file cannot
    // stop the start. Nodes that know the field also apply `execArgv`: SEA_EXEC_ARGV is V8's
    // default made explicit, which changes nothing but tells scripts/sea-prelude.cjs that
    // NODE_OPTIONS was ignored. Older Nodes (armv7's 20.11) ignore both; the prelude restarts.
    execArgv: SEA_EXEC_ARGV,
    execArgvExtension: 'none',
  }));
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  try {
    execFileSync(nodeExe, ['--experimental-sea-config', 'sea-config.json'], { cwd: workDir, env, stdio: 'pipe' });
  } catch (err) {
    throw new SeaBlobError(`${nodeExe} --experimental-sea-config failed: ${String(err.stderr || err.message).trim()}`);
  }
  return readFileSync(join(workDir, 'sea.blob'));
}
