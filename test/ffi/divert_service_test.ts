/**
 * DivertService start-up and shutdown against the real kernel queue, each case in a fresh
 * network namespace (`unshare -n`: no interfaces but loopback, no traffic). Root only; without
 * root these are ignored and the pure checks still run.
 */
import assert from "node:assert/strict";
import { DivertService } from "../../ffi/divert_service.ts";
import type { GatewayConfig } from "../../src/config/config.ts";
import { MemoryLog } from "../../src/log/log.ts";
import { parseCidr } from "../../src/packet/cidr.ts";
import { granted, isRoot } from "./test_permissions.ts";

const PROGRAM = new URL("./divert_service_program.ts", import.meta.url).pathname;
const root = isRoot();
const canRun = granted("run");

async function program(prefix: string[], ...args: string[]) {
  const r = await new Deno.Command(prefix[0], {
    args: [...prefix.slice(1), Deno.execPath(), "run", "--allow-all", PROGRAM, ...args],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000),
  }).output();
  const text = new TextDecoder().decode(r.stdout).trim();
  assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
  return JSON.parse(text.split("\n").pop()!);
}

function config(protect: string[]): GatewayConfig {
  return {
    protect: protect.map(parseCidr),
    ports: [25],
    interfaces: [],
    hostname: "gw.test",
    responder: { ipv4: "auto", ipv6: "auto", port: 10025 },
    queue: { num: 25, maxlen: 1024, rcvbuf: 1 << 20 },
    flows: { max: 16, idleSeconds: 60 },
  };
}

Deno.test("DivertService.start() refuses, before spawning anything, a protected family without a responder", async () => {
  const cases: [string, string[], string | undefined, string | undefined, RegExp][] = [
    [
      "IPv6 protected, no responder6",
      ["2001:db8:25::/64"],
      "192.0.2.1",
      undefined,
      /IPv6 networks are protected/,
    ],
    [
      "IPv4 protected, no responder4",
      ["198.51.100.0/24"],
      undefined,
      "2001:db8:1::1",
      /IPv4 networks are protected/,
    ],
    [
      "responder4 is not IPv4",
      ["198.51.100.0/24"],
      "2001:db8:1::1",
      undefined,
      /is not an IPv4 address/,
    ],
    [
      "responder6 is not IPv6",
      ["2001:db8:25::/64"],
      undefined,
      "192.0.2.1",
      /is not an IPv6 address/,
    ],
  ];
  for (const [name, protect, r4, r6, msg] of cases) {
    await assert.rejects(
      DivertService.start({
        config: config(protect),
        responder4: r4,
        responder6: r6,
        log: new MemoryLog(),
      }),
      (e) => e instanceof Error && e.name === "DivertError" && msg.test(e.message),
      name,
    );
  }
});

Deno.test({
  name: "DivertService.start() without CAP_NET_ADMIN rejects with the fix in the message",
  ignore: !canRun,
}, async () => {
  // As root: drop the capability and use a throw-away namespace; otherwise we lack it already
  // (and binding fails before any packet could be queued).
  const prefix = root
    ? ["setpriv", "--bounding-set", "-net_admin", "--inh-caps", "-net_admin", "unshare", "-n"]
    : ["env"];
  const r = await program(prefix, "start", "31");
  assert.equal(r.ok, false);
  assert.equal(r.name, "DivertError");
  assert.equal(r.errno, 1);
  assert.match(r.message, /needs CAP_NET_ADMIN: run SSG as root or grant cap_net_admin/);
});

Deno.test({
  name: "DivertService.start() with failOpen sets NFQA_CFG_F_FAIL_OPEN (the kernel accepts it)",
  ignore: !root || !canRun,
  async fn() {
    assert.deepEqual(await program(["unshare", "-n"], "failopen", "34"), { ok: true });
  },
});

Deno.test({
  name: "DivertService.start() on a queue another process holds rejects naming the queue",
  ignore: !root || !canRun,
  async fn() {
    const r = await program(["unshare", "-n"], "busy", "32");
    assert.equal(r.ok, false);
    assert.equal(r.errno, 1); // the kernel says EPERM for a queue owned by another socket
    assert.match(r.message, /NFQUEUE 32 is already bound by another process/);
  },
});

Deno.test({
  name:
    "DivertService answers stats, times out waitFor on an unknown flow, and closes once even if asked twice",
  ignore: !root || !canRun,
  async fn() {
    const r = await program(["unshare", "-n"], "lifecycle", "33");
    assert.equal(r.ok, true);
    assert.equal(r.sameClosePromise, true);
    assert.equal(r.nfqPackets, 0);
    assert.ok(r.statsKeys > 10);
    assert.equal(r.waited, null);
    assert.ok(r.waitedMs >= 140 && r.waitedMs < 10_000, `waitFor took ${r.waitedMs} ms`);
    assert.equal(r.lookup, null);
    assert.equal(r.afterHasCounters, true, "stats after close give the last counters");
    assert.equal(r.waitAfterClose, null);
    assert.deepEqual(r.events, ["divert.start", "divert.stop"]);
  },
});
