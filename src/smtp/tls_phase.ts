/**
 * STARTTLS (RFC 3207) on the client side of the session.
 *
 * Offered only when `smtp.tls` gives a certificate, and only before TLS is active (otherwise
 * 502 5.5.1, as Postfix without TLS). Refused 503 5.5.1 inside a mail transaction (after MAIL),
 * as Postfix does (issue 6 item 5): the transaction would otherwise straddle the handshake. Accepted before EHLO too: RFC 3207 §4 sets no
 * precondition, and Postfix (smtpd, postscreen's psc_starttls_cmd) checks none.
 *
 * Security (CVE-2011-0411): plaintext bytes already received after the STARTTLS line are
 * discarded with the line reader, never executed after the handshake. After TLS everything the
 * client said before is forgotten (RFC 3207 §4.2): it must EHLO again, no transaction survives.
 * Limits: the handshake is bounded by the command timeout (Postfix's smtpd_starttls_timeout
 * defaults to the same 300 s) and the session deadline; a failed handshake is logged and closes
 * the session.
 */
import { secondsToMs } from "./deadline.ts";
import { LineReader } from "./line_reader.ts";
import { reply } from "./reply.ts";
import type { SessionCore } from "./session_core.ts";
import type { ServerLink } from "./server_link.ts";
import { startServerTls } from "./start_tls.ts";

/** STARTTLS: 220, the handshake, and a session that forgets everything said before. */
export async function startTls(core: SessionCore, link: ServerLink, arg: string): Promise<void> {
  const ctx = core.ctx;
  const identity = ctx.smtp.tls;
  if (!identity) {
    return core.fail(reply(502, "5.5.1", "Error: STARTTLS not implemented"), "not-implemented");
  }
  if (arg !== "") return core.fail(reply(501, "5.5.4", "Syntax: STARTTLS"), "starttls-syntax");
  if (core.tx) {
    // Postfix's answer (smtpd.c, starttls_cmd): TLS may not start in the middle of a transaction.
    return core.fail(
      reply(503, "5.5.1", "Error: MAIL transaction in progress"),
      "starttls-in-transaction",
    );
  }
  if (core.tls) {
    return core.fail(reply(554, "5.5.1", "Error: TLS already active"), "starttls-active");
  }
  core.send(reply(220, "2.0.0", "Ready to start TLS"));
  if (!(await core.flush())) return;
  // Security (CVE-2011-0411): whatever followed the STARTTLS line in plaintext is dropped here.
  core.bytesBeforeTls = core.reader.bytesRead;
  const dropped = core.reader.release();
  core.writer.releaseLock();
  if (dropped > 0) {
    ctx.log.event("smtp.tls_discard", {
      session: ctx.id,
      bytes: dropped,
      reason: "plaintext pipelined after STARTTLS",
    }, "warning");
  }
  const left = core.deadline - performance.now();
  const ms = Math.max(1, Math.min(secondsToMs(ctx.smtp.timeouts.command), left));
  try {
    const tls = await startServerTls(core.io, identity, ms);
    core.io = tls;
    core.reader = new LineReader(tls.readable);
    core.writer = tls.writable.getWriter();
    core.writer.closed.catch(() => {});
    ctx.log.event("smtp.tls", { session: ctx.id, protocol: tls.protocol, cipher: tls.cipher });
  } catch (e) {
    ctx.log.event("smtp.tls_failed", {
      session: ctx.id,
      error: e instanceof Error ? e.message : String(e),
    }, "warning");
    core.end = "tls-failed";
    return;
  }
  // RFC 3207 §4.2: discard all knowledge obtained from the client before TLS.
  core.tls = true;
  core.helo = undefined;
  core.authenticated = undefined;
  core.offered = new Set();
  core.protocol = "ESMTP";
  core.tx = undefined;
  await link.reset();
}
