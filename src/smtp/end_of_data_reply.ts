/**
 * The replies the responder gives at end of data on its own behalf: for content it refuses, and
 * for a rule's rejection.
 *
 * Codes (RFC 5321 §4.3.2 lists 552, 554, 451, 452, 450, 550 for end of data):
 * - the shared in-flight memory budget exhausted: 452 4.3.1 (temporary; see memory_budget.ts);
 * - more than `maxMessageBytes`: 552 5.3.4 (RFC 1870 §6, RFC 3463 X.3.4);
 * - a NUL byte: 554 5.6.0 (content not valid for transfer; see data_reader.ts for why);
 * - bare CR or LF under the "reject" policy: 550 5.5.2 (Postfix's reply for the same case);
 * - a text line over `maxTextLine` (RFC 5321 §4.5.3.1.6): 552 5.6.0. 552 rather than the
 *   "500 Line too long" of §4.5.3.1.10, because 500 is not an end-of-data reply in §4.3.2;
 *   rejecting rather than wrapping the line, because wrapping would change signed content.
 *
 * When a message has several defects the first in that order is reported.
 */
import type { Reply } from "../policy/verdict.ts";
import type { DataDefects } from "./data_reader.ts";
import { isEnhancedCode, reply, type SmtpReply } from "./reply.ts";

/** The reply to a message whose content was refused, and a short reason for the logs. */
export function defectReply(
  d: Readonly<DataDefects>,
  maxTextLine: number,
): { reply: SmtpReply; reason: string } {
  if (d.noMemory) {
    // Temporary: the content was not stored because all sessions together hold too much.
    return {
      reply: reply(452, "4.3.1", "Error: insufficient system storage, try again later"),
      reason: "no-memory",
    };
  }
  if (d.overSize) {
    return {
      reply: reply(552, "5.3.4", "Error: message size exceeds fixed maximum message size"),
      reason: "message-too-big",
    };
  }
  if (d.nul) {
    return {
      reply: reply(554, "5.6.0", "Error: message contains a NUL character"),
      reason: "nul-in-data",
    };
  }
  if (d.bareCr || d.bareLf) {
    return {
      reply: reply(550, "5.5.2", "Error: bare CR or LF received; use CRLF line endings"),
      reason: d.bareLf ? "bare-lf-in-data" : "bare-cr-in-data",
    };
  }
  return {
    reply: reply(552, "5.6.0", `Error: message has a line longer than ${maxTextLine} bytes`),
    reason: "text-line-too-long",
  };
}

/**
 * A rule's rejection made safe to send: only 4xx/5xx codes (a rule can never produce a success),
 * an enhanced code of the same class (X.7.1 when missing or mismatched), sanitised text.
 */
export function ruleReply(r: Reply): SmtpReply {
  const okCode = Number.isInteger(r.code) && r.code >= 400 && r.code <= 599;
  const code = okCode ? r.code : 550;
  const cls = String(code)[0];
  const enhanced = isEnhancedCode(r.enhanced) && r.enhanced[0] === cls ? r.enhanced : `${cls}.7.1`;
  return reply(code, enhanced, r.text || "Message rejected");
}
