import assert from "node:assert/strict";
import { decodeCharset } from "../../src/policy/charset_decode.ts";
import {
  base64Bytes,
  decodeEncodedWords,
  quotedPrintableBytes,
} from "../../src/policy/encoded_words.ts";
import { decodeIso2022KrBytes, fixIso2022KrText } from "../../src/policy/iso_2022_kr.ts";
import { foldText } from "../../src/policy/fold_text.ts";
import { decodeEntities, htmlToText } from "../../src/policy/html_to_text.ts";

const latin1 = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));

// Bytes produced by Python's codecs: "당첨".encode("euc-kr") and .encode("iso2022_kr").
const EUC_KR_DANGCHEOM = new Uint8Array([0xb4, 0xe7, 0xc3, 0xb7]);
const ISO_2022_KR_DANGCHEOM = latin1("\x1b$)C\x0e4gC7\x0f");

Deno.test("decodeCharset() decodes EUC-KR, its aliases, ISO-2022-KR, and falls back to UTF-8", () => {
  for (const cs of ["EUC-KR", "euc-kr", "ks_c_5601-1987", "cp949", "windows-949"]) {
    assert.equal(decodeCharset(EUC_KR_DANGCHEOM, cs), "당첨", cs);
  }
  assert.equal(decodeCharset(ISO_2022_KR_DANGCHEOM, "ISO-2022-KR"), "당첨");
  assert.equal(decodeCharset(latin1("caf\xe9"), "iso-8859-1"), "café");
  assert.equal(decodeCharset(new TextEncoder().encode("é"), "no-such-charset"), "é");
  // UTF-7 is decoded (issue 8): a client that decodes it shows the words a rule looks for.
  assert.equal(decodeCharset(latin1("+ADw-script+AD4-"), "utf-7"), "<script>");
  assert.equal(decodeCharset(latin1("+AGwAbwB0-tery"), "UTF-7"), "lottery");
});

const WORDS: [string, string][] = [
  ["=?EUC-KR?B?tOfDtw==?=", "당첨"],
  ["=?euc-kr?Q?=B4=E7=C3=B7?=", "당첨"],
  ["=?UTF-8?Q?caf=C3=A9_au_lait?=", "café au lait"],
  ["=?UTF-8?B?7ZqM7J2Y?= =?UTF-8?B?IOydvOyglQ==?=", "회의 일정"], // adjacent words join (§6.2)
  ["Re: =?utf-8?q?hello?= world", "Re: hello world"],
  ["=?UTF-8*ko?B?7ZqM7J2Y?=", "회의"], // RFC 2231 language suffix
  ["=?ISO-2022-KR?B?GyQpQw40Z0M3Dw==?=", "당첨"],
  ["no words here", "no words here"],
  ["=?broken", "=?broken"],
];
for (const [input, want] of WORDS) {
  Deno.test(`decodeEncodedWords(${JSON.stringify(input)}) is ${JSON.stringify(want)}`, () => {
    assert.equal(decodeEncodedWords(input), want);
  });
}

Deno.test("base64Bytes() and quotedPrintableBytes() are lenient with real-world input", () => {
  assert.deepEqual(base64Bytes("tOfDtw=="), EUC_KR_DANGCHEOM);
  assert.deepEqual(base64Bytes("tOf\r\nDtw"), EUC_KR_DANGCHEOM);
  assert.deepEqual(base64Bytes("!!"), new Uint8Array(0));
  assert.equal(
    new TextDecoder().decode(quotedPrintableBytes("caf=C3=A9 pi=\r\nlls =ZZ")),
    "café pills =ZZ",
  );
  assert.equal(new TextDecoder().decode(quotedPrintableBytes("soft=  \nbreak")), "softbreak");
});

Deno.test("ISO-2022-KR: shifted runs decode, a line end ends a run without SI, plain text is untouched", () => {
  assert.equal(decodeIso2022KrBytes(ISO_2022_KR_DANGCHEOM), "당첨");
  assert.equal(decodeIso2022KrBytes(latin1("\x1b$)C\x0e4g\r\nabc")), "당\r\nabc");
  assert.equal(decodeIso2022KrBytes(latin1("a\x0e4g\x0fb\x0eC7\x0fc")), "a당b첨c");
  assert.equal(fixIso2022KrText("no designator \x0e4g\x0f"), "no designator \x0e4g\x0f");
  assert.equal(fixIso2022KrText("\x1b$)C\x0e4gC7\x0f é"), "당첨 é");
});

