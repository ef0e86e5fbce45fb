import assert from "node:assert/strict";
import { defectReply, ruleReply } from "../../src/smtp/end_of_data_reply.ts";
import { formatReply } from "../../src/smtp/reply.ts";

const NONE = {
  bareLf: false,
  bareCr: false,
  nul: false,
  lineTooLong: false,
  overSize: false,
  noMemory: false,
};

Deno.test("defectReply picks memory, then size, then NUL, then bare line endings, then long lines", () => {
  const cases: [Partial<typeof NONE>, string, string][] = [
    [{ noMemory: true, overSize: true, nul: true }, "452 4.3.1", "no-memory"],
    [
      { overSize: true, nul: true, bareLf: true, lineTooLong: true },
      "552 5.3.4",
      "message-too-big",
    ],
    [{ nul: true, bareCr: true, lineTooLong: true }, "554 5.6.0", "nul-in-data"],
    [{ bareLf: true, lineTooLong: true }, "550 5.5.2", "bare-lf-in-data"],
    [{ bareCr: true }, "550 5.5.2", "bare-cr-in-data"],
    [{ lineTooLong: true }, "552 5.6.0", "text-line-too-long"],
  ];
  for (const [defects, head, reason] of cases) {
    const r = defectReply({ ...NONE, ...defects }, 1000);
    assert.ok(formatReply(r.reply).startsWith(head + " "), `${head}: ${formatReply(r.reply)}`);
    assert.equal(r.reason, reason);
  }
});

Deno.test("ruleReply never lets a rule answer with success and fixes mismatched enhanced codes", () => {
  const cases: [number, string, string, string][] = [
    [550, "5.7.1", "spam", "550 5.7.1 spam\r\n"],
    [451, "4.7.1", "later", "451 4.7.1 later\r\n"],
    [250, "2.0.0", "ok", "550 5.7.1 ok\r\n"],
    [554, "4.7.1", "mismatch", "554 5.7.1 mismatch\r\n"],
    [550, "bogus", "", "550 5.7.1 Message rejected\r\n"],
    [550.5, "5.7.1", "x", "550 5.7.1 x\r\n"],
  ];
  for (const [code, enhanced, text, wire] of cases) {
    assert.equal(formatReply(ruleReply({ code, enhanced, text })), wire);
  }
});
