import assert from "node:assert/strict";
import { canonicalIp } from "../../ffi/ip_key.ts";

Deno.test("canonicalIp() gives one text per address, folding IPv4-mapped IPv6 to IPv4", () => {
  const cases: [string, string | undefined][] = [
    ["192.0.2.10", "192.0.2.10"],
    ["::ffff:192.0.2.10", "192.0.2.10"],
    ["::FFFF:c000:020a", "192.0.2.10"],
    ["2001:DB8:1:0:0:0:0:10", "2001:db8:1::10"],
    ["2001:db8:1::10", "2001:db8:1::10"],
    ["::192.0.2.10", "::c000:20a"], // IPv4-compatible (deprecated) is not IPv4-mapped
    ["not an address", undefined],
    ["192.0.2.010", undefined],
    ["", undefined],
  ];
  for (const [input, want] of cases) assert.equal(canonicalIp(input), want, input);
});
