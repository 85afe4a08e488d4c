/**
 * The agent's state file: the destination tokens of the tunnels it serves, with the client
 * token each was first used with, so that a restart or a crash resumes them and the service
 * takes the reconnect for the same peer (it refuses a token already used with another
 * client token). Notifications are one-shot; without this file a restart loses its tunnels.
 *
 *   <state dir>/agent-<thing name>.json   mode 0600, directory 0700
 *   {"version": 1, "thingName": "pi1", "tunnels": [{"accessToken": "...", "clientToken": "...", ...}]}
 *
 * A file that cannot be read or parsed is said in one line, a damaged one is set aside as
 * `<file>.corrupt`, and the agent starts without resumed tunnels: a device must stay reachable
 * for new notifications. A write is a new file renamed over the old one, so a kill at any
 * moment leaves either the old state or the new one.
 */
import { chmodSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { CLIENT_TOKEN_PATTERN } from '../protocol/constants';
import { LogLevel, type Logger } from '../log';
import { parseNotification, isBadNotification } from '../mqtt/notification';
import { printable } from '../printable';

/** Far above any real state: a few tunnels of under 2 KiB each. */
const MAX_STATE_FILE_BYTES = 1024 * 1024;
const STATE_VERSION = 1;

/** A tunnel the agent serves, as kept across restarts. */
export interface KeptTunnel {
  accessToken: string;
  clientToken: string;
  region: string;
  services: string[];
  tunnelId?: string;
}

/**
 * Where the state lives without --state-dir: systemd's `StateDirectory=` ($STATE_DIRECTORY),
 * else %LOCALAPPDATA%\localproxy on Windows, else $XDG_STATE_HOME/localproxy, else
 * ~/.local/state/localproxy. Undefined when none of these is known.
 */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env, platform: NodeJS.Platform = process.platform, home: string = safeHome()): string | undefined {
  const systemd = env.STATE_DIRECTORY?.split(':')[0];
  if (systemd) return systemd;
  if (platform === 'win32') return env.LOCALAPPDATA ? join(env.LOCALAPPDATA, 'localproxy') : undefined;
  if (env.XDG_STATE_HOME && isAbsolute(env.XDG_STATE_HOME)) return join(env.XDG_STATE_HOME, 'localproxy');
  return home ? join(home, '.local', 'state', 'localproxy') : undefined;
}

function safeHome(): string {
  try {
    return homedir();
  } catch {
    return '';
  }
}

/** The file for one thing; `:` (valid in thing names) is not valid in Windows file names. */
export function stateFileName(thingName: string): string {
  return `agent-${thingName.replace(/:/g, '%3A')}.json`;
}

function errorCode(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? printable((err as Error).message ?? String(err));
}

/** The tunnels of a parsed file, or why it is not a state file of ours. */
function tunnelsOf(value: unknown, thingName: string): KeptTunnel[] | string {
  if (typeof value !== 'object' || value === null) return 'not a JSON object';
  const v = value as Record<string, unknown>;
  if (v.version !== STATE_VERSION) return `version ${printable(String(v.version))}, expected ${STATE_VERSION}`;
  if (v.thingName !== thingName) return `it is the state of thing ${printable(String(v.thingName), 140)}`;
  if (!Array.isArray(v.tunnels)) return 'no tunnels list';
  const tunnels: KeptTunnel[] = [];
  for (const entry of v.tunnels as unknown[]) {
    const e = (entry ?? {}) as Record<string, unknown>;
    // The tunnel fields are checked as a notification's are.
    const n = parseNotification(Buffer.from(JSON.stringify({ ...e, clientAccessToken: e.accessToken, clientMode: 'destination' })), false);
    if (isBadNotification(n)) return `a tunnel entry is not valid: ${n.reason}`;
    if (typeof e.clientToken !== 'string' || !CLIENT_TOKEN_PATTERN.test(e.clientToken)) return 'a tunnel entry has no valid clientToken';
    const kept: KeptTunnel = { accessToken: n.clientAccessToken, clientToken: e.clientToken, region: n.region, services: n.services };
    if (n.tunnelId !== undefined) kept.tunnelId = n.tunnelId;
    tunnels.push(kept);
  }
  return tunnels;
}

export class StateFile {
  readonly path: string;
  private dirMade = false;

  constructor(readonly dir: string, private readonly thingName: string, private readonly log: Logger) {
    this.path = join(dir, stateFileName(thingName));
  }

  /** The kept tunnels; a missing file is none, any other problem is one line and none. */
  load(): KeptTunnel[] {
    let text: string;
    let mode: number;
    try {
      const info = statSync(this.path, { throwIfNoEntry: false });
      if (!info) return [];
      if (!info.isFile()) throw Object.assign(new Error('not a file'), { code: 'not a file' });
      if (info.size > MAX_STATE_FILE_BYTES) return this.setAside(`${info.size} bytes, over the ${MAX_STATE_FILE_BYTES}-byte limit`);
      mode = info.mode & 0o777;
      text = readFileSync(this.path, 'utf8');
    } catch (err) {
      this.log.error(`cannot read the state file ${printable(this.path)}: ${errorCode(err)}; starting without resumed tunnels`);
      return [];
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      return this.setAside('not JSON');
    }
    const tunnels = tunnelsOf(value, this.thingName);
    if (typeof tunnels === 'string') return this.setAside(tunnels);
    if (process.platform !== 'win32' && (mode & 0o077) !== 0) this.restrict(mode);
    return tunnels;
  }

  /** Access tokens are for this user only. */
  private restrict(mode: number): void {
    try {
      chmodSync(this.path, 0o600);
      this.log.warn(`the state file ${printable(this.path)} was readable by others (mode ${mode.toString(8)}): it holds access tokens; now 600`);
    } catch (err) {
      this.log.warn(`the state file ${printable(this.path)} is readable by others (mode ${mode.toString(8)}) and cannot be changed: ${errorCode(err)}`);
    }
  }

  private setAside(why: string): KeptTunnel[] {
    const aside = `${this.path}.corrupt`;
    let moved = `set aside as ${printable(aside)}`;
    try {
      renameSync(this.path, aside);
    } catch (err) {
      moved = `could not set it aside: ${errorCode(err)}`;
    }
    this.log.error(`the state file ${printable(this.path)} is damaged (${why}); ${moved}; starting without resumed tunnels`);
    return [];
  }

  /**
   * Replaces what is kept; a failure is said in one line (rate-limited). Synchronous, so a
   * notification is acknowledged to the broker only once it is in the file: a few kilobytes
   * written and renamed, well under a millisecond, where an asynchronous write would queue
   * behind other file work of the process.
   */
  save(tunnels: KeptTunnel[]): void {
    const text = `${JSON.stringify({ version: STATE_VERSION, thingName: this.thingName, tunnels }, null, 1)}\n`;
    const temporary = `${this.path}.tmp`;
    try {
      if (!this.dirMade) mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      this.dirMade = true;
      writeFileSync(temporary, text, { mode: 0o600 });
      // The mode given to writeFileSync applies only to a new file.
      chmodSync(temporary, 0o600);
      renameSync(temporary, this.path);
    } catch (err) {
      this.log.limited(LogLevel.ERROR, 'state write', `cannot write the state file ${printable(this.path)}: ${errorCode(err)}; tunnels will not be resumed after a restart`);
    }
  }
}
