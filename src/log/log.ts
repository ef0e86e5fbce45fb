/**
 * Structured event log: one line per event, `TIMESTAMP LEVEL event key=value ...`.
 *
 * Event names are stable (`flow.new`, `smtp.reject`, `policy.verdict`, `message`); fields always
 * carry the flow and session ids where one exists. Values are quoted when they contain spaces,
 * quotes, `=` or control characters, and control characters are escaped, so that an attacker's
 * subject line can never forge a second log line (Security: untrusted bytes).
 *
 * Output goes through logtape (npm:@logtape/logtape), to stderr and, when configured, to a file
 * opened in append mode and re-opened on SIGHUP/`reopen()` so that `logrotate`/cron can move it.
 *
 * Batching (issue 9: one synchronous write per destination per event-loop turn was ~10 write
 * syscalls and ~0.3 ms of main-thread time per message under load): lines wait in memory and are
 * written together, one write per destination, at most `LOG_FLUSH_MS` after the first of them,
 * at once when `LOG_FLUSH_CHARS` are pending, at the end of the turn that logs an error, and
 * before `reopen()`, `close()`, a rotation and process exit (`unload`, uncaught errors). So a
 * clean stop, SIGHUP or rotation loses nothing; a process killed outright (SIGKILL) loses at
 * most the last `LOG_FLUSH_MS` of lines. A reader of the file (tests) must poll for a line, not
 * read once right after the event.
 */
import { configure, getLogger, type LogRecord, reset, type Sink } from "@logtape/logtape";

/** Field values a log event may carry. */
export type LogValue = string | number | boolean | undefined | null | readonly string[];
/** Key/value fields of one event. */
export type LogFields = Record<string, LogValue>;
/** Severity of an event. */
export type LogLevel = "debug" | "info" | "warning" | "error";

/** Anything that can record events; the SMTP, policy and divert stages take one of these. */
export interface EventLog {
  /** Record event `name` with `fields` at `level` (default info). */
  event(name: string, fields?: LogFields, level?: LogLevel): void;
}

// deno-lint-ignore no-control-regex
const NEEDS_QUOTE = /[\s"=\\\x00-\x1f\x7f]/;

/** Formats one value for a key=value line; never emits a raw newline. */
export function formatValue(v: LogValue): string {
  if (v === undefined || v === null) return "-";
  if (Array.isArray(v)) return formatValue(v.join(","));
  const s = String(v);
  if (s === "") return '""';
  if (!NEEDS_QUOTE.test(s)) return s;
  // deno-lint-ignore no-control-regex
  return '"' + s.replace(/[\\"\x00-\x1f\x7f]/g, (c) => {
    if (c === "\\") return "\\\\";
    if (c === '"') return '\\"';
    if (c === "\n") return "\\n";
    if (c === "\r") return "\\r";
    if (c === "\t") return "\\t";
    return "\\x" + c.charCodeAt(0).toString(16).padStart(2, "0");
  }) + '"';
}

/** Formats an event as one line (without the trailing newline). */
export function formatEvent(
  name: string,
  fields: LogFields = {},
  level: LogLevel = "info",
): string {
  const parts = [new Date().toISOString(), level.toUpperCase(), name];
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined) continue;
    parts.push(`${k}=${formatValue(v)}`);
  }
  return parts.join(" ");
}

/** An EventLog that keeps events in memory; for tests. */
export class MemoryLog implements EventLog {
  /** Every event recorded so far, oldest first. */
  readonly events: { name: string; fields: LogFields; level: LogLevel }[] = [];
  event(name: string, fields: LogFields = {}, level: LogLevel = "info"): void {
    this.events.push({ name, fields, level });
  }
  /** The events named `name`. */
  named(name: string): { name: string; fields: LogFields; level: LogLevel }[] {
    return this.events.filter((e) => e.name === name);
  }
}

const encoder = new TextEncoder();

