import assert from "node:assert/strict";
import type { Cidr } from "../../src/config/config.ts";
import { parseCidr } from "../../src/packet/cidr.ts";
import {
  type HostAddress,
  pickResponderAddresses,
  ResponderAddressError,
} from "../../src/divert/responder_address.ts";

const V4 = [parseCidr("198.51.100.0/24")];
const V6 = [parseCidr("2001:db8:25::/64")];
const BOTH = [...V4, ...V6];

function cfg(protect: Cidr[], ipv4 = "auto", ipv6 = "auto") {
  return { protect, responder: { ipv4, ipv6, port: 10025 } };
}
const a4 = (name: string, address: string): HostAddress => ({ name, family: "IPv4", address });
const a6 = (name: string, address: string): HostAddress => ({ name, family: "IPv6", address });

const HOST: HostAddress[] = [
  a4("lo", "127.0.0.1"),
  a6("lo", "::1"),
  a4("eth0", "169.254.10.1"),
  a6("eth0", "fe80::1"),
  a6("eth0", "fd00::5"),
  a4("eth0", "192.0.2.1"),
  a6("eth0", "2001:db8:1::1"),
  a4("eth1", "198.51.100.1"),
  a6("eth1", "2001:db8:25::1"),
];

Deno.test("pickResponderAddresses() resolves auto to the first usable address of each protected family", () => {
  const cases: [string, Cidr[], HostAddress[], { ipv4?: string; ipv6?: string }][] = [
    ["both families on a full host", BOTH, HOST, { ipv4: "192.0.2.1", ipv6: "2001:db8:1::1" }],
    ["IPv4 only: IPv6 not needed", V4, HOST, { ipv4: "192.0.2.1" }],
    ["IPv6 only: IPv4 not needed", V6, HOST, { ipv6: "2001:db8:1::1" }],
    ["a unique local address when there is no global one", V6, [
      a6("eth0", "fe80::1"),
      a6("eth0", "fd00::5"),
    ], {
      ipv6: "fd00::5",
    }],
    ["a global address wins over an earlier unique local one", V6, [
      a6("eth0", "fd00::5"),
      a6("eth1", "2001:db8::9"),
    ], {
      ipv6: "2001:db8::9",
    }],
    ["IPv6 text normalised (RFC 5952)", V6, [a6("eth0", "2001:DB8:0:0:0:0:0:0001")], {
      ipv6: "2001:db8::1",
    }],
  ];
  for (const [name, protect, host, want] of cases) {
    assert.deepEqual(pickResponderAddresses(cfg(protect), host), want, name);
  }
});

Deno.test("pickResponderAddresses() checks an explicit address is on this host", () => {
  assert.deepEqual(pickResponderAddresses(cfg(BOTH, "198.51.100.1", "2001:db8:25::1"), HOST), {
    ipv4: "198.51.100.1",
    ipv6: "2001:db8:25::1",
  });
  const bad: [string, string, string, RegExp][] = [
    [
      "an IPv4 address not on the host",
      "192.0.2.99",
      "auto",
      /192\.0\.2\.99 is not an address of this host/,
    ],
    [
      "an IPv6 address not on the host",
      "auto",
      "2001:db8::99",
      /2001:db8::99 is not an address of this host/,
    ],
    ["an IPv6 address as ipv4", "2001:db8:1::1", "auto", /is not an IPv4 address/],
    ["garbage", "192.0.2.256", "auto", /is not an IPv4 address/],
    [
      "a loopback address (lo is never a responder)",
      "127.0.0.1",
      "auto",
      /not an address of this host/,
    ],
  ];
  for (const [name, v4, v6, msg] of bad) {
    assert.throws(
      () => pickResponderAddresses(cfg(BOTH, v4, v6), HOST),
      (e) => e instanceof ResponderAddressError && msg.test(e.message),
      name,
    );
  }
});

Deno.test("pickResponderAddresses() refuses a protected family with no usable address", () => {
  const cases: [string, Cidr[], HostAddress[], RegExp][] = [
    [
      "IPv6 protected, only link-local and loopback",
      V6,
      [a6("lo", "::1"), a6("eth0", "fe80::1")],
      /no global IPv6/,
    ],
    ["IPv4 protected, only loopback and link-local", V4, [
      a4("lo", "127.0.0.1"),
      a4("eth0", "169.254.1.1"),
    ], /no non-loopback IPv4/],
    ["no interfaces at all", BOTH, [], /set gateway\.responder\.ipv4/],
  ];
  for (const [name, protect, host, msg] of cases) {
    assert.throws(
      () => pickResponderAddresses(cfg(protect), host),
      (e) => e instanceof ResponderAddressError && msg.test(e.message),
      name,
    );
  }
});

Deno.test({
  name: "pickResponderAddresses() accepts Deno.networkInterfaces() as it is",
  ignore:
    Deno.permissions.querySync({ name: "sys", kind: "networkInterfaces" }).state !== "granted",
}, () => {
  // Whatever this host has, the call must not throw for an unprotected configuration.
  assert.deepEqual(pickResponderAddresses(cfg([]), Deno.networkInterfaces()), {});
});
