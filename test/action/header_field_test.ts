import assert from "node:assert/strict";
import {
  encodeWords,
  formatHeaderField,
  HeaderFieldError,
  isPlainValue,
  isValidHeaderName,
  MAX_ENCODED_WORD,
} from "../../src/action/header_field.ts";
import { cleanLines, cleanText, truncate } from "../../src/action/clean_text.ts";
import {
  fieldValue,
  findField,
  MAX_HEADER_FIELDS,
  parseRawHeaders,
} from "../../src/action/raw_headers.ts";
import { decodeEncodedWords } from "../../src/policy/encoded_words.ts";
import { bytes } from "./helpers.ts";

Deno.test("encodeWords() keeps every word within 75 characters and whole characters", () => {
  for (
    const s of [
      "",
      "a",
      "한".repeat(100),
      "😀".repeat(40),
      "mixed 한글 text ".repeat(20),
      "x".repeat(1000),
    ]
  ) {
    const words = encodeWords(s);
    assert.ok(words.length >= 1);
    for (const w of words) {
      assert.ok(w.length <= MAX_ENCODED_WORD, `${w.length}`);
      // Each word decodes on its own to valid UTF-8 (no character split across words).
      const b64 = w.slice("=?UTF-8?B?".length, -2);
      new TextDecoder("utf-8", { fatal: true }).decode(
        Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)),
      );
    }
    assert.equal(decodeEncodedWords(words.join("\r\n ").replace(/\r\n /g, " ")), s);
  }
});

Deno.test("encodeWords() first word respects a smaller budget", () => {
  const words = encodeWords("y".repeat(200), 30);
  assert.ok(words[0].length <= 30);
  for (const w of words.slice(1)) assert.ok(w.length <= 75);
});

Deno.test("formatHeaderField() lines stay within 76/78 characters at the limits", () => {
  for (const len of [64, 65, 66, 69, 70, 71, 200, 4000, 5000]) {
    for (const value of ["a".repeat(len), "한".repeat(len), ("word ".repeat(len)).trim()]) {
      const f = formatHeaderField("Subject", value);
      assert.ok(f.endsWith("\r\n"));
      for (const line of f.slice(0, -2).split("\r\n")) {
        assert.ok(line.length <= 78, `${len}: ${line.length}`);
      }
      assert.ok(/^[\x20-\x7e\r\n]*$/.test(f));
    }
  }
});

Deno.test("formatHeaderField() with a long name starts the encoded value on a new line", () => {
  const name = "X-" + "N".repeat(70);
  const f = formatHeaderField(name, "한글");
  assert.match(f, new RegExp(`^${name}:\\r\\n =\\?UTF-8\\?B\\?`));
  for (const line of f.split("\r\n")) assert.ok(line.length <= 76);
});

Deno.test("formatHeaderField() refuses bad names, accepts names at 76 and refuses 77", () => {
  assert.ok(isValidHeaderName("X".repeat(76)));
  assert.ok(!isValidHeaderName("X".repeat(77)));
  for (const n of ["", "A B", "A:B", "A\r\nB", "Ä"]) {
    assert.throws(() => formatHeaderField(n, "v"), HeaderFieldError);
  }
});

Deno.test("isPlainValue() sends '=?', non-ASCII and unfoldable words to encoding", () => {
  assert.ok(isPlainValue("plain text"));
  assert.ok(!isPlainValue("a =?x?= b"));
  assert.ok(!isPlainValue("é"));
  assert.ok(isPlainValue("x".repeat(76)));
  assert.ok(!isPlainValue("x".repeat(77)));
});

Deno.test("cleanText() removes controls after decoding, collapses space, cuts with ...", () => {
  const cases: [string, number, string][] = [
    ["a\r\nb", 100, "a b"],
    ["=?UTF-8?Q?a=0D=0Ab?=", 100, "a b"],
    ["a\0b\x1b\x7f\u0085c", 100, "a b c"],
    ["a\u2028b\u202ec", 100, "a b c"],
    ["   x   ", 100, "x"],
    ["abcdef", 6, "abcdef"],
    ["abcdefg", 6, "abc..."],
    ["\ud800x", 10, "\ufffdx"], // lone surrogate made well-formed
  ];
  for (const [input, max, want] of cases) {
    assert.equal(cleanText(input, max), want, JSON.stringify(input));
  }
  assert.equal(
    cleanText("=?UTF-8?Q?a=0D=0Ab?=", 100, { decodeWords: false }),
    "=?UTF-8?Q?a=0D=0Ab?=",
  );
  assert.equal(cleanText("A".repeat(10_000_000), 10).length, 10);
});

Deno.test("cleanLines() splits at every line break and bounds lines and length", () => {
  assert.deepEqual(cleanLines("a\r\nb\nc\rd\u2028e\tf\0", 10, 100), ["a", "b", "c", "d", "e f"]);
  assert.deepEqual(cleanLines("1\n2\n3\n4", 3, 100), ["1", "2", "3", "... (1 more lines)"]);
  assert.deepEqual(cleanLines("x".repeat(20), 3, 10), ["xxxxxxx..."]);
});

Deno.test("truncate() counts code points, not UTF-16 units", () => {
  assert.equal(truncate("😀😀😀", 3), "😀😀😀");
  assert.equal(truncate("😀😀😀😀", 3), "...");
  assert.equal(truncate("😀😀😀😀😀", 4), "😀...");
});

Deno.test("parseRawHeaders() finds fields, continuations, obsolete forms and the end", () => {
  const m = bytes("A: 1\r\nB : 2\r\n  cont\r\n\tmore\r\nnot a field\r\nC:3\r\n\r\nD: body\r\n");
  const h = parseRawHeaders(m);
  assert.deepEqual(h.fields.map((f) => f.name), ["A", "B", "", "C"]);
  assert.equal(fieldValue(m, findField(h, "b")!), "2  cont\tmore");
  assert.equal(fieldValue(m, findField(h, "C")!), "3");
  assert.equal(h.hasBody, true);
  assert.equal(new TextDecoder().decode(m.subarray(h.headerEnd)), "\r\nD: body\r\n");
  const noBody = parseRawHeaders(bytes("A: 1\r\nB: 2"));
  assert.equal(noBody.hasBody, false);
  assert.equal(noBody.fields[1].end, 10);
});

Deno.test("parseRawHeaders() bounds the field count and keeps covering every byte", () => {
  const n = MAX_HEADER_FIELDS + 5;
  const m = bytes("X: 1\r\n".repeat(n) + "\r\nb\r\n");
  const h = parseRawHeaders(m);
  assert.equal(h.fields.length, MAX_HEADER_FIELDS);
  assert.equal(h.fields.at(-1)!.end, 6 * n);
  assert.equal(h.headerEnd, 6 * n);
});
