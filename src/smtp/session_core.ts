/**
 * The state one session shares between its phases (greeting/hello, envelope, content, outcome,
 * TLS), and the one way replies reach the client.
 *
 * Trusts: nothing from the client; this module holds what the phases decided, it decides nothing.
 * Limits: replies are buffered (RFC 2920 pipelining) and written by `flush()` within the command
 * timeout; client-caused errors are counted and past `smtp.maxErrors` the session ends with
 * 421 4.7.0. The phases change the state only through these fields and methods, so the whole
 * session state is listed in one place.
 */
import { raceDeadline, secondsToMs } from "./deadline.ts";
import type { DataReader } from "./data_reader.ts";
import type { EarlyChecks } from "../policy/verdict.ts";
import { LineReader } from "./line_reader.ts";
import { formatReply, isEnhancedCode, reply, sanitizeText, type SmtpReply } from "./reply.ts";
import type { ServerProfile } from "./server_profiles.ts";
import { type SessionContext, type SessionEnd, SHED } from "./session_context.ts";
import { type SessionIo, setNoDelay } from "./session_io.ts";

/** One mail transaction: MAIL to the end of the message (RFC 5321 §3.3). */
export interface Transaction {
  /** Transaction id: `<session>.<n>`. */
  id: string;
  /** Reverse-path without angle brackets ("" for `<>`). */
  mailFrom: string;
  /** SIZE= (RFC 1870), if given. */
  size?: number;
  /** BODY= (RFC 6152), if given. */
  body?: string;
  /** SMTPUTF8 was declared on MAIL (RFC 6531). */
  smtputf8?: boolean;
  /** RET= and ENVID= (RFC 3461), as received. */
  ret?: string;
  /** ENVID= xtext as received. */
  envid?: string;
  /** Recipients the server accepted. */
  rcpts: string[];
  /** RCPTs refused in this transaction because `maxRecipients` was reached. */
  refusedRcpts?: number;
  /** When MAIL was accepted (performance.now()). */
  started: number;
  /** The message so far, while it arrives in BDAT chunks (RFC 3030); undefined otherwise. */
  bdat?: { reader: DataReader; started: number };
  /** The message came in BDAT chunks (the relay then uses BDAT when the server offers it). */
  chunked?: boolean;
  /** What the policy started at MAIL FROM (`SessionContext.startChecks`). */
  early?: EarlyChecks;
}

const encoder = new TextEncoder();

/** Counters reported in the session summary. */
export interface SessionCounts {
  /** MAIL accepted by the server. */
  transactions: number;
  /** Messages the server accepted. */
  forwarded: number;
  /** Messages discarded or quarantined on purpose. */
  discarded: number;
  /** Messages refused. */
  rejected: number;
  /** Messages answered 4xx. */
  failed: number;
  /** Command lines received. */
  commands: number;
}

/** The shared state of one session and its reply output. */
export class SessionCore {
  /** The client connection (replaced by the TLS stream after STARTTLS). */
  io: SessionIo;
  /** What main gave the session. */
  readonly ctx: SessionContext;
  /** Bounded reader of the client's bytes. */
  reader: LineReader;
  /** Writer towards the client. */
  writer: WritableStreamDefaultWriter<Uint8Array>;
  /** Why the session ended; undefined while it runs. */
  end: SessionEnd | undefined;
  /** When the session started (performance.now()). */
  readonly started: number = performance.now();
  /** The whole-session deadline (performance.now() scale). */
  readonly deadline: number;
  /** The HELO/EHLO argument; undefined before a greeting (and again after STARTTLS). */
  helo: string | undefined;
  /** ESMTP after EHLO, SMTP after HELO. */
  protocol: "ESMTP" | "SMTP" = "ESMTP";
  /** Whether STARTTLS completed: the rest of the session is encrypted. */
  tls = false;
  /** Bytes the plaintext reader had received before STARTTLS replaced it. */
  bytesBeforeTls = 0;
  #tx: Transaction | undefined;
  /**
   * After a failed non-final BDAT chunk: further chunks are read and discarded (551) until
   * BDAT LAST, RSET or EHLO/HELO, to stay in step with a pipelining client (as Postfix).
   */
  bdatSkipping = false;
  /** Counters for the summary. */
  readonly counts: SessionCounts = {
    transactions: 0,
    forwarded: 0,
    discarded: 0,
    rejected: 0,
    failed: 0,
    commands: 0,
  };
  /** Client-caused error replies. */
  errors = 0;
  /** RCPTs refused past `maxRecipients` in this session (logged once per transaction, counted). */
  refusedRcpts = 0;
  /**
   * The host name the client sees in our own replies (greeting, EHLO, 221, 421): the protected
   * server's when it was learnt and `smtp.bannerHostname` is "server", else `gateway.hostname`.
   */
  name: string;
  /** What SSG knows of the protected server (greeting, EHLO name and keywords), if anything. */
  profile: ServerProfile | undefined;
  /** The EHLO keywords the client was offered in this session (upper case; empty after HELO). */
  offered: ReadonlySet<string> = new Set();
  /** The user the server authenticated (AUTH relayed, RFC 4954); undefined before. Only the
   * name is kept, never a credential. */
  authenticated: string | undefined;
  /** Whether replies carry enhanced status codes (RFC 2034): off when the mirrored server's EHLO
   * lacks ENHANCEDSTATUSCODES, so the client sees the same reply format as direct. */
  enhancedCodes = true;
  #out: string[] = [];
  #outBytes = 0;
  #txCounter = 0;

