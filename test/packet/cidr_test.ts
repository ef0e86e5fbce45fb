import assert from "node:assert/strict";
import {
  cidrContains,
  CidrError,
  formatCidr,
  maskBytes,
  parseCidr,
} from "../../src/packet/cidr.ts";
import { ip } from "./packet_helpers.ts";

Deno.test("parseCidr() reads IPv4 and IPv6 networks and host routes", () => {
  const cases: [string, 4 | 6, string, number][] = [
    ["198.51.100.0/24", 4, "198.51.100.0/24", 24],
    ["192.0.2.25", 4, "192.0.2.25/32", 32],
    ["0.0.0.0/0", 4, "0.0.0.0/0", 0],
    ["2001:db8:25::/64", 6, "2001:db8:25::/64", 64],
    ["2001:DB8:25:0::/64", 6, "2001:db8:25::/64", 64],
    ["2001:db8::25", 6, "2001:db8::25/128", 128],
    ["::/0", 6, "::/0", 0],
    [" 203.0.113.0/25 ", 4, "203.0.113.0/25", 25],
  ];
  for (const [text, family, normal, prefix] of cases) {
    const c = parseCidr(text);
    assert.equal(c.family, family, text);
    assert.equal(c.text, normal, text);
    assert.equal(c.prefix, prefix, text);
    assert.equal(formatCidr(c), normal);
  }
});

Deno.test("parseCidr() rejects bad networks with a message that says why", () => {
  const cases: [string, RegExp][] = [
    ["198.51.100.7/24", /host bits are set \(did you mean 198\.51\.100\.0\/24\?\)/],
    ["2001:db8:25::1/64", /did you mean 2001:db8:25::\/64/],
    ["198.51.100.0/33", /prefix length must be 0\.\.32/],
    ["2001:db8::/129", /prefix length must be 0\.\.128/],
    ["198.51.100.0/024", /prefix length/],
    ["198.51.100.0/", /prefix length/],
    ["198.51.100.0/-1", /prefix length/],
    ["mail.example/24", /"mail\.example" is not an IPv4 or IPv6 address/],
    ["", /is not an IPv4 or IPv6 address/],
  ];
  for (const [text, re] of cases) {
    assert.throws(() => parseCidr(text), (e: unknown) => {
      assert.ok(e instanceof CidrError, text);
      assert.equal(e.name, "CidrError");
      assert.match(e.message, re, text);
      assert.match(e.message, /^Invalid network "/);
      return true;
    });
  }
});

Deno.test("cidrContains() matches at every prefix boundary", () => {
  // For each prefix length p, the last address inside and the first outside.
  for (let p = 1; p <= 32; p++) {
    const net = parseCidr(`${maskBytes(ip("192.0.2.0"), p).join(".")}/${p}`);
    const inside = new Uint8Array(net.bytes);
    // Set every host bit: still inside.
    for (let bit = p; bit < 32; bit++) inside[bit >> 3] |= 0x80 >> (bit & 7);
    assert.ok(cidrContains(net, inside), `${net.text} contains its last address`);
    assert.ok(cidrContains(net, net.bytes), `${net.text} contains its first address`);
    // Flip the last network bit: outside.
    const outside = new Uint8Array(net.bytes);
    outside[(p - 1) >> 3] ^= 0x80 >> ((p - 1) & 7);
    assert.ok(!cidrContains(net, outside), `${net.text} excludes a neighbour`);
  }
  const v6 = parseCidr("2001:db8:25::/64");
  assert.ok(cidrContains(v6, ip("2001:db8:25::25")));
  assert.ok(cidrContains(v6, ip("2001:db8:25:0:ffff:ffff:ffff:ffff")));
  assert.ok(!cidrContains(v6, ip("2001:db8:25:1::")));
  assert.ok(!cidrContains(v6, ip("2001:db8:24:ffff:ffff:ffff:ffff:ffff")));
  const v6odd = parseCidr("2001:db8:25::/63");
  assert.ok(cidrContains(v6odd, ip("2001:db8:25:1::1")));
  assert.ok(!cidrContains(v6odd, ip("2001:db8:25:2::1")));
});

Deno.test("cidrContains() never matches across families and reads from an offset", () => {
  const v4 = parseCidr("0.0.0.0/0");
  const v6 = parseCidr("::/0");
  assert.ok(!cidrContains(v4, ip("::1")));
  assert.ok(!cidrContains(v6, ip("192.0.2.1")));
  assert.ok(!cidrContains(parseCidr("192.0.2.0/24"), ip("::ffff:192.0.2.1")));
  const packet = new Uint8Array(20);
  packet.set(ip("198.51.100.25"), 16);
  assert.ok(cidrContains(parseCidr("198.51.100.0/24"), packet, 16, 4));
  assert.ok(!cidrContains(parseCidr("198.51.101.0/24"), packet, 16, 4));
});
