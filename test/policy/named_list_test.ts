import assert from "node:assert/strict";
import { canonicalIp } from "../../src/policy/canonical_ip.ts";
import { parseHostPort } from "../../src/config/host_port.ts";
import {
  compileList,
  listHasAddress,
  listHasDomain,
  listHasIp,
  listWordIn,
  MAX_ENTRY_LENGTH,
  MAX_LIST_ENTRIES,
  parseListText,
} from "../../src/policy/named_list.ts";

Deno.test("parseListText() skips blank and # comment lines and trims entries", () => {
  const r = parseListText(
    "# a comment\n\n  lottery  \r\nwire transfer\n   # indented comment\n@spam.example\n",
  );
  assert.deepEqual(r.entries, ["lottery", "wire transfer", "@spam.example"]);
  assert.deepEqual(r.issues, []);
});

Deno.test("parseListText() limits entry length at MAX_ENTRY_LENGTH (limit, limit+1)", () => {
  const r = parseListText(`${"a".repeat(MAX_ENTRY_LENGTH)}\n${"b".repeat(MAX_ENTRY_LENGTH + 1)}\n`);
  assert.equal(r.entries.length, 1);
  assert.deepEqual(r.issues, [{
    line: 2,
    message: `entry longer than ${MAX_ENTRY_LENGTH} characters`,
  }]);
});

Deno.test("parseListText() limits the number of entries at MAX_LIST_ENTRIES (limit−1, limit, limit+1)", () => {
  for (const n of [MAX_LIST_ENTRIES - 1, MAX_LIST_ENTRIES, MAX_LIST_ENTRIES + 1]) {
    const r = parseListText(Array.from({ length: n }, (_, i) => `w${i}`).join("\n"));
    assert.equal(r.entries.length, Math.min(n, MAX_LIST_ENTRIES));
    assert.equal(r.issues.length, n > MAX_LIST_ENTRIES ? 1 : 0);
  }
});

Deno.test("compileList() sorts entries into networks, addresses, domains and words", () => {
  const l = compileList("x", [
    "192.0.2.0/28",
    "2001:db8::/32",
    "198.51.100.7",
    "Boss@Partner.Example",
    "@Spam.Example",
    "friends.example",
    "Cheap Pills",
  ]);
  assert.deepEqual(l.networks.map((n) => n.text), [
    "192.0.2.0/28",
    "2001:db8::/32",
    "198.51.100.7/32",
  ]);
  const cases: [boolean, boolean][] = [
    [listHasIp(l, "192.0.2.15"), true],
    [listHasIp(l, "192.0.2.16"), false],
    [listHasIp(l, "2001:db8::1"), true],
    [listHasIp(l, "198.51.100.7"), true],
    [listHasAddress(l, "boss@partner.example"), true],
    [listHasAddress(l, "intern@partner.example"), false],
    [listHasAddress(l, "x@spam.example"), true],
    [listHasAddress(l, "x@friends.example"), true],
    [listHasAddress(l, "x@sub.spam.example"), false],
    [listHasAddress(l, ""), false],
    [listHasDomain(l, "spam.example"), true],
    [listHasDomain(l, "friends.example."), true],
    [listHasDomain(l, "other.example"), false],
  ];
  cases.forEach(([got, want], i) => assert.equal(got, want, `case ${i}`));
  assert.equal(listWordIn(l, "buy cheap pills now"), "cheap pills");
  assert.equal(listWordIn(l, "buy cheap stuff"), undefined);
});

Deno.test("listWordIn() on a large list finds the first entry in list order, like the small-list scan", () => {
  const words = Array.from({ length: 5000 }, (_, i) => `word${i}x`);
  words.push("zz", "q", "wire transfer");
  const l = compileList("big", words);
  assert.equal(listWordIn(l, "please send the wire transfer fee"), "wire transfer");
  assert.equal(listWordIn(l, "word4999x and word12x"), "word12x");
  assert.equal(listWordIn(l, "a quiet day"), "q");
  assert.equal(listWordIn(l, "nothing here"), undefined);
  // 100 000 entries over 1.2 MB of text: a lookup per word, not a scan per entry (a quadratic
  // scan would not finish in the test's lifetime). Speed itself is measured in bench/, not here.
  const big = compileList("huge", Array.from({ length: 100_000 }, (_, i) => `entry${i}word`));
  assert.equal(listWordIn(big, "entry ".repeat(200_000)), undefined);
  assert.equal(listWordIn(big, "entry ".repeat(200_000) + "entry99999word"), "entry99999word");
});

Deno.test("canonicalIp() gives one text per address", () => {
  const cases: [string, string][] = [
    ["192.0.2.1", "192.0.2.1"],
    ["::ffff:192.0.2.1", "192.0.2.1"],
    ["2001:DB8:0:0::1", "2001:db8::1"],
    [" 203.0.113.5 ", "203.0.113.5"],
    ["not-an-ip", "not-an-ip"],
  ];
  for (const [a, b] of cases) assert.equal(canonicalIp(a), b, a);
});

Deno.test("parseHostPort() reads host:port, [v6]:port and bare hosts, and refuses the rest", () => {
  const ok: [string, { host: string; port: number }][] = [
    ["198.51.100.25:25", { host: "198.51.100.25", port: 25 }],
    ["198.51.100.25", { host: "198.51.100.25", port: 25 }],
    ["[2001:db8::25]:2525", { host: "2001:db8::25", port: 2525 }],
    ["2001:db8::25", { host: "2001:db8::25", port: 25 }],
    ["mail.corp.example:587", { host: "mail.corp.example", port: 587 }],
    ["mail.corp.example:65535", { host: "mail.corp.example", port: 65535 }],
  ];
  for (const [t, want] of ok) assert.deepEqual(parseHostPort(t), want, t);
  for (
    const bad of [
      "host:0",
      "host:65536",
      "host:x",
      "[2001:db8::1",
      "-bad-:25",
      "a b:25",
      "[192.0.2.1]:25",
    ]
  ) {
    assert.equal(typeof parseHostPort(bad), "string", bad);
  }
});

Deno.test("listWordIn() agrees with a naive scan on 300 random lists and texts", () => {
  let seed = 12345;
  const rnd = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  const word = (len: number) => Array.from({ length: len }, () => "abc "[rnd(4)]).join("");
  for (let round = 0; round < 300; round++) {
    const words = Array.from({ length: 17 + rnd(40) }, () => word(1 + rnd(5))).map((w) => w.trim())
      .filter((w) => w !== "");
    const list = compileList("r", words);
    const text = word(rnd(60));
    const naive = list.words.find((w) => text.includes(w));
    assert.equal(
      listWordIn(list, text),
      naive,
      `words ${JSON.stringify(list.words)} text ${JSON.stringify(text)}`,
    );
  }
});
