// deno-lint-ignore-file no-control-regex -- the tests look for control characters on purpose
import assert from "node:assert/strict";
import { AlertMark } from "../../src/action/alert_mark.ts";
import {
  ALERT_HEADER_NAMES,
  type AlertContent,
  buildAlertMessage,
  encodeQuotedPrintable,
  rfc5322Date,
} from "../../src/action/alert_message.ts";
import { decodeEncodedWords } from "../../src/policy/encoded_words.ts";
import { bytes, envelope, headerNames, text } from "./helpers.ts";

const ADDRESSING = {
  from: "ssg@gateway.example",
  to: ["postmaster@corp.example", "security@corp.example"],
  hostname: "gateway.example",
  mark: new AlertMark(),
};

function content(
  over: Partial<AlertContent> & { subject?: string; raw?: string } = {},
): AlertContent {
  const raw = over.raw ??
    `Subject: ${
      over.subject ?? "hello"
    }\r\nFrom: Spammer <s@example.org>\r\nMessage-ID: <x@y>\r\n\r\nbody\r\n`;
  return {
    rule: "spam-words",
    verdict: { action: "discard", rule: "spam-words", evidence: 'subject contains "lottery"' },
    envelope: envelope(),
    message: bytes(raw),
    time: new Date("2026-11-27T10:00:00Z"),
    ...over,
  };
}

/** Decodes quoted-printable (RFC 2045 §6.7) back to text. */
function decodeQp(body: string): string {
  const joined = body.replace(/=\r\n/g, "");
  const bin = joined.replace(
    /=([0-9A-F]{2})/g,
    (_m, h: string) => String.fromCharCode(parseInt(h, 16)),
  );
  return new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0)));
}

