import assert from "node:assert/strict";
import {
  cidrContains,
  CidrError,
  cidrOverlaps,
  formatCidr,
  parseCidr,
} from "../../src/config/cidr.ts";

const GOOD: [string, 4 | 6, number, string][] = [
  ["198.51.100.0/24", 4, 24, "198.51.100.0/24"],
  ["198.51.100.25", 4, 32, "198.51.100.25/32"],
  ["0.0.0.0/0", 4, 0, "0.0.0.0/0"],
  ["203.0.113.128/25", 4, 25, "203.0.113.128/25"],
  ["2001:db8:25::/64", 6, 64, "2001:db8:25::/64"],
  ["2001:DB8:25:0:0:0:0:0/64", 6, 64, "2001:db8:25::/64"],
  ["2001:db8::1", 6, 128, "2001:db8::1/128"],
  ["::/0", 6, 0, "::/0"],
];
for (const [text, family, prefix, normal] of GOOD) {
  Deno.test(`parseCidr(${JSON.stringify(text)}) is ${normal}`, () => {
    const c = parseCidr(text);
    assert.equal(c.family, family);
    assert.equal(c.prefix, prefix);
    assert.equal(c.text, normal);
    assert.equal(formatCidr(c), normal);
    assert.equal(c.bytes.length, family === 4 ? 4 : 16);
  });
}

const BAD: [string, RegExp][] = [
  ["198.51.100.25/24", /has host bits set; did you mean "198\.51\.100\.0\/24"\?/],
  ["2001:db8:25::1/64", /has host bits set; did you mean "2001:db8:25::\/64"\?/],
  ["198.51.100.0/33", /bad prefix length \(IPv4: 0 to 32\)/],
  ["2001:db8::/129", /bad prefix length \(IPv6: 0 to 128\)/],
  ["198.51.100.0/", /bad prefix length/],
  ["198.51.100.0/-1", /bad prefix length/],
  ["198.51.100.0/024x", /bad prefix length/],
  ["198.51.100/24", /is not an IPv4 or IPv6 address or network/],
  ["010.0.0.0/8", /is not an IPv4 or IPv6 address or network/],
  ["mail.example.com", /is not an IPv4 or IPv6 address or network/],
  ["fe80::1%eth0/64", /is not an IPv4 or IPv6 address or network/],
  ["", /is not an IPv4 or IPv6 address or network/],
];
for (const [text, message] of BAD) {
  Deno.test(`parseCidr(${JSON.stringify(text)}) is refused`, () => {
    assert.throws(() => parseCidr(text), (e: unknown) => {
      assert.ok(e instanceof CidrError);
      assert.equal(e.name, "CidrError");
      assert.match(e.message, message);
      return true;
    });
  });
}

Deno.test("cidrContains() at the edges of a /24, a /25 and a /64, and across families", () => {
  const v4 = parseCidr("198.51.100.0/24");
  for (
    const [ip, inside] of [
      ["198.51.99.255", false],
      ["198.51.100.0", true],
      ["198.51.100.255", true],
      ["198.51.101.0", false],
    ] as const
  ) assert.equal(cidrContains(v4, ip), inside, ip);
  const half = parseCidr("203.0.113.128/25");
  assert.equal(cidrContains(half, "203.0.113.127"), false);
  assert.equal(cidrContains(half, "203.0.113.128"), true);
  const v6 = parseCidr("2001:db8:25::/64");
  assert.equal(cidrContains(v6, "2001:db8:25::25"), true);
  assert.equal(cidrContains(v6, "2001:db8:25:0:ffff:ffff:ffff:ffff"), true);
  assert.equal(cidrContains(v6, "2001:db8:25:1::"), false);
  assert.equal(cidrContains(v6, "198.51.100.1"), false);
  assert.equal(cidrContains(v4, "::ffff:198.51.100.1"), false); // a v4-mapped v6 address is v6
  assert.equal(cidrContains(v4, "not an ip"), false);
  assert.equal(cidrContains(parseCidr("0.0.0.0/0"), new Uint8Array([8, 8, 8, 8])), true);
});

Deno.test("cidrOverlaps() sees containment either way and never across families", () => {
  const a = parseCidr("203.0.113.0/24");
  assert.equal(cidrOverlaps(a, parseCidr("203.0.113.128/25")), true);
  assert.equal(cidrOverlaps(parseCidr("203.0.113.128/25"), a), true);
  assert.equal(cidrOverlaps(a, parseCidr("203.0.114.0/24")), false);
  assert.equal(cidrOverlaps(a, parseCidr("2001:db8::/32")), false);
});
