import assert from "node:assert/strict";
import { checkTag, headerMatcher, tagMessage } from "../../src/action/tag.ts";
import { HeaderFieldError } from "../../src/action/header_field.ts";
import { bytes, text } from "./helpers.ts";

const BODY = "Hello,\r\n.leading dot\r\nX-SSG-Verdict: clean (in the body: kept)\r\n\r\nbye\r\n";
const MSG = "Received: from a by b; Thu, 1 Jan 2026 00:00:00 +0000\r\n" +
  "Subject: Cheap =?UTF-8?B?7ZWc6riA?= offer\r\n" +
  "From: Spammer <s@example.org>\r\n" +
  "X-Odd:  two  spaces\ttab  \r\n" +
  "\r\n" + BODY;

Deno.test("tagMessage() returns the very same bytes when there is nothing to do", () => {
  const m = bytes(MSG);
  assert.equal(tagMessage(m), m);
  assert.equal(tagMessage(m, { headers: [] }), m);
});

Deno.test("tagMessage() adds headers at the top and leaves every other byte untouched", () => {
  const out = text(tagMessage(bytes(MSG), {
    headers: [{ name: "X-Spam-Flag", value: "YES" }, { name: "X-Spam-Rule", value: "r1" }],
  }));
  assert.equal(out, "X-Spam-Flag: YES\r\nX-Spam-Rule: r1\r\n" + MSG);
});

Deno.test("tagMessage() prefixes the raw Subject value, keeping encoded words intact", () => {
  const out = text(tagMessage(bytes(MSG), { headers: [], subjectPrefix: "[SPAM] " }));
  assert.equal(out, MSG.replace("Subject: Cheap", "Subject: [SPAM] Cheap"));
});

Deno.test("tagMessage() subject prefix cases", async (t) => {
  const cases: { name: string; subject: string; prefix: string; want: string }[] = [
    {
      name: "encoded word first: a space separates it (RFC 2047 §5)",
      subject: "Subject: =?UTF-8?B?7ZWc?=\r\n",
      prefix: "[SPAM]",
      want: "Subject: [SPAM] =?UTF-8?B?7ZWc?=\r\n",
    },
    {
      name: "no space after the colon",
      subject: "Subject:hi\r\n",
      prefix: "[SPAM] ",
      want: "Subject:[SPAM] hi\r\n",
    },
    {
      name: "value on a continuation line",
      subject: "Subject:\r\n hi there\r\n",
      prefix: "[SPAM] ",
      want: "Subject: [SPAM]\r\n hi there\r\n",
    },
    {
      name: "already prefixed: unchanged",
      subject: "Subject: [SPAM] hi\r\n",
      prefix: "[SPAM] ",
      want: "Subject: [SPAM] hi\r\n",
    },
    {
      name: "lower-case field name",
      subject: "subject: hi\r\n",
      prefix: "[SPAM] ",
      want: "subject: [SPAM] hi\r\n",
    },
    {
      name: "non-ASCII prefix is encoded",
      subject: "Subject: hi\r\n",
      prefix: "[스팸] ",
      want: "Subject: =?UTF-8?B?W+yKpO2MuF0=?= hi\r\n",
    },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      const msg = "From: a@example.org\r\n" + c.subject + "\r\nbody\r\n";
      const out = text(tagMessage(bytes(msg), { headers: [], subjectPrefix: c.prefix }));
      assert.equal(out, "From: a@example.org\r\n" + c.want + "\r\nbody\r\n");
    });
  }
});

Deno.test("tagMessage() adds a Subject when the message has none", () => {
  const out = text(tagMessage(bytes("From: a@example.org\r\n\r\nbody\r\n"), {
    headers: [],
    subjectPrefix: "[SPAM] ",
  }));
  assert.equal(out, "Subject: [SPAM]\r\nFrom: a@example.org\r\n\r\nbody\r\n");
});

Deno.test("tagMessage() folds after the prefix when the first line would pass 998 octets", () => {
  const long = "x".repeat(985);
  const msg = `Subject: ${long}\r\n\r\nb\r\n`;
  const out = text(tagMessage(bytes(msg), { headers: [], subjectPrefix: "[SPAM] " }));
  assert.equal(out, `Subject: [SPAM]\r\n ${long}\r\n\r\nb\r\n`);
  for (const line of out.split("\r\n")) assert.ok(line.length <= 998);
});

