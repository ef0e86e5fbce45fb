/**
 * The plain-message reading (`plain_message.ts`) against mailparser itself: for every message
 * the fast reading accepts, `decodeMessage` must give exactly the facts mailparser gives for the
 * same bytes — on a fixed corpus of edge cases and on generated messages (seeded, so a failure
 * is reproducible). A message it refuses goes to mailparser, so only acceptance can be wrong.
 */
import assert from "node:assert/strict";
import { simpleParser } from "mailparser";
import { decodeMessage, type MessageFacts, type MimeParser } from "../../src/policy/message.ts";
import { readPlainMessage } from "../../src/policy/plain_message.ts";
import { prng as uint32s } from "../packet/packet_helpers.ts";

const enc = new TextEncoder();
/** mailparser itself, under another identity: `decodeMessage` then never takes the plain path. */
const MAILPARSER: MimeParser =
  ((input: unknown, opts: unknown) =>
    (simpleParser as (i: unknown, o: unknown) => unknown)(input, opts)) as MimeParser;

function comparable(f: MessageFacts) {
  return {
    subject: f.subject,
    text: f.text,
    html: f.html,
    from: f.from,
    to: f.to,
    cc: f.cc,
    attachments: f.attachments,
    headers: f.headers,
    subjects: f.subjects,
    texts: f.texts,
    htmls: f.htmls,
    problems: f.problems,
  };
}

/** Decodes both ways; returns whether the plain path was taken. */
async function same(raw: Uint8Array, label: string): Promise<boolean> {
  const fast = await decodeMessage(raw);
  const slow = await decodeMessage(raw, {}, MAILPARSER);
  assert.equal(slow.decoder, "mailparser", `${label}: mailparser failed`);
  assert.deepEqual(
    comparable(fast),
    comparable(slow),
    `${label}: ${
      JSON.stringify(
        new TextDecoder().decode(raw).slice(0, 400),
      )
    }`,
  );
  return fast.decoder === "plain";
}

const ACCEPTED = [
  "Subject: hi there\r\nFrom: A <a@x.org>\r\nTo: b@y.org\r\n\r\nline1\r\nline2  \r\n\r\n\r\n",
  "Subject:   spaced   subject  \r\n\r\nbody\r\n",
  "Subject: folded\r\n  more\r\n\t and\t more\r\n\r\n\r\n  leading\r\nx\r\n",
  "Subject: x\r\n\r\nno final newline",
  "Subject: x\r\n\r\nbare\nlf\r\n",
  "Subject: x\r\n\r\ncr\rinside\r\n",
  "Subject: x\r\n\r\n",
  "Subject: x\r\n\r\ntab\there\x00nul\r\n",
  "Subject: x\r\n\r\ncafé 한국어 😀\r\n",
  "Subject: x\r\n\r\n\uFEFFbom first\r\n",
  'From: "Doe, John" <jd@example.org>, x@y.z (comment)\r\nCc: undisclosed-recipients:;\r\n\r\nb\r\n',
  'To: group: a@b.c, "q\\"uote" <d@e.f>;, g@h.i\r\n\r\nb\r\n',
  "From:\r\nTo:   \r\nSubject:\r\n\r\nempty values\r\n",
  "Content-Type: text/plain\r\nContent-Transfer-Encoding: 7bit\r\n\r\nx\r\n",
  'Content-Type: TEXT/PLAIN; charset="UTF-8"\r\nContent-Transfer-Encoding: 8BIT\r\n\r\ncafé\r\n',
  "Content-Type: text/plain; charset=us-ascii\r\nMIME-Version: 1.0\r\n\r\nascii\r\n",
  "content-type: text/plain;\r\n charset=utf-8\r\n\r\nfolded type\r\n",
  "X-A: 1\r\nX-B: (weird) : value : with : colons\r\nSubject: s\r\n\r\n.\r\n..\r\n",
  "\r\nno header section at all\r\n",
  "\r\n",
  "Subject: a\r\n \r\n\r\nwhite-space-only continuation\r\n",
  "Subject: a\r\n\t\r\n b\r\n\r\nx",
];
const REFUSED = [
  "Subject: =?utf-8?q?caf=C3=A9?=\r\n\r\nx\r\n", // an encoded word
  "Subject: caf\xe9\r\n\r\nx\r\n", // 8-bit header (as UTF-8 bytes below)
  "Subject: a\r\nSubject: b\r\n\r\nx\r\n", // two subjects
  "Content-Type: text/html\r\n\r\n<b>x</b>\r\n",
  "Content-Type: text/plain; format=flowed\r\n\r\nx \r\ny\r\n",
  "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
  "Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n",
  "Content-Disposition: attachment; filename=a.txt\r\n\r\nx\r\n",
  "Subject: x\nFrom: bare-lf@x.y\n\nbody\n",
  "From: a@xn--caf-dma.example\r\n\r\nx\r\n",
  " Subject: leading space\r\n\r\nx\r\n",
  "Subject x\r\n\r\nno colon\r\n",
  "Subject: no body separator\r\n",
];

Deno.test("plain reading: edge cases it accepts equal mailparser's facts", async () => {
  for (const [i, text] of ACCEPTED.entries()) {
    const raw = enc.encode(text);
    assert.ok(readPlainMessage(raw, 1 << 20, 1000), `accepted case ${i} should be plain`);
    assert.ok(await same(raw, `accepted case ${i}`));
  }
});

