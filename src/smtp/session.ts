/**
 * One SMTP session: the responder that answers the client as if it were the protected server,
 * and the before-queue relay that makes every answer about the mail the server's own.
 *
 * The session is split by SMTP phase, one module each, so that an extension lands in one place:
 * - `hello_phase.ts` — the greeting (pregreet test) and HELO/EHLO, the extensions offered;
 * - `envelope_phase.ts` — MAIL and RCPT, relayed to the server;
 * - `content_phase.ts` — DATA: receiving the message bytes;
 * - `outcome_phase.ts` — content refusals, the judge, the verdict carried out, the final reply;
 * - `tls_phase.ts` — STARTTLS;
 * - `server_link.ts` — the relay connection's life; `session_core.ts` — the shared state and
 *   the reply buffer. This file holds the command loop and the commands with no phase of their
 *   own (RSET, NOOP, QUIT, VRFY, HELP, unknown and forbidden verbs).
 *
 * Trusts: nothing from the client. Every byte goes through the bounded `LineReader`, the
 * `DataReader` (smuggling defences) and `command.ts` (syntax, control characters, limits).
 * Limits (all from `SmtpConfig`), each answered, counted and logged (`smtp.limit`):
 * command line `maxCommandLine` (500 5.5.2, RFC 5321 §4.5.3.1.4), text line `maxTextLine`
 * (552 5.6.0 after the real end of data, §4.5.3.1.6), recipients `maxRecipients` (452 4.5.3 for
 * each extra RCPT, §4.5.3.1.10), SIZE= and actual size `maxMessageBytes` (552 5.3.4, RFC 1870),
 * errors `maxErrors` (421 4.7.0 and close once exceeded), transactions `maxTransactions` (421
 * 4.7.0 and close), command wait and data block timeouts (§4.5.3.2.7, §4.5.3.2.5) and a
 * whole-session deadline (421 4.4.2 and close).
 *
 * Pipelining (RFC 2920): commands are processed strictly in order; replies to MAIL/RCPT/RSET wait
 * in a buffer that is written when no more input is pending, before any wait for input, and after
 * each command that must end a group (see `command_table.ts`). With `smtp.pipelining` off, input
 * pending after a command line is a synchronisation error (554 5.5.0 and close, as Postfix's
 * smtpd_forbid_unauth_pipelining). Enhanced status codes (RFC 2034) on every reply except the
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
 */
import { parseCommandLine } from "./command.ts";
import { COMMAND_TABLE, type CommandHandlers } from "./command_table.ts";
import { bdat, data } from "./content_phase.ts";
import { secondsToMs } from "./deadline.ts";
import { mail, rcpt } from "./envelope_phase.ts";
import { greet, hello } from "./hello_phase.ts";
import { askServer } from "./query_phase.ts";
import { auth } from "./auth_phase.ts";
import { reply } from "./reply.ts";
import { relayedReply, SessionCore } from "./session_core.ts";
import type { SessionContext, SessionSummary } from "./session_context.ts";
import { closeQuietly, type SessionIo } from "./session_io.ts";
import { ServerLink } from "./server_link.ts";
import { startTls } from "./tls_phase.ts";

export type { SessionIo } from "./session_io.ts";
export type {
  SessionContext,
  SessionEnd,
  SessionSummary,
  VerdictActions,
} from "./session_context.ts";
export { SHED } from "./session_context.ts";
export { DEFAULT_JUDGE_TIMEOUT_MS } from "./outcome_phase.ts";

/** Bytes of replies held back while pipelined input is pending before they are written anyway. */
export const MAX_PENDING_REPLIES = 16 * 1024;

/**
 * Serves one client connection until QUIT, a limit, a timeout, shutdown or the client's close.
 * Never rejects for peer misbehaviour (internal faults are logged and end with 421).
 */
export async function serveSession(io: SessionIo, ctx: SessionContext): Promise<SessionSummary> {
  const session = new Session(io, ctx);
  return await session.run();
}

class Session implements CommandHandlers {
  #core: SessionCore;
  #link: ServerLink;

  constructor(io: SessionIo, ctx: SessionContext) {
    this.#core = new SessionCore(io, ctx);
    this.#link = new ServerLink(this.#core);
  }

