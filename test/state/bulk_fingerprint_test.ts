import assert from "node:assert/strict";
import {
  fingerprint,
  fingerprintTokens,
  SAME_CONTENT,
  SHINGLE_WORDS,
  shingleHashes,
  similarity,
} from "../../src/state/bulk_fingerprint.ts";

const CAMPAIGN = (name: string, account: string, amount: string, ws = " ") =>
  `Dear ${name},${ws}We are pleased to inform you that your account ${account} has been selected` +
  ` for our exclusive loyalty reward of ${amount} USD. To claim the reward, confirm your details` +
  ` through the secure link below before the end of the week.${ws}This offer is personal and` +
  ` cannot be transferred. Kind regards, the Customer Rewards Department`;

const BASE = CAMPAIGN("John", "12345678", "500");

// Variants a bulk sender makes per copy: each must be recognised as the same content.
const SAME: { name: string; text: string }[] = [
  { name: "another name", text: CAMPAIGN("Mary", "12345678", "500") },
  { name: "a two-word name", text: CAMPAIGN("Kim Min-jun", "12345678", "500") },
  { name: "other numbers", text: CAMPAIGN("John", "99", "1,250.00") },
  { name: "other white space", text: CAMPAIGN("John", "12345678", "500", "\r\n\r\n   \t") },
  { name: "upper case", text: CAMPAIGN("John", "12345678", "500").toUpperCase() },
  { name: "full-width digits and letters", text: CAMPAIGN("Ｊｏｈｎ", "１２３４", "500") },
  {
    name: "name, number and white space changed at once",
    text: CAMPAIGN("Alice Wonderland", "0042", "75", "\n\n"),
  },
  { name: "punctuation changed", text: BASE.replaceAll(",", " ;").replaceAll(".", "!") },
];
for (const c of SAME) {
  Deno.test(`fingerprint(): ${c.name} is the same content`, () => {
    const a = fingerprint(BASE)!;
    const b = fingerprint(c.text)!;
    const s = similarity(a.signature, b.signature);
    assert.ok(s >= SAME_CONTENT, `similarity ${s}`);
    assert.ok(a.bands.some((x) => b.bands.includes(x)), "shares an LSH band (found by lookup)");
  });
}

// Different messages, some sharing vocabulary: must not be the same content.
const DIFFERENT: { name: string; text: string }[] = [
  {
    name: "a meeting note",
    text: "Hi team, the meeting tomorrow moves to 3pm in room B. Please bring the quarterly " +
      "numbers and the draft proposal. Thanks, Alice",
  },
  {
    name: "a real loyalty newsletter with some shared words",
    text: "Dear member, your loyalty points for this month are now available in your account. " +
      "Visit the store to see new arrivals and seasonal offers. Kind regards, the store team",
  },
  {
    name: "an invoice",
    text: "Invoice 2026-118 for consulting services in November is attached. Payment is due " +
      "within thirty days by bank transfer to the account on the invoice.",
  },
  {
    name: "a different campaign",
    text:
      "Cheap watches! Replica designer watches at 90% off, free shipping worldwide, order now and save big",
  },
];
for (const c of DIFFERENT) {
  Deno.test(`fingerprint(): ${c.name} is not the same content`, () => {
    const s = similarity(fingerprint(BASE)!.signature, fingerprint(c.text)!.signature);
    assert.ok(s < SAME_CONTENT, `similarity ${s}`);
  });
}

Deno.test("fingerprintTokens() folds case and width, maps digit runs to 0 and drops punctuation", () => {
  assert.deepEqual(fingerprintTokens("Order #12345, ＴＯＴＡＬ: $99.50!"), [
    "order",
    "0",
    "total",
    "0",
    "0",
  ]);
  assert.deepEqual(fingerprintTokens("당첨을 축하합니다 123"), ["당첨을", "축하합니다", "0"]);
});

Deno.test("fingerprint() of text without words is undefined; of a short text it is stable", () => {
  assert.equal(fingerprint(""), undefined);
  assert.equal(fingerprint(" \r\n ... !!! "), undefined);
  const a = fingerprint("hi there")!;
  const b = fingerprint("HI   there")!;
  assert.equal(similarity(a.signature, b.signature), 1);
});

Deno.test("fingerprint() is deterministic (fixed seeds: fingerprints persist across restarts)", () => {
  const a = fingerprint(BASE)!;
  const b = fingerprint(BASE)!;
  assert.deepEqual([...a.signature], [...b.signature]);
  assert.deepEqual(a.bands, b.bands);
});

Deno.test("fingerprint() is linear: 1 MB of text is fingerprinted (capped) in well under a second", () => {
  const t0 = performance.now();
  fingerprint("word ".repeat(200_000) + "x".repeat(500_000));
  // Generous: quadratic work on 1 MB would take minutes; a loaded CI machine must not fail this.
  assert.ok(performance.now() - t0 < 15_000);
});

/**
 * The fingerprint as first defined: tokens from `fingerprintTokens` (regex replace and split),
 * each shingle hashed as the joined string. Stored signatures must stay comparable across
 * versions, so the allocation-free tokenizer of `fingerprint()` must give exactly this.
 */
function referenceFingerprint(text: string) {
  const tokens = fingerprintTokens(text);
  if (tokens.length === 0) return undefined;
  const fnv = (s: string) => {
    let h = 0x811c9dc5;
    for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
    return h >>> 0;
  };
  const hashes = new Set<number>();
  if (tokens.length < SHINGLE_WORDS) hashes.add(fnv(tokens.join(" ")));
  for (let i = 0; i + SHINGLE_WORDS <= tokens.length; i++) {
    hashes.add(fnv(tokens.slice(i, i + SHINGLE_WORDS).join(" ")));
  }
  return hashes;
}

Deno.test("fingerprint() equals the regex-and-strings definition on generated Unicode text", () => {
  const pieces = [
    "Order",
    "#",
    "12345",
    ",",
    " ",
    "\t",
    "\r\n",
    "ＴＯＴＡＬ",
    "$99.50",
    "!",
    "당첨을",
    "축하합니다",
    "café",
    "e\u0301",
    "naïve",
    "Ｌｏｔｔｅｒｙ",
    "lоttеry",
    "١٢٣",
    "٣x٤",
    "५६",
    "abc123def",
    "𝟎𝟏",
    "𐒠𐒡",
    "𝐀𝐁𝐂",
    "😀",
    "👍🏽",
    "\u200b",
    "\u00ad",
    "ß",
    "ΣΟΦΟΣ",
    "\ud800",
    "\udc00x",
    "x\ud83d",
    "-",
    "_",
    "'",
    "’",
    "—",
    "½",
    "Ⅻ",
    "①",
    "漢字",
    "かな",
    "ไทย",
    "עברית",
    "\u0301",
    "",
  ];
  let seed = 0x2026;
  const rand = () => (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 4294967296;
  let compared = 0;
  for (let k = 0; k < 3000; k++) {
    let text = "";
    const n = Math.floor(rand() * 40);
    for (let i = 0; i < n; i++) text += pieces[Math.floor(rand() * pieces.length)];
    const got = fingerprint(text);
    const ref = referenceFingerprint(text);
    if (ref === undefined) {
      assert.equal(got, undefined, JSON.stringify(text));
      continue;
    }
    assert.ok(got, JSON.stringify(text));
    assert.equal(got.shingles, ref.size, JSON.stringify(text));
    const sorted = [...ref].sort((a, b) => a - b);
    assert.deepEqual([...shingleHashes(text)], sorted, JSON.stringify(text));
    compared++;
  }
  assert.ok(compared > 2000);
});
