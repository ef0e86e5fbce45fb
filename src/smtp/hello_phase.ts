/**
 * The greeting and HELO/EHLO phase: the 220 banner (after the pregreet test) and the EHLO
 * reply with the extensions the responder offers.
 *
 * Trusts: nothing from the client; the HELO/EHLO argument is checked by `parseHeloArg` and kept
 * only as the Received header's "from" name and the rules' `helo`. Limits: a client that talks
 * before the greeting gets 554 5.5.0 and is closed (postscreen's pregreet test). EHLO/HELO
 * resets the transaction like RSET (RFC 5321 §4.1.4). Enhanced status codes are not put on the
 * greeting and the EHLO/HELO replies (RFC 2034 §3 exempts them).
 */
import { parseHeloArg } from "./command.ts";
import { reply, sanitizeText } from "./reply.ts";
import type { SessionCore } from "./session_core.ts";
import type { ServerLink } from "./server_link.ts";

/** Waits for an early talker, then sends the 220 greeting (or ends the session). */
export async function greet(core: SessionCore): Promise<void> {
  const ctx = core.ctx;
  if (ctx.shutdown.aborted) return core.shutdownNow();
  const early = await core.reader.waitForData(ctx.pregreetMs ?? 0, ctx.shutdown);
  if (early === "aborted") return core.shutdownNow();
  if (early === "eof") {
    core.end = "client-closed";
    return;
  }
  if (early === "data") {
    ctx.log.event("smtp.reject", { session: ctx.id, reason: "early-talker", code: 554 });
    core.send(reply(554, "5.5.0", `${ctx.hostname} Error: talked before the greeting`));
    core.end = "early-talker";
    return;
  }
  core.send({ code: 220, lines: [`${sanitizeText(ctx.hostname)} ESMTP`] });
  await core.flush();
}

/** The EHLO keywords the responder offers, in order (after the host name line). */
export function ehloKeywords(core: SessionCore): string[] {
  const smtp = core.ctx.smtp;
  const lines: string[] = [];
  if (smtp.pipelining) lines.push("PIPELINING");
  lines.push(`SIZE ${smtp.maxMessageBytes}`, "8BITMIME", "ENHANCEDSTATUSCODES");
  if (smtp.tls && !core.tls) lines.push("STARTTLS");
  return lines;
}

/** HELO ("SMTP") or EHLO ("ESMTP"): checks the name, resets the transaction, answers. */
export async function hello(
  core: SessionCore,
  link: ServerLink,
  arg: string,
  protocol: "ESMTP" | "SMTP",
): Promise<void> {
  const parsed = parseHeloArg(arg);
  if (!parsed.ok) {
    const text = protocol === "ESMTP" ? "Syntax: EHLO hostname" : "Syntax: HELO hostname";
    return core.fail({ code: 501, lines: [text] }, parsed.reason);
  }
  // RFC 5321 §4.1.4: EHLO/HELO resets the transaction like RSET.
  core.tx = undefined;
  await link.reset();
  core.helo = parsed.value;
  core.protocol = protocol;
  const host = sanitizeText(core.ctx.hostname);
  if (protocol === "SMTP") return core.send({ code: 250, lines: [host] });
  core.send({ code: 250, lines: [host, ...ehloKeywords(core)] });
}
