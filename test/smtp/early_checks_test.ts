/**
 * The session starts the policy's envelope checks (SPF) when the server accepted MAIL FROM, one
 * start per transaction, and hands what they return to the judge in `Envelope.early`.
 */
import assert from "node:assert/strict";
import type { SpfOutcome } from "../../src/engines/auth/mail_authenticator.ts";
import type { TransactionStart } from "../../src/policy/verdict.ts";
import { envelope, recordingJudge, transcript } from "./harness.ts";

Deno.test("startChecks runs at each accepted MAIL FROM and its result reaches the judge", async () => {
  const starts: TransactionStart[] = [];
  const spf = (s: TransactionStart): Promise<SpfOutcome> =>
    Promise.resolve({ result: "pass", domain: s.mailFrom.split("@")[1] ?? "", entry: "spf=pass" });
  const judge = recordingJudge();
  const r = await transcript(
    envelope("alice@example.org") + "Subject: a\r\n\r\nx\r\n.\r\n" +
      "MAIL FROM:<>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\nSubject: b\r\n\r\ny\r\n.\r\nQUIT\r\n",
    {
      judge,
      startChecks: (s) => {
        starts.push(s);
        return { spf: spf(s) };
      },
    },
  );
  assert.deepEqual(r.codes, [250, 250, 250, 354, 250, 250, 250, 354, 250, 221]);
  assert.deepEqual(starts.map((s) => [s.mailFrom, s.helo, s.client.ip, s.transactionId]), [
    ["alice@example.org", "client.example", "192.0.2.10", judge.calls[0].envelope.transactionId],
    ["", "client.example", "192.0.2.10", judge.calls[1].envelope.transactionId],
  ]);
  assert.equal((await judge.calls[0].envelope.early?.spf)?.domain, "example.org");
  assert.equal((await judge.calls[1].envelope.early?.spf)?.domain, "");
});

Deno.test("a MAIL FROM the server refuses starts nothing", async () => {
  let started = 0;
  const r = await transcript("EHLO c.example\r\nMAIL FROM:<x@y.example>\r\nQUIT\r\n", {
    upstream: { mail: () => "550 5.7.1 no\r\n" },
    startChecks: () => {
      started++;
      return undefined;
    },
  });
  assert.equal(r.codes[1], 550);
  assert.equal(started, 0);
});
