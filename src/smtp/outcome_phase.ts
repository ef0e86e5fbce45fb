/**
 * The verdict/outcome phase, after the whole message is in: refuse defective content, ask the
 * judge, carry out its verdict (discard, reject, tempfail, quarantine, bcc, redirect, forward),
 * and give the client exactly one end-of-data reply.
 *
 * A discard, quarantine or redirect is answered with a 250 shaped like the server's own
 * delivery reply (`delivery_reply.ts`): the reply never tells a filtered message apart.
 *
 * Promises kept (MISSION.md, reliability-anchors §1.7 model A): the client never hears 250 to
 * end-of-data unless the server said 250 to our copy, a redirect/bcc target said 250, or a rule
 * discarded or quarantined the message on purpose (a quarantined message is fsync'd first). Any
 * failure on the way (server unreachable, judge failure or timeout, server timeout) is a 4xx, so
 * the sender keeps the message (RFC 5321 §4.5.4.1). The transaction (MAIL, RCPTs) ends here
 * whatever happens (§4.1.1.4; the Postfix 20260803 bug: RCPT+DATA without a new MAIL must get 503).
 *
 * Trusts: the judge only through `judge()` (time-bounded, its verdict checked); server replies
 * only through `RelayClient`. Limits: `judgeTimeoutMs` (default 2 minutes, 451 4.3.0 past it).
 */
import type { Envelope, Verdict } from "../policy/verdict.ts";
import type { DataReader } from "./data_reader.ts";
import { raceDeadline } from "./deadline.ts";
import { deliveryLikeReply } from "./delivery_reply.ts";
import { defectReply, ruleReply } from "./end_of_data_reply.ts";
import { receivedHeader } from "./received_header.ts";
import { RelayError } from "./relay_client.ts";
import { reply, replySummary, type SmtpReply } from "./reply.ts";
import { relayedReply, type SessionCore, type Transaction } from "./session_core.ts";
import type { ServerLink } from "./server_link.ts";

/** Default longest wait for the judge (2 minutes: well inside the client's 10-minute wait for
 * the end-of-data reply, RFC 5321 §4.5.3.2.6, leaving room for the server's own reply). */
export const DEFAULT_JUDGE_TIMEOUT_MS = 120_000;

const VERDICT_ACTIONS: ReadonlySet<string> = new Set([
  "forward",
  "discard",
  "reject",
  "tempfail",
  "quarantine",
]);

const encoder = new TextEncoder();

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

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/** The message is complete (`dr.done`): refuse, judge, act, answer. */
export async function endOfData(
  core: SessionCore,
  link: ServerLink,
  tx: Transaction,
  dr: DataReader,
  tReceive: number,
): Promise<void> {
  const ctx = core.ctx;
  // The transaction ends here whatever happens next (RFC 5321 §4.1.1.4).
  core.tx = undefined;
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
      await link.reset();
      core.send(r);
      core.counts.failed++;
      return messageLog(core, { ...outcome, verdict: "tempfail", rule: reason, reply: r });
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
    await link.reset();
    core.counts.rejected++;
    core.fail(r, reason);
    return messageLog(core, { ...outcome, verdict: "rejected", rule: reason, reply: r });
  }

  const message = dr.message();
  const envelope: Envelope = {
    mailFrom: tx.mailFrom,
    rcptTo: [...tx.rcpts],
    client: ctx.client,
    server: ctx.server,
    helo: core.helo ?? "",
    ...(core.authenticated ? { authUser: core.authenticated } : {}),
    tls: core.tls,
    authenticated: core.authenticated !== undefined,
    sessionId: ctx.id,
    transactionId: tx.id,
  };
  if (tx.early) envelope.early = tx.early;
  const tJudge = performance.now();
  const verdict = await judge(core, message, envelope);
  outcome.judgeMs = performance.now() - tJudge;

  if (verdict instanceof Error) {
    ctx.log.event(
      "policy.error",
      { session: ctx.id, tx: tx.id, error: verdict.message },
      "error",
    );
    await link.reset();
    const r = reply(451, "4.3.0", "Error: temporary local problem, try again later");
    core.send(r);
    core.counts.failed++;
    return messageLog(core, { ...outcome, verdict: "error", reply: r });
  }
  outcome.rule = verdict.rule;
  outcome.evidence = verdict.evidence;
  const code = await act(core, link, tx, verdict, message, envelope, outcome);
  // Side effects (alerts, blacklists, counters) only once the client has its answer; they get
  // the message as received (the alert loop mark is an X-SSG-* field transform() strips).
  if (code !== undefined) ctx.actions?.after(verdict, envelope, { code }, message);
}

