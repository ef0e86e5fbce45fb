/**
 * SMTP smuggling (reliability-anchors §2.1, CERT VU#302671): every fake end-of-data sequence,
 * followed by a pipelined second transaction, must end in exactly one message or a rejection —
 * never two messages, never the smuggled commands executed, never a bare CR/LF sent on.
 */
import assert from "node:assert/strict";
import { SMUGGLING_SEQUENCES } from "./smuggling_sequences.ts";
import { bytes, envelope, receivedFor, transcript } from "./harness.ts";

const SMUGGLED = "MAIL FROM:<ceo@trusted.example>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n" +
  "From: ceo@trusted.example\r\nSubject: smuggled\r\n\r\nwire the money\r\n";

/** The attack: a message whose body holds a fake end and a second transaction. */
function attack(seq: string): string {
  return envelope() + "Subject: innocent\r\n\r\nhello" + seq + SMUGGLED + ".\r\nQUIT\r\n";
}

/** Whether any CR or LF in `s` is not part of a CRLF pair. */
function hasBareLineEnding(s: string): boolean {
  return /\r(?!\n)|(?<!\r)\n/.test(s);
}

for (const [name, seq] of SMUGGLING_SEQUENCES) {
  Deno.test(`Smuggling ${name}: rejected as one message under the reject policy`, async () => {
    const r = await transcript(attack(seq));
    // EHLO, MAIL, RCPT, 354, one rejection, QUIT: exactly one end-of-data reply.
    assert.equal(r.codes.length, 6, r.output);
    assert.deepEqual(r.codes.slice(0, 4), [250, 250, 250, 354]);
    assert.ok(r.codes[4] === 550 || r.codes[4] === 554, r.output);
    assert.equal(r.codes[5], 221);
    const nul = seq.includes("\x00");
    assert.match(r.output, nul ? /554 5\.6\.0 / : /550 5\.5\.2 Error: bare CR or LF received/);
    assert.equal(r.judge.calls.length, 0);
    assert.equal(r.servers[0].messages.length, 0);
    assert.ok(
      !r.servers[0].raw.includes("ceo@trusted"),
      "smuggled envelope never reached the server",
    );
    assert.ok(r.servers[0].commands.includes("RSET"));
    assert.equal(r.result.rejected, 1);
  });

  Deno.test(`Smuggling ${name}: one normalised message under the normalize policy`, async () => {
    const r = await transcript(attack(seq), { smtp: { bareLineEndings: "normalize" } });
    assert.equal(r.codes.length, 6, r.output);
    assert.deepEqual(r.codes.slice(0, 4), [250, 250, 250, 354]);
    if (seq.includes("\x00")) {
      assert.equal(r.codes[4], 554, "NUL is refused whatever the policy");
      assert.equal(r.servers[0].messages.length, 0);
      return;
    }
    assert.equal(r.codes[4], 250);
    const server = r.servers[0];
    assert.equal(server.messages.length, 1, "exactly one message");
    assert.equal(server.messages[0].mailFrom, "alice@example.org");
    assert.deepEqual(server.messages[0].rcpts, ["bob@example.net"]);
    // The smuggled commands arrived only as message text, never as commands.
    assert.deepEqual(server.commands.filter((c) => /^(MAIL|RCPT)/.test(c)), [
      "MAIL FROM:<alice@example.org>",
      "RCPT TO:<bob@example.net>",
    ]);
    assert.ok(server.messages[0].content.includes("MAIL FROM:<ceo@trusted.example>"));
    assert.equal(
      hasBareLineEnding(server.messages[0].wire),
      false,
      JSON.stringify(server.messages[0].wire),
    );
    assert.equal(r.judge.calls.length, 1);
  });
}

