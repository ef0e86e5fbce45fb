/**
 * One SMTP session: the responder that answers the client as if it were the protected server,
 * and the before-queue relay that makes every answer about the mail the server's own.
 *
 * Trusts: nothing from the client. Every byte goes through the bounded `LineReader`, the
 * `DataReader` (smuggling defences) and `command.ts` (syntax, control characters, limits).
 * Limits (all from `SmtpConfig`), each answered, counted and logged (`smtp.limit`):
 * command line `maxCommandLine` (500 5.5.2, RFC 5321 §4.5.3.1.4), text line `maxTextLine`
 * (552 5.6.0 after the real end of data, §4.5.3.1.6 — chosen over wrapping long lines, which would
 * change signed content, and over 500, which RFC 5321 §4.3.2 does not list for end of data),
 * recipients `maxRecipients` (452 4.5.3 for each extra RCPT, §4.5.3.1.10), SIZE= and actual size
 * `maxMessageBytes` (552 5.3.4, RFC 1870), errors `maxErrors` (421 4.7.0 and close once
 * exceeded), transactions `maxTransactions` (421 4.7.0 and close), command wait and data block
 * timeouts (§4.5.3.2.7, §4.5.3.2.5) and a whole-session deadline (421 4.4.2 and close).
 *
 * Promises kept (MISSION.md, reliability-anchors §1.7 model A): the client never hears 250 to
 * end-of-data unless the server said 250 to our copy, or a rule discarded the message on purpose.
 * Any failure on the way (server unreachable, judge failure, server timeout) is a 4xx, so the
 * sender keeps the message (RFC 5321 §4.5.4.1). After every end-of-data outcome the transaction
 * (MAIL, RCPTs) is cleared (§4.1.1.4; the Postfix 20260803 bug: RCPT+DATA without a new MAIL
 * must get 503).
 *
 * Pipelining (RFC 2920): commands are processed strictly in order; replies to MAIL/RCPT/RSET wait
 * in a buffer that is written when no more input is pending, before any wait for input, and after
 * each command that must end a group (see `command_table.ts`). With `smtp.pipelining` off, input
 * pending after a command line is a synchronisation error (554 5.5.0 and close, as Postfix's
 * smtpd_forbid_unauth_pipelining). A client that talks before the greeting gets 554 and is closed
 * (postscreen's pregreet test). Enhanced status codes (RFC 2034) on every reply except the
 * greeting and the EHLO/HELO replies, which RFC 2034 §3 exempts.
 *
 * `smtp.bareLineEndings` also governs command lines: under "reject" a command ended by a bare LF
 * is answered 500 5.5.2 and not executed (RFC 5321 §2.3.8); under "normalize" it is accepted as if
 * it ended in CRLF. A bare CR inside a command line is a control character: 500 5.5.2.
 *
 * Slow senders: the command wait is a per-line deadline (not per byte); DATA has the per-block
 * timeout and, when `SessionContext.minDataRate` is set, a Postfix-style request deadline that
 * grows with the bytes received; the session deadline bounds everything the client controls
 * (waits on the server are bounded by the relay timeouts instead).
 *
 * STARTTLS (RFC 3207) is offered only when `smtp.tls` gives a certificate, and only before TLS
 * is active (otherwise 502 5.5.1, as Postfix without TLS). It is accepted before EHLO too: RFC
 * 3207 §4 sets no precondition, and Postfix (smtpd, postscreen's psc_starttls_cmd) checks none.
 * Security (CVE-2011-0411): plaintext bytes already received after the STARTTLS line are
 * discarded with the line reader, never executed after the handshake. After TLS everything the
 * client said before is forgotten (RFC 3207 §4.2): it must EHLO again, no transaction survives.
 * The handshake is bounded by the command timeout (Postfix's smtpd_starttls_timeout defaults to
 * the same 300 s) and the session deadline; a failed handshake is logged and closes the session.
 *
 * Not done yet: CHUNKING/BDAT, SMTPUTF8, DSN (all answered 502/555 and never advertised), and
 * spooling to disk (a message is held in memory, bounded by `maxMessageBytes` per session).
 */
import type { RelayConfig, SmtpConfig } from "../config/config.ts";
import type { EventLog } from "../log/log.ts";
import type { Delivery, Envelope, Judge, Reply, Verdict } from "../policy/verdict.ts";
import { parseCommandLine, parseHeloArg, parseMailArg, parseRcptArg } from "./command.ts";
import { COMMAND_TABLE, type CommandHandlers } from "./command_table.ts";
import { DataReader } from "./data_reader.ts";
import type { MemoryBudget } from "./memory_budget.ts";
import { defectReply, ruleReply } from "./end_of_data_reply.ts";
import { raceDeadline, secondsToMs } from "./deadline.ts";
import { LineReader } from "./line_reader.ts";
import { receivedHeader } from "./received_header.ts";
import { RelayClient, RelayError } from "./relay_client.ts";
import {
  formatReply,
  isEnhancedCode,
  reply,
  replySummary,
  sanitizeText,
  type SmtpReply,
} from "./reply.ts";
import { closeQuietly, type SessionIo, setNoDelay } from "./session_io.ts";
import { startServerTls } from "./start_tls.ts";

export type { SessionIo } from "./session_io.ts";

/**
 * What carries out a verdict beyond reject/discard/forward (quarantine, tag, bcc/redirect, alerts,
 * blacklists). Declared here, implemented by `src/action/` (`GatewayActions`), so that the SMTP
 * stage does not import the stages after it.
 */
export interface VerdictActions {
  /** The bytes to forward/quarantine/deliver: tag applied, forged `X-SSG-*` fields removed. */
  transform(message: Uint8Array, verdict: Verdict): Uint8Array;
  /** Stores in quarantine; resolves only once the message is fsync'd, rejects on any failure. */
  quarantine(message: Uint8Array, envelope: Envelope, verdict: Verdict): Promise<string>;
  /** The 4xx to give when `quarantine()` rejected (e.g. 452 4.3.1 when the store is full). */
  failureReply(error: unknown): Reply;
  /** Delivers a bcc copy or a redirected message; the target's final reply. */
  deliver(
    delivery: Delivery,
    message: Uint8Array,
    envelope: Envelope,
  ): Promise<{ code: number; text: string }>;
  /** After the client got its answer (alerts, blacklists, counters). Never throws. */
  after(verdict: Verdict, envelope: Envelope, outcome: { code: number }, message: Uint8Array): void;
}