/** Carries out a verdict; returns the code the client got (undefined if the session ended). */
async function act(
  core: SessionCore,
  link: ServerLink,
  tx: Transaction,
  verdict: Verdict,
  message: Uint8Array,
  envelope: Envelope,
  outcome: Outcome,
): Promise<number | undefined> {
  const ctx = core.ctx;
  const actions = ctx.actions;
  const needsActions = verdict.action === "quarantine" || verdict.tag !== undefined ||
    (verdict.deliveries?.length ?? 0) > 0;
  if (needsActions && !actions) {
    ctx.log.event("policy.error", {
      session: ctx.id,
      tx: tx.id,
      error: `verdict "${verdict.action}" of rule ${verdict.rule} needs the action modules`,
    }, "error");
    await link.reset();
    return answer(
      core,
      reply(451, "4.3.0", "Error: temporary local problem, try again later"),
      outcome,
      "error",
      "failed",
    );
  }
  if (verdict.action === "discard") {
    // A deliberate drop: the client hears an ordinary success (never "discarded").
    await link.reset();
    return answer(
      core,
      deliveryLike(core),
      outcome,
      "discard",
      "discarded",
    );
  }
  if (verdict.action === "reject" || verdict.action === "tempfail") {
    await link.reset();
    return answer(
      core,
      ruleReply(verdict.reply),
      outcome,
      verdict.action,
      verdict.action === "reject" ? "rejected" : "failed",
    );
  }
  // From here on the message goes somewhere: as the server would have received it, with our
  // Received header and the verdict's tag.
  const out = actions ? actions.transform(message, verdict) : message;
  const header = encoder.encode(received(core, tx));
  // The whole message as one buffer, for quarantine/bcc/redirect: built once, when first needed
  // (the relay to the server takes header and body as two parts and needs no copy).
  let whole: Uint8Array | undefined;
  const full = () => whole ??= concat(header, out);
  if (verdict.action === "quarantine") {
    await link.reset();
    const bytes = full();
    try {
      // 250 only after the store has fsync'd the message (never before it is safe).
      const id = await actions!.quarantine(bytes, envelope, verdict);
      outcome.evidence = `${outcome.evidence ?? ""}${
        outcome.evidence ? "; " : ""
      }quarantine id ${id}`;
      return answer(
        core,
        deliveryLike(core),
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
      return answer(
        core,
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
      await link.reset();
      return answer(
        core,
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
    await link.reset();
    const tRelay = performance.now();
    const r = await actions!.deliver(redirect, full(), envelope);
    outcome.relayMs = performance.now() - tRelay;
    if (r.code === 250) {
      return answer(
        core,
        deliveryLike(core),
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
    return answer(
      core,
      reply(451, "4.4.1", "Error: temporary local problem, try again later"),
      outcome,
      "redirect-failed",
      "failed",
    );
  }
  return await forward(core, link, header, out, outcome, tx.chunked === true);
}

/** Sends the end-of-data reply, counts and logs it; returns its code. */
function answer(
  core: SessionCore,
  r: SmtpReply,
  outcome: Outcome,
  verdict: string,
  count: "forwarded" | "discarded" | "rejected" | "failed",
): number {
  core.send(r);
  core.counts[count]++;
  messageLog(core, { ...outcome, verdict, reply: r });
  return r.code;
}

/** A 250 for a message not delivered to the server (discard, quarantine, redirect) that reads
 * like the server's own delivery reply (see `delivery_reply.ts`). */
function deliveryLike(core: SessionCore): SmtpReply {
  const shape = core.ctx.profiles?.get(core.ctx.server)?.deliveryReply;
  return relayedReply(deliveryLikeReply(shape), "2.0.0");
}

/** Our Received header for the transaction (RFC 5321 §4.4). */
function received(core: SessionCore, tx: Transaction): string {
  const ctx = core.ctx;
  return receivedHeader({
    helo: core.helo ?? "",
    clientIp: ctx.client.ip,
    hostname: ctx.hostname,
    protocol: tx.smtputf8
      ? (core.tls ? "UTF8SMTPS" : "UTF8SMTP")
      : core.tls && core.protocol === "ESMTP"
      ? "ESMTPS"
      : core.protocol,
    id: tx.id,
    recipients: tx.rcpts,
    date: ctx.clock ? ctx.clock() : new Date(),
  });
}

/**
 * Relays the message to the server and gives the client the server's final reply. Only the
 * server's 250 becomes a 250; its 4xx/5xx pass through; anything else, or a lost connection,
 * is a 4xx (the client keeps the message).
 */
async function forward(
  core: SessionCore,
  link: ServerLink,
  header: Uint8Array,
  message: Uint8Array,
  outcome: Outcome,
  chunked: boolean,
): Promise<number | undefined> {
  const relay = link.relay;
  const tRelay = performance.now();
  if (!relay) {
    link.lost(new RelayError("closed", "No relay connection"), "data");
    core.counts.failed++;
    messageLog(core, { ...outcome, verdict: "forward-failed" });
    return undefined;
  }
  let sr: SmtpReply;
  try {
    // A message that came in BDAT chunks goes on as BDAT when the server offers CHUNKING (the
    // bytes unchanged, no dot-stuffing); otherwise, and for DATA, as DATA, dot-stuffed.
    sr = chunked && relay.extensions.has("CHUNKING")
      ? await relay.bdat(header, message)
      : await relay.data(header, message);
  } catch (e) {
    outcome.relayMs = performance.now() - tRelay;
    link.lost(e, "data");
    core.counts.failed++;
    messageLog(core, { ...outcome, verdict: "forward-failed" });
    return undefined;
  }
  outcome.relayMs = performance.now() - tRelay;
  link.inTransaction = false;
  let r: SmtpReply;
  if (sr.code === 250) {
    r = relayedReply(sr, "2.0.0");
    core.counts.forwarded++;
    core.ctx.profiles?.delivered(core.ctx.server, r);
  } else if (sr.code >= 400 && sr.code <= 599) {
    r = relayedReply(sr, `${String(sr.code)[0]}.0.0`);
    if (sr.code >= 500) core.counts.rejected++;
    else core.counts.failed++;
    // After a refused DATA the server may still hold our MAIL (e.g. DATA answered 451).
    link.inTransaction = true;
    if (link.closing(sr)) {
      core.send(r);
      messageLog(core, { ...outcome, verdict: "forward", reply: r });
      return r.code;
    }
    await link.reset();
  } else {
    // Never 250 unless the server said 250: any other success-looking code is a failure.
    link.error(new RelayError("protocol", `Server answered end of data with ${sr.code}`), "data");
    link.drop();
    r = reply(451, "4.4.2", "Error: unexpected reply from the mail server, try again later");
    core.counts.failed++;
  }
  core.send(r);
  messageLog(core, { ...outcome, verdict: "forward", reply: r });
  return r.code;
}

/** Runs the judge with a time bound; an Error means "answer 451". */
async function judge(
  core: SessionCore,
  message: Uint8Array,
  envelope: Envelope,
): Promise<Verdict | Error> {
  const ms = core.ctx.judgeTimeoutMs ?? DEFAULT_JUDGE_TIMEOUT_MS;
  let p: Promise<Verdict | Error>;
  try {
    p = core.ctx.judge(message, envelope).then(
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

/** The `message` log line. */
function messageLog(core: SessionCore, m: Outcome): void {
  const ctx = core.ctx;
  ctx.log.event("message", {
    session: ctx.id,
    txid: m.tx.id,
    client: ctx.client.ip,
    server: ctx.server.ip,
    from: m.tx.mailFrom,
    rcpts: m.tx.rcpts,
    auth: core.authenticated,
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
