import assert from "node:assert/strict";
import { decodeMessage, type MimeParser } from "../../src/policy/message.ts";

const FIXTURES = new URL("../fixtures/messages/", import.meta.url);
const fixture = (name: string) => Deno.readFileSync(new URL(name, FIXTURES));
const enc = new TextEncoder();
/** A parser that never finishes, and one that fails at once. */
const NEVER = (() => new Promise(() => {})) as unknown as MimeParser;
const FAILS = (() => Promise.reject(new Error("boom"))) as unknown as MimeParser;

// What each fixture must decode to (a substring of each fact; "" = must be empty).
const CORPUS: {
  file: string;
  subject: string;
  text?: string;
  html?: string;
  attachments?: string[];
}[] = [
  { file: "plain.eml", subject: "Minutes of Tuesday's meeting", text: "next meeting is on Friday" },
  { file: "lottery_subject.eml", subject: "You WON the Lottery", text: "claim the prize" },
  {
    file: "multipart_alternative.eml",
    subject: "Your order update",
    text: "Your order has shipped",
    html: "Best offer: cheap pills, 90% off!",
  },
  {
    file: "html_only.eml",
    subject: "Newsletter",
    text: "",
    html: "Buy CHEAP PILLS now – café prices",
  },
  {
    file: "base64_body.eml",
    subject: "Special offer",
    text: "cheap pills for you. Très bon marché.",
  },
  { file: "qp_body.eml", subject: "Hello", text: "Get your cheap pills here — fast shipping." },
  {
    file: "euc_kr_subject.eml",
    subject: "[광고] 축하합니다! 복권 당첨 안내",
    text: "1등에 당첨되셨습니다",
  },
  { file: "iso_2022_kr.eml", subject: "당첨 안내", text: "축하합니다, 당첨되셨습니다!" },
  { file: "utf8_8bit.eml", subject: "회의 일정 안내", text: "다음 회의는 금요일" },
  { file: "utf8_fullwidth.eml", subject: "Offer", text: "Ｃｈｅａｐ　ＰＩＬＬＳ" },
  {
    file: "attachment.eml",
    subject: "Invoice 2026-118",
    text: "Please find the invoice attached.",
    attachments: ["invoice-2026-118.pdf application/pdf"],
  },
  { file: "malformed_mime.eml", subject: "lottery claim form", html: "unterminated" },
  {
    file: "nested_multipart.eml",
    subject: "Re: your question",
    text: "see below: CHEAP PILLS",
    html: "see below",
    attachments: ["logo.png image/png"],
  },
];

for (const c of CORPUS) {
  Deno.test(`decodeMessage() reads ${c.file}: subject, text, HTML and attachments`, async () => {
    const raw = fixture(c.file);
    const f = await decodeMessage(raw);
    // A plain message is read without mailparser (plain_message.ts), to the same facts.
    assert.ok(f.decoder === "mailparser" || f.decoder === "plain", f.decoder);
    assert.deepEqual(f.problems, []);
    assert.equal(f.size, raw.length);
    assert.ok(f.subject.includes(c.subject), `subject ${JSON.stringify(f.subject)}`);
    if (c.text === "") assert.equal(f.text, "");
    else if (c.text) assert.ok(f.text.includes(c.text), `text ${JSON.stringify(f.text)}`);
    if (c.html) assert.ok(f.html.includes(c.html), `html ${JSON.stringify(f.html)}`);
    assert.deepEqual(
      f.attachments.map((a) => `${a.filename} ${a.contentType}`),
      c.attachments ?? [],
    );
    assert.ok(f.headers.some((h) => h.name === "subject"));
  });
}

