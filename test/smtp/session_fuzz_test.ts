/**
 * Randomised transcripts (seeded, reproducible): a mix of valid commands, broken commands,
 * smuggling fragments, control bytes and long runs, cut into random segments. Whatever the input,
 * the session must end, answer only with well-formed replies, and forward only canonical messages
 * (CRLF only, no NUL) — and never more messages than it answered 250 to after a 354.
 */
import assert from "node:assert/strict";
import { prngFraction } from "../packet/packet_helpers.ts";
import { codes, transcript } from "./harness.ts";
import { SMUGGLING_SEQUENCES } from "./smuggling_sequences.ts";

const TOKENS = [
  "EHLO c.example\r\n",
  "HELO c\r\n",
  "MAIL FROM:<a@example.org>\r\n",
  "MAIL FROM:<a@example.org> SIZE=100\r\n",
  "MAIL FROM:<>\r\n",
  "RCPT TO:<b@example.net>\r\n",
  "RCPT TO:<c@example.net>\r\n",
  "RCPT TO:<bad address>\r\n",
  "DATA\r\n",
  "Subject: x\r\n\r\n",
  "body line\r\n",
  "..stuffed\r\n",
  ".\r\n",
  "\r\n.\r\n",
  "RSET\r\n",
  "NOOP\r\n",
  "VRFY x\r\n",
  "BDAT 5\r\n",
  "\x00",
  "\r",
  "\n",
  ".",
  "\xff\xfe",
  "MAIL FROM:<ceo@trusted.example>\r\n",
  ...SMUGGLING_SEQUENCES.map(([, s]) => s),
];

const BODY_TOKENS = [
  "Subject: x\r\n\r\n",
  "body line\r\n",
  "..stuffed\r\n",
  ".x",
  "\x00",
  "\r",
  "\n",
  ".",
  "\xe4\xf6",
  "MAIL FROM:<ceo@trusted.example>\r\nRCPT TO:<v@example.net>\r\nDATA\r\n",
  ...SMUGGLING_SEQUENCES.map(([, s]) => s),
];

function pick<T>(next: () => number, list: readonly T[]): T {
  return list[Math.floor(next() * list.length)];
}

function randomInput(next: () => number): string[] {
  let s = next() < 0.9 ? "EHLO c.example\r\n" : "";
  const segments = 1 + Math.floor(next() * 4);
  for (let k = 0; k < segments; k++) {
    if (next() < 0.3) {
      // Noise: random commands and bytes.
      const n = 1 + Math.floor(next() * 10);
      for (let i = 0; i < n; i++) {
        s += next() < 0.05 ? "x".repeat(Math.floor(next() * 1200)) : pick(next, TOKENS);
      }
      continue;
    }
    // A transaction, mostly well-formed, with a body full of hazards.
    s += pick(next, [
      "MAIL FROM:<a@example.org>\r\n",
      "MAIL FROM:<>\r\n",
      "MAIL FROM:<a@example.org> SIZE=100\r\n",
    ]);
    const rcpts = Math.floor(next() * 3);
    for (let i = 0; i < rcpts; i++) {
      s += pick(next, ["RCPT TO:<b@example.net>\r\n", "RCPT TO:<bad address>\r\n"]);
    }
    s += "DATA\r\n";
    const n = Math.floor(next() * 12);
    for (let i = 0; i < n; i++) s += next() < 0.6 ? "body line\r\n" : pick(next, BODY_TOKENS);
    s += "\r\n.\r\n";
  }
  s += "QUIT\r\n";
  // Random segmentation.
  const chunks: string[] = [];
  for (let i = 0; i < s.length;) {
    const len = 1 + Math.floor(next() * 64);
    chunks.push(s.slice(i, i + len));
    i += len;
  }
  return chunks;
}

Deno.test("Random transcripts: the session always ends, replies are well-formed, only canonical mail is forwarded", async () => {
  const seen = { forwarded: 0, rejected: 0, sessionsWithData: 0 };
  for (const policy of ["reject", "normalize"] as const) {
    for (let seed = 1; seed <= 150; seed++) {
      const next = prngFraction(seed * 7919 + (policy === "reject" ? 0 : 1));
      const chunks = randomInput(next);
      const r = await transcript(chunks, {
        smtp: {
          bareLineEndings: policy,
          maxErrors: 1000,
          timeouts: { command: 1, data: 1, session: 5 },
        },
        endInput: true,
      });
      const where = `policy ${policy}, seed ${seed}: ${
        JSON.stringify(chunks.join("")).slice(0, 300)
      }`;
      // Every output line is a reply line.
      const lines = r.output.split("\r\n");
      assert.equal(lines.pop(), "", where);
      for (const line of lines) assert.match(line, /^\d{3}[ -][\x20-\x7e]*$/, where);
      assert.ok(r.result.end !== "internal-error", where);
      // 250 after 354 is the only way a message is accepted; forwarded messages are canonical.
      const cs = codes(r.output);
      let accepted = 0;
      for (let i = 1; i < cs.length; i++) if (cs[i - 1] === 354 && cs[i] === 250) accepted++;
      const delivered = r.servers.reduce((n, s) => n + s.messages.length, 0);
      seen.forwarded += delivered;
      seen.rejected += r.result.rejected;
      if (cs.includes(354)) seen.sessionsWithData++;
      assert.equal(delivered, r.result.forwarded, where);
      assert.ok(delivered <= accepted, where);
      for (const s of r.servers) {
        for (const m of s.messages) {
          assert.equal(/\r(?!\n)|(?<!\r)\n/.test(m.wire) || m.wire.includes("\0"), false, where);
        }
      }
    }
  }
  // The generator must reach the interesting paths, or this test proves little.
  assert.ok(
    seen.forwarded > 50 && seen.rejected > 50 && seen.sessionsWithData > 100,
    JSON.stringify(seen),
  );
});