  /** Wraps the client connection. */
  constructor(io: SessionIo, ctx: SessionContext) {
    this.io = io;
    this.ctx = ctx;
    setNoDelay(io);
    this.reader = new LineReader(io.readable);
    this.writer = io.writable.getWriter();
    this.writer.closed.catch(() => {});
    this.deadline = this.started + secondsToMs(ctx.smtp.timeouts.session);
    this.name = sanitizeText(ctx.hostname);
  }

  /** The open transaction, if any. */
  get tx(): Transaction | undefined {
    return this.#tx;
  }

  /** Replaces the transaction; a BDAT message still being received is given back to the
   * memory budget, whichever way the transaction ended (RSET, EHLO, TLS, lost server, close). */
  set tx(t: Transaction | undefined) {
    const old = this.#tx;
    if (old && old !== t && old.bdat) {
      old.bdat.reader.dispose();
      old.bdat = undefined;
    }
    this.#tx = t;
  }

  /** Bytes of replies buffered and not yet written. */
  get pendingReplyBytes(): number {
    return this.#outBytes;
  }

  /** Buffers a reply; `flush()` writes it. */
  send(r: SmtpReply): void {
    // The server's own enhanced code is part of its text and passes as it came; only codes SSG
    // adds are dropped when the mirrored server has no ENHANCEDSTATUSCODES.
    const keep = this.enhancedCodes || r.serverEnhanced === true;
    const text = formatReply(keep ? r : { ...r, enhanced: undefined });
    this.#out.push(text);
    this.#outBytes += text.length;
  }

  /** Sends a client-caused error reply, counts it, and closes past `maxErrors`. */
  fail(r: SmtpReply, reason: string): void {
    const ctx = this.ctx;
    this.send(r);
    this.errors++;
    ctx.log.event("smtp.reject", { session: ctx.id, code: r.code, reason });
    if (this.errors > ctx.smtp.maxErrors && this.end === undefined) {
      ctx.log.event(
        "smtp.limit",
        { session: ctx.id, limit: "errors", max: ctx.smtp.maxErrors },
        "warning",
      );
      this.send(reply(421, "4.7.0", `${this.name} Error: too many errors`));
      this.end = "errors";
    }
  }

  /** Writes buffered replies; false (and the session ends) when the client is gone. */
  async flush(): Promise<boolean> {
    if (this.#out.length === 0) return true;
    // The session's last replies: the client's admission slot is given back before the client
    // can read them and connect again (else a client at `max_sessions_per_client` that
    // reconnects at once could find its old session still counted).
    if (this.end !== undefined) this.ctx.clientDone?.();
    const bytes = encoder.encode(this.#out.join(""));
    this.#out = [];
    this.#outBytes = 0;
    const w = this.writer.write(bytes).then(() => true, () => false);
    const r = await raceDeadline(w, secondsToMs(this.ctx.smtp.timeouts.command));
    if (r.ok && r.value) return true;
    this.end ??= "write-failed";
    return false;
  }

  /** A timeout fired: 421 4.4.2 and the session ends. */
  timeout(phase: "command" | "data" | "data-rate" | "session"): void {
    const ctx = this.ctx;
    ctx.log.event("smtp.timeout", { session: ctx.id, phase }, "warning");
    this.send(reply(421, "4.4.2", `${this.name} Error: timeout exceeded`));
    this.end = phase === "session" ? "deadline" : "timeout";
  }

  /** Shutdown was asked for: 421 4.3.2 and the session ends. */
  shutdownNow(): void {
    const ctx = this.ctx;
    if (ctx.shutdown.reason === SHED) {
      // Ended to make room for another client while the gateway is full (see admission.ts).
      this.send(reply(421, "4.7.0", `${this.name} Error: too busy, closing idle session`));
      this.end = "shed";
      return;
    }
    ctx.log.event("smtp.shutdown", { session: ctx.id });
    this.send(reply(421, "4.3.2", `${this.name} Service shutting down, try again later`));
    this.end = "shutdown";
  }

  /** The next transaction id. */
  newTxId(): string {
    this.#txCounter++;
    return `${this.ctx.id}.${this.#txCounter}`;
  }
}

/** A server reply made fit for the client: an enhanced code (the server's, or `fallback` of its
 * class) and sanitised text. */
export function relayedReply(r: SmtpReply, fallback: string): SmtpReply {
  const cls = String(r.code)[0];
  const own = r.enhanced !== undefined && isEnhancedCode(r.enhanced);
  const enhanced = own ? r.enhanced : fallback[0] === cls ? fallback : `${cls}.0.0`;
  return { code: r.code, enhanced, lines: r.lines.map(sanitizeText), serverEnhanced: own };
}