/** The checks every generated alert must pass, whatever the input. */
function assertWellFormed(wire: string): { subject: string; body: string } {
  // 7-bit, CRLF only.
  assert.ok(/^[\x00-\x7f]*$/.test(wire), "only 7-bit bytes");
  assert.ok(!/\r(?!\n)|(?<!\r)\n/.test(wire), "no bare CR or LF");
  assert.ok(!/[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/.test(wire), "no control characters");
  const end = wire.indexOf("\r\n\r\n");
  assert.ok(end > 0);
  const head = wire.slice(0, end + 2);
  // Exactly the expected header fields: nothing injected, nothing repeated.
  assert.deepEqual(headerNames(wire), [...ALERT_HEADER_NAMES]);
  for (const line of head.split("\r\n")) {
    assert.ok(line.length <= 78, `header line too long: ${line.length}`);
  }
  for (const line of wire.slice(end + 4).split("\r\n")) {
    assert.ok(line.length <= 76, "QP line too long");
  }
  const unfolded = head.replace(/\r\n(?=[ \t])/g, "");
  const subjectLine = unfolded.split("\r\n").find((l) => l.startsWith("Subject: "))!;
  const subject = decodeEncodedWords(subjectLine.slice("Subject: ".length));
  assert.ok(
    !/[\x00-\x1f\x7f\u2028\u2029]/.test(subject),
    `decoded Subject has a control: ${JSON.stringify(subject)}`,
  );
  return { subject, body: decodeQp(wire.slice(end + 4)).replace(/\r\n/g, "\n") };
}

Deno.test("buildAlertMessage() header injection vectors never add a header field", async (t) => {
  const vectors: { name: string; c: AlertContent }[] = [
    {
      name: "bare CR inside the Subject line",
      c: content({ subject: "hi\rBcc: victim@example.org" }),
    },
    {
      name: "encoded word (Q) that decodes to CRLF",
      c: content({ subject: "=?UTF-8?Q?hi=0D=0ABcc:_victim@example.org?=" }),
    },
    {
      name: "encoded word (B) that decodes to CRLF",
      c: content({ subject: `=?UTF-8?B?${btoa("hi\r\nBcc: victim@example.org")}?=` }),
    },
    {
      name: "encoded word that decodes to an encoded CRLF word",
      c: content({ subject: `=?UTF-8?B?${btoa("=?UTF-8?Q?a=0D=0ABcc:_x?=")}?=` }),
    },
    { name: "NUL and other controls", c: content({ subject: "a\0b\x1b[31mred\x7f\x85c" }) },
    {
      name: "Unicode line separators",
      c: content({
        subject: "=?UTF-8?B?" + btoa(String.fromCharCode(0xe2, 0x80, 0xa8)) + "?=Bcc: x",
      }),
    },
    { name: "10k-character Subject", c: content({ subject: "A".repeat(10_000) }) },
    { name: "10k-character Subject with spaces", c: content({ subject: "ab ".repeat(3_400) }) },
    { name: "non-ASCII Subject", c: content({ subject: "=?EUC-KR?B?x9Gx2w==?= 제목 テスト" }) },
    { name: "Subject with a literal =? sequence", c: content({ subject: "price =?1?= cheap" }) },
    {
      name: "repeated Subject fields",
      c: content({ raw: "Subject: one\r\nSubject: two\r\nBcc: x@example.org\r\n\r\nb\r\n" }),
    },
    { name: "no header section at all", c: content({ raw: "\r\njust a body\r\n" }) },
    {
      name: "LF, CR and NUL in HELO and envelope",
      c: content({
        envelope: envelope({
          helo: "x\r\nBcc: a@b",
          mailFrom: "a\nb@example.org",
          rcptTo: ["c\r\nd@example.org"],
          sessionId: "s\n1",
        }),
      }),
    },
    {
      name: "multi-line evidence",
      c: content({
        verdict: {
          action: "discard",
          rule: "r",
          evidence: "line1\r\nBcc: x@example.org\nline3\rline4\0",
        },
      }),
    },
    { name: "CRLF in the rule name", c: content({ rule: "r\r\nBcc: x@example.org" }) },
    {
      name: "multi-line reply text",
      c: content({
        verdict: {
          action: "reject",
          rule: "r",
          reply: { code: 550, enhanced: "5.7.1", text: "no\r\nBcc: x" },
        },
      }),
    },
  ];
  for (const v of vectors) {
    await t.step(v.name, () => {
      const { bytes: b } = buildAlertMessage(v.c, ADDRESSING);
      const { subject, body } = assertWellFormed(text(b));
      assert.ok(subject.startsWith(`[SSG alert] `));
      assert.ok(subject.length <= 400);
      // Original header lines are in the body, each prefixed.
      const section = body.split("Original header section (as received, untrusted):\n")[1];
      assert.ok(section !== undefined);
      for (const line of section.split("\n").filter((l) => l !== "")) {
        assert.ok(line.startsWith("| "), line);
      }
    });
  }
});

Deno.test("buildAlertMessage() puts cleaned facts and prefixed evidence in the body", () => {
  const c = content({
    subject: "=?UTF-8?B?7ZWc6riA?= lottery",
    verdict: { action: "quarantine", rule: "spam-words", evidence: "first\r\nBcc: x@example.org" },
    quarantineId: "20261127T100000Z-0011223344556677",
    suppressed: { count: 4, since: Date.parse("2026-11-27T09:00:00Z") },
  });
  const { bytes: b, messageId, facts } = buildAlertMessage(c, ADDRESSING);
  const { subject, body } = assertWellFormed(text(b));
  assert.equal(subject, '[SSG alert] spam-words: quarantine - "한글 lottery"');
  assert.match(messageId, /^<[0-9a-z]+\.[0-9a-f]{16}\.alert@gateway\.example>$/);
  assert.equal(facts.subject, "한글 lottery");
  assert.match(body, /^> first$/m);
  assert.match(body, /^> Bcc: x@example.org$/m);
  assert.match(body, /^Quarantine id: {2}20261127T100000Z-0011223344556677$/m);
  assert.match(body, /^Client: {9}203\.0\.113\.5 port 40000$/m);
  assert.match(
    body,
    /4 earlier alert\(s\) for this rule were not sent \(since 2026-11-27T09:00:00\.000Z\)/,
  );
  assert.match(body, /^\| Subject: =\?UTF-8\?B\?7ZWc6riA\?= lottery$/m);
  const wire = text(b);
  assert.match(wire, /^From: ssg@gateway\.example\r\n/);
  assert.match(wire, /\r\nTo: postmaster@corp\.example, security@corp\.example\r\n/);
  assert.match(wire, /\r\nAuto-Submitted: auto-generated\r\n/);
  assert.match(wire, /\r\nDate: Fri, 27 Nov 2026 10:00:00 \+0000\r\n/);
});

Deno.test("buildAlertMessage() carries a loop mark that verifies, and only for its own secret", () => {
  const { bytes: b } = buildAlertMessage(content(), ADDRESSING);
  assert.ok(ADDRESSING.mark.verify(b));
  assert.ok(!new AlertMark().verify(b));
  // A spammer copying the mark onto another Message-ID does not verify.
  const forged = text(b).replace(/Message-ID: <[^>]+>/, "Message-ID: <forged@example.org>");
  assert.ok(!ADDRESSING.mark.verify(bytes(forged)));
  assert.ok(!ADDRESSING.mark.verify(bytes("Subject: x\r\n\r\n")));
});

Deno.test("buildAlertMessage() cuts long evidence and header sections with a note", () => {
  const raw = Array.from({ length: 300 }, (_, i) => `X-H${i}: v`).join("\r\n") + "\r\n\r\nb\r\n";
  const evidence = Array.from({ length: 80 }, (_, i) => `e${i}`).join("\n");
  const { bytes: b } = buildAlertMessage(
    content({ raw, verdict: { action: "discard", rule: "r", evidence } }),
    ADDRESSING,
  );
  const { body } = assertWellFormed(text(b));
  assert.equal(body.split("\n").filter((l) => l.startsWith("> e")).length, 50);
  assert.match(body, /^> \.\.\. \(30 more lines\)$/m);
  assert.equal(body.split("\n").filter((l) => l.startsWith("| X-H")).length, 200);
});

Deno.test("encodeQuotedPrintable() round-trips and keeps lines within 76 characters", () => {
  for (
    const s of [
      "",
      "plain",
      "a=b",
      "trailing space ",
      "tab\t",
      "한글".repeat(50),
      "x".repeat(300),
      "a\nb\n",
    ]
  ) {
    const qp = encodeQuotedPrintable(s);
    for (const line of qp.split("\r\n")) assert.ok(line.length <= 76);
    assert.ok(/^[\x20-\x7e\r\n]*$/.test(qp));
    assert.equal(decodeQp(qp).replace(/\r\n/g, "\n"), s + "\n");
  }
});

Deno.test("rfc5322Date() formats UTC dates", () => {
  assert.equal(rfc5322Date(new Date("2026-01-05T03:04:05Z")), "Mon, 5 Jan 2026 03:04:05 +0000");
});
