/** Every responder limit at limit-1, limit and limit+1, as session transcripts. */
import assert from "node:assert/strict";
import { envelope, transcript } from "./harness.ts";

/** Content of exactly `n` octets (n >= 2) made of short CRLF lines. */
function contentOf(n: number): string {
  let s = "";
  while (n - s.length >= 102) s += "y".repeat(98) + "\r\n";
  return s + "z".repeat(n - s.length - 2) + "\r\n";
}

Deno.test("Command line limit 512 incl. CRLF: 511 and 512 are served, 513 gets 500 5.5.2", async () => {
  for (const [total, code] of [[511, 250], [512, 250], [513, 500]] as const) {
    const line = "NOOP " + "x".repeat(total - 7) + "\r\n";
    assert.equal(line.length, total);
    const r = await transcript(line + "NOOP\r\nQUIT\r\n");
    assert.deepEqual(r.codes, [code, 250, 221], `line of ${total}`);
    if (code === 500) {
      assert.match(r.output, /^500 5\.5\.2 Line too long\r\n/);
      assert.equal(r.log.named("smtp.limit")[0].fields.limit, "command-line");
    }
  }
});

Deno.test("An over-long command line is answered before its LF arrives and its tail is never executed", async () => {
  const r = await transcript([
    "NOOP " + "x".repeat(600),
    "y".repeat(5000) + " MAIL FROM:<a@example.org>\r\n",
    "QUIT\r\n",
  ]);
  assert.deepEqual(r.codes, [500, 221]);
});

Deno.test("A command line that never ends is cut off with 421 once 64 KiB were skipped", async () => {
  const chunks = Array.from({ length: 70 }, () => "x".repeat(1024));
  const r = await transcript(chunks);
  assert.deepEqual(r.codes, [500, 421]);
  assert.equal(r.result.end, "flood");
});

Deno.test("Text line limit 1000 incl. CRLF: 999 and 1000 pass, 1001 is refused with 552 5.6.0", async () => {
  for (const [total, code] of [[999, 250], [1000, 250], [1001, 552]] as const) {
    const line = "t".repeat(total - 2) + "\r\n";
    const r = await transcript(envelope() + "Subject: x\r\n\r\n" + line + ".\r\nQUIT\r\n");
    assert.deepEqual(r.codes, [250, 250, 250, 354, code, 221], `line of ${total}`);
    assert.equal(r.servers[0].messages.length, code === 250 ? 1 : 0);
    if (code === 250) assert.ok(r.servers[0].messages[0].content.endsWith(line));
    else assert.match(r.output, /552 5\.6\.0 Error: message has a line longer than 1000 bytes/);
  }
});

Deno.test("smtp.long_lines pass (the default, as Postfix): lines of 999, 1000, 1001 and 5000 octets are relayed intact", async () => {
  for (const total of [999, 1000, 1001, 5000]) {
    const line = "w".repeat(total - 2) + "\r\n";
    const r = await transcript(envelope() + "Subject: long\r\n\r\n" + line + ".\r\nQUIT\r\n", {
      smtp: { longLines: "pass" },
    });
    assert.deepEqual(r.codes, [250, 250, 250, 354, 250, 221], `line of ${total}`);
    assert.ok(r.servers[0].messages[0].content.endsWith("\r\n\r\n" + line), `line of ${total}`);
  }
});

Deno.test("smtp.bare_line_endings normalize (the default, as Postfix 3.9): a bare-LF message is accepted with CRLF; only CRLF.CRLF ends it", async () => {
  const r = await transcript(
    envelope() + "Subject: lf\n\nline one\n.\nstill content\r\n.\r\nQUIT\r\n",
    { smtp: { bareLineEndings: "normalize" } },
  );
  assert.deepEqual(r.codes, [250, 250, 250, 354, 250, 221]);
  const m = r.servers[0].messages[0];
  assert.ok(m.content.endsWith("Subject: lf\r\n\r\nline one\r\n.\r\nstill content\r\n"), m.content);
  assert.ok(m.wire.includes("\r\n..\r\nstill content"), "the lone dot is stuffed on the way out");
});

Deno.test("Recipient limit 100: 99 and 100 accepted, the 101st gets 452 4.5.3 and the rest are kept", async () => {
  for (const n of [99, 100, 101]) {
    const rcpts = Array.from({ length: n }, (_, i) => `r${i}@example.net`);
    const r = await transcript(envelope("a@example.org", rcpts) + "m\r\n.\r\nQUIT\r\n");
    const want = [250, 250, ...rcpts.map((_, i) => (i < 100 ? 250 : 452)), 354, 250, 221];
    assert.deepEqual(r.codes, want, `${n} recipients`);
    assert.deepEqual(r.servers[0].messages[0].rcpts, rcpts.slice(0, 100));
    if (n === 101) {
      assert.match(r.output, /452 4\.5\.3 Error: too many recipients/);
      assert.ok(!r.servers[0].raw.includes("r100@"), "the extra RCPT is not relayed");
      assert.equal(r.result.errors, 0, "452 for extra recipients is not a client error");
    }
  }
});

