import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import iconv from "iconv-lite";
import { undeclaredReadings } from "../../src/policy/charset_detect.ts";
import { CONFUSABLE_COUNT, foldConfusables } from "../../src/policy/confusables.ts";
import { htmlToText } from "../../src/policy/html_to_text.ts";
import { decodeMessage } from "../../src/policy/message.ts";
import {
  MAX_PART_READINGS,
  uudecode,
  type WalkLimits,
  walkMessage,
} from "../../src/policy/mime_walk.ts";

const enc = new TextEncoder();
const LIMITS: WalkLimits = {
  maxParts: 1000,
  maxDepth: 50,
  maxHeaderBytes: 1024 * 1024,
  maxHeaders: 1000,
  maxTextChars: 4 * 1024 * 1024,
};

function parts(n: number): Uint8Array {
  // n parts under one multipart: n + 1 entities with the root.
  let m = "Subject: p\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n";
  for (let i = 0; i < n; i++) m += `--B\r\nContent-Type: text/plain\r\n\r\npart ${i}\r\n`;
  return enc.encode(m + "--B--\r\n");
}

Deno.test("walkMessage() part limit: limit-1 and limit are read whole, limit+1 is a problem", () => {
  for (const [n, problem] of [[8, false], [9, false], [10, true]] as const) {
    const w = walkMessage(parts(n), { ...LIMITS, maxParts: 10 });
    assert.equal(w.problems.includes("more than 10 MIME parts"), problem, `${n} parts`);
    if (!problem) assert.equal(w.texts.length, n);
  }
});

function nested(depth: number): Uint8Array {
  let inner = "Subject: deepest\r\nContent-Type: text/plain\r\n\r\ncheap pills\r\n";
  for (let i = 0; i < depth; i++) {
    inner = `Subject: level ${i}\r\nContent-Type: message/rfc822\r\n\r\n${inner}`;
  }
  return enc.encode(inner);
}

Deno.test("walkMessage() depth limit: limit-1 and limit are read, limit+1 is a problem", () => {
  for (const [d, problem] of [[4, false], [5, false], [6, true]] as const) {
    const w = walkMessage(nested(d), { ...LIMITS, maxDepth: 5 });
    assert.equal(w.problems.length > 0, problem, `${d} levels: ${w.problems}`);
    assert.equal(w.texts.includes("cheap pills\n"), !problem);
    if (!problem) assert.ok(w.subjects.includes("deepest"));
  }
});

Deno.test("walkMessage() header section limit: limit-1 and limit are read, limit+1 is a problem", () => {
  const tail = "Subject: lottery\r\n\r\n";
  for (const [delta, problem] of [[-1, false], [0, false], [1, true]] as const) {
    const size = 4096 + delta;
    const pad = "X-Pad: " + "p".repeat(size - tail.length - 9) + "\r\n";
    const raw = enc.encode(pad + tail + "body\r\n");
    assert.equal(pad.length + tail.length, size);
    const w = walkMessage(raw, { ...LIMITS, maxHeaderBytes: 4096 });
    assert.equal(w.problems.length > 0, problem, `${size} bytes`);
    assert.equal(w.subjects.includes("lottery"), !problem);
  }
});

Deno.test("decodeMessage() a header section past max_header_bytes is a problem (mailparser and the walk agree)", async () => {
  const raw = enc.encode("X-Pad: " + "p".repeat(5000) + "\r\nSubject: lottery\r\n\r\nhi\r\n");
  const f = await decodeMessage(raw, { maxHeaderBytes: 4096 });
  assert.ok(f.problems.includes("a header section is larger than 4096 bytes"), f.problems.join());
  const ok = await decodeMessage(raw, { maxHeaderBytes: 8192 });
  assert.deepEqual(ok.problems, []);
  assert.equal(ok.subject, "lottery");
});

Deno.test("walkMessage() reads every Content-Type × Content-Transfer-Encoding reading, at most MAX_PART_READINGS", () => {
  const body = Buffer.from("cheap pills").toString("base64");
  const two = walkMessage(
    enc.encode(
      `Content-Transfer-Encoding: 7bit\r\nContent-Transfer-Encoding: base64\r\n\r\n${body}\r\n`,
    ),
    LIMITS,
  );
  assert.deepEqual(two.texts, [`${body}\n`, "cheap pills"]);
  assert.deepEqual(two.problems, []);
  let many = "";
  for (let i = 0; i < 3; i++) many += `Content-Type: text/plain; x=${i}\r\n`;
  many += "Content-Transfer-Encoding: 7bit\r\nContent-Transfer-Encoding: 8bit\r\n\r\nhi\r\n";
  const w = walkMessage(enc.encode(many), LIMITS);
  assert.equal(w.parts, MAX_PART_READINGS);
  assert.deepEqual(w.problems, [
    `a part has more than ${MAX_PART_READINGS} readings of its type and encoding`,
  ]);
});

Deno.test("walkMessage() reads a multipart without a closing delimiter to its end, and ignores longer boundaries", () => {
  const raw = "Content-Type: multipart/mixed; boundary=B\r\n\r\npreamble\r\n--B\r\n\r\none\r\n" +
    "--BB\r\nnot a delimiter\r\n--B \r\n\r\ntwo cheap pills\r\n";
  const w = walkMessage(enc.encode(raw), LIMITS);
  assert.deepEqual(w.texts, ["one\n--BB\nnot a delimiter", "two cheap pills\n"]);
});

Deno.test("uudecode() decodes the classic line format", () => {
  // "Cat" uuencoded is "#0V%T" (length character "#" = 3).
  assert.equal(new TextDecoder().decode(uudecode("#0V%T\r\n`\r\n")), "Cat");
});

