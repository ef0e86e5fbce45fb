import assert from "node:assert/strict";
import {
  assertPrivileges,
  CAP_NET_ADMIN,
  checkPrivileges,
  hasCapability,
  parseCapEff,
  PrivilegeError,
} from "../../src/divert/privileges.ts";
import { granted, isRoot } from "../ffi/test_permissions.ts";

const status = (capEff: string) =>
  `Name:\tssg\nUmask:\t0022\nCapInh:\t0000000000000000\nCapPrm:\t${capEff}\nCapEff:\t${capEff}\nCapBnd:\t000001ffffffffff\n`;

Deno.test("parseCapEff() reads the effective set; hasCapability() tests bit 12 for CAP_NET_ADMIN", () => {
  const cases: [string, bigint | undefined, boolean][] = [
    ["000001ffffffffff", 0x1ffffffffffn, true], // root
    ["0000000000000000", 0n, false], // unprivileged
    ["0000000000001000", 0x1000n, true], // exactly CAP_NET_ADMIN (bit 12)
    ["0000000000000800", 0x800n, false], // bit 11 (CAP_NET_BROADCAST): one below
    ["0000000000002000", 0x2000n, false], // bit 13 (CAP_NET_RAW): one above
  ];
  for (const [hex, eff, admin] of cases) {
    assert.equal(parseCapEff(status(hex)), eff, hex);
    assert.equal(hasCapability(status(hex), CAP_NET_ADMIN), admin, hex);
  }
  assert.equal(parseCapEff("Name:\tx\n"), undefined);
  assert.equal(hasCapability("Name:\tx\n", CAP_NET_ADMIN), false);
});

Deno.test("checkPrivileges() names the fix when CAP_NET_ADMIN is missing; assertPrivileges() throws it", () => {
  const want = /SSG needs CAP_NET_ADMIN to divert packets: run it as root or grant cap_net_admin/;
  assert.match(checkPrivileges({ status: status("0000000000000000") }) ?? "", want);
  assert.throws(
    () => assertPrivileges({ status: status("0000000000000000") }),
    (e) => e instanceof PrivilegeError && want.test(e.message),
  );
  assert.equal(checkPrivileges({ status: status("0000000000001000") }), undefined);
});

Deno.test("checkPrivileges() reports a library that cannot be loaded; assertPrivileges() keeps the cause", () => {
  const cause = new Error(
    "Cannot load libnetfilter_queue.so.1: install the libnetfilter-queue1 package (x)",
  );
  const probeLibrary = () => {
    throw cause;
  };
  assert.equal(
    checkPrivileges({ status: status("0000000000001000"), probeLibrary }),
    cause.message,
  );
  assert.throws(
    () => assertPrivileges({ status: status("0000000000001000"), probeLibrary }),
    (e) => e instanceof PrivilegeError && e.cause === cause,
  );
  let probed = 0;
  assert.equal(
    checkPrivileges({ status: status("0000000000001000"), probeLibrary: () => void probed++ }),
    undefined,
  );
  assert.equal(probed, 1);
});

Deno.test({
  name: "checkPrivileges() and probeLibrary() pass for root on this machine",
  ignore: !isRoot() || !granted("ffi"),
  async fn() {
    const { probeLibrary } = await import("../../ffi/probe.ts");
    const { probeNetfilterQueue } = await import("../../ffi/native.ts");
    assert.equal(probeLibrary(), undefined);
    assert.equal(checkPrivileges({ probeLibrary: probeNetfilterQueue }), undefined);
  },
});