/** Everything a session needs from main. */
export interface SessionContext {
  /** Session id for logs. */
  id: string;
  /** The connecting client. */
  client: { ip: string; port: number };
  /** The original destination (the protected server). */
  server: { ip: string; port: number };
  /** gateway.hostname, used in the greeting and the Received header. */
  hostname: string;
  /** Responder bounds and timeouts. */
  smtp: SmtpConfig;
  /** Relay timeouts. */
  relay: RelayConfig;
  /** The policy. */
  judge: Judge;
  /** Where events go. */
  log: EventLog;
  /** Opens a connection to the server (main passes Deno.connect; tests pass fakes). */
  connectUpstream: (server: { ip: string; port: number }, timeoutMs: number) => Promise<SessionIo>;
  /** On abort: reply 421 4.3.2 at the next opportunity and close (SIGTERM). */
  shutdown: AbortSignal;
  /** Longest wait for the judge, in ms (default `DEFAULT_JUDGE_TIMEOUT_MS`); past it, 451 4.3.0. */
  judgeTimeoutMs?: number;
  /** How long to listen for an early talker before the greeting, in ms (default 0: only input
   * already received when the session starts is caught). */
  pregreetMs?: number;
  /**
   * Minimum DATA rate in bytes per second (Postfix's smtpd_min_data_rate; default: none). When
   * set, receiving a message has a deadline that starts at the data-block timeout and grows by
   * N / minDataRate seconds for every N bytes received, so a sender that trickles bytes just
   * inside the per-block timeout is still cut off (421 4.4.2). Unset: each block has the plain
   * data-block timeout and the session deadline bounds the rest.
   */
  minDataRate?: number;
  /** The clock for the Received header's date (default: the system clock; tests pin it). */
  clock?: () => Date;
  /** The shared bound on message bytes held by all sessions (`smtp.max_inflight_bytes`). */
  memory?: MemoryBudget;
  /** Carries out quarantine/tag/bcc/redirect/alert/blacklist verdicts. Without it a verdict that
   * needs one of those is answered 451 4.3.0 (nothing is lost; the client retries). */
  actions?: VerdictActions;
}

/** Why a session ended. */
export type SessionEnd =
  | "quit"
  | "client-closed"
  | "timeout"
  | "deadline"
  | "shutdown"
  | "errors"
  | "early-talker"
  | "sync-error"
  | "limit"
  | "forbidden"
  | "flood"
  | "write-failed"
  | "relay-lost"
  | "tls-failed"
  | "internal-error";

/** Counts for main after a session ends. */
export interface SessionSummary {
  /** The session id. */
  id: string;
  /** Why the session ended. */
  end: SessionEnd;
  /** Transactions started (MAIL accepted by the server). */
  transactions: number;
  /** Messages the server accepted (250) after the judge said forward. */
  forwarded: number;
  /** Messages a rule discarded (250 to the client, nothing sent on). */
  discarded: number;
  /** Messages refused: by a rule, by our content checks, or by the server at end of data. */
  rejected: number;
  /** Messages answered with 4xx because something failed (judge, relay). */
  failed: number;
  /** Commands received. */
  commands: number;
  /** Client-caused error replies. */
  errors: number;
  /** Bytes received from the client. */
  bytesIn: number;
  /** Session length in ms. */
  durationMs: number;
}

const VERDICT_ACTIONS: ReadonlySet<string> = new Set([
  "forward",
  "discard",
  "reject",
  "tempfail",
  "quarantine",
]);

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/** Default longest wait for the judge (2 minutes: well inside the client's 10-minute wait for
 * the end-of-data reply, RFC 5321 §4.5.3.2.6, leaving room for the server's own reply). */
export const DEFAULT_JUDGE_TIMEOUT_MS = 120_000;

/** Bytes of replies held back while pipelined input is pending before they are written anyway. */
export const MAX_PENDING_REPLIES = 16 * 1024;

const encoder = new TextEncoder();

/**
 * Serves one client connection until QUIT, a limit, a timeout, shutdown or the client's close.
 * Never rejects for peer misbehaviour (internal faults are logged and end with 421).
 */
export async function serveSession(io: SessionIo, ctx: SessionContext): Promise<SessionSummary> {
  const session = new Session(io, ctx);
  return await session.run();
}

interface Transaction {
  id: string;
  mailFrom: string;
  size?: number;
  body?: string;
  rcpts: string[];
  started: number;
}

/** What happened to one message, for the `message` log line. */
interface Outcome {
  tx: Transaction;
  size: number;
  receiveMs: number;
  judgeMs: number;
  relayMs: number;
  verdict: string;
  rule?: string;
  evidence?: string;
  reply?: SmtpReply;
}

class Session implements CommandHandlers {
  #io: SessionIo;
  #ctx: SessionContext;
  #reader: LineReader;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #out: string[] = [];
  #outBytes = 0;
  #end: SessionEnd | undefined;
  #started = performance.now();
  #deadline: number;
  #helo: string | undefined;
  #protocol: "ESMTP" | "SMTP" = "ESMTP";
  /** Whether STARTTLS completed: the rest of the session is encrypted. */
  #tls = false;
  /** Bytes the plaintext reader had received before STARTTLS replaced it. */
  #bytesBeforeTls = 0;
  #tx: Transaction | undefined;
  #relay: RelayClient | undefined;
  /** Whether the server holds a MAIL of ours that needs an RSET. */
  #relayTx = false;
  #txCounter = 0;
  #counts = { transactions: 0, forwarded: 0, discarded: 0, rejected: 0, failed: 0, commands: 0 };
  #errors = 0;

  constructor(io: SessionIo, ctx: SessionContext) {
    this.#io = io;
    this.#ctx = ctx;
    setNoDelay(io);
    this.#reader = new LineReader(io.readable);
    this.#writer = io.writable.getWriter();
    this.#writer.closed.catch(() => {});
    this.#deadline = this.#started + secondsToMs(ctx.smtp.timeouts.session);
  }

