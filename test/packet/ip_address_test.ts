import assert from "node:assert/strict";
import {
  formatIp,
  formatIpv4,
  formatIpv6,
  ipFamily,
  parseIp,
  parseIpv4,
  parseIpv6,
} from "../../src/packet/ip_address.ts";
import { prng, randomBytes } from "./packet_helpers.ts";

Deno.test("formatIpv6() writes the RFC 5952 canonical form", () => {
  const cases: [string, string][] = [
    // [input in any valid spelling, canonical text]
    ["2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"], // §4.1, §4.2.1
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"], // §4.2.3: first of equal runs
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"], // §4.2.2: never "::" for one group
    ["2001:db8:0:0:0:1:0:0", "2001:db8::1:0:0"], // longest run wins
    ["2001:DB8::AbCd", "2001:db8::abcd"], // §4.3: lower case
    ["0:0:0:0:0:0:0:0", "::"],
    ["0:0:0:0:0:0:0:1", "::1"],
    ["1:0:0:0:0:0:0:0", "1::"],
    ["::ffff:192.0.2.1", "::ffff:192.0.2.1"], // §5: mapped keeps the dotted quad
    ["::ffff:c000:0201", "::ffff:192.0.2.1"],
    ["2001:db8:25::25", "2001:db8:25::25"],
    ["1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"],
    ["0:1:0:1:0:1:0:1", "0:1:0:1:0:1:0:1"],
    ["2001:db8::", "2001:db8::"],
    ["::2:3:4:5:6:7:8", "0:2:3:4:5:6:7:8"], // one zero group: written out
    ["1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"],
    ["::192.0.2.1", "::c000:201"], // deprecated compatible form: plain hex
  ];
  for (const [input, canonical] of cases) {
    const b = parseIpv6(input);
    assert.ok(b, `parses ${input}`);
    assert.equal(formatIpv6(b), canonical, input);
    assert.deepEqual(parseIpv6(canonical), b, `canonical ${canonical} parses back`);
  }
});

Deno.test("parseIpv6() rejects malformed text", () => {
  const bad = [
    "",
    ":",
    ":::",
    "1:2:3:4:5:6:7:8:9",
    "1:2:3:4:5:6:7",
    "1::2::3",
    ":1:2:3:4:5:6:7:8",
    "1:2:3:4:5:6:7:8:",
    "12345::",
    "g::1",
    "1:2:3:4:5:6:7:8::",
    "::1:2:3:4:5:6:7:8",
    "fe80::1%eth0",
    "[::1]",
    "::ffff:192.0.2.256",
    "::ffff:192.0.2",
    "::192.0.2.1:1",
    "1.2.3.4",
    " ::1",
    "::1 ",
  ];
  for (const t of bad) assert.equal(parseIpv6(t), undefined, JSON.stringify(t));
});

Deno.test("parseIpv4() accepts dotted quads and rejects everything else", () => {
  const good: [string, number[]][] = [
    ["192.0.2.1", [192, 0, 2, 1]],
    ["0.0.0.0", [0, 0, 0, 0]],
    ["255.255.255.255", [255, 255, 255, 255]],
    ["198.51.100.25", [198, 51, 100, 25]],
  ];
  for (const [t, b] of good) {
    assert.deepEqual(parseIpv4(t), Uint8Array.from(b), t);
    assert.equal(formatIpv4(Uint8Array.from(b)), t);
  }
  const bad = [
    "",
    "1.2.3",
    "1.2.3.4.5",
    "256.0.0.1",
    "01.2.3.4", // leading zero: octal in some resolvers
    "1.2.3.04",
    "1..2.3",
    ".1.2.3",
    "1.2.3.",
    "1.2.3.4 ",
    "a.b.c.d",
    "1.2.3.-4",
    "999.999.999.999",
    "1.2.3.4/24",
  ];
  for (const t of bad) assert.equal(parseIpv4(t), undefined, JSON.stringify(t));
});

Deno.test("parseIp() and formatIp() pick the family from the text and the length", () => {
  assert.equal(parseIp("192.0.2.1")?.length, 4);
  assert.equal(parseIp("2001:db8::1")?.length, 16);
  assert.equal(parseIp("example.com"), undefined);
  assert.equal(ipFamily(parseIp("192.0.2.1")!), 4);
  assert.equal(ipFamily(parseIp("::1")!), 6);
  assert.equal(formatIp(parseIp("192.0.2.1")!), "192.0.2.1");
  assert.equal(formatIp(parseIp("2001:db8::1")!), "2001:db8::1");
  // From inside a packet: offset and explicit family.
  const packet = new Uint8Array(40);
  packet.set(parseIp("2001:db8::7")!, 8);
  packet.set(parseIp("198.51.100.25")!, 30);
  assert.equal(formatIp(packet, 8, 6), "2001:db8::7");
  assert.equal(formatIp(packet, 30, 4), "198.51.100.25");
});

Deno.test("formatIpv6() then parseIpv6() is the identity on 20,000 random addresses", () => {
  const next = prng(6);
  for (let i = 0; i < 20000; i++) {
    const b = randomBytes(next, 16);
    // Bias towards zero groups so "::" placement is exercised.
    for (let g = 0; g < 8; g++) {
      if (next() % 3 === 0) {
        b[2 * g] = 0;
        b[2 * g + 1] = 0;
      }
    }
    const text = formatIpv6(b);
    assert.deepEqual(parseIpv6(text), b, text);
    // An independent oracle: the WHATWG URL serializer compresses the same way (except for
    // IPv4-mapped addresses, which RFC 5952 §5 writes with a dotted quad).
    if (!text.startsWith("::ffff:")) {
      assert.equal(new URL(`http://[${text}]/`).hostname, `[${text}]`);
    }
  }
});
