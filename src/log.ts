/**
 * The reference's log line, on stderr:
 *   [YYYY-MM-DD HH:MM:SS.ffffff] (<pid>) [<level>] <message>
 * Levels as in `-v`: 0 off, 1 fatal, 2 error, 3 warning, 4 info, 5 debug, 6 trace.
 * Registered secrets (access and client tokens) are replaced before anything is written.
 */
export const LogLevel = { OFF: 0, FATAL: 1, ERROR: 2, WARNING: 3, INFO: 4, DEBUG: 5, TRACE: 6 } as const;

const LEVEL_NAMES = ['', 'fatal', 'error', 'warning', 'info', 'debug', 'trace'];
const REDACTED = '***';

export type LogSink = (line: string) => void;

export interface LoggerOptions {
  /** 0-6; values above 6 mean trace. Default 4 (info). */
  level?: number;
  /** Where finished lines go (with trailing newline). Default: process.stderr. */
  sink?: LogSink;
  /** Shown between the pid and the level; default the process id. */
  id?: string;
  /** `limited()`: lines of one kind per window (default LIMITED_BURST) and the window (LIMITED_WINDOW_MS). */
  limitBurst?: number;
  limitWindowMs?: number;
}

function pad(n: number, width = 2): string {
  return String(n).padStart(width, '0');
}

function timestamp(): string {
  const micros = Math.floor((performance.timeOrigin + performance.now()) * 1000);
  const d = new Date(Math.floor(micros / 1000));
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(micros % 1000000, 6)}`;
}

/** Lines of one kind written per window before the rest are only counted (see `Logger.limited`). */
export const LIMITED_BURST = 5;
export const LIMITED_WINDOW_MS = 10_000;
/** Kinds tracked at once; past it the oldest kind is forgotten (its count is reported first). */
const LIMITED_KINDS = 256;

interface Kind {
  level: number;
  windowStart: number;
  written: number;
  suppressed: number;
  /** The logger (with its prefix) that reports the count. */
  owner: Logger;
  timer?: NodeJS.Timeout;
}

/**
 * Shared by a logger and its forks: per kind of line, `LIMITED_BURST` lines per window are
 * written and the rest counted; once the window is over one line says how many were suppressed.
 */
class Limiter {
  readonly kinds = new Map<string, Kind>();

  constructor(readonly burst: number, readonly windowMs: number) {}

  /** True when the line may be written now. */
  admit(owner: Logger, level: number, key: string): boolean {
    const now = Date.now();
    let kind = this.kinds.get(key);
    if (kind && now - kind.windowStart >= this.windowMs) {
      this.report(key, kind);
      kind = undefined;
    }
    if (!kind) {
      if (this.kinds.size >= LIMITED_KINDS) {
        const [oldestKey, oldest] = this.kinds.entries().next().value as [string, Kind];
        this.report(oldestKey, oldest);
      }
      kind = { level, windowStart: now, written: 0, suppressed: 0, owner };
      this.kinds.set(key, kind);
    }
    if (kind.written < this.burst) {
      kind.written++;
      return true;
    }
    kind.suppressed++;
    if (!kind.timer) {
      kind.timer = setTimeout(() => this.report(key, kind), Math.max(1, kind.windowStart + this.windowMs - now));
      kind.timer.unref();
    }
    return false;
  }

  /** Ends a kind's window: its count, if any, is written. */
  private report(key: string, kind: Kind): void {
    clearTimeout(kind.timer);
    if (this.kinds.get(key) === kind) this.kinds.delete(key);
    if (kind.suppressed > 0) {
      kind.owner.write(kind.level, `${kind.suppressed} similar message${kind.suppressed === 1 ? '' : 's'} suppressed (${key})`);
    }
  }

  /** Writes every pending count now (the process is about to exit). */
  flush(): void {
    for (const [key, kind] of [...this.kinds]) this.report(key, kind);
  }
}

export class Logger {
  level: number;
  private readonly sink: LogSink;
  private readonly id: string;
  private readonly prefix: string;
  private readonly secrets: Set<string>;
  private readonly limiter: Limiter;

  constructor(options: LoggerOptions = {}, prefix = '', secrets = new Set<string>(), limiter?: Limiter) {
    this.level = Math.min(Math.max(options.level ?? LogLevel.INFO, 0), LogLevel.TRACE);
    this.sink = options.sink ?? ((line) => process.stderr.write(line));
    this.id = options.id ?? String(process.pid);
    this.prefix = prefix;
    this.secrets = secrets;
    this.limiter = limiter ?? new Limiter(options.limitBurst ?? LIMITED_BURST, options.limitWindowMs ?? LIMITED_WINDOW_MS);
  }

  /** A logger that prefixes its messages with `scope: ` and shares level, sink, secrets and rate limits. */
  fork(scope: string): Logger {
    return new Logger({ level: this.level, sink: this.sink, id: this.id }, `${this.prefix}${scope}: `, this.secrets, this.limiter);
  }

  /**
   * A line that a peer, a client or the network can repeat at will (a refused upgrade, a
   * refused connection, a malformed message): at most `LIMITED_BURST` lines of one `kind` per
   * `LIMITED_WINDOW_MS` across this logger and its forks; the rest are counted and reported
   * as `N similar messages suppressed (kind)` when the window ends. `kind` names the class
   * of line, never a value chosen by the sender (that would make every line a new kind).
   */
  limited(level: number, kind: string, message: string): void {
    if (!this.enabled(level)) return;
    if (this.limiter.admit(this, level, kind)) this.write(level, message);
  }

  /** Writes the pending "suppressed" counts now (before the process exits). */
  flushLimited(): void {
    this.limiter.flush();
  }

  /** Registers a value that must never be written (shared by every fork). Values under 4 characters are ignored. */
  redact(secret: string | undefined): void {
    if (secret && secret.length >= 4) this.secrets.add(secret);
  }

  /** Forgets a value given to `redact` once nothing logs it any more, so the set does not grow with every tunnel. */
  forget(secret: string | undefined): void {
    if (secret) this.secrets.delete(secret);
  }

  enabled(level: number): boolean {
    return level <= this.level && level > 0;
  }

  fatal(message: string): void { this.write(LogLevel.FATAL, message); }
  error(message: string): void { this.write(LogLevel.ERROR, message); }
  warn(message: string): void { this.write(LogLevel.WARNING, message); }
  info(message: string): void { this.write(LogLevel.INFO, message); }
  debug(message: string): void { this.write(LogLevel.DEBUG, message); }
  trace(message: string): void { this.write(LogLevel.TRACE, message); }

  /** Removes every registered secret from a text (also used for error messages shown to users). */
  scrub(text: string): string {
    for (const secret of this.secrets) if (text.includes(secret)) text = text.split(secret).join(REDACTED);
    return text;
  }

  /** @internal */
  write(level: number, message: string): void {
    if (!this.enabled(level)) return;
    this.sink(`[${timestamp()}] (${this.id}) [${LEVEL_NAMES[level]}] ${this.scrub(this.prefix + message)}\n`);
  }
}

/** A logger that writes nothing; for library users who do not want output. */
export function silentLogger(): Logger {
  return new Logger({ level: LogLevel.OFF, sink: () => {} });
}