  async run(): Promise<SessionSummary> {
    const ctx = this.#ctx;
    ctx.log.event("smtp.connect", {
      session: ctx.id,
      client: `${ctx.client.ip}:${ctx.client.port}`,
      server: `${ctx.server.ip}:${ctx.server.port}`,
    });
    try {
      await this.#greet();
      while (this.#end === undefined) await this.#step();
    } catch (e) {
      ctx.log.event("smtp.error", { session: ctx.id, error: String(e) }, "error");
      this.#send(reply(421, "4.3.0", `${ctx.hostname} Error: internal error, try again later`));
      this.#end = "internal-error";
    }
    await this.#flush();
    closeQuietly(this.#io);
    this.#reader.cancel();
    await this.#relay?.quit();
    const summary: SessionSummary = {
      id: ctx.id,
      end: this.#end ?? "internal-error",
      ...this.#counts,
      errors: this.#errors,
      bytesIn: this.#bytesBeforeTls + this.#reader.bytesRead,
      durationMs: Math.round(performance.now() - this.#started),
    };
    ctx.log.event("smtp.close", {
      session: ctx.id,
      reason: summary.end,
      duration_ms: summary.durationMs,
      transactions: summary.transactions,
      errors: summary.errors,
    });
    return summary;
  }

  // ---- the loop -------------------------------------------------------------------------------

  async #greet(): Promise<void> {
    const ctx = this.#ctx;
    if (ctx.shutdown.aborted) return this.#shutdownNow();
    const early = await this.#reader.waitForData(ctx.pregreetMs ?? 0, ctx.shutdown);
    if (early === "aborted") return this.#shutdownNow();
    if (early === "eof") {
      this.#end = "client-closed";
      return;
    }
    if (early === "data") {
      ctx.log.event("smtp.reject", { session: ctx.id, reason: "early-talker", code: 554 });
      this.#send(reply(554, "5.5.0", `${ctx.hostname} Error: talked before the greeting`));
      this.#end = "early-talker";
      return;
    }
    this.#send({ code: 220, lines: [`${sanitizeText(ctx.hostname)} ESMTP`] });
    await this.#flush();
  }

  async #step(): Promise<void> {
    const ctx = this.#ctx;
    const smtp = ctx.smtp;
    if (ctx.shutdown.aborted) return this.#shutdownNow();
    // RFC 2920 §3.1: flush when no input is pending (or when a long pipelined group has piled up
    // more than `MAX_PENDING_REPLIES` bytes of replies, so the buffer stays bounded).
    const pending = this.#reader.buffered > 0 && this.#outBytes <= MAX_PENDING_REPLIES;
    if (!pending && !(await this.#flush())) return;
    const left = this.#deadline - performance.now();
    if (left <= 0) return this.#timeout("session");
    const commandMs = secondsToMs(smtp.timeouts.command);
    const r = await this.#reader.readLine(
      smtp.maxCommandLine,
      Math.min(commandMs, left),
      ctx.shutdown,
    );
    switch (r.kind) {
      case "aborted":
        return this.#shutdownNow();
      case "timeout":
        return this.#timeout(commandMs < left ? "command" : "session");
      case "eof":
        this.#end = "client-closed";
        return;
      case "flood":
        ctx.log.event("smtp.limit", { session: ctx.id, limit: "line-flood" }, "warning");
        this.#send(reply(421, "4.7.0", `${ctx.hostname} Error: line too long, closing`));
        this.#end = "flood";
        return;
      case "too-long":
        ctx.log.event("smtp.limit", {
          session: ctx.id,
          limit: "command-line",
          max: smtp.maxCommandLine,
        });
        this.#fail(reply(500, "5.5.2", "Line too long"), "command-line-too-long");
        await this.#flush();
        return;
      case "line":
        break;
    }
    this.#counts.commands++;
    if (r.bareLf && smtp.bareLineEndings === "reject") {
      this.#fail(reply(500, "5.5.2", "Syntax error: bare LF received"), "bare-lf-command");
      await this.#flush();
      return;
    }
    if (!smtp.pipelining && this.#reader.buffered > 0) {
      ctx.log.event("smtp.reject", { session: ctx.id, reason: "sync-error", code: 554 });
      this.#send(reply(554, "5.5.0", "Error: SMTP protocol synchronization"));
      this.#end = "sync-error";
      return;
    }
    const parsed = parseCommandLine(r.line);
    if (!parsed.ok) {
      this.#fail(parsed.reply, parsed.reason);
      await this.#flush();
      return;
    }
    const { verb, arg } = parsed.value;
    ctx.log.event("smtp.command", { session: ctx.id, verb, arg: arg.slice(0, 100) }, "debug");
    const entry = COMMAND_TABLE.get(verb);
    if (!entry) {
      this.#fail(reply(500, "5.5.1", "Error: command not recognized"), "unknown-command");
      await this.#flush();
      return;
    }
    await entry.run(this, arg, verb);
    if (entry.flush) await this.#flush();
  }

  // ---- replies --------------------------------------------------------------------------------

  #send(r: SmtpReply): void {
    const text = formatReply(r);
    this.#out.push(text);
    this.#outBytes += text.length;
  }

  /** Sends a client-caused error reply, counts it, and closes past `maxErrors`. */
  #fail(r: SmtpReply, reason: string): void {
    const ctx = this.#ctx;
    this.#send(r);
    this.#errors++;
    ctx.log.event("smtp.reject", { session: ctx.id, code: r.code, reason });
    if (this.#errors > ctx.smtp.maxErrors && this.#end === undefined) {
      ctx.log.event(
        "smtp.limit",
        { session: ctx.id, limit: "errors", max: ctx.smtp.maxErrors },
        "warning",
      );
      this.#send(reply(421, "4.7.0", `${ctx.hostname} Error: too many errors`));
      this.#end = "errors";
    }
  }

