/**
 * Randomised BDAT transcripts (seeded, reproducible) against a mirrored server that offers
 * CHUNKING, SMTPUTF8 and DSN: chunks whose bytes are smuggling fragments and command lines, counts
 * that are right, short or absent, pipelined in random segments. Whatever the input the session
 * ends, replies are well-formed, no chunk byte is ever executed as a command (the marker command
 * inside chunks never reaches the server), every forwarded message was answered 250, and the
 * shared memory budget is back to zero.
 */
import assert from "node:assert/strict";
import { MemoryBudget } from "../../src/smtp/memory_budget.ts";
import { ServerProfiles } from "../../src/smtp/server_profiles.ts";
import { prngFraction } from "../packet/packet_helpers.ts";
import { transcript } from "./harness.ts";
import { SMUGGLING_SEQUENCES } from "./smuggling_sequences.ts";

const EHLO = "250-server.example\r\n250-PIPELINING\r\n250-SIZE 50000000\r\n250-8BITMIME\r\n" +
  "250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";
/** A command that must never reach the server: it only ever appears inside chunk bytes. */
const MARKER = "MAIL FROM:<marker@smuggled.example>\r\n";
const PIECES = [
  "Subject: x\r\n\r\n",
  "line\r\n",
  ".\r\n",
  "\r\n.\r\n",
  MARKER,
  "RSET\r\n",
  "QUIT\r\n",
  "BDAT 3 LAST\r\n",
  ...SMUGGLING_SEQUENCES.map(([, s]) => s),
];

function pick<T>(next: () => number, list: readonly T[]): T {
  return list[Math.floor(next() * list.length)];
}

/** The input in random segments; `exact`: every BDAT count matches its chunk, so the marker
 * is only ever inside chunk bytes (with a wrong count the chunk boundary moves for any server). */
function randomInput(next: () => number): { chunks: string[]; exact: boolean } {
  let exact = true;
  let s = "EHLO c.example\r\n";
  const tx = 1 + Math.floor(next() * 3);
  for (let t = 0; t < tx; t++) {
    if (next() < 0.9) s += "MAIL FROM:<a@example.org>\r\n";
    if (next() < 0.9) s += "RCPT TO:<b@example.net>\r\n";
    const chunks = Math.floor(next() * 4);
    for (let c = 0; c <= chunks; c++) {
      let body = "";
      const n = Math.floor(next() * 6);
      for (let i = 0; i < n; i++) body += pick(next, PIECES);
      const last = c === chunks;
      const r = next();
      // Mostly exact counts; sometimes a count past the body (the next commands become chunk
      // bytes, as they would for a real server); rarely a malformed command.
      const count = r < 0.8 ? body.length : r < 0.95 ? body.length + Math.floor(next() * 20) : -1;
      if (count !== body.length && count >= 0) exact = false;
      s += count < 0 ? "BDAT x\r\n" : `BDAT ${count}${last ? " LAST" : ""}\r\n`;
      s += body;
    }
    if (next() < 0.2) s += "RSET\r\n";
  }
  s += "QUIT\r\n";
  const out: string[] = [];
  for (let i = 0; i < s.length;) {
    const len = 1 + Math.floor(next() * 64);
    out.push(s.slice(i, i + len));
    i += len;
  }
  return { chunks: out, exact };
}

Deno.test("Random BDAT transcripts: the session ends, chunk bytes are never commands, memory is given back", async () => {
  let forwarded = 0;
  let bdatReplies = 0;
  let exactRuns = 0;
  for (const policy of ["reject", "normalize"] as const) {
    for (let seed = 1; seed <= 120; seed++) {
      const next = prngFraction(seed * 104729 + (policy === "reject" ? 0 : 1));
      const { chunks, exact } = randomInput(next);
      const memory = new MemoryBudget(1 << 24);
      const r = await transcript(chunks, {
        profiles: new ServerProfiles(),
        upstream: { ehlo: EHLO },
        memory,
        smtp: {
          bareLineEndings: policy,
          maxErrors: 1000,
          timeouts: { command: 1, data: 0.3, session: 5 },
        },
        endInput: true,
      });
      const where = `policy ${policy}, seed ${seed}: ${
        JSON.stringify(chunks.join("")).slice(0, 400)
      }`;
      const lines = r.output.split("\r\n");
      assert.equal(lines.pop(), "", where);
      for (const line of lines) assert.match(line, /^\d{3}[ -][\x20-\x7e]*$/, where);
      assert.ok(r.result.end !== "internal-error", where);
      for (const s of r.servers) {
        if (exact) assert.ok(!s.commands.includes(MARKER.trim()), `chunk bytes executed: ${where}`);
      }
      if (exact) exactRuns++;
      const delivered = r.servers.reduce((n, s) => n + s.messages.length, 0);
      assert.equal(delivered, r.result.forwarded, where);
      assert.equal(memory.used, 0, `memory not given back: ${where}`);
      forwarded += delivered;
      bdatReplies += (r.output.match(/^250 2\.0\.0 Ok: \d+ bytes/gm) ?? []).length;
    }
  }
  // The generator must reach the interesting paths.
  assert.ok(
    forwarded > 50 && bdatReplies > 30 && exactRuns > 50,
    JSON.stringify({ forwarded, bdatReplies, exactRuns }),
  );
});
