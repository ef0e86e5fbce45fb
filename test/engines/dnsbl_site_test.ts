import assert from "node:assert/strict";
import { isListRefusal, parseDnsblSite, replyMatches } from "../../src/engines/dns/dnsbl_site.ts";

Deno.test("parseDnsblSite reads Postfix postscreen_dnsbl_sites entries", () => {
  const cases: [string, string, number, number[][][] | undefined][] = [
    ["zen.example.org", "zen.example.org", 1, undefined],
    ["Zen.Example.ORG.*3", "zen.example.org", 3, undefined],
    ["wl.example.org*-5", "wl.example.org", -5, undefined],
    ["zen.example.org=127.0.0.2", "zen.example.org", 1, [[[127, 127]], [[0, 0]], [[0, 0]], [[
      2,
      2,
    ]]]],
    [
      "zen.example.org=127.0.0.[2..11]*3",
      "zen.example.org",
      3,
      [[[127, 127]], [[0, 0]], [[0, 0]], [[2, 11]]],
    ],
    [
      "wl.example.org=127.0.[0..255].[1;3..4]*-2",
      "wl.example.org",
      -2,
      [[[127, 127]], [[0, 0]], [[0, 255]], [[1, 1], [3, 4]]],
    ],
  ];
  for (const [text, zone, weight, reply] of cases) {
    const s = parseDnsblSite(text);
    assert.equal(s.zone, zone, text);
    assert.equal(s.weight, weight, text);
    assert.deepEqual(s.reply, reply, text);
  }
});

Deno.test("parseDnsblSite refuses malformed entries with what was expected", () => {
  const bad: [string, RegExp][] = [
    ["zen", /not a DNS zone name/],
    ["zen..example.org", /not a DNS zone name/],
    ["zen.example.org*0", /non-zero integer/],
    ["zen.example.org*1001", /non-zero integer/],
    ["zen.example.org*x", /non-zero integer/],
    ["zen.example.org=127.0.0", /four octets/],
    ["zen.example.org=127.0.0.256", /range "256"/],
    ["zen.example.org=127.0.0.[5..2]", /range "5..2"/],
    ["zen.example.org=127.0.0.2..3", /four octets/],
    ["zen.example.org=127.0.0.[2", /unbalanced/],
    ["zen.example.org=127.0.0.[[2]]", /unbalanced/],
    ["zen.example.org=127.0.0.x", /"x"/],
    ["bad zone.example.org", /not a DNS zone name/],
  ];
  for (const [text, why] of bad) assert.throws(() => parseDnsblSite(text), why, text);
});

Deno.test("replyMatches: a pattern, no pattern, and the lists' refusal codes", () => {
  const site = parseDnsblSite("zen.example.org=127.0.0.[2..11]*3");
  assert.equal(replyMatches(site, "127.0.0.2"), true);
  assert.equal(replyMatches(site, "127.0.0.11"), true);
  assert.equal(replyMatches(site, "127.0.0.1"), false);
  assert.equal(replyMatches(site, "127.0.0.12"), false);
  assert.equal(replyMatches(site, "127.0.1.2"), false);
  assert.equal(replyMatches(site, "not an address"), false);
  const any = parseDnsblSite("zen.example.org");
  assert.equal(replyMatches(any, "127.0.0.2"), true);
  assert.equal(replyMatches(any, "127.0.1.4"), true);
  assert.equal(replyMatches(any, "127.255.255.254"), false);
  assert.equal(isListRefusal("127.255.255.254"), true);
  assert.equal(isListRefusal("127.0.0.2"), false);
  // A pattern that names a refusal code explicitly counts it.
  assert.equal(replyMatches(parseDnsblSite("x.example=127.255.255.254"), "127.255.255.254"), true);
});