  /** Writes buffered replies; false (and the session ends) when the client is gone. */
  async #flush(): Promise<boolean> {
    if (this.#out.length === 0) return true;
    const bytes = encoder.encode(this.#out.join(""));
    this.#out = [];
    this.#outBytes = 0;
    const w = this.#writer.write(bytes).then(() => true, () => false);
    const r = await raceDeadline(w, secondsToMs(this.#ctx.smtp.timeouts.command));
    if (r.ok && r.value) return true;
    this.#end ??= "write-failed";
    return false;
  }

  #timeout(phase: "command" | "data" | "data-rate" | "session"): void {
    const ctx = this.#ctx;
    ctx.log.event("smtp.timeout", { session: ctx.id, phase }, "warning");
    this.#send(reply(421, "4.4.2", `${ctx.hostname} Error: timeout exceeded`));
    this.#end = phase === "session" ? "deadline" : "timeout";
  }

  #shutdownNow(): void {
    const ctx = this.#ctx;
    ctx.log.event("smtp.shutdown", { session: ctx.id });
    this.#send(reply(421, "4.3.2", `${ctx.hostname} Service shutting down, try again later`));
    this.#end = "shutdown";
  }

  /** Relays a server reply with an enhanced code (the server's, or `fallback` of its class). */
  #relayed(r: SmtpReply, fallback: string): SmtpReply {
    const cls = String(r.code)[0];
    const enhanced = r.enhanced && isEnhancedCode(r.enhanced)
      ? r.enhanced
      : fallback[0] === cls
      ? fallback
      : `${cls}.0.0`;
    return { code: r.code, enhanced, lines: r.lines.map(sanitizeText) };
  }

  // ---- relay ----------------------------------------------------------------------------------

  /** The relay client, connected on first use; undefined (and 451 sent) when unreachable. */
  async #upstream(): Promise<RelayClient | undefined> {
    if (this.#relay?.usable) return this.#relay;
    this.#relay = undefined;
    this.#relayTx = false;
    const ctx = this.#ctx;
    const t0 = performance.now();
    try {
      this.#relay = await RelayClient.open({
        server: ctx.server,
        hostname: ctx.hostname,
        connect: ctx.connectUpstream,
        config: ctx.relay,
        client: { ...ctx.client, helo: this.#helo, proto: this.#protocol },
      });
      ctx.log.event("relay.connect", {
        session: ctx.id,
        server: `${ctx.server.ip}:${ctx.server.port}`,
        ms: Math.round(performance.now() - t0),
        extensions: [...this.#relay.extensions.keys()],
        tls: this.#relay.tls ? `${this.#relay.tls.protocol} ${this.#relay.tls.cipher}` : "none",
        source: this.#relay.source, // relay.source: the address the server saw (relay_connector)
        announced: this.#relay.announced,
        announce_note: this.#relay.announceNote,
      });
      if (this.#relay.tlsFailure) {
        ctx.log.event("relay.tls_failed", {
          session: ctx.id,
          server: `${ctx.server.ip}:${ctx.server.port}`,
          reason: this.#relay.tlsFailure,
          fallback: "plaintext",
        }, "warning");
      }
      return this.#relay;
    } catch (e) {
      this.#relayError(e, "connect");
      this.#send(reply(451, "4.4.1", "Mail server temporarily unavailable, try again later"));
      return undefined;
    }
  }

