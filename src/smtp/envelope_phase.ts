/**
 * The envelope phase: MAIL FROM and RCPT TO, each relayed to the server so the client hears the
 * server's own answer (before-queue proxy).
 *
 * Trusts: nothing from the client (`parseMailArg`/`parseRcptArg` check syntax, control
 * characters, lengths and parameters); the server's replies only through `RelayClient`.
 * Limits: SIZE= above `maxMessageBytes` is refused 552 5.3.4 (RFC 1870) before the server is
 * asked; `maxTransactions` per session (421 4.7.0 and close); `maxRecipients` per transaction
 * (452 4.5.3 for each extra RCPT, RFC 5321 §4.5.3.1.10; errors only past
 * `recipientOvershootLimit` of them). A server's
 * 1xx/3xx to MAIL/RCPT is not SMTP: the relay connection is dropped and the client gets 421.
 *
 * Parameters: SMTPUTF8 (RFC 6531) and the DSN parameters RET, ENVID, NOTIFY, ORCPT (RFC 3461)
 * are accepted only when this session's EHLO offered them (which it does only when the server
 * has them, see `hello_phase.ts`); they are validated (`command.ts`) and relayed verbatim — never
 * dropped, never invented. If the live server connection lacks the extension (a cached profile
 * out of date) the client gets 555 5.5.4, the server's own answer to an unknown parameter.
 * UTF-8 addresses are relayed as the client wrote them (no normalisation).
 */
import { type ParamOffer, parseMailArg, parseRcptArg } from "./command.ts";
import { RelayError } from "./relay_client.ts";
import { reply, type SmtpReply } from "./reply.ts";
import { relayedReply, type SessionCore } from "./session_core.ts";
import { type ServerLink, unsupported } from "./server_link.ts";

/** MAIL FROM: checks, then asks the server; a transaction starts only on the server's 2xx. */
export async function mail(core: SessionCore, link: ServerLink, arg: string): Promise<void> {
  const ctx = core.ctx;
  if (core.helo === undefined) {
    return core.fail(reply(503, "5.5.1", "Error: send HELO/EHLO first"), "mail-before-helo");
  }
  if (core.tx) {
    return core.fail(reply(503, "5.5.1", "Error: nested MAIL command"), "nested-mail");
  }
  const parsed = parseMailArg(arg, paramOffer(core));
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
  // Look-ups on the sender run while the server answers MAIL.
  if (args.address !== "") ctx.prefetch?.({ sender: args.address });
  const r = await link.mail(args.address, {
    size: args.size,
    body: args.body,
    smtputf8: args.smtputf8,
    ret: args.ret,
    envid: args.envid,
    auth: args.auth,
  });
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
      smtputf8: args.smtputf8,
      ret: args.ret,
      envid: args.envid,
      rcpts: [],
      started: performance.now(),
    };
    // SPF needs only the envelope: its DNS lookups run while the client sends RCPT and DATA.
    core.tx.early = ctx.startChecks?.({
      mailFrom: args.address,
      helo: core.helo,
      client: ctx.client,
      sessionId: ctx.id,
      transactionId: core.tx.id,
    });
    return core.send(relayedReply(r, "2.1.0"));
  }
  serverRefused(core, link, r, "mail");
}

/** RCPT TO: checks, then asks the server; the recipient counts only on the server's 2xx. */
export async function rcpt(core: SessionCore, link: ServerLink, arg: string): Promise<void> {
  const ctx = core.ctx;
  const tx = core.tx;
  if (!tx) return core.fail(reply(503, "5.5.1", "Error: need MAIL command"), "rcpt-before-mail");
  if (tx.bdat || core.bdatSkipping) {
    return core.fail(reply(503, "5.5.1", "Error: RCPT after BDAT"), "rcpt-after-bdat");
  }
  const parsed = parseRcptArg(arg, paramOffer(core), tx.smtputf8 === true);
  if (!parsed.ok) return core.fail(parsed.reply, parsed.reason);
  if (tx.rcpts.length >= ctx.smtp.maxRecipients) {
    // RFC 5321 §4.5.3.1.10: 452, and the recipients already accepted are kept. A pipelining
    // client sends them all before it can see the first 452, so the first
    // `recipientOvershootLimit` extra RCPTs are not errors (Postfix's
    // smtpd_recipient_overshoot_limit); every one past that counts towards `maxErrors`, so a
    // client that keeps sending RCPTs is cut off. One log line per transaction, not per 452:
    // the count goes into smtp.close.
    tx.refusedRcpts = (tx.refusedRcpts ?? 0) + 1;
    core.refusedRcpts++;
    if (tx.refusedRcpts === 1) {
      ctx.log.event("smtp.limit", {
        session: ctx.id,
        tx: tx.id,
        limit: "recipients",
        max: ctx.smtp.maxRecipients,
        note: "further refusals in this transaction are counted in smtp.close",
      });
    }
    const r = reply(452, "4.5.3", "Error: too many recipients");
    if (tx.refusedRcpts > ctx.smtp.recipientOvershootLimit) {
      return core.fail(r, "too-many-recipients");
    }
    return core.send(r);
  }
  if (ctx.checkRecipient) {
    // Greylisting at RCPT time, before the server is asked: a deferred recipient never reaches
    // it (the server cannot forget a recipient it accepted), and the client keeps the others.
    const refused = ctx.checkRecipient({
      mailFrom: tx.mailFrom,
      rcptTo: [parsed.value.address],
      client: ctx.client,
      server: ctx.server,
      helo: core.helo ?? "",
      tls: core.tls,
      authenticated: core.authenticated !== undefined,
      sessionId: ctx.id,
      transactionId: tx.id,
    });
    // Logged by the policy (`greylist.defer`); not a client error.
    if (refused) return core.send(reply(refused.code, refused.enhanced, refused.text));
  }
  const relay = link.relay;
  if (!relay) return link.lost(new RelayError("closed", "No relay connection"), "rcpt");
  const params = { notify: parsed.value.notify, orcpt: parsed.value.orcpt };
  const lacking = relay.lacks(params);
  if (lacking) return core.fail(unsupported(lacking), "param-unsupported-upstream");
  let r: SmtpReply;
  try {
    r = await relay.rcpt(parsed.value.address, params);
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

/** The optional parameters this session's EHLO offered. */
function paramOffer(core: SessionCore): ParamOffer {
  return {
    dsn: core.offered.has("DSN"),
    smtputf8: core.offered.has("SMTPUTF8"),
    auth: core.offered.has("AUTH"),
  };
}
