/**
 * CHUNKING/BDAT (RFC 3030) from clients: offered only when the mirrored server has it; chunk
 * bytes are read as bytes and never parsed as commands (offered or not); the chunks are judged
 * as one message and relayed as BDAT, or as dot-stuffed DATA when the server has no CHUNKING;
 * Postfix's replies for the error cases; size limits across chunks; memory given back.
 */
import assert from "node:assert/strict";
import { MemoryBudget } from "../../src/smtp/memory_budget.ts";
import { ServerProfiles } from "../../src/smtp/server_profiles.ts";
import { FAKE_EHLO, receivedFor, startSession, transcript } from "./harness.ts";

const CHUNKING_EHLO = "250-server.example\r\n250-PIPELINING\r\n250-SIZE 50000000\r\n" +
  "250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 CHUNKING\r\n";
const ENV = "EHLO client.example\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\n";
const mirrored = (ehlo = CHUNKING_EHLO) => ({ profiles: new ServerProfiles(), upstream: { ehlo } });
/** A chunk full of things that would be commands or an end of data if they were parsed. */
const EVIL = "Subject: x\r\n\r\nline\r\n.\r\nMAIL FROM:<evil@example.org>\r\nQUIT\r\n";

Deno.test("BDAT: pipelined chunks are read as bytes, judged as one message and relayed as one BDAT LAST", async () => {
  const part2 = "..kept as is\r\n";
  const r = await transcript(
    ENV + `BDAT ${EVIL.length}\r\n${EVIL}BDAT ${part2.length} LAST\r\n${part2}QUIT\r\n`,
    mirrored(),
  );
  assert.match(r.output, /\r\n250 CHUNKING\r\n/);
  assert.deepEqual(r.codes, [250, 250, 250, 250, 250, 221]);
  assert.match(r.output, new RegExp(`250 2\\.0\\.0 Ok: ${EVIL.length} bytes\\r\\n`));
  assert.equal(r.judge.calls.length, 1);
  assert.equal(r.judge.calls[0].message, EVIL + part2);
  const s = r.servers[0];
  assert.equal(s.messages.length, 1);
  assert.equal(s.messages[0].bdat, true);
  assert.equal(s.messages[0].content, receivedFor("bob@example.net") + EVIL + part2);
  assert.ok(!s.commands.some((c) => c.includes("evil")), "chunk bytes never became commands");
});

Deno.test("BDAT: a single BDAT n LAST, and a message ended by BDAT 0 LAST", async () => {
  const body = "Subject: one\r\n\r\nbody\r\n";
  const r = await transcript(
    ENV + `BDAT ${body.length} LAST\r\n${body}` +
      `MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nBDAT ${body.length}\r\n${body}` +
      "BDAT 0 LAST\r\nQUIT\r\n",
    mirrored(),
  );
  assert.deepEqual(r.codes, [250, 250, 250, 250, 250, 250, 250, 250, 221]);
  assert.equal(r.servers[0].messages.length, 2);
  assert.equal(r.judge.calls[1].message, body);
});

Deno.test("BDAT when CHUNKING was not offered: 521 5.5.1 and the session closes; the chunk is never executed", async () => {
  for (const o of [mirrored(FAKE_EHLO), {}]) {
    const chunk = "RSET\r\nMAIL FROM:<x@example.org>\r\n";
    const r = await transcript(ENV + `BDAT ${chunk.length} LAST\r\n${chunk}NOOP\r\n`, o);
    assert.doesNotMatch(r.output, /250[- ]CHUNKING/);
    assert.deepEqual(r.codes, [250, 250, 250, 521]);
    assert.match(r.output, /521 5\.5\.1 Error: command not implemented\r\n$/);
    assert.equal(r.result.end, "protocol-error");
    assert.ok(!r.servers[0].commands.includes("MAIL FROM:<x@example.org>"));
  }
});

Deno.test("BDAT with bad syntax: 521 5.5.4 and close (the next input would be raw content)", async () => {
  const r = await transcript(ENV + "BDAT 10 NOW\r\n0123456789QUIT\r\n", mirrored());
  assert.deepEqual(r.codes.slice(-1), [521]);
  assert.match(r.output, /521 5\.5\.4 Syntax: BDAT count \[LAST\]\r\n$/);
});

Deno.test("BDAT before MAIL (503) or without recipients (554): the chunk is read and discarded, the session goes on", async () => {
  const chunk = "NOOP\r\nNOOP\r\n";
  const r = await transcript(
    `EHLO client.example\r\nBDAT ${chunk.length} LAST\r\n${chunk}` +
      `MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nQUIT\r\n`,
    {
      ...mirrored(),
      upstream: { ehlo: CHUNKING_EHLO, rcpt: () => "550 5.1.1 unknown" },
    },
  );
  assert.deepEqual(r.codes, [250, 503, 250, 550, 221]);
  assert.match(r.output, /503 5\.5\.1 Error: need RCPT command\r\n/);
  const r2 = await transcript(
    ENV.replace("bob", "nobody") + `BDAT ${chunk.length} LAST\r\n${chunk}QUIT\r\n`,
    { ...mirrored(), upstream: { ehlo: CHUNKING_EHLO, rcpt: () => "550 5.1.1 unknown" } },
  );
  assert.deepEqual(r2.codes, [250, 250, 550, 554, 221]);
  assert.match(r2.output, /554 5\.5\.1 Error: no valid recipients\r\n/);
});