  #relayError(e: unknown, during: string): void {
    const ctx = this.#ctx;
    ctx.log.event("relay.error", {
      session: ctx.id,
      server: `${ctx.server.ip}:${ctx.server.port}`,
      during,
      kind: e instanceof RelayError ? e.kind : "internal",
      error: e instanceof Error ? e.message : String(e),
      cause: e instanceof Error && e.cause ? String(e.cause) : undefined,
    }, "warning");
  }

  /** The server went away mid-session: 421 4.4.2 and close, the client retries. */
  #relayLost(e: unknown, during: string): void {
    this.#relayError(e, during);
    this.#relay?.close();
    this.#relay = undefined;
    this.#relayTx = false;
    this.#tx = undefined;
    this.#send(
      reply(
        421,
        "4.4.2",
        `${this.#ctx.hostname} Lost connection to the mail server, try again later`,
      ),
    );
    this.#end = "relay-lost";
  }

  /** Cancels the server-side transaction, if any; a failure only drops the connection. */
  async #resetUpstream(): Promise<void> {
    if (!this.#relayTx || !this.#relay) return;
    this.#relayTx = false;
    try {
      const r = await this.#relay.rset();
      if (r.code !== 250) throw new RelayError("protocol", `Server answered RSET with ${r.code}`);
    } catch (e) {
      this.#relayError(e, "rset");
      this.#relay.close();
      this.#relay = undefined;
    }
  }

  /** A server reply of 421 means it is closing: pass it on and end the session too. */
  #serverClosing(r: SmtpReply): boolean {
    if (r.code !== 421) return false;
    this.#relay?.close();
    this.#relay = undefined;
    this.#relayTx = false;
    this.#tx = undefined;
    this.#end = "relay-lost";
    return true;
  }

  // ---- commands (CommandHandlers) --------------------------------------------------------------

  async ehlo(arg: string): Promise<void> {
    await this.#hello(arg, "ESMTP");
  }

  async helo(arg: string): Promise<void> {
    await this.#hello(arg, "SMTP");
  }

  async #hello(arg: string, protocol: "ESMTP" | "SMTP"): Promise<void> {
    const parsed = parseHeloArg(arg);
    if (!parsed.ok) {
      const text = protocol === "ESMTP" ? "Syntax: EHLO hostname" : "Syntax: HELO hostname";
      return this.#fail({ code: 501, lines: [text] }, parsed.reason);
    }
    // RFC 5321 §4.1.4: EHLO/HELO resets the transaction like RSET.
    this.#tx = undefined;
    await this.#resetUpstream();
    this.#helo = parsed.value;
    this.#protocol = protocol;
    const host = sanitizeText(this.#ctx.hostname);
    if (protocol === "SMTP") return this.#send({ code: 250, lines: [host] });
    const smtp = this.#ctx.smtp;
    const lines = [host];
    if (smtp.pipelining) lines.push("PIPELINING");
    lines.push(`SIZE ${smtp.maxMessageBytes}`, "8BITMIME", "ENHANCEDSTATUSCODES");
    if (smtp.tls && !this.#tls) lines.push("STARTTLS");
    this.#send({ code: 250, lines });
  }

  async starttls(arg: string): Promise<void> {
    const ctx = this.#ctx;
    const identity = ctx.smtp.tls;
    if (!identity) return this.notImplemented("STARTTLS");
    if (arg !== "") return this.#fail(reply(501, "5.5.4", "Syntax: STARTTLS"), "starttls-syntax");
    if (this.#tls) {
      return this.#fail(reply(554, "5.5.1", "Error: TLS already active"), "starttls-active");
    }
    this.#send(reply(220, "2.0.0", "Ready to start TLS"));
    if (!(await this.#flush())) return;
    // Security (CVE-2011-0411): whatever followed the STARTTLS line in plaintext is dropped here.
    this.#bytesBeforeTls = this.#reader.bytesRead;
    const dropped = this.#reader.release();
    this.#writer.releaseLock();
    if (dropped > 0) {
      ctx.log.event("smtp.tls_discard", {
        session: ctx.id,
        bytes: dropped,
        reason: "plaintext pipelined after STARTTLS",
      }, "warning");
    }
    const left = this.#deadline - performance.now();
    const ms = Math.max(1, Math.min(secondsToMs(ctx.smtp.timeouts.command), left));
    try {
      const tls = await startServerTls(this.#io, identity, ms);
      this.#io = tls;
      this.#reader = new LineReader(tls.readable);
      this.#writer = tls.writable.getWriter();
      this.#writer.closed.catch(() => {});
      ctx.log.event("smtp.tls", { session: ctx.id, protocol: tls.protocol, cipher: tls.cipher });
    } catch (e) {
      ctx.log.event("smtp.tls_failed", {
        session: ctx.id,
        error: e instanceof Error ? e.message : String(e),
      }, "warning");
      this.#end = "tls-failed";
      return;
    }
    // RFC 3207 §4.2: discard all knowledge obtained from the client before TLS.
    this.#tls = true;
    this.#helo = undefined;
    this.#protocol = "ESMTP";
    this.#tx = undefined;
    await this.#resetUpstream();
  }

  async mail(arg: string): Promise<void> {
    const ctx = this.#ctx;
    if (this.#helo === undefined) {
      return this.#fail(reply(503, "5.5.1", "Error: send HELO/EHLO first"), "mail-before-helo");
    }
    if (this.#tx) {
      return this.#fail(reply(503, "5.5.1", "Error: nested MAIL command"), "nested-mail");
    }
    const parsed = parseMailArg(arg);
    if (!parsed.ok) return this.#fail(parsed.reply, parsed.reason);
    const args = parsed.value;
    if (args.size !== undefined && args.size > ctx.smtp.maxMessageBytes) {
      ctx.log.event("smtp.limit", {
        session: ctx.id,
        limit: "size-param",
        max: ctx.smtp.maxMessageBytes,
        value: args.size,
      });
      return this.#fail(
        reply(552, "5.3.4", "Message size exceeds fixed maximum message size"),
        "size-param",
      );
    }
    if (this.#counts.transactions >= ctx.smtp.maxTransactions) {
      ctx.log.event("smtp.limit", {
        session: ctx.id,
        limit: "transactions",
        max: ctx.smtp.maxTransactions,
      }, "warning");
      this.#send(reply(421, "4.7.0", `${ctx.hostname} Error: too many transactions in session`));
      this.#end = "limit";
      return;
    }
    const r = await this.#mailUpstream(args.address, { size: args.size, body: args.body });
    if (!r) return;
    if (this.#serverClosing(r)) return this.#send(this.#relayed(r, "4.4.2"));
    if (r.code >= 200 && r.code <= 299) {
      this.#relayTx = true;
      this.#counts.transactions++;
      this.#tx = {
        id: this.#newTxId(),
        mailFrom: args.address,
        size: args.size,
        body: args.body,
        rcpts: [],
        started: performance.now(),
      };
      return this.#send(this.#relayed(r, "2.1.0"));
    }
    this.#serverRefused(r, "mail");
  }

  /**
   * Sends MAIL upstream. A reused connection may have been closed by the server while idle
   * (its own command timeout, often with a 421 we only read now): then, once, the connection is
   * replaced and MAIL sent again. Returns undefined when the reply to the client was already given.
   */
  async #mailUpstream(
    address: string,
    params: { size?: number; body?: string },
  ): Promise<SmtpReply | undefined> {
    for (let attempt = 0; attempt < 2; attempt++) {
      const reused = this.#relay?.usable === true;
      const relay = await this.#upstream();
      if (!relay) return undefined;
      let r: SmtpReply;
      try {
        r = await relay.mail(address, params);
      } catch (e) {
        if (reused && attempt === 0 && e instanceof RelayError && e.kind === "closed") {
          this.#relayError(e, "mail-on-idle-connection");
          relay.close();
          continue;
        }
        this.#relayLost(e, "mail");
        return undefined;
      }
      if (reused && attempt === 0 && r.code === 421) {
        this.#relayError(new RelayError("closed", "Server closed the idle connection"), "mail");
        relay.close();
        continue;
      }
      return r;
    }
    return undefined; // not reached: the second attempt always returns
  }

  async rcpt(arg: string): Promise<void> {
    const ctx = this.#ctx;
    const tx = this.#tx;
    if (!tx) return this.#fail(reply(503, "5.5.1", "Error: need MAIL command"), "rcpt-before-mail");
    const parsed = parseRcptArg(arg);
    if (!parsed.ok) return this.#fail(parsed.reply, parsed.reason);
    if (tx.rcpts.length >= ctx.smtp.maxRecipients) {
      // RFC 5321 §4.5.3.1.10: 452, and the recipients already accepted are kept. Not counted as
      // an error: a pipelining client sends them all before it can see the first 452.
      ctx.log.event("smtp.limit", {
        session: ctx.id,
        tx: tx.id,
        limit: "recipients",
        max: ctx.smtp.maxRecipients,
      });
      return this.#send(reply(452, "4.5.3", "Error: too many recipients"));
    }
    const relay = this.#relay;
    if (!relay) return this.#relayLost(new RelayError("closed", "No relay connection"), "rcpt");
    let r: SmtpReply;
    try {
      r = await relay.rcpt(parsed.value.address);
    } catch (e) {
      return this.#relayLost(e, "rcpt");
    }
    if (this.#serverClosing(r)) return this.#send(this.#relayed(r, "4.4.2"));
    if (r.code >= 200 && r.code <= 299) {
      tx.rcpts.push(parsed.value.address);
      return this.#send(this.#relayed(r, "2.1.5"));
    }
    this.#serverRefused(r, "rcpt");
  }

  /** Passes on the server's refusal of MAIL or RCPT with its own code and text. */
  #serverRefused(r: SmtpReply, during: string): void {
    if (r.code >= 500 && r.code <= 599) {
      return this.#fail(this.#relayed(r, "5.0.0"), `server-refused-${during}`);
    }
    if (r.code >= 400 && r.code <= 499) {
      this.#ctx.log.event("smtp.reject", {
        session: this.#ctx.id,
        code: r.code,
        reason: `server-deferred-${during}`,
      });
      return this.#send(this.#relayed(r, "4.0.0"));
    }
    // 1xx/3xx to MAIL/RCPT is not SMTP: the connection cannot be trusted any more.
    this.#relayLost(new RelayError("protocol", `Server answered ${during} with ${r.code}`), during);
  }

  async data(arg: string): Promise<void> {
    if (arg !== "") return this.#fail(reply(501, "5.5.4", "Syntax: DATA"), "data-syntax");
    const tx = this.#tx;
    if (!tx) return this.#fail(reply(503, "5.5.1", "Error: need MAIL command"), "data-before-mail");
    if (tx.rcpts.length === 0) {
      return this.#fail(reply(554, "5.5.1", "Error: no valid recipients"), "data-no-rcpt");
    }
    this.#send({ code: 354, lines: ["End data with <CR><LF>.<CR><LF>"] });
    if (!(await this.#flush())) return;

    const tReceive = performance.now();
    const dr = await this.#receive(tx);
    if (!dr) return;
    try {
      await this.#endOfData(tx, dr, tReceive);
    } finally {
      // The message is no longer held: its bytes go back to the shared in-flight budget.
      dr.dispose();
    }
  }

  async #endOfData(tx: Transaction, dr: DataReader, tReceive: number): Promise<void> {
    const ctx = this.#ctx;
    // The transaction ends here whatever happens next (RFC 5321 §4.1.1.4).
    this.#tx = undefined;
    const outcome: Outcome = {
      tx,
      size: dr.size,
      receiveMs: performance.now() - tReceive,
      judgeMs: 0,
      relayMs: 0,
      verdict: "",
    };

    if (dr.rejected) {
      const { reply: r, reason } = defectReply(dr.defects, ctx.smtp.maxTextLine);
      if (reason === "no-memory") {
        // Our shortage, not the client's fault: a 4xx that does not count as a client error.
        ctx.log.event("smtp.limit", {
          session: ctx.id,
          tx: tx.id,
          limit: "inflight-bytes",
          max: ctx.memory?.limit,
        }, "warning");
        await this.#resetUpstream();
        this.#send(r);
        this.#counts.failed++;
        return this.#messageLog({ ...outcome, verdict: "tempfail", rule: reason, reply: r });
      }
      if (reason === "message-too-big" || reason === "text-line-too-long") {
        const overSize = reason === "message-too-big";
        ctx.log.event("smtp.limit", {
          session: ctx.id,
          tx: tx.id,
          limit: overSize ? "message-size" : "text-line",
          max: overSize ? ctx.smtp.maxMessageBytes : ctx.smtp.maxTextLine,
          value: overSize ? dr.size : undefined,
        });
      }
      await this.#resetUpstream();
      this.#counts.rejected++;
      this.#fail(r, reason);
      return this.#messageLog({ ...outcome, verdict: "rejected", rule: reason, reply: r });
    }

    const message = dr.message();
    const envelope: Envelope = {
      mailFrom: tx.mailFrom,
      rcptTo: [...tx.rcpts],
      client: ctx.client,
      server: ctx.server,
      helo: this.#helo ?? "",
      tls: this.#tls,
      sessionId: ctx.id,
      transactionId: tx.id,
    };
    const tJudge = performance.now();
    const verdict = await this.#judge(message, envelope);
    outcome.judgeMs = performance.now() - tJudge;

    if (verdict instanceof Error) {
      ctx.log.event(
        "policy.error",
        { session: ctx.id, tx: tx.id, error: verdict.message },
        "error",
      );
      await this.#resetUpstream();
      const r = reply(451, "4.3.0", "Error: temporary local problem, try again later");
      this.#send(r);
      this.#counts.failed++;
      return this.#messageLog({ ...outcome, verdict: "error", reply: r });
    }
    outcome.rule = verdict.rule;
    outcome.evidence = verdict.evidence;
    const code = await this.#act(tx, verdict, message, envelope, outcome);
    // Side effects (alerts, blacklists, counters) only once the client has its answer; they get
    // the message as received (the alert loop mark is an X-SSG-* field transform() strips).
    if (code !== undefined) ctx.actions?.after(verdict, envelope, { code }, message);
  }

  /** Carries out a verdict; returns the code the client got (undefined if the session ended). */
  async #act(
    tx: Transaction,
    verdict: Verdict,
    message: Uint8Array,
    envelope: Envelope,
    outcome: Outcome,
  ): Promise<number | undefined> {
    const ctx = this.#ctx;
    const actions = ctx.actions;
    const needsActions = verdict.action === "quarantine" || verdict.tag !== undefined ||
      (verdict.deliveries?.length ?? 0) > 0;
    if (needsActions && !actions) {
      ctx.log.event("policy.error", {
        session: ctx.id,
        tx: tx.id,
        error: `verdict "${verdict.action}" of rule ${verdict.rule} needs the action modules`,
      }, "error");
      await this.#resetUpstream();
      return this.#answer(
        reply(451, "4.3.0", "Error: temporary local problem, try again later"),
        outcome,
        "error",
        "failed",
      );
    }
    if (verdict.action === "discard") {
      // A deliberate drop: the client hears an ordinary success (never "discarded").
      await this.#resetUpstream();
      return this.#answer(
        reply(250, "2.0.0", `Ok: queued as ${tx.id}`),
        outcome,
        "discard",
        "discarded",
      );
    }
    if (verdict.action === "reject" || verdict.action === "tempfail") {
      await this.#resetUpstream();
      return this.#answer(
        ruleReply(verdict.reply),
        outcome,
        verdict.action,
        verdict.action === "reject" ? "rejected" : "failed",
      );
    }
    // From here on the message goes somewhere: as the server would have received it, with our
    // Received header and the verdict's tag.
    const out = actions ? actions.transform(message, verdict) : message;
    const header = encoder.encode(this.#receivedHeader(tx));
    // The whole message as one buffer, for quarantine/bcc/redirect: built once, when first needed
    // (the relay to the server takes header and body as two parts and needs no copy).
    let whole: Uint8Array | undefined;
    const full = () => whole ??= concat(header, out);
    if (verdict.action === "quarantine") {
      await this.#resetUpstream();
      const bytes = full();
      try {
        // 250 only after the store has fsync'd the message (never before it is safe).
        const id = await actions!.quarantine(bytes, envelope, verdict);
        outcome.evidence = `${outcome.evidence ?? ""}${
          outcome.evidence ? "; " : ""
        }quarantine id ${id}`;
        return this.#answer(
          reply(250, "2.0.0", `Ok: queued as ${tx.id}`),
          outcome,
          "quarantine",
          "discarded",
        );
      } catch (e) {
        ctx.log.event(
          "quarantine.error",
          { session: ctx.id, tx: tx.id, error: String(e) },
          "error",
        );
        return this.#answer(
          ruleReply(actions!.failureReply(e)),
          outcome,
          "quarantine-failed",
          "failed",
        );
      }
    }
    const deliveries = verdict.deliveries ?? [];
    // bcc copies first: if one fails the client gets 4xx and retries the whole message — a
    // duplicate archive copy is preferred to a lost one.
    for (const d of deliveries.filter((d) => d.kind === "bcc")) {
      const r = await actions!.deliver(d, full(), envelope);
      if (r.code !== 250) {
        ctx.log.event("action.bcc_failed", {
          session: ctx.id,
          tx: tx.id,
          to: d.to,
          code: r.code,
          text: r.text,
        }, "warning");
        await this.#resetUpstream();
        return this.#answer(
          reply(451, "4.4.1", "Error: temporary local problem, try again later"),
          outcome,
          "bcc-failed",
          "failed",
        );
      }
    }
    const redirect = deliveries.find((d) => d.kind === "redirect");
    if (redirect) {
      // Delivered there INSTEAD: the original server's transaction is abandoned.
      await this.#resetUpstream();
      const tRelay = performance.now();
      const r = await actions!.deliver(redirect, full(), envelope);
      outcome.relayMs = performance.now() - tRelay;
      if (r.code === 250) {
        return this.#answer(
          reply(250, "2.0.0", `Ok: queued as ${tx.id}`),
          outcome,
          "redirect",
          "forwarded",
        );
      }
      ctx.log.event("action.redirect_failed", {
        session: ctx.id,
        tx: tx.id,
        to: redirect.to,
        code: r.code,
        text: r.text,
      }, "warning");
      return this.#answer(
        reply(451, "4.4.1", "Error: temporary local problem, try again later"),
        outcome,
        "redirect-failed",
        "failed",
      );
    }
    return await this.#forward(tx, header, out, outcome);
  }

  /** Sends the end-of-data reply, counts and logs it; returns its code. */
  #answer(
    r: SmtpReply,
    outcome: Outcome,
    verdict: string,
    count: "forwarded" | "discarded" | "rejected" | "failed",
  ): number {
    this.#send(r);
    this.#counts[count]++;
    this.#messageLog({ ...outcome, verdict, reply: r });
    return r.code;
  }

  #receivedHeader(tx: Transaction): string {
    const ctx = this.#ctx;
    return receivedHeader({
      helo: this.#helo ?? "",
      clientIp: ctx.client.ip,
      hostname: ctx.hostname,
      protocol: this.#tls && this.#protocol === "ESMTP" ? "ESMTPS" : this.#protocol,
      id: tx.id,
      recipients: tx.rcpts,
      date: ctx.clock ? ctx.clock() : new Date(),
    });
  }

  /** Reads the message up to CRLF.CRLF; undefined when cut short (the session then ends). */
  async #receive(tx: Transaction): Promise<DataReader | undefined> {
    const ctx = this.#ctx;
    const dr = new DataReader({
      maxMessageBytes: ctx.smtp.maxMessageBytes,
      maxTextLine: ctx.smtp.maxTextLine,
      bareLineEndings: ctx.smtp.bareLineEndings,
      budget: ctx.memory,
    });
    const got = await this.#receiveInto(tx, dr);
    // Cut short: nothing is kept, and the bytes go back to the shared budget.
    if (!got) dr.dispose();
    return got;
  }

  async #receiveInto(tx: Transaction, dr: DataReader): Promise<DataReader | undefined> {
    const ctx = this.#ctx;
    const dataMs = secondsToMs(ctx.smtp.timeouts.data);
    const rate = ctx.minDataRate && ctx.minDataRate > 0 ? ctx.minDataRate : undefined;
    let requestDeadline = performance.now() + dataMs;
    while (!dr.done) {
      const now = performance.now();
      const left = this.#deadline - now;
      if (left <= 0) return await this.#abortData(tx, () => this.#timeout("session"));
      const blockMs = rate ? Math.max(0, requestDeadline - now) : dataMs;
      const c = await this.#reader.readChunk(Math.min(blockMs, left), ctx.shutdown);
      if (c.kind === "data") {
        const used = dr.push(c.bytes);
        if (rate) requestDeadline += (used / rate) * 1000;
        // Bytes after CRLF.CRLF are the client's next (pipelined) commands.
        if (dr.done) this.#reader.unread(c.bytes.length - used);
        continue;
      }
      if (c.kind === "timeout") {
        const phase = blockMs < left ? (rate ? "data-rate" : "data") : "session";
        return await this.#abortData(tx, () => this.#timeout(phase));
      }
      if (c.kind === "aborted") return await this.#abortData(tx, () => this.#shutdownNow());
      return await this.#abortData(tx, () => (this.#end = "client-closed"));
    }
    return dr;
  }

  /**
   * Relays the message to the server and gives the client the server's final reply. Only the
   * server's 250 becomes a 250; its 4xx/5xx pass through; anything else, or a lost connection,
   * is a 4xx (the client keeps the message).
   */
  async #forward(
    _tx: Transaction,
    header: Uint8Array,
    message: Uint8Array,
    outcome: Outcome,
  ): Promise<number | undefined> {
    const relay = this.#relay;
    const tRelay = performance.now();
    if (!relay) {
      this.#relayLost(new RelayError("closed", "No relay connection"), "data");
      this.#counts.failed++;
      this.#messageLog({ ...outcome, verdict: "forward-failed" });
      return undefined;
    }
    let sr: SmtpReply;
    try {
      sr = await relay.data(header, message);
    } catch (e) {
      outcome.relayMs = performance.now() - tRelay;
      this.#relayLost(e, "data");
      this.#counts.failed++;
      this.#messageLog({ ...outcome, verdict: "forward-failed" });
      return undefined;
    }
    outcome.relayMs = performance.now() - tRelay;
    this.#relayTx = false;
    let r: SmtpReply;
    if (sr.code === 250) {
      r = this.#relayed(sr, "2.0.0");
      this.#counts.forwarded++;
    } else if (sr.code >= 400 && sr.code <= 599) {
      r = this.#relayed(sr, `${String(sr.code)[0]}.0.0`);
      if (sr.code >= 500) this.#counts.rejected++;
      else this.#counts.failed++;
      // After a refused DATA the server may still hold our MAIL (e.g. DATA answered 451).
      this.#relayTx = true;
      if (this.#serverClosing(sr)) {
        this.#send(r);
        this.#messageLog({ ...outcome, verdict: "forward", reply: r });
        return r.code;
      }
      await this.#resetUpstream();
    } else {
      // Never 250 unless the server said 250: any other success-looking code is a failure.
      this.#relayError(
        new RelayError("protocol", `Server answered end of data with ${sr.code}`),
        "data",
      );
      this.#relay?.close();
      this.#relay = undefined;
      r = reply(451, "4.4.2", "Error: unexpected reply from the mail server, try again later");
      this.#counts.failed++;
    }
    this.#send(r);
    this.#messageLog({ ...outcome, verdict: "forward", reply: r });
    return r.code;
  }

  /** The message was cut short (timeout, shutdown, client gone): nothing is kept. */
  async #abortData(tx: Transaction, then: () => void): Promise<undefined> {
    this.#tx = undefined;
    then();
    this.#ctx.log.event("smtp.abort", { session: this.#ctx.id, tx: tx.id, reason: this.#end });
    await this.#resetUpstream();
  }

  /** Runs the judge with a time bound; an Error means "answer 451". */
  async #judge(message: Uint8Array, envelope: Envelope): Promise<Verdict | Error> {
    const ms = this.#ctx.judgeTimeoutMs ?? DEFAULT_JUDGE_TIMEOUT_MS;
    let p: Promise<Verdict | Error>;
    try {
      p = this.#ctx.judge(message, envelope).then(
        (v) => v,
        (e: unknown) => (e instanceof Error ? e : new Error(String(e))),
      );
    } catch (e) {
      return e instanceof Error ? e : new Error(String(e));
    }
    const r = await raceDeadline(p, ms);
    if (!r.ok) return new Error(`judge timed out after ${ms} ms`);
    const v = r.value;
    if (v instanceof Error) return v;
    if (!v || !VERDICT_ACTIONS.has(v.action)) {
      return new Error("judge returned no valid verdict");
    }
    return v;
  }

  #messageLog(m: Outcome): void {
    const ctx = this.#ctx;
    ctx.log.event("message", {
      session: ctx.id,
      txid: m.tx.id,
      client: ctx.client.ip,
      server: ctx.server.ip,
      from: m.tx.mailFrom,
      rcpts: m.tx.rcpts,
      size: m.size,
      verdict: m.verdict,
      rule: m.rule,
      evidence: m.evidence,
      reply: m.reply ? replySummary(m.reply) : undefined,
      receive_ms: Math.round(m.receiveMs),
      judge_ms: Math.round(m.judgeMs),
      relay_ms: Math.round(m.relayMs),
    });
  }

  async rset(arg: string): Promise<void> {
    if (arg !== "") return this.#fail(reply(501, "5.5.4", "Syntax: RSET"), "rset-syntax");
    this.#tx = undefined;
    await this.#resetUpstream();
    this.#send(reply(250, "2.0.0", "Ok"));
  }

  noop(_arg: string): Promise<void> {
    // RFC 5321 §4.1.1.9: a parameter may be given and is ignored.
    this.#send(reply(250, "2.0.0", "Ok"));
    return Promise.resolve();
  }

  quit(arg: string): Promise<void> {
    if (arg !== "") {
      this.#fail(reply(501, "5.5.4", "Syntax: QUIT"), "quit-syntax");
      return Promise.resolve();
    }
    this.#send(reply(221, "2.0.0", `${this.#ctx.hostname} closing connection`));
    this.#end = "quit";
    return Promise.resolve();
  }

  vrfy(arg: string): Promise<void> {
    if (arg === "") this.#fail(reply(501, "5.5.4", "Syntax: VRFY address"), "vrfy-syntax");
    else {
      // RFC 5321 §3.5.3: 252 when the address cannot be verified but mail will be accepted.
      this.#send(
        reply(252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery"),
      );
    }
    return Promise.resolve();
  }

  help(_arg: string): Promise<void> {
    this.#send({
      code: 214,
      enhanced: "2.0.0",
      lines: [
        "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP",
        "See RFC 5321",
      ],
    });
    return Promise.resolve();
  }

  notImplemented(verb: string): Promise<void> {
    this.#fail(reply(502, "5.5.1", `Error: ${verb} not implemented`), "not-implemented");
    return Promise.resolve();
  }

  forbidden(verb: string): Promise<void> {
    const ctx = this.#ctx;
    ctx.log.event("smtp.reject", { session: ctx.id, reason: "forbidden-command", verb, code: 521 });
    // RFC 7504: 521 says this host does not accept mail from the peer; the session closes.
    this.#send(reply(521, "5.7.0", `${ctx.hostname} Error: not an SMTP client, closing`));
    this.#end = "forbidden";
    return Promise.resolve();
  }

  #newTxId(): string {
    this.#txCounter++;
    return `${this.#ctx.id}.${this.#txCounter}`;
  }
}