  async run(): Promise<SessionSummary> {
    const core = this.#core;
    const ctx = core.ctx;
    ctx.log.event("smtp.connect", {
      session: ctx.id,
      client: `${ctx.client.ip}:${ctx.client.port}`,
      server: `${ctx.server.ip}:${ctx.server.port}`,
    });
    try {
      ctx.prefetch?.({ clientIp: ctx.client.ip });
      await greet(core, this.#link);
      while (core.end === undefined) await this.#step();
    } catch (e) {
      ctx.log.event("smtp.error", { session: ctx.id, error: String(e) }, "error");
      core.send(reply(421, "4.3.0", `${core.name} Error: internal error, try again later`));
      core.end = "internal-error";
    }
    // The client gets nothing after this last flush: its slot is free for its next connection.
    ctx.clientDone?.();
    await core.flush();
    core.tx = undefined; // gives a half-received BDAT message back to the memory budget
    closeQuietly(core.io);
    core.reader.cancel();
    await this.#link.release();
    const summary: SessionSummary = {
      id: ctx.id,
      end: core.end ?? "internal-error",
      ...core.counts,
      errors: core.errors,
      bytesIn: core.bytesBeforeTls + core.reader.bytesRead,
      durationMs: Math.round(performance.now() - core.started),
    };
    ctx.log.event("smtp.close", {
      session: ctx.id,
      reason: summary.end,
      duration_ms: summary.durationMs,
      transactions: summary.transactions,
      errors: summary.errors,
      rcpt_refused: core.refusedRcpts || undefined,
    });
    return summary;
  }

  /** Reads and runs one command. */
  async #step(): Promise<void> {
    const core = this.#core;
    const ctx = core.ctx;
    const smtp = ctx.smtp;
    if (ctx.shutdown.aborted) return core.shutdownNow();
    // RFC 2920 §3.1: flush when no input is pending (or when a long pipelined group has piled up
    // more than `MAX_PENDING_REPLIES` bytes of replies, so the buffer stays bounded).
    const pending = core.reader.buffered > 0 && core.pendingReplyBytes <= MAX_PENDING_REPLIES;
    if (!pending && !(await core.flush())) return;
    const left = core.deadline - performance.now();
    if (left <= 0) return core.timeout("session");
    const commandMs = secondsToMs(smtp.timeouts.command);
    const r = await core.reader.readLine(
      smtp.maxCommandLine,
      Math.min(commandMs, left),
      ctx.shutdown,
    );
    switch (r.kind) {
      case "aborted":
        return core.shutdownNow();
      case "timeout":
        return core.timeout(commandMs < left ? "command" : "session");
      case "eof":
        core.end = "client-closed";
        return;
      case "flood":
        ctx.log.event("smtp.limit", { session: ctx.id, limit: "line-flood" }, "warning");
        core.send(reply(421, "4.7.0", `${core.name} Error: line too long, closing`));
        core.end = "flood";
        return;
      case "too-long":
        ctx.log.event("smtp.limit", {
          session: ctx.id,
          limit: "command-line",
          max: smtp.maxCommandLine,
        });
        core.fail(reply(500, "5.5.2", "Line too long"), "command-line-too-long");
        await core.flush();
        return;
      case "line":
        break;
    }
    core.counts.commands++;
    if (r.bareLf && smtp.bareLineEndings === "reject") {
      core.fail(reply(500, "5.5.2", "Syntax error: bare LF received"), "bare-lf-command");
      await core.flush();
      return;
    }
    const parsed = parseCommandLine(r.line, core.offered.has("SMTPUTF8"));
    // A BDAT's chunk follows its command line at once (RFC 3030 §3): that is not pipelining.
    const chunkFollows = parsed.ok && parsed.value.verb === "BDAT";
    if (!smtp.pipelining && core.reader.buffered > 0 && !chunkFollows) {
      ctx.log.event("smtp.reject", { session: ctx.id, reason: "sync-error", code: 554 });
      core.send(reply(554, "5.5.0", "Error: SMTP protocol synchronization"));
      core.end = "sync-error";
      return;
    }
    if (!parsed.ok) {
      core.fail(parsed.reply, parsed.reason);
      await core.flush();
      return;
    }
    const { verb, arg } = parsed.value;
    // Security: an AUTH initial response carries the credential; only its mechanism is logged.
    const logged = verb === "AUTH" ? arg.split(" ")[0] : arg.slice(0, 100);
    ctx.log.event("smtp.command", { session: ctx.id, verb, arg: logged }, "debug");
    const entry = COMMAND_TABLE.get(verb);
    if (!entry) {
      core.fail(reply(500, "5.5.1", "Error: command not recognized"), "unknown-command");
      await core.flush();
      return;
    }
    await entry.run(this, arg, verb);
    if (entry.flush) await core.flush();
  }