Deno.test("Recipient overshoot: extra RCPTs within recipient_overshoot_limit are not errors, past it each one is, and the log has one line per transaction", async () => {
  // max 100, overshoot 10, max_errors 5: 100 accepted, 10 free 452s, then 452s that count; the
  // 6th counted one passes max_errors and the session ends with 421.
  const rcpts = Array.from({ length: 100 + 10 + 50 }, (_, i) => `r${i}@example.net`);
  const r = await transcript(envelope("a@example.org", rcpts) + "m\r\n.\r\nQUIT\r\n", {
    smtp: { recipientOvershootLimit: 10, maxErrors: 5 },
  });
  const want = [250, 250, ...Array(100).fill(250), ...Array(10 + 6).fill(452), 421];
  assert.deepEqual(r.codes, want);
  assert.equal(r.result.end, "errors");
  assert.equal(r.result.errors, 6);
  const limitLines = r.log.named("smtp.limit").filter((e) => e.fields.limit === "recipients");
  assert.equal(limitLines.length, 1, "one smtp.limit line for the whole transaction");
  assert.equal(r.log.named("smtp.close")[0].fields.rcpt_refused, 16, "the count is in smtp.close");
  assert.deepEqual(r.servers[0]?.messages ?? [], [], "nothing delivered: the session ended first");
});

Deno.test("SIZE= limit: limit-1 and limit accepted, limit+1 gets 552 5.3.4 without contacting the server", async () => {
  const max = 1000;
  for (const [size, code] of [[max - 1, 250], [max, 250], [max + 1, 552]] as const) {
    const r = await transcript(`EHLO c\r\nMAIL FROM:<a@example.org> SIZE=${size}\r\nQUIT\r\n`, {
      smtp: { maxMessageBytes: max },
    });
    assert.deepEqual(r.codes, [250, code, 221], `SIZE=${size}`);
    if (code === 552) {
      assert.match(r.output, /552 5\.3\.4 /);
      assert.equal(r.servers.length, 0);
    }
  }
});

Deno.test("Actual message size: limit-1 and limit forwarded, limit+1 read to the end then 552 5.3.4", async () => {
  const max = 1000;
  for (const [size, code] of [[max - 1, 250], [max, 250], [max + 1, 552]] as const) {
    const body = contentOf(size);
    assert.equal(body.length, size);
    const r = await transcript(envelope() + body + ".\r\nNOOP\r\nQUIT\r\n", {
      smtp: { maxMessageBytes: max },
    });
    // NOOP after the message proves the whole oversized message was read and discarded.
    assert.deepEqual(r.codes, [250, 250, 250, 354, code, 250, 221], `size ${size}`);
    assert.equal(r.servers[0].messages.length, code === 250 ? 1 : 0);
    if (code === 552) {
      assert.match(r.output, /552 5\.3\.4 /);
      assert.equal(r.judge.calls.length, 0);
      assert.equal(r.log.named("smtp.limit")[0].fields.limit, "message-size");
    }
  }
});

Deno.test("A client that lies in SIZE= is still refused by the actual byte count", async () => {
  const r = await transcript(
    "EHLO c\r\nMAIL FROM:<a@example.org> SIZE=10\r\nRCPT TO:<b@example.net>\r\nDATA\r\n" +
      contentOf(2000) + ".\r\nQUIT\r\n",
    { smtp: { maxMessageBytes: 1000 } },
  );
  assert.deepEqual(r.codes, [250, 250, 250, 354, 552, 221]);
});

Deno.test("Error limit 3: 2 and 3 errors are answered, the 4th is followed by 421 4.7.0", async () => {
  for (const [errors, closed] of [[2, false], [3, false], [4, true]] as const) {
    const r = await transcript("FOO\r\n".repeat(errors) + "NOOP\r\nQUIT\r\n", {
      smtp: { maxErrors: 3 },
    });
    if (closed) {
      assert.deepEqual(r.codes, [500, 500, 500, 500, 421]);
      assert.match(r.output, /421 4\.7\.0 mx\.example Error: too many errors\r\n$/);
      assert.equal(r.result.end, "errors");
      assert.equal(r.log.named("smtp.limit")[0].fields.limit, "errors");
    } else {
      assert.deepEqual(r.codes, [...Array(errors).fill(500), 250, 221]);
    }
  }
});

Deno.test("200 junk commands end after the error limit, not after 200 replies", async () => {
  const r = await transcript("JUNK\r\n".repeat(200));
  assert.equal(r.codes.length, 22); // 21 x 500 (default limit 20 exceeded), then 421
  assert.equal(r.codes[21], 421);
});

Deno.test("Transaction limit 2: 2 transactions served, the 3rd MAIL gets 421 4.7.0", async () => {
  const tx = "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nm\r\n.\r\n";
  for (const [n, closed] of [[1, false], [2, false], [3, true]] as const) {
    const r = await transcript("EHLO c\r\n" + tx.repeat(n) + "QUIT\r\n", {
      smtp: { maxTransactions: 2 },
    });
    if (closed) {
      assert.deepEqual(r.codes, [250, 250, 250, 354, 250, 250, 250, 354, 250, 421]);
      assert.equal(r.result.end, "limit");
      assert.equal(r.servers[0].messages.length, 2);
    } else {
      assert.equal(r.servers[0].messages.length, n);
      assert.equal(r.codes[r.codes.length - 1], 221);
    }
  }
});