Deno.test("Smuggling split one byte per segment ends the same way", async () => {
  for (const [, seq] of SMUGGLING_SEQUENCES) {
    const input = bytes(attack(seq));
    const head = envelope().length;
    const chunks: Uint8Array[] = [input.subarray(0, head)];
    for (let i = head; i < input.length; i++) chunks.push(input.subarray(i, i + 1));
    const r = await transcript(chunks);
    assert.equal(r.codes.length, 6, JSON.stringify(seq));
    assert.ok(r.codes[4] === 550 || r.codes[4] === 554);
    assert.equal(r.servers[0].messages.length, 0);
  }
});

Deno.test("The real CRLF.CRLF split at every offset ends exactly one message", async () => {
  const msg = "Subject: s\r\n\r\nbody\r\n";
  const tail = "\r\n.\r\n";
  for (let cut = 0; cut <= tail.length; cut++) {
    const all = envelope() + msg.slice(0, -2) + tail + "QUIT\r\n";
    const at = envelope().length + msg.length - 2 + cut;
    const r = await transcript([all.slice(0, at), all.slice(at)]);
    assert.deepEqual(r.codes, [250, 250, 250, 354, 250, 221], `cut ${cut}`);
    assert.equal(r.servers[0].messages.length, 1);
    assert.equal(r.servers[0].messages[0].content, receivedFor("bob@example.net") + msg);
  }
});

Deno.test("A transaction pipelined right after CRLF.CRLF is a separate, checked transaction", async () => {
  // smtpsmug "pipelining": allowed because PIPELINING is advertised; it must not alter message 1.
  const second =
    "MAIL FROM:<carol@example.org>\r\nRCPT TO:<dave@example.net>\r\nDATA\r\ntwo\r\n.\r\n";
  const r = await transcript(envelope() + "one\r\n.\r\n" + second + "QUIT\r\n");
  assert.deepEqual(r.codes, [250, 250, 250, 354, 250, 250, 250, 354, 250, 221]);
  const msgs = r.servers[0].messages;
  assert.equal(msgs.length, 2);
  assert.equal(msgs[0].content, receivedFor("bob@example.net") + "one\r\n");
  assert.equal(msgs[1].content, receivedFor("dave@example.net", "S1.2") + "two\r\n");
  assert.equal(r.judge.calls.length, 2);
});

Deno.test("Dot-stuffed lines are unstuffed for the judge and stuffed again towards the server", async () => {
  const wire = "Subject: dots\r\n\r\n..\r\n...\r\n..foo\r\n.bar\r\nend\r\n";
  const content = "Subject: dots\r\n\r\n.\r\n..\r\n.foo\r\nbar\r\nend\r\n";
  const r = await transcript(envelope() + wire + ".\r\nQUIT\r\n");
  assert.equal(r.judge.calls[0].message, content);
  const m = r.servers[0].messages[0];
  assert.equal(
    m.wire,
    receivedFor("bob@example.net") + "Subject: dots\r\n\r\n..\r\n...\r\n..foo\r\nbar\r\nend\r\n",
  );
  assert.equal(m.content, receivedFor("bob@example.net") + content);
});

Deno.test("Under normalize, bare LF and CR reach the server as CRLF and a lone '.' line stays content", async () => {
  const r = await transcript(envelope() + "a\nb\rc\r\n.\nd\r\n.\r\nQUIT\r\n", {
    smtp: { bareLineEndings: "normalize" },
  });
  assert.deepEqual(r.codes, [250, 250, 250, 354, 250, 221]);
  const m = r.servers[0].messages[0];
  assert.equal(m.wire, receivedFor("bob@example.net") + "a\r\nb\r\nc\r\n..\r\nd\r\n");
});

Deno.test("NUL in DATA is refused with 554 5.6.0 and nothing is forwarded", async () => {
  const r = await transcript(envelope() + "a\x00b\r\n.\r\nQUIT\r\n");
  assert.deepEqual(r.codes, [250, 250, 250, 354, 554, 221]);
  assert.match(r.output, /554 5\.6\.0 Error: message contains a NUL character/);
  assert.equal(r.servers[0].messages.length, 0);
});