Deno.test("decodeMessage() decodes EUC-KR and ISO-2022-KR for real (no escape bytes, no U+FFFD)", async () => {
  for (const file of ["euc_kr_subject.eml", "iso_2022_kr.eml"]) {
    const f = await decodeMessage(fixture(file));
    for (const s of [f.subject, f.text, ...f.headers.map((h) => h.value)]) {
      // deno-lint-ignore no-control-regex
      assert.doesNotMatch(s, /[\x0e\x0f\x1b\ufffd]/, `${file}: ${JSON.stringify(s)}`);
    }
    assert.ok(f.subject.includes("당첨"), file);
  }
  const euc = await decodeMessage(fixture("euc_kr_subject.eml"));
  assert.deepEqual(euc.from, [{ name: "이벤트팀", address: "event@example.com" }]);
  // The decoded header list carries the encoded-word Subject decoded too.
  assert.equal(
    euc.headers.find((h) => h.name === "subject")?.value,
    "[광고] 축하합니다! 복권 당첨 안내",
  );
});

Deno.test("decodeMessage() keeps header fields in order, unfolded and decoded", async () => {
  const f = await decodeMessage(fixture("plain.eml"));
  assert.deepEqual(f.headers.map((h) => h.name), [
    "return-path",
    "received",
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
  ]);
  assert.equal(
    f.headers[1].value,
    "from mail.example.com (mail.example.com [192.0.2.10]) by mx.example.net with ESMTP id 4Xy2; Tue, 24 Nov 2026 10:00:00 +0000",
  );
});

function multipart(parts: number): Uint8Array {
  let m = "Subject: parts\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n";
  for (let i = 0; i < parts; i++) {
    m += `--B\r\nContent-Type: text/plain\r\n\r\npart ${i} cheap pills\r\n`;
  }
  return enc.encode(m + "--B--\r\n");
}

Deno.test("decodeMessage() part limit: limit-1 and limit parse, limit+1 falls back and says so", async () => {
  // mailparser counts the root node as well: n parts under one multipart are n+1 nodes.
  for (const [parts, decoder] of [[3, "mailparser"], [4, "mailparser"], [5, "fallback"]] as const) {
    const f = await decodeMessage(multipart(parts), { maxParts: 5 });
    assert.equal(f.decoder, decoder, `${parts} parts`);
    assert.equal(f.subject, "parts");
    // Either way the keyword in the body is still readable.
    assert.ok(f.text.includes("part 0 cheap pills"), `${parts} parts: ${f.text}`);
    if (decoder === "fallback") {
      assert.match(
        f.problems.join(),
        /mailparser could not decode the message \(Max allowed child nodes exceeded\)/,
      );
    } else {
      assert.deepEqual(f.problems, []);
    }
  }
});

Deno.test("decodeMessage() byte limit: only the first maxBytes are parsed, cut at a line end", async () => {
  const head = "Subject: big\r\nContent-Type: text/plain\r\n\r\n";
  const line = "x".repeat(98) + "\r\n";
  const body = line.repeat(20) + "cheap pills\r\n";
  const raw = enc.encode(head + body);
  const limit = head.length + line.length * 20; // the keyword line starts exactly at the limit
  for (const [max, seen] of [[limit - 1, false], [limit, false], [raw.length, true]] as const) {
    const f = await decodeMessage(raw, { maxBytes: max });
    assert.equal(f.text.includes("cheap pills"), seen, `maxBytes ${max}`);
    assert.equal(f.size, raw.length);
    if (max < raw.length) {
      assert.match(f.problems[0], /^only the first \d+ of \d+ bytes were decoded$/);
    } else assert.deepEqual(f.problems, []);
  }
});

Deno.test("decodeMessage() text limit: limit-1 and limit are read whole, limit+1 is a problem recorded once", async () => {
  for (
    const [n, problems] of [[999, []], [1000, []], [1001, [
      "a text is longer than 1000 characters",
    ]]] as const
  ) {
    const raw = enc.encode("Subject: s\r\n\r\n" + "a".repeat(n) + "\r\n");
    const f = await decodeMessage(raw, { maxTextChars: 1000 });
    assert.deepEqual(f.problems, problems, `${n} characters`);
    assert.equal(f.text.trim().length, Math.min(n, 1000));
  }
});

