/**
 * The content phase: DATA, receiving the message bytes up to the one true end of data.
 *
 * Trusts: nothing; every byte goes through `DataReader` (end of data only on CRLF.CRLF, the
 * smuggling defences, dot-unstuffing, line and size limits, the shared memory budget).
 * Limits: each block within `smtp.timeouts.data` (RFC 5321 §4.5.3.2.5), or, with
 * `minDataRate`, a Postfix-style request deadline that grows with the bytes received; the
 * whole-session deadline. A message cut short (timeout, shutdown, client gone) is dropped and
 * the server's transaction reset: nothing is kept, nothing half-sent.
 */
import { DataReader } from "./data_reader.ts";
import { secondsToMs } from "./deadline.ts";
import { endOfData } from "./outcome_phase.ts";
import { reply } from "./reply.ts";
import type { SessionCore, Transaction } from "./session_core.ts";
import type { ServerLink } from "./server_link.ts";

/** DATA: 354, the message, then the outcome phase decides and answers. */
export async function data(core: SessionCore, link: ServerLink, arg: string): Promise<void> {
  if (arg !== "") return core.fail(reply(501, "5.5.4", "Syntax: DATA"), "data-syntax");
  const tx = core.tx;
  if (!tx) return core.fail(reply(503, "5.5.1", "Error: need MAIL command"), "data-before-mail");
  if (tx.rcpts.length === 0) {
    return core.fail(reply(554, "5.5.1", "Error: no valid recipients"), "data-no-rcpt");
  }
  core.send({ code: 354, lines: ["End data with <CR><LF>.<CR><LF>"] });
  if (!(await core.flush())) return;

  const tReceive = performance.now();
  const dr = await receive(core, link, tx);
  if (!dr) return;
  try {
    await endOfData(core, link, tx, dr, tReceive);
  } finally {
    // The message is no longer held: its bytes go back to the shared in-flight budget.
    dr.dispose();
  }
}

/** Reads the message up to CRLF.CRLF; undefined when cut short (the session then ends). */
async function receive(
  core: SessionCore,
  link: ServerLink,
  tx: Transaction,
): Promise<DataReader | undefined> {
  const ctx = core.ctx;
  const dr = new DataReader({
    maxMessageBytes: ctx.smtp.maxMessageBytes,
    maxTextLine: ctx.smtp.maxTextLine,
    bareLineEndings: ctx.smtp.bareLineEndings,
    budget: ctx.memory,
  });
  const got = await receiveInto(core, link, tx, dr);
  // Cut short: nothing is kept, and the bytes go back to the shared budget.
  if (!got) dr.dispose();
  return got;
}

async function receiveInto(
  core: SessionCore,
  link: ServerLink,
  tx: Transaction,
  dr: DataReader,
): Promise<DataReader | undefined> {
  const ctx = core.ctx;
  const dataMs = secondsToMs(ctx.smtp.timeouts.data);
  const rate = ctx.minDataRate && ctx.minDataRate > 0 ? ctx.minDataRate : undefined;
  let requestDeadline = performance.now() + dataMs;
  while (!dr.done) {
    const now = performance.now();
    const left = core.deadline - now;
    if (left <= 0) return await abortData(core, link, tx, () => core.timeout("session"));
    const blockMs = rate ? Math.max(0, requestDeadline - now) : dataMs;
    const c = await core.reader.readChunk(Math.min(blockMs, left), ctx.shutdown);
    if (c.kind === "data") {
      const used = dr.push(c.bytes);
      if (rate) requestDeadline += (used / rate) * 1000;
      // Bytes after CRLF.CRLF are the client's next (pipelined) commands.
      if (dr.done) core.reader.unread(c.bytes.length - used);
      continue;
    }
    if (c.kind === "timeout") {
      const phase = blockMs < left ? (rate ? "data-rate" : "data") : "session";
      return await abortData(core, link, tx, () => core.timeout(phase));
    }
    if (c.kind === "aborted") return await abortData(core, link, tx, () => core.shutdownNow());
    return await abortData(core, link, tx, () => (core.end = "client-closed"));
  }
  return dr;
}

/** The message was cut short (timeout, shutdown, client gone): nothing is kept. */
async function abortData(
  core: SessionCore,
  link: ServerLink,
  tx: Transaction,
  then: () => void,
): Promise<undefined> {
  core.tx = undefined;
  then();
  core.ctx.log.event("smtp.abort", { session: core.ctx.id, tx: tx.id, reason: core.end });
  await link.reset();
}