Deno.test("htmlToText(dropHidden) leaves out text hidden by CSS, the hidden attribute or a hiding class", () => {
  const cases: [string, string][] = [
    ['pi<span style="display:none">x</span>lls', "pills"],
    ["pi<span style='visibility:hidden'>x</span>lls", "pills"],
    ['pi<span style="font-size: 0px">x</span>lls', "pills"],
    ['pi<span style="font-size:0">x</span>lls', "pills"],
    ['pi<span style="opacity:0">x</span>lls', "pills"],
    ['pi<div style="max-height:0;overflow:hidden">x</div>lls', "pills"],
    ['pi<span style="mso-hide:all">x</span>lls', "pills"],
    ["pi<span hidden>x</span>lls", "pills"],
    ['<style>.h { display: none }</style>pi<b class="a h">x</b>lls', "pills"],
    // Nested elements of the same name inside a hidden one end with it, not before.
    ['pi<span style="display:none"><span>x</span>y</span>lls', "pills"],
    // Visible styles are kept.
    ['pi<span style="font-size:10px">x</span>lls', "pixlls"],
    ['pi<span style="display:inline">x</span>lls', "pixlls"],
  ];
  for (const [html, want] of cases) {
    assert.equal(htmlToText(html, Infinity, true), want, html);
  }
  // Without dropHidden everything is kept (the other reading).
  assert.equal(htmlToText('pi<span style="display:none">x</span>lls'), "pixlls");
});

Deno.test("undeclaredReadings() reads UTF-8 once, and legacy bytes in every plausible charset", () => {
  assert.deepEqual(undeclaredReadings(enc.encode("당첨 lottery")), ["당첨 lottery"]);
  const cases: [string, string][] = [
    ["euc-kr", "[광고] 당첨 안내"],
    ["cp949", "똠방 당첨"],
    ["shift_jis", "当選おめでとうございます"],
    ["gb2312", "恭喜您中奖了"],
    ["koi8-r", "Поздравляем с лотереей"],
  ];
  for (const [cs, text] of cases) {
    const readings = undeclaredReadings(new Uint8Array(iconv.encode(text, cs)));
    assert.ok(readings.includes(text), `${cs}: ${JSON.stringify(readings)}`);
  }
  // UTF-7 is sniffed in bodies only.
  assert.deepEqual(undeclaredReadings(enc.encode("+AGwAbwB0-tery"), true), [
    "+AGwAbwB0-tery",
    "lottery",
  ]);
  assert.deepEqual(undeclaredReadings(enc.encode("Date: +0000"), true), ["Date: +0000"]);
});

Deno.test("foldConfusables() maps non-ASCII look-alikes to their TR39 prototype and leaves ASCII alone", () => {
  assert.ok(CONFUSABLE_COUNT > 5000);
  assert.equal(foldConfusables("l\u043ett\u0435ry"), "lottery"); // Cyrillic о, е
  assert.equal(foldConfusables("\u03bf"), "o"); // Greek omicron
  assert.equal(foldConfusables("modern l0ttery"), "modern l0ttery"); // ASCII untouched
  assert.equal(foldConfusables("당첨"), "당첨");
});

Deno.test("walkMessage() reads a multipart without a boundary as text, and does not decode binary attachments", () => {
  const nb = walkMessage(
    enc.encode("Content-Type: multipart/mixed\r\n\r\ncheap pills\r\n"),
    LIMITS,
  );
  assert.deepEqual(nb.texts, ["cheap pills\n"]);
  const bin = walkMessage(
    enc.encode(
      "Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: application/pdf; name=a.pdf\r\n" +
        "Content-Transfer-Encoding: base64\r\n\r\nY2hlYXAgcGlsbHM=\r\n--B--\r\n",
    ),
    LIMITS,
  );
  assert.deepEqual(bin.texts, []);
  assert.deepEqual(bin.attachments, [{ filename: "a.pdf", contentType: "application/pdf" }]);
});

Deno.test("decodeMessage() never throws on mutated corpus messages (seeded, 400 mutations)", async () => {
  const dirs = ["../fixtures/messages/", "../fixtures/evasion/"].map((d) =>
    new URL(d, import.meta.url)
  );
  const corpus: Uint8Array[] = [];
  for (const d of dirs) {
    for (const e of Deno.readDirSync(d)) {
      if (e.name.endsWith(".eml")) corpus.push(Deno.readFileSync(new URL(e.name, d)));
    }
  }
  let seed = 8;
  const rnd = (n: number) => {
    seed = (seed * 1664525 + 1013904223) >>> 0;
    return seed % n;
  };
  const tokens = [
    "\r\n",
    "--",
    "=?",
    "?=",
    ":",
    ";",
    "\x1b$)C",
    "\x0e",
    "+",
    "=",
    "<",
    ">",
    "begin 644 x\r\n",
    "\r\n\r\n",
  ]
    .map((t) => enc.encode(t));
  for (let i = 0; i < 400; i++) {
    const base = corpus[rnd(corpus.length)];
    const out: number[] = [...base];
    for (let k = 0, n = 1 + rnd(8); k < n; k++) {
      const at = rnd(out.length + 1);
      switch (rnd(3)) {
        case 0:
          out.splice(at, 1 + rnd(20));
          break;
        case 1:
          out.splice(at, 0, ...tokens[rnd(tokens.length)]);
          break;
        default:
          out[at] = rnd(256);
      }
    }
    const f = await decodeMessage(Uint8Array.from(out));
    assert.equal(typeof f.subject, "string");
    for (const t of [...f.subjects, ...f.texts, ...f.htmls]) assert.equal(typeof t, "string");
    for (const a of f.attachments) assert.equal(typeof a.contentType, "string");
  }
});
