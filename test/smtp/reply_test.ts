import assert from "node:assert/strict";
import { formatReply, MAX_REPLY_TEXT, reply, sanitizeText } from "../../src/smtp/reply.ts";
import { splitEnhanced } from "../../src/smtp/relay_client.ts";

Deno.test("formatReply writes the enhanced code on every line of a multi-line reply", () => {
  assert.equal(
    formatReply({ code: 550, enhanced: "5.1.1", lines: ["No such user", "Try again"] }),
    "550-5.1.1 No such user\r\n550 5.1.1 Try again\r\n",
  );
  assert.equal(formatReply({ code: 220, lines: ["mx ESMTP"] }), "220 mx ESMTP\r\n");
  assert.equal(formatReply(reply(250, "2.0.0", "")), "250 2.0.0\r\n");
});

Deno.test("sanitizeText removes control and 8-bit characters and bounds the length", () => {
  assert.equal(sanitizeText("a\r\n250 fake\x00\x7f\u00e4"), "a??250 fake???");
  assert.equal(sanitizeText("x".repeat(1000)).length, MAX_REPLY_TEXT);
});

Deno.test("splitEnhanced takes the server's enhanced code only when its class matches", () => {
  assert.deepEqual(splitEnhanced(550, ["5.1.1 <x@y>: unknown"]), {
    code: 550,
    enhanced: "5.1.1",
    lines: ["<x@y>: unknown"],
  });
  assert.deepEqual(splitEnhanced(550, ["2.1.1 odd"]), {
    code: 550,
    enhanced: undefined,
    lines: ["2.1.1 odd"],
  });
  assert.deepEqual(splitEnhanced(250, ["ok\x1b[31m"]), {
    code: 250,
    enhanced: undefined,
    lines: ["ok?[31m"],
  });
});