Deno.test("decodeMessage() text limit counts a run of white space once (padding is not content)", async () => {
  const raw = enc.encode("Subject: s\r\n\r\nhello" + " ".repeat(5000) + "cheap pills\r\n");
  const f = await decodeMessage(raw, { maxTextChars: 1000 });
  assert.deepEqual(f.problems, []);
  assert.ok(f.text.trimEnd().endsWith("cheap pills"), f.text.slice(-40));
});

Deno.test("decodeMessage() header limit keeps the first maxHeaders fields", async () => {
  let h = "";
  for (let i = 0; i < 50; i++) h += `X-H${i}: v${i}\r\n`;
  const f = await decodeMessage(enc.encode(h + "Subject: late\r\n\r\nbody\r\n"), {
    maxHeaders: 10,
  });
  assert.equal(f.headers.length, 10);
  assert.equal(f.subject, "late"); // mailparser still reads the Subject
  assert.deepEqual(f.problems, ["more than 10 header fields in one header section"]);
});

Deno.test("decodeMessage() never throws on malformed input (seeded random bytes and truncations)", async () => {
  let seed = 0x5eed;
  const rnd = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  const base = fixture("nested_multipart.eml");
  const t0 = performance.now();
  for (let i = 0; i < 200; i++) {
    let raw: Uint8Array;
    if (i % 2 === 0) {
      raw = new Uint8Array(Math.floor(rnd() * 2000));
      for (let k = 0; k < raw.length; k++) raw[k] = Math.floor(rnd() * 256);
    } else {
      raw = base.slice(0, Math.floor(rnd() * base.length));
      for (let k = 0; k < 5 && raw.length; k++) {
        raw[Math.floor(rnd() * raw.length)] = Math.floor(rnd() * 256);
      }
    }
    const f = await decodeMessage(raw);
    assert.equal(typeof f.subject, "string");
    assert.equal(typeof f.text, "string");
  }
  assert.ok(performance.now() - t0 < 60_000);
});

Deno.test("decodeMessage() falls back to a header/body split when parsing takes too long", async () => {
  const raw = fixture("qp_body.eml");
  const f = await decodeMessage(raw, { timeoutMs: 20 }, NEVER);
  assert.equal(f.decoder, "fallback");
  assert.match(f.problems.join(), /took longer than 20 ms/);
  assert.equal(f.subject, "Hello");
  // The fallback decodes a single-part quoted-printable body itself.
  assert.ok(f.text.includes("Get your cheap pills here — fast shipping."), f.text);
});

Deno.test("decodeMessage() fallback decodes base64 EUC-KR bodies and ISO-2022-KR", async () => {
  const euc = await decodeMessage(fixture("euc_kr_subject.eml"), {}, FAILS);
  assert.equal(euc.decoder, "fallback");
  assert.equal(euc.subject, "[광고] 축하합니다! 복권 당첨 안내");
  assert.ok(euc.text.includes("1등에 당첨되셨습니다"), euc.text);
  const iso = await decodeMessage(fixture("iso_2022_kr.eml"), {}, FAILS);
  assert.equal(iso.subject, "당첨 안내");
  assert.ok(iso.text.includes("당첨되셨습니다"), iso.text);
});

Deno.test("decodeMessage() reads an empty message and one without a body", async () => {
  const empty = await decodeMessage(new Uint8Array(0));
  assert.equal(empty.subject, "");
  assert.equal(empty.text, "");
  const headOnly = await decodeMessage(enc.encode("Subject: only a header\r\n"));
  assert.equal(headOnly.subject, "only a header");
});

Deno.test("decodeMessage() reads a part with an empty Content-Type (mailparser's `false`) as application/octet-stream", async () => {
  const raw = enc.encode(
    "Subject: s\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n" +
      'hi\r\n--B\r\nContent-Type: ; name="face.jpg"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--B--\r\n',
  );
  const f = await decodeMessage(raw);
  assert.ok(f.attachments.length >= 1);
  for (const a of f.attachments) {
    assert.equal(typeof a.contentType, "string");
    assert.equal(typeof a.filename, "string");
  }
  assert.ok(f.attachments.some((a) => a.filename === "face.jpg"));
});