/** Sink that appends lines to a file and can re-open it after rotation. */
class ReopeningFileSink {
  #path: string;
  #file: Deno.FsFile | undefined;
  #timer: ReturnType<typeof setInterval>;
  /** Called before the file is re-opened by the rotation check (AppLog: flush pending lines). */
  beforeReopen: () => void = () => {};
  constructor(path: string) {
    this.#path = path;
    this.reopen();
    // A rotated file (moved away, or deleted) is noticed within ROTATE_CHECK_MS and a new one
    // started at the configured path, so a plain `mv` from cron is enough — no signal, no pid
    // file. (SIGUSR1 re-opens at once.) The timer does not keep the process alive.
    this.#timer = setInterval(() => this.#reopenIfMoved(), ROTATE_CHECK_MS);
    Deno.unrefTimer(this.#timer as unknown as number);
  }
  #reopenIfMoved(): void {
    if (!this.#file) return;
    try {
      const onDisk = Deno.statSync(this.#path);
      const open = this.#file.statSync();
      if (onDisk.ino === open.ino && onDisk.dev === open.dev) return;
    } catch {
      // The path is gone: start a new file.
    }
    try {
      this.beforeReopen(); // lines logged before the move belong to the old file
      this.reopen();
    } catch { /* directory gone or unwritable: keep writing to the old file */ }
  }
  reopen(): void {
    try {
      this.#file?.close();
    } catch { /* already closed */ }
    this.#file = Deno.openSync(this.#path, {
      append: true,
      create: true,
      write: true,
      mode: 0o640,
    });
  }
  /** Appends `text` (whole lines, each ending in a newline). */
  write(text: string): void {
    if (this.#file) writeAllSync(this.#file, encoder.encode(text));
  }
  close(): void {
    clearInterval(this.#timer);
    try {
      this.#file?.close();
    } catch { /* already closed */ }
    this.#file = undefined;
  }
}

/** How often the log file's path is checked for rotation. */
const ROTATE_CHECK_MS = 2000;
/** Longest time a line waits in memory before it is written, in ms. */
export const LOG_FLUSH_MS = 5;
/** Pending characters past which lines are written at once. */
export const LOG_FLUSH_CHARS = 32 * 1024;

/** Writes all of `bytes` to a synchronous writer (a file, stdout, stderr). */
export function writeAllSync(w: { writeSync(p: Uint8Array): number }, bytes: Uint8Array): void {
  let off = 0;
  while (off < bytes.length) off += w.writeSync(bytes.subarray(off));
}

const LEVEL_RANK: Record<LogLevel, number> = { debug: 0, info: 1, warning: 2, error: 3 };

/** Options of the process-wide log. */
export interface LogOptions {
  /** Append events to this file as well as stderr. */
  file?: string;
  /** Lowest level written (default info). */
  level?: LogLevel;
  /** Also write to stderr (default true). */
  stderr?: boolean;
}

/** The process-wide event log, backed by logtape. */
export class AppLog implements EventLog {
  #file: ReopeningFileSink | undefined;
  #min: number;
  #logger = getLogger(["ssg"]);
  #flushPending: () => void = () => {};
  private constructor(opts: LogOptions) {
    this.#min = LEVEL_RANK[opts.level ?? "info"];
    if (opts.file) this.#file = new ReopeningFileSink(opts.file);
  }

  /** Configures logtape and returns the log. Call once per process. */
  static async open(opts: LogOptions = {}): Promise<AppLog> {
    const log = new AppLog(opts);
    const stderr = opts.stderr ?? true;
    // Lines are written in batches (see the module header): the writes are synchronous, and
    // one per event-loop turn per destination cost ~0.3 ms of main-thread time per message
    // under load (measured, --cpu-prof).
    let pending: string[] = [];
    let pendingChars = 0;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let soon = false;
    const flush = () => {
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      soon = false;
      if (pending.length === 0) return;
      const text = pending.join("\n") + "\n";
      pending = [];
      pendingChars = 0;
      if (stderr) {
        try {
          writeAllSync(Deno.stderr, encoder.encode(text));
        } catch { /* stderr closed: keep the file log */ }
      }
      try {
        log.#file?.write(text);
      } catch { /* disk full or file gone: stderr still has the lines */ }
    };
    log.#flushPending = flush;
    if (log.#file) log.#file.beforeReopen = flush;
    const sink: Sink = (record: LogRecord) => {
      const line = String(record.message[0]);
      pending.push(line);
      pendingChars += line.length + 1;
      if (pendingChars >= LOG_FLUSH_CHARS) {
        flush();
      } else if (record.level === "error" || record.level === "fatal") {
        // An error may precede the end of the process: out at the end of this turn.
        if (!soon) queueMicrotask(flush);
        soon = true;
      } else if (timer === undefined) {
        timer = setTimeout(flush, LOG_FLUSH_MS);
        Deno.unrefTimer(timer as unknown as number);
      }
    };
    // Exit paths that skip close(): Deno.exit(), the end of the program, an uncaught error.
    addEventListener("unload", flush);
    addEventListener("error", flush);
    addEventListener("unhandledrejection", flush);
    await configure({
      reset: true,
      sinks: { ssg: sink },
      loggers: [
        { category: ["ssg"], sinks: ["ssg"], lowestLevel: "debug" },
        { category: ["logtape", "meta"], sinks: [], lowestLevel: "error" },
      ],
    });
    return log;
  }

  /** Changes the lowest level written (SIGHUP applies `log.level`). */
  setLevel(level: LogLevel): void {
    this.#min = LEVEL_RANK[level];
  }

  event(name: string, fields: LogFields = {}, level: LogLevel = "info"): void {
    if (LEVEL_RANK[level] < this.#min) return;
    const line = formatEvent(name, fields, level);
    // The line is pre-formatted; logtape carries it as the single message part.
    const msg = [line] as unknown as TemplateStringsArray;
    if (level === "debug") this.#logger.debug(msg);
    else if (level === "info") this.#logger.info(msg);
    else if (level === "warning") this.#logger.warn(msg);
    else this.#logger.error(msg);
  }

  /** Re-opens the log file (after `mv` by logrotate or a cron job). */
  reopen(): void {
    this.#flushPending();
    this.#file?.reopen();
  }

  /** Flushes and closes; safe to call twice. */
  async close(): Promise<void> {
    this.#flushPending();
    removeEventListener("unload", this.#flushPending);
    removeEventListener("error", this.#flushPending);
    removeEventListener("unhandledrejection", this.#flushPending);
    this.#file?.close();
    this.#file = undefined;
    await reset();
  }
}