Deno.test("A null BDAT (0, not LAST) gets 551 5.7.1; later chunks are discarded with 551 5.0.0 until LAST; then a new transaction works", async () => {
  const r = await transcript(
    ENV + "BDAT 0\r\nBDAT 4\r\nabcdBDAT 3 LAST\r\nxyz" +
      "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nBDAT 4 LAST\r\nok\r\n" +
      "QUIT\r\n",
    mirrored(),
  );
  assert.deepEqual(r.codes, [250, 250, 250, 551, 551, 551, 250, 250, 250, 221]);
  assert.match(
    r.output,
    /551 5\.7\.1 Null BDAT request\r\n551 5\.0\.0 Discarded 4 bytes after earlier error\r\n/,
  );
  assert.equal(r.servers[0].messages.length, 1);
  assert.equal(r.judge.calls.length, 1);
  assert.equal(r.judge.calls[0].message, "ok\r\n");
});

Deno.test("DATA or RCPT after BDAT: 503 5.5.1", async () => {
  const r = await transcript(
    ENV + "BDAT 3\r\nabcRCPT TO:<c@example.net>\r\nDATA\r\nBDAT 0 LAST\r\nQUIT\r\n",
    mirrored(),
  );
  assert.deepEqual(r.codes, [250, 250, 250, 250, 503, 503, 250, 221]);
  assert.match(
    r.output,
    /503 5\.5\.1 Error: RCPT after BDAT\r\n503 5\.5\.1 Error: DATA after BDAT\r\n/,
  );
});

Deno.test("BDAT size limit across chunks: limit-1 and limit accepted, limit+1 refused 552 5.3.4", async () => {
  const max = 2000;
  for (const [total, ok] of [[max - 1, true], [max, true], [max + 1, false]] as const) {
    const a = "a".repeat(998) + "\r\n"; // 1000 bytes
    const b = "b".repeat(total - 1002) + "\r\n";
    const r = await transcript(
      ENV + `BDAT ${a.length}\r\n${a}BDAT ${b.length} LAST\r\n${b}QUIT\r\n`,
      { ...mirrored(), smtp: { maxMessageBytes: max } },
    );
    if (ok) {
      assert.deepEqual(r.codes, [250, 250, 250, 250, 250, 221], String(total));
      assert.equal(r.servers[0].messages.length, 1);
    } else {
      assert.deepEqual(r.codes, [250, 250, 250, 250, 552, 221], String(total));
      assert.match(r.output, /552 5\.3\.4 Chunk exceeds message size limit\r\n/);
      assert.equal(r.servers[0].messages.length, 0);
    }
  }
});

Deno.test("BDAT relayed as dot-stuffed DATA when the live server has no CHUNKING", async () => {
  const profiles = new ServerProfiles();
  await transcript("QUIT\r\n", { profiles, upstream: { ehlo: CHUNKING_EHLO } });
  const body = "Subject: s\r\n\r\n.leading dot\r\n.\r\nend\r\n";
  const r = await transcript(ENV + `BDAT ${body.length} LAST\r\n${body}QUIT\r\n`, {
    profiles,
    upstream: { ehlo: FAKE_EHLO },
  });
  assert.deepEqual(r.codes, [250, 250, 250, 250, 221]);
  const m = r.servers[0].messages[0];
  assert.equal(m.bdat, undefined);
  assert.ok(r.servers[0].commands.includes("DATA"));
  assert.equal(
    m.wire,
    receivedFor("bob@example.net") + "Subject: s\r\n\r\n..leading dot\r\n..\r\nend\r\n",
  );
  assert.equal(m.content, receivedFor("bob@example.net") + body);
});

Deno.test("BDAT memory goes back to the shared budget: after a message, and when the client leaves mid-transaction", async () => {
  const memory = new MemoryBudget(1 << 20);
  const chunk = "x".repeat(5000) + "\r\n";
  await transcript(ENV + `BDAT ${chunk.length}\r\n${chunk}BDAT 0 LAST\r\nQUIT\r\n`, {
    ...mirrored(),
    memory,
  });
  assert.equal(memory.used, 0);
  const s = await startSession({ ...mirrored(), memory });
  await s.client.write(ENV + `BDAT ${chunk.length}\r\n${chunk}BDAT 100\r\nonly part`);
  for (let i = 0; i < 4; i++) await s.client.reply(); // EHLO, MAIL, RCPT, the first chunk
  assert.ok(memory.used > 0, "the first chunk is held while the transaction is open");
  s.client.close();
  const sum = await s.summary;
  assert.equal(sum.end, "client-closed");
  assert.equal(memory.used, 0);
  assert.equal(s.servers[0].messages.length, 0);
});

Deno.test("With smtp.pipelining off, a BDAT chunk that arrives with its command is not a synchronisation error", async () => {
  const body = "Subject: s\r\n\r\nx\r\n";
  const s = await startSession({ ...mirrored(), smtp: { pipelining: false } });
  for (
    const line of [
      "EHLO client.example\r\n",
      "MAIL FROM:<a@example.org>\r\n",
      "RCPT TO:<b@example.net>\r\n",
    ]
  ) {
    await s.client.write(line);
    await s.client.reply();
  }
  await s.client.write(`BDAT ${body.length} LAST\r\n${body}`);
  assert.match(await s.client.reply(), /^250 /);
  await s.client.write("QUIT\r\n");
  assert.match(await s.client.reply(), /^221 /);
  assert.equal((await s.summary).end, "quit");
});
