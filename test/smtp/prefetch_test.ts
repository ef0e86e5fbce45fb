import assert from "node:assert/strict";
import type { EarlyFacts } from "../../src/smtp/session_context.ts";
import { envelope, recordingJudge, transcript } from "./harness.ts";

Deno.test("the session tells prefetch the client at connect, the HELO name at EHLO and the sender at MAIL, before the judge", async () => {
  const seen: (EarlyFacts & { judged: number })[] = [];
  const judge = recordingJudge();
  const r = await transcript(
    envelope("eve@spammer.example") + "Subject: x\r\n\r\nhi\r\n.\r\nMAIL FROM:<>\r\nQUIT\r\n",
    { judge, prefetch: (k) => seen.push({ ...k, judged: judge.calls.length }) },
  );
  assert.deepEqual(r.codes.slice(0, 5), [250, 250, 250, 354, 250]);
  assert.deepEqual(seen, [
    { clientIp: "192.0.2.10", judged: 0 },
    { helo: "client.example", judged: 0 },
    { sender: "eve@spammer.example", judged: 0 },
  ]); // the null sender of the second MAIL is not looked up
});
