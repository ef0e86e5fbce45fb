/**
 * The content phase: DATA, receiving the message bytes up to the one true end of data, and BDAT
 * (RFC 3030 CHUNKING), receiving them as counted chunks.
 *
 * BDAT: a chunk's bytes are read as bytes, counted exactly, and NEVER parsed as commands —
 * whatever happens to the command. CHUNKING is offered only when the mirrored server has it
 * (`hello_phase.ts`); a BDAT when it was not offered, or with bad syntax, gets Postfix's answer
 * (521 5.5.1 / 521 5.5.4) and the session closes, because the next input would be raw content
 * (Postfix's smtpd hangs up the same way). Otherwise Postfix's rules: BDAT without a
 * transaction 503 5.5.1, without recipients 554 5.5.1, "BDAT 0" without LAST 551 5.7.1, a
 * chunk past the size limit 552 5.3.4 — each chunk read and discarded (up to 1.5 times the size
 * limit; past that the session closes, it cannot stay in step) — and after a failed non-final
 * chunk every further chunk is discarded with 551 5.0.0 until LAST or RSET. Each accepted
 * non-final chunk gets "250 2.0.0 Ok: N bytes"; after LAST the chunks are judged as one message
 * by the outcome phase, exactly like DATA, and relayed as one BDAT LAST when the server offers
 * CHUNKING (else as DATA, dot-stuffed). DATA and RCPT after BDAT get 503 5.5.1. The chunks go
 * through the same `DataReader` (raw mode) as DATA: size limit across all chunks, shared memory
 * budget, NUL and bare line-ending rules.
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
import { reply, type SmtpReply } from "./reply.ts";
import type { SessionCore, Transaction } from "./session_core.ts";
import type { ServerLink } from "./server_link.ts";

/** DATA: 354, the message, then the outcome phase decides and answers. */
export async function data(core: SessionCore, link: ServerLink, arg: string): Promise<void> {
  if (arg !== "") return core.fail(reply(501, "5.5.4", "Syntax: DATA"), "data-syntax");
  const tx = core.tx;
  if (!tx) return core.fail(reply(503, "5.5.1", "Error: need MAIL command"), "data-before-mail");
  if (tx.bdat || core.bdatSkipping) {
    return core.fail(reply(503, "5.5.1", "Error: DATA after BDAT"), "data-after-bdat");
  }
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

function newReader(core: SessionCore, raw: boolean): DataReader {
  const smtp = core.ctx.smtp;
  return new DataReader({
    maxMessageBytes: smtp.maxMessageBytes,
    maxTextLine: smtp.maxTextLine,
    bareLineEndings: smtp.bareLineEndings,
    longLines: smtp.longLines,
    budget: core.ctx.memory,
    raw,
  });
}

/** BDAT n [LAST]: one chunk (see the module comment). */
export async function bdat(core: SessionCore, link: ServerLink, arg: string): Promise<void> {
  const ctx = core.ctx;
  if (!core.offered.has("CHUNKING")) {
    return hangUp(core, reply(521, "5.5.1", "Error: command not implemented"), "bdat-not-offered");
  }
  const m = /^([0-9]{1,15})(?: +(LAST))?$/i.exec(arg);
  if (!m) return hangUp(core, reply(521, "5.5.4", "Syntax: BDAT count [LAST]"), "bdat-syntax");
  const size = Number(m[1]);
  const last = m[2] !== undefined;
  const skip = (r: SmtpReply, reason: string) => skipChunk(core, link, size, last, r, reason);
  if (core.bdatSkipping) {
    return await skip(
      reply(551, "5.0.0", `Discarded ${size} bytes after earlier error`),
      "bdat-after-error",
    );
  }
  if (size === 0 && !last) return await skip(reply(551, "5.7.1", "Null BDAT request"), "bdat-null");
  const tx = core.tx;
  if (!tx) return await skip(reply(503, "5.5.1", "Error: need RCPT command"), "bdat-before-mail");
  if (tx.rcpts.length === 0) {
    return await skip(reply(554, "5.5.1", "Error: no valid recipients"), "bdat-no-rcpt");
  }
  tx.chunked = true;
  tx.bdat ??= { reader: newReader(core, true), started: performance.now() };
  const st = tx.bdat;
  if (st.reader.received + size > ctx.smtp.maxMessageBytes) {
    ctx.log.event("smtp.limit", {
      session: ctx.id,
      tx: tx.id,
      limit: "message-size",
      max: ctx.smtp.maxMessageBytes,
      value: st.reader.received + size,
    });
    return await skip(reply(552, "5.3.4", "Chunk exceeds message size limit"), "bdat-too-big");
  }
  const got = await readExact(core, size, (b) => st.reader.push(b));
  if (got !== "ok") return await abortData(core, link, tx, got);
  if (!last) return core.send(reply(250, "2.0.0", `Ok: ${size} bytes`));
  // LAST: the chunks are one message, judged and answered like DATA.
  tx.bdat = undefined;
  st.reader.finish();
  try {
    await endOfData(core, link, tx, st.reader, st.started);
  } finally {
    st.reader.dispose();
  }
}

/** A BDAT that cannot be read in step: the reply, and the session closes (as Postfix). */
function hangUp(core: SessionCore, r: SmtpReply, reason: string): void {
  core.fail(r, reason);
  core.end ??= "protocol-error";
}

/**
 * Reads and discards a refused chunk (never parsed), then answers. A LAST chunk ends the
 * transaction; a non-final one makes every further chunk be discarded until LAST or RSET.
 */
async function skipChunk(
  core: SessionCore,
  link: ServerLink,
  size: number,
  last: boolean,
  r: SmtpReply,
  reason: string,
): Promise<void> {
  if (size > core.ctx.smtp.maxMessageBytes * 1.5) {
    // Too much to read just to stay in step (Postfix's bound): answer and close.
    core.fail(r, reason);
    core.end ??= "limit";
    return;
  }
  const tx = core.tx;
  const got = await readExact(core, size, () => {});
  if (got !== "ok") {
    if (tx) return await abortData(core, link, tx, got);
    return stop(core, got);
  }
  core.fail(r, reason);
  if (last) {
    core.bdatSkipping = false;
    core.tx = undefined;
    await link.reset();
  } else {
    core.bdatSkipping = true;
  }
}

type ReadStop = "timeout" | "session" | "aborted" | "eof";

/**
 * Reads exactly `n` bytes of chunk data into `sink` (bytes after them are the client's next
 * commands and stay unread). Each block within the data timeout, all within the session deadline.
 */
async function readExact(
  core: SessionCore,
  n: number,
  sink: (bytes: Uint8Array) => void,
): Promise<"ok" | ReadStop> {
  const dataMs = secondsToMs(core.ctx.smtp.timeouts.data);
  let left = n;
  while (left > 0) {
    const remaining = core.deadline - performance.now();
    if (remaining <= 0) return "session";
    // RFC 2920: replies waiting in the buffer are written before any wait for input.
    if (core.reader.buffered === 0 && !(await core.flush())) return "eof";
    const c = await core.reader.readChunk(Math.min(dataMs, remaining), core.ctx.shutdown);
    if (c.kind === "data") {
      const take = Math.min(left, c.bytes.length);
      sink(c.bytes.subarray(0, take));
      left -= take;
      if (take < c.bytes.length) core.reader.unread(c.bytes.length - take);
      continue;
    }
    if (c.kind === "timeout") return dataMs < remaining ? "timeout" : "session";
    return c.kind;
  }
  return "ok";
}

/** Ends the session for a chunk read cut short. */
function stop(core: SessionCore, why: ReadStop): void {
  if (why === "timeout") core.timeout("data");
  else if (why === "session") core.timeout("session");
  else if (why === "aborted") core.shutdownNow();
  else core.end ??= "client-closed";
}

/** Reads the message up to CRLF.CRLF; undefined when cut short (the session then ends). */
async function receive(
  core: SessionCore,
  link: ServerLink,
  tx: Transaction,
): Promise<DataReader | undefined> {
  const dr = newReader(core, false);
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
  then: (() => void) | ReadStop,
): Promise<undefined> {
  core.tx = undefined;
  if (typeof then === "function") then();
  else stop(core, then);
  core.ctx.log.event("smtp.abort", { session: core.ctx.id, tx: tx.id, reason: core.end });
  await link.reset();
}
