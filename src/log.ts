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
}

function pad(n: number, width = 2): string {
  return String(n).padStart(width, '0');
}

function timestamp(): string {
  const micros = Math.floor((performance.timeOrigin + performance.now()) * 1000);
  const d = new Date(Math.floor(micros / 1000));
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(micros % 1000000, 6)}`;
}

export class Logger {
  level: number;
  private readonly sink: LogSink;
  private readonly id: string;
  private readonly prefix: string;
  private readonly secrets: Set<string>;

  constructor(options: LoggerOptions = {}, prefix = '', secrets = new Set<string>()) {
    this.level = Math.min(Math.max(options.level ?? LogLevel.INFO, 0), LogLevel.TRACE);
    this.sink = options.sink ?? ((line) => process.stderr.write(line));
    this.id = options.id ?? String(process.pid);
    this.prefix = prefix;
    this.secrets = secrets;
  }

  /** A logger that prefixes its messages with `scope: ` and shares level, sink and secrets. */
  fork(scope: string): Logger {
    const child = new Logger({ level: this.level, sink: this.sink, id: this.id }, `${this.prefix}${scope}: `, this.secrets);
    return child;
  }

  /** Registers a value that must never be written (shared by every fork). Values under 4 characters are ignored. */
  redact(secret: string | undefined): void {
    if (secret && secret.length >= 4) this.secrets.add(secret);
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

  private write(level: number, message: string): void {
    if (!this.enabled(level)) return;
    this.sink(`[${timestamp()}] (${this.id}) [${LEVEL_NAMES[level]}] ${this.scrub(this.prefix + message)}\n`);
  }
}

/** A logger that writes nothing; for library users who do not want output. */
export function silentLogger(): Logger {
  return new Logger({ level: LogLevel.OFF, sink: () => {} });
}
