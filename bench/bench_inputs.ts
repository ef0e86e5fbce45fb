/**
 * Inputs shared by the policy benches: the same clean text message and the same keyword rules,
 * so that figures from decode_bench.ts and clamav_bench.ts compare.
 */
import type { Rule } from "../src/policy/rule.ts";

/** A clean text/plain message of about `kb` KB, lines folded at 76 characters, CRLF. */
export function textMessage(kb: number): Uint8Array {
  const sentence = "The quarterly report is attached; please review the figures before Friday. ";
  let body = "";
  while (body.length < kb * 1024) body += sentence + (body.length % 7 === 0 ? "\r\n" : "");
  return new TextEncoder().encode(
    "From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: Quarterly report\r\n" +
      "Date: Mon, 30 Nov 2026 05:00:00 +0000\r\nMessage-ID: <bench@example.org>\r\n" +
      "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n" +
      "Content-Transfer-Encoding: 8bit\r\n\r\n" + body.replace(/(.{1,76})(?: |$)/g, "$1\r\n"),
  );
}

/** `n` discard rules on subject/body keywords that the message above never contains. */
export function keywordRules(n: number): Rule[] {
  return Array.from({ length: n }, (_, i) => ({
    name: `kw-${i}`,
    mode: "enforce",
    when: {
      kind: "field",
      field: i % 2 ? "subject" : "body",
      operator: "contains",
      values: [`keyword${i}`],
    },
    actions: [{ type: "discard" }],
  })) as unknown as Rule[];
}
