/**
 * The envelope phase: MAIL FROM and RCPT TO, each relayed to the server so the client hears the
 * server's own answer (before-queue proxy).
 *
 * Trusts: nothing from the client (`parseMailArg`/`parseRcptArg` check syntax, control
 * characters, lengths and parameters); the server's replies only through `RelayClient`.
 * Limits: SIZE= above `maxMessageBytes` is refused 552 5.3.4 (RFC 1870) before the server is
 * asked; `maxTransactions` per session (421 4.7.0 and close); `maxRecipients` per transaction
 * (452 4.5.3 for each extra RCPT, RFC 5321 §4.5.3.1.10, not counted as an error). A server's
 * 1xx/3xx to MAIL/RCPT is not SMTP: the relay connection is dropped and the client gets 421.
 */
import { parseMailArg, parseRcptArg } from "./command.ts";
import { RelayError } from "./relay_client.ts";
import { reply, type SmtpReply } from "./reply.ts";
import { relayedReply, type SessionCore } from "./session_core.ts";
import type { ServerLink } from "./server_link.ts";

/** MAIL FROM: checks, then asks the server; a transaction starts only on the server's 2xx. */
export async function mail(core: SessionCore, link: ServerLink, arg: string): Promise<void> {
  const ctx = core.ctx;
  if (core.helo === undefined) {
    return core.fail(reply(503, "5.5.1", "Error: send HELO/EHLO first"), "mail-before-helo");
  }
  if (core.tx) {
    return core.fail(reply(503, "5.5.1", "Error: nested MAIL command"), "nested-mail");
  }
  const parsed = parseMailArg(arg);
  if (!parsed.ok) return core.fail(parsed.reply, parsed.reason);
  const args = parsed.value;
  if (args.size !== undefined && args.size > ctx.smtp.maxMessageBytes) {
    ctx.log.event("smtp.limit", {
      session: ctx.id,
      limit: "size-param",
      max: ctx.smtp.maxMessageBytes,
      value: args.size,
    });
    return core.fail(
      reply(552, "5.3.4", "Message size exceeds fixed maximum message size"),
      "size-param",
    );
  }
  if (core.counts.transactions >= ctx.smtp.maxTransactions) {
    ctx.log.event("smtp.limit", {
      session: ctx.id,
      limit: "transactions",
      max: ctx.smtp.maxTransactions,
    }, "warning");
    core.send(reply(421, "4.7.0", `${core.name} Error: too many transactions in session`));
    core.end = "limit";
    return;
  }
  const r = await link.mail(args.address, { size: args.size, body: args.body });
  if (!r) return;
  if (link.closing(r)) return core.send(relayedReply(r, "4.4.2"));
  if (r.code >= 200 && r.code <= 299) {
    link.inTransaction = true;
    core.counts.transactions++;
    core.tx = {
      id: core.newTxId(),
      mailFrom: args.address,
      size: args.size,
      body: args.body,
      rcpts: [],
      started: performance.now(),
    };
    return core.send(relayedReply(r, "2.1.0"));
  }
  serverRefused(core, link, r, "mail");
}

/** RCPT TO: checks, then asks the server; the recipient counts only on the server's 2xx. */
export async function rcpt(core: SessionCore, link: ServerLink, arg: string): Promise<void> {
  const ctx = core.ctx;
  const tx = core.tx;
  if (!tx) return core.fail(reply(503, "5.5.1", "Error: need MAIL command"), "rcpt-before-mail");
  const parsed = parseRcptArg(arg);
  if (!parsed.ok) return core.fail(parsed.reply, parsed.reason);
  if (tx.rcpts.length >= ctx.smtp.maxRecipients) {
    // RFC 5321 §4.5.3.1.10: 452, and the recipients already accepted are kept. Not counted as
    // an error: a pipelining client sends them all before it can see the first 452.
    ctx.log.event("smtp.limit", {
      session: ctx.id,
      tx: tx.id,
      limit: "recipients",
      max: ctx.smtp.maxRecipients,
    });
    return core.send(reply(452, "4.5.3", "Error: too many recipients"));
  }
  const relay = link.relay;
  if (!relay) return link.lost(new RelayError("closed", "No relay connection"), "rcpt");
  let r: SmtpReply;
  try {
    r = await relay.rcpt(parsed.value.address);
  } catch (e) {
    return link.lost(e, "rcpt");
  }
  if (link.closing(r)) return core.send(relayedReply(r, "4.4.2"));
  if (r.code >= 200 && r.code <= 299) {
    tx.rcpts.push(parsed.value.address);
    return core.send(relayedReply(r, "2.1.5"));
  }
  serverRefused(core, link, r, "rcpt");
}

/** Passes on the server's refusal of MAIL or RCPT with its own code and text. */
function serverRefused(core: SessionCore, link: ServerLink, r: SmtpReply, during: string): void {
  if (r.code >= 500 && r.code <= 599) {
    return core.fail(relayedReply(r, "5.0.0"), `server-refused-${during}`);
  }
  if (r.code >= 400 && r.code <= 499) {
    core.ctx.log.event("smtp.reject", {
      session: core.ctx.id,
      code: r.code,
      reason: `server-deferred-${during}`,
    });
    return core.send(relayedReply(r, "4.0.0"));
  }
  // 1xx/3xx to MAIL/RCPT is not SMTP: the connection cannot be trusted any more.
  link.lost(new RelayError("protocol", `Server answered ${during} with ${r.code}`), during);
}