const FOLD: [string, string][] = [
  ["Lottery", "lottery"],
  ["ＬＯＴＴＥＲＹ", "lottery"],
  ["lot\u200btery", "lottery"],
  ["STRAẞE", "strasse"],
  ["ﬁnance", "finance"],
  ["a \r\n\t b", "a b"],
  ["\u1103\u1161\u11BC\u110E\u1165\u11B7", "당첨"],
  // Capitals and small letters fold alike, final sigma included; Greek omicron is a TR39
  // look-alike of Latin "o", capital sigma of "Ʃ" (so every sigma reads "ʃ").
  ["ΣΟΦΟΣ", "ʃoφoʃ"],
  ["σοφος", "ʃoφoʃ"],
  // Cyrillic and Greek look-alikes (issue 8).
  ["lоttеry", "lottery"],
  ["LΟTTЕRY", "lottery"],
  ["당첨", "당첨"],
];
for (const [input, want] of FOLD) {
  Deno.test(`foldText(${JSON.stringify(input)}) is ${JSON.stringify(want)}`, () => {
    assert.equal(foldText(input), want);
    assert.equal(foldText(want), want, "folding is idempotent");
  });
}

const HTML: [string, string][] = [
  ["<p>lot<b>te</b>ry</p>", "lottery"],
  ["<p>one</p><p>two</p>", "one\ntwo"],
  ["a<br>b<br/>c", "a\nb\nc"],
  ["<table><tr><td>x</td><td>y</td></tr></table>", "x y"],
  ["<style>.a{}</style><script>var s='<p>hidden</p>'</script>shown", "shown"],
  ["<head><title>t</title></head><body>b</body>", "b"],
  ["x<!-- hidden -->y", "xy"],
  ["x<!-- unterminated", "x"],
  ["CHEAP&nbsp;PILLS &amp; more &#8211; &#x41;&lt;&gt;", "CHEAP PILLS & more – A<>"],
  ["&unknown; &amp", "&unknown; &"],
  ['<img src="x.png" alt="cheap pills">', "cheap pills"],
  ["1 < 2 and 3 > 2", "1 < 2 and 3 > 2"],
  ["<p>unclosed <b", "unclosed <b"],
  ["<!DOCTYPE html><html>ok</html>", "ok"],
];
for (const [input, want] of HTML) {
  Deno.test(`htmlToText(${JSON.stringify(input)}) is ${JSON.stringify(want)}`, () => {
    assert.equal(htmlToText(input), want);
  });
}

Deno.test("htmlToText() is linear: 1 MB of nested or unclosed tags takes well under a second", () => {
  for (const html of ["<div>".repeat(200_000), "<".repeat(1_000_000), "<a ".repeat(300_000)]) {
    const t0 = performance.now();
    htmlToText(html);
    // Generous: quadratic work on 1 MB would take minutes; a loaded CI machine must not fail this.
    assert.ok(performance.now() - t0 < 15_000);
  }
  assert.equal(htmlToText("a".repeat(100), 10), "a".repeat(10));
});

Deno.test("decodeEntities() refuses invalid code points", () => {
  assert.equal(decodeEntities("&#0;&#xD800;&#1114112;"), "\ufffd\ufffd\ufffd");
});

Deno.test("decodeUtf7() decodes RFC 2152's examples", async () => {
  const { decodeUtf7 } = await import("../../src/policy/charset_decode.ts");
  assert.equal(decodeUtf7("A+ImIDkQ."), "A\u2262\u0391.");
  assert.equal(decodeUtf7("Hi Mom -+Jjo--!"), "Hi Mom -\u263a-!");
  assert.equal(decodeUtf7("+ZeVnLIqe-"), "日本語");
  assert.equal(decodeUtf7("1 +- 1 = 2"), "1 + 1 = 2");
  assert.equal(decodeUtf7("+2D3eAA-"), "\u{1f600}"); // a surrogate pair
});
