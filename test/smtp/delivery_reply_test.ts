/**
 * A discard looks like a delivery: the 250 for a discarded/quarantined message copies the shape of
 * the server's own delivery reply with a fresh id (issue 7).
 */
import assert from "node:assert/strict";
import { deliveryLikeReply } from "../../src/smtp/delivery_reply.ts";
import { ServerProfiles } from "../../src/smtp/server_profiles.ts";
import { codes, envelope, recordingJudge, transcript } from "./harness.ts";

const MSG = "Subject: hi\r\n\r\nbody\r\n";

Deno.test("A Postfix long queue id is replaced by a fresh one of the same length and alphabet", () => {
  const shape = { code: 250, enhanced: "2.0.0", lines: ["Ok: queued as 4Fh9kQ1z2Sz9vK"] };
  const a = deliveryLikeReply(shape);
  const b = deliveryLikeReply(shape);
  assert.equal(a.enhanced, "2.0.0");
  assert.match(a.lines[0], /^Ok: queued as [0-9A-Za-z]{14}$/);
  assert.notEqual(a.lines[0], shape.lines[0]);
  assert.notEqual(a.lines[0], b.lines[0]);
});

Deno.test("Hex, digit and Exim-style ids keep their alphabet; words without digits stay", () => {
  const hex = deliveryLikeReply({ code: 250, lines: ["Ok: queued as 3A2F41C0E9"] });
  assert.match(hex.lines[0], /^Ok: queued as [0-9A-F]{10}$/);
  const exim = deliveryLikeReply({ code: 250, lines: ["OK id=1tAbcD-00012x-Ab"] });
  assert.match(exim.lines[0], /^OK id=[0-9A-Za-z]{6}-[0-9a-z]{6}-Ab$/);
  const sendmail = deliveryLikeReply({
    code: 250,
    lines: ["4ABCDEF123456 Message accepted for delivery"],
  });
  assert.match(sendmail.lines[0], /^[0-9A-Z]{13} Message accepted for delivery$/);
});

Deno.test("Without a learnt shape the reply is Postfix's, with a fresh 10-digit hex id", () => {
  assert.match(deliveryLikeReply(undefined).lines[0], /^Ok: queued as [0-9A-F]{10}$/);
});

Deno.test("After a delivery to the server, a discard's 250 has the server's reply shape, not SSG's id", async () => {
  const profiles = new ServerProfiles();
  let n = 0;
  const upstream = { dataEnd: () => `250 2.0.0 Ok: queued as 4Fh9kQ1z2Sz9v${n++}` };
  const first = await transcript(envelope() + MSG + ".\r\nQUIT\r\n", { profiles, upstream });
  assert.match(first.output, /250 2\.0\.0 Ok: queued as 4Fh9kQ1z2Sz9v0\r\n/);
  const judge = recordingJudge(() => ({ action: "discard", rule: "spam" }));
  const r = await transcript(envelope() + MSG + ".\r\nQUIT\r\n", { profiles, upstream, judge });
  assert.deepEqual(codes(r.output).slice(-2), [250, 221]);
  const line = r.output.split("\r\n").find((l) => l.startsWith("250 2.0.0 Ok: queued as"));
  assert.ok(line, r.output);
  assert.match(line!, /^250 2\.0\.0 Ok: queued as [0-9A-Za-z]{14}$/);
  assert.ok(!line!.includes("S1"));
  assert.equal(r.servers[0].messages.length, 0);
});