  // ---- commands (CommandHandlers) --------------------------------------------------------------

  ehlo(arg: string): Promise<void> {
    return hello(this.#core, this.#link, arg, "ESMTP");
  }

  helo(arg: string): Promise<void> {
    return hello(this.#core, this.#link, arg, "SMTP");
  }

  starttls(arg: string): Promise<void> {
    return startTls(this.#core, this.#link, arg);
  }

  mail(arg: string): Promise<void> {
    return mail(this.#core, this.#link, arg);
  }

  rcpt(arg: string): Promise<void> {
    return rcpt(this.#core, this.#link, arg);
  }

  data(arg: string): Promise<void> {
    return data(this.#core, this.#link, arg);
  }

  auth(arg: string): Promise<void> {
    return auth(this.#core, this.#link, arg);
  }

  bdat(arg: string): Promise<void> {
    return bdat(this.#core, this.#link, arg);
  }

  async rset(arg: string): Promise<void> {
    const core = this.#core;
    if (arg !== "") return core.fail(reply(501, "5.5.4", "Syntax: RSET"), "rset-syntax");
    core.tx = undefined;
    core.bdatSkipping = false;
    await this.#link.reset();
    core.send(reply(250, "2.0.0", "Ok"));
  }

  noop(_arg: string): Promise<void> {
    // RFC 5321 §4.1.1.9: a parameter may be given and is ignored.
    this.#core.send(reply(250, "2.0.0", "Ok"));
    return Promise.resolve();
  }

  quit(arg: string): Promise<void> {
    const core = this.#core;
    if (arg !== "") {
      core.fail(reply(501, "5.5.4", "Syntax: QUIT"), "quit-syntax");
      return Promise.resolve();
    }
    core.end = "quit";
    const relay = this.#link.relay;
    if (core.profile && relay?.usable) {
      // Mirroring: the server's own goodbye (Postfix "221 2.0.0 Bye", others "... closing
      // connection"); SSG's own text if it gives none. Once a session has seen it, later ones
      // answer at once (it is the same text every time) and the relay's QUIT goes to the server
      // after the client is gone, or the connection is kept for the next session (`serve()`'s
      // end, `ServerLink.release`): a round trip on the inside link saved.
      const known = core.profile.goodbyeReply;
      if (known) {
        core.send(relayedReply(known, "2.0.0"));
        return Promise.resolve();
      }
      this.#link.relay = undefined;
      return relay.quit().then((r) => {
        if (r?.code === 221) {
          core.ctx.profiles?.saidGoodbye(core.ctx.server, r);
          core.send(relayedReply(r, "2.0.0"));
        } else core.send(reply(221, "2.0.0", `${core.name} closing connection`));
      });
    }
    core.send(reply(221, "2.0.0", `${core.name} closing connection`));
    return Promise.resolve();
  }

  async vrfy(arg: string): Promise<void> {
    const core = this.#core;
    if (core.profile) return await askServer(core, this.#link, "VRFY", arg);
    if (arg === "") core.fail(reply(501, "5.5.4", "Syntax: VRFY address"), "vrfy-syntax");
    else {
      // RFC 5321 §3.5.3: 252 when the address cannot be verified but mail will be accepted.
      core.send(
        reply(252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery"),
      );
    }
  }

  async help(arg: string): Promise<void> {
    if (this.#core.profile) return await askServer(this.#core, this.#link, "HELP", arg);
    this.#core.send({
      code: 214,
      enhanced: "2.0.0",
      lines: [
        "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP",
        "See RFC 5321",
      ],
    });
  }

  async query(verb: "EXPN" | "ETRN", arg: string): Promise<void> {
    if (this.#core.profile) return await askServer(this.#core, this.#link, verb, arg);
    await this.notImplemented(verb);
  }

  notImplemented(verb: string): Promise<void> {
    this.#core.fail(reply(502, "5.5.1", `Error: ${verb} not implemented`), "not-implemented");
    return Promise.resolve();
  }

  forbidden(verb: string): Promise<void> {
    const core = this.#core;
    const ctx = core.ctx;
    ctx.log.event("smtp.reject", { session: ctx.id, reason: "forbidden-command", verb, code: 521 });
    // RFC 7504: 521 says this host does not accept mail from the peer; the session closes.
    core.send(reply(521, "5.7.0", `${core.name} Error: not an SMTP client, closing`));
    core.end = "forbidden";
    return Promise.resolve();
  }
}