Deno.test("plain reading: what it refuses goes to mailparser (and facts still equal)", async () => {
  for (const [i, text] of REFUSED.entries()) {
    const raw = enc.encode(text);
    assert.equal(readPlainMessage(raw, 1 << 20, 1000), undefined, `refused case ${i}`);
    assert.equal(await same(raw, `refused case ${i}`), false);
  }
  // Invalid UTF-8 in the body, and header bounds.
  const bad = new Uint8Array([...enc.encode("Subject: x\r\n\r\nab"), 0xff, 0x0d, 0x0a]);
  assert.equal(readPlainMessage(bad, 1 << 20, 1000), undefined);
  const many = enc.encode("X-A: 1\r\n".repeat(5) + "\r\nx\r\n");
  assert.equal(readPlainMessage(many, 1 << 20, 4), undefined);
  assert.ok(readPlainMessage(many, 1 << 20, 5));
  assert.equal(readPlainMessage(many, 20, 1000), undefined);
});

/** A seeded PRNG in [0, 1), so that a failing case can be reproduced. */
function prng(seed: number): () => number {
  const next = uint32s(seed);
  return () => next() / 4294967296;
}

const NAMES = [
  "Subject",
  "subject",
  "SUBJECT",
  "From",
  "To",
  "Cc",
  "cc",
  "Date",
  "Message-ID",
  "X-Mailer",
  "Content-Type",
  "Content-Transfer-Encoding",
  "MIME-Version",
  "Received",
  "Reply-To",
  "Content-Disposition",
  "X-Spam",
  "Sender",
];
const ATOMS = [
  "hello",
  "world",
  " ",
  "  ",
  "\t",
  "a@example.org",
  "<b@example.net>",
  '"Doe, J"',
  ",",
  ";",
  ":",
  "(c)",
  "()",
  "\\",
  '"',
  "<>",
  "@",
  "grp:",
  "x@y",
  "=",
  "?",
  "==",
  "_",
  "-",
  ".",
  "..",
  "undisclosed-recipients:;",
  "<a@b.c>,<d@e.f>",
  "Name <n@m.o>",
  "'q'",
  "[1.2.3.4]",
];
const RARE = ["é", "=?utf-8?b?eA==?=", "\n", "\r", "\x00", "xn--x", "\x7f", "\x1b"];
const TYPES = [
  "text/plain",
  "text/plain; charset=utf-8",
  'TEXT/PLAIN; charset="US-ASCII"',
  "text/plain;",
  "text/plain; format=flowed",
  "text/html",
  "multipart/mixed; boundary=z",
  "text/plain; charset=latin1",
  " text/plain ",
  "text/plain ; charset = utf-8",
];
const ENCODINGS = ["7bit", "8BIT", "binary", "quoted-printable", "base64", " 7bit "];
const BODY = [
  "line",
  "  indented",
  "trailing  ",
  "tab\tbed",
  "café",
  "한국어",
  "😀",
  "",
  ".",
  "..",
  "=3D",
  "\r",
  "\n",
  "\x00",
  "From me",
  "--z",
  "--z--",
  "<html>",
  "\uFEFF",
];

function pick<T>(r: () => number, list: readonly T[]): T {
  return list[Math.floor(r() * list.length)];
}

function value(r: () => number, name: string): string {
  if (/^content-type$/i.test(name) && r() < 0.8) return pick(r, TYPES);
  if (/^content-transfer-encoding$/i.test(name) && r() < 0.8) return pick(r, ENCODINGS);
  let v = "";
  const n = Math.floor(r() * 8);
  for (let k = 0; k < n; k++) {
    v += r() < 0.03 ? pick(r, RARE) : pick(r, ATOMS);
    if (r() < 0.3) v += " ";
    if (r() < 0.08) v += pick(r, ["\r\n ", "\r\n\t", "\r\n   "]);
  }
  return v;
}

function message(r: () => number): Uint8Array {
  let head = "";
  const fields = 1 + Math.floor(r() * 7);
  for (let k = 0; k < fields; k++) {
    const name = pick(r, NAMES);
    head += `${name}:${r() < 0.9 ? " " : ""}${value(r, name)}\r\n`;
  }
  let body = "";
  const lines = Math.floor(r() * 6);
  for (let k = 0; k < lines; k++) {
    const parts = 1 + Math.floor(r() * 3);
    for (let p = 0; p < parts; p++) body += pick(r, BODY) + (r() < 0.5 ? " " : "");
    if (k < lines - 1 || r() < 0.7) body += r() < 0.9 ? "\r\n" : "\n";
  }
  const bytes = enc.encode(`${head}\r\n${body}`);
  if (r() < 0.03) return new Uint8Array([...bytes, 0xc3]); // a cut UTF-8 sequence
  return bytes;
}

Deno.test("plain reading: generated messages — whenever it accepts, facts equal mailparser's", async () => {
  const seed = 20261130;
  const r = prng(seed);
  let accepted = 0;
  const N = 1500;
  for (let k = 0; k < N; k++) {
    if (await same(message(r), `generated #${k} (seed ${seed})`)) accepted++;
  }
  // Not vacuous: a good share of the generated messages are plain ones.
  assert.ok(accepted >= N / 10, `only ${accepted} of ${N} generated messages were plain`);
  assert.ok(accepted < N, "every generated message was plain: the refusals went untested");
});