Deno.test("tagMessage() always strips inbound X-SSG-* fields, folded or oddly written", () => {
  const msg = "X-SSG-Verdict: clean\r\n" +
    "Subject: hi\r\n" +
    "x-ssg-rule: none\r\n" +
    "X-SSG-Score : 0\r\n" + // RFC 5322 §4.5 obsolete space before the colon
    "X-SSG-Long: a\r\n  continued\r\n\tagain\r\n" +
    "X-SSGnot: kept\r\n" +
    "\r\n" + BODY;
  const out = text(tagMessage(bytes(msg)));
  assert.equal(out, "Subject: hi\r\nX-SSGnot: kept\r\n\r\n" + BODY);
});

Deno.test("tagMessage() strips a bare-LF forged header too", () => {
  const msg = "Subject: hi\nX-SSG-Verdict: clean\n\nbody\n";
  assert.equal(text(tagMessage(bytes(msg))), "Subject: hi\n\nbody\n");
});

Deno.test("tagMessage() removes inbound copies of the tag's own header names", () => {
  const msg = "X-Spam-Flag: NO\r\nSubject: hi\r\n\r\nb\r\n";
  const out = text(tagMessage(bytes(msg), { headers: [{ name: "X-Spam-Flag", value: "YES" }] }));
  assert.equal(out, "X-Spam-Flag: YES\r\nSubject: hi\r\n\r\nb\r\n");
});

Deno.test("tagMessage() strips, tags and prefixes in one pass, byte-exact elsewhere", () => {
  const msg = "A: 1\r\nX-SSG-Verdict: clean\r\nSubject: s\r\nX-SSG-Rule: x\r\nB: 2\r\n\r\n" + BODY;
  const out = text(tagMessage(bytes(msg), {
    headers: [{ name: "X-SSG-Verdict", value: "quarantine" }],
    subjectPrefix: "[Q] ",
  }));
  assert.equal(out, "X-SSG-Verdict: quarantine\r\nA: 1\r\nSubject: [Q] s\r\nB: 2\r\n\r\n" + BODY);
});

Deno.test("tagMessage() keeps a message without body or without headers intact", () => {
  assert.equal(
    text(tagMessage(bytes("Subject: x\r\n"), { headers: [{ name: "T", value: "1" }] })),
    "T: 1\r\nSubject: x\r\n",
  );
  assert.equal(
    text(tagMessage(bytes("\r\nbody only\r\n"), { headers: [{ name: "T", value: "1" }] })),
    "T: 1\r\n\r\nbody only\r\n",
  );
});

Deno.test("tagMessage() writes a header value with CR/LF as one clean line", () => {
  const out = text(tagMessage(bytes("S: 1\r\n\r\nb\r\n"), {
    headers: [{ name: "X-Tag", value: "a\r\nBcc: victim@example.org" }],
  }));
  assert.equal(out, "X-Tag: a Bcc: victim@example.org\r\nS: 1\r\n\r\nb\r\n");
});

Deno.test("tagMessage() folds a long header value under 78 characters", () => {
  const value = Array.from({ length: 30 }, (_, i) => `word${i}`).join(" ");
  const out = text(
    tagMessage(bytes("S: 1\r\n\r\nb\r\n"), { headers: [{ name: "X-Long", value }] }),
  );
  const head = out.slice(0, out.indexOf("S: 1"));
  for (const line of head.split("\r\n")) assert.ok(line.length <= 78, line);
  assert.equal(head.replace(/\r\n(?=[ \t])/g, ""), `X-Long: ${value}\r\n`);
});

Deno.test("tagMessage() refuses an invalid header name", () => {
  for (const name of ["", "Bad Name", "Bad:Name", "Ünicode", "x".repeat(77)]) {
    assert.throws(
      () => tagMessage(bytes("S: 1\r\n\r\n"), { headers: [{ name, value: "v" }] }),
      HeaderFieldError,
    );
  }
});

Deno.test("checkTag() reports bad names, control characters and lengths at limit+1", () => {
  assert.deepEqual(
    checkTag({
      headers: [{ name: "X-Ok", value: "v".repeat(900) }],
      subjectPrefix: "p".repeat(100),
    }),
    [],
  );
  const problems = checkTag({
    headers: [
      { name: "Bad Name", value: "v" },
      { name: "X-A", value: "a\nb" },
      { name: "X-B", value: "v".repeat(901) },
    ],
    subjectPrefix: "p".repeat(101),
  });
  assert.equal(problems.length, 4);
  assert.equal(checkTag({ headers: [], subjectPrefix: "[x]\r" }).length, 1);
});

Deno.test("headerMatcher() matches exact names and prefixes, case-insensitively", () => {
  const m = headerMatcher(["X-SSG-*", "X-Spam-Flag"]);
  assert.ok(m("x-ssg-verdict"));
  assert.ok(m("X-SSG-"));
  assert.ok(m("X-SPAM-FLAG"));
  assert.ok(!m("X-Spam-Flagged"));
  assert.ok(!m("X-SSGx"));
});
