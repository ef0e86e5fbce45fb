/**
 * Firewall: rule generation (pure functions of the plan) and the install/remove/cleanup
 * orchestration against a fake command runner. No root needed, except the one test that feeds
 * the nft ruleset to nft's own parser in a throw-away network namespace (ignored without root).
 */
import assert from "node:assert/strict";
import type { GatewayConfig } from "../../src/config/config.ts";
import { MemoryLog } from "../../src/log/log.ts";
import { parseCidr } from "../../src/packet/cidr.ts";
import {
  type CommandResult,
  type DiversionPlan,
  DIVERT_MARK,
  Firewall,
  type FirewallCommand,
  FirewallError,
  iptablesInstallCommands,
  iptablesRemoveCommands,
  NFT_QUEUE_PROBE,
  nftRuleset,
  planFromConfig,
} from "../../src/divert/firewall.ts";
import { granted, isRoot } from "../ffi/test_permissions.ts";

function plan(over: Partial<DiversionPlan> = {}): DiversionPlan {
  return {
    protect: [parseCidr("198.51.100.0/24"), parseCidr("2001:db8:25::/64")],
    ports: [25],
    interfaces: [],
    responder4: "192.0.2.1",
    responder6: "2001:db8:1::1",
    responderPort: 10025,
    queueNum: 25,
    guardMark: DIVERT_MARK,
    ...over,
  };
}

const line = (c: FirewallCommand) => c.argv.join(" ");

Deno.test("iptablesInstallCommands() notracks and queues inbound SMTP and the responder's replies, jumps last", () => {
  const cmds = iptablesInstallCommands(
    plan({ protect: [parseCidr("198.51.100.0/24")], responder6: undefined }),
  )
    .map(line);
  assert.deepEqual(cmds, [
    "iptables -w 5 -t raw -N SSG-PRE",
    "iptables -w 5 -t raw -N SSG-OUT",
    "iptables -w 5 -t raw -A SSG-PRE -p tcp -d 198.51.100.0/24 --dport 25 -j CT --notrack",
    "iptables -w 5 -t raw -A SSG-PRE -p tcp -d 198.51.100.0/24 --dport 25 -j NFQUEUE --queue-num 25 --queue-bypass",
    "iptables -w 5 -t raw -A SSG-OUT -p tcp -s 192.0.2.1 --sport 10025 -j CT --notrack",
    "iptables -w 5 -t raw -A SSG-OUT -p tcp -s 192.0.2.1 --sport 10025 -j NFQUEUE --queue-num 25 --queue-bypass",
    "iptables -w 5 -t mangle -N SSG-GUARD",
    "iptables -w 5 -t mangle -A SSG-GUARD -p tcp -d 192.0.2.1 --dport 10025 -m mark ! --mark 0x53470000 -j DROP",
    "iptables -w 5 -t mangle -I PREROUTING 1 -m comment --comment ssg -j SSG-GUARD",
    "iptables -w 5 -t raw -I PREROUTING 1 -m comment --comment ssg -j SSG-PRE",
    "iptables -w 5 -t raw -I OUTPUT 1 -m comment --comment ssg -j SSG-OUT",
  ]);
});

Deno.test("iptablesInstallCommands() puts IPv6 networks in ip6tables with the IPv6 responder", () => {
  const cmds = iptablesInstallCommands(plan()).map(line);
  const v6 = cmds.filter((c) => c.startsWith("ip6tables"));
  assert.ok(v6.includes(
    "ip6tables -w 5 -t raw -A SSG-PRE -p tcp -d 2001:db8:25::/64 --dport 25 -j NFQUEUE --queue-num 25 --queue-bypass",
  ));
  assert.ok(v6.includes(
    "ip6tables -w 5 -t raw -A SSG-OUT -p tcp -s 2001:db8:1::1 --sport 10025 -j CT --notrack",
  ));
  assert.ok(!v6.some((c) => c.includes("198.51.100") || c.includes("192.0.2.1 ")));
  assert.ok(!cmds.filter((c) => c.startsWith("iptables")).some((c) => c.includes("2001:db8")));
});

Deno.test("iptablesInstallCommands() makes one rule pair per interface, network and port", () => {
  const cases: [string[], string[], string[], number][] = [
    // interfaces, networks, ports, expected SSG-PRE rules (notrack + queue per combination)
    [[], ["198.51.100.0/24"], ["25"], 2],
    [["eth0"], ["198.51.100.0/24"], ["25"], 2],
    [["eth0", "wan+"], ["198.51.100.0/24"], ["25"], 4],
    [["eth0", "eth1"], ["198.51.100.0/24", "203.0.113.0/24"], ["25", "587"], 16],
  ];
  for (const [interfaces, nets, ports, expected] of cases) {
    const cmds = iptablesInstallCommands(plan({
      interfaces,
      protect: nets.map(parseCidr),
      ports: ports.map(Number),
      responder6: undefined,
    })).map(line);
    const pre = cmds.filter((c) => c.includes("-A SSG-PRE"));
    assert.equal(pre.length, expected, `${interfaces} ${nets} ${ports}`);
    for (const i of interfaces) assert.ok(pre.some((c) => c.includes(`-i ${i} `)), `uses -i ${i}`);
    if (interfaces.length === 0) assert.ok(!pre.some((c) => c.includes(" -i ")));
    // Each queue rule is preceded by the notrack rule with the same match.
    for (let k = 0; k < pre.length; k += 2) {
      assert.match(pre[k], /-j CT --notrack$/);
      assert.equal(pre[k + 1].replace(/-j NFQUEUE.*$/, ""), pre[k].replace(/-j CT --notrack$/, ""));
    }
  }
});

Deno.test("iptablesInstallCommands() without a guard mark installs no SSG-GUARD", () => {
  for (const guardMark of [0, undefined]) {
    const cmds = iptablesInstallCommands(plan({ guardMark })).map(line);
    assert.ok(!cmds.some((c) => c.includes("SSG-GUARD") || c.includes("mangle")));
  }
});

Deno.test("The diversion plan is refused when it cannot work", () => {
  const cases: [string, Partial<DiversionPlan>, RegExp][] = [
    [
      "no IPv6 responder for a protected IPv6 network",
      { responder6: undefined },
      /IPv6 networks are protected/,
    ],
    [
      "no IPv4 responder for a protected IPv4 network",
      { responder4: undefined },
      /IPv4 networks are protected/,
    ],
    [
      "an interface name that could inject nft syntax",
      { interfaces: ['eth0" } accept'] },
      /invalid interface/,
    ],
    [
      "an interface name of 16 characters",
      { interfaces: ["a234567890123456"] },
      /invalid interface/,
    ],
    [
      "the responder port among the diverted ports",
      { ports: [25, 10025] },
      /must not be a diverted port/,
    ],
    ["port 0", { ports: [0] }, /invalid port/],
    ["port 65536", { ports: [65536] }, /invalid port/],
  ];
  for (const [name, over, msg] of cases) {
    assert.throws(
      () => iptablesInstallCommands(plan(over)),
      (e) => e instanceof FirewallError && msg.test(e.message),
      name,
    );
    assert.throws(() => nftRuleset(plan(over)), FirewallError, name);
  }
  // Limits that are fine: a 15-character name, port 1 and 65535, an iptables wildcard.
  iptablesInstallCommands(plan({ interfaces: ["a23456789012345", "wan+"], ports: [1, 65535] }));
});

Deno.test("nftRuleset() replaces table inet ssg with raw-priority chains, notrack and queue bypass", () => {
  const text = nftRuleset(plan({ interfaces: ["eth0", "wan+"], ports: [25, 587] }));
  assert.equal(
    text,
    `add table inet ssg
delete table inet ssg
table inet ssg {
  chain prerouting {
    type filter hook prerouting priority -300; policy accept;
    iifname { "eth0", "wan*" } ip daddr { 198.51.100.0/24 } tcp dport { 25, 587 } notrack queue num 25 bypass
    iifname { "eth0", "wan*" } ip6 daddr { 2001:db8:25::/64 } tcp dport { 25, 587 } notrack queue num 25 bypass
  }
  chain output {
    type filter hook output priority -300; policy accept;
    ip saddr 192.0.2.1 tcp sport 10025 notrack queue num 25 bypass
    ip6 saddr 2001:db8:1::1 tcp sport 10025 notrack queue num 25 bypass
  }
  chain guard {
    type filter hook prerouting priority -150; policy accept;
    ip daddr 192.0.2.1 tcp dport 10025 meta mark != 0x53470000 drop
    ip6 daddr 2001:db8:1::1 tcp dport 10025 meta mark != 0x53470000 drop
  }
}
`,
  );
});

Deno.test("new Firewall(gateway, responders, log) builds its plan from the config and validates it", async () => {
  const config = {
    protect: [parseCidr("198.51.100.0/24"), parseCidr("2001:db8:25::/64")],
    ports: [25],
    interfaces: [],
    responder: { ipv4: "auto", ipv6: "auto", port: 10025 },
    queue: { num: 25, maxlen: 1024, rcvbuf: 1 << 20 },
  } as unknown as GatewayConfig;
  assert.throws(
    () => new Firewall(config, { ipv4: "192.0.2.1" }, new MemoryLog()),
    /IPv6 networks are protected but there is no IPv6 responder address/,
  );
  const f = new FakeRunner([NO_NFT_QUEUE, NO_TABLE]);
  const fw = new Firewall(config, { ipv4: "192.0.2.1", ipv6: "2001:db8:1::1" }, new MemoryLog(), {
    run: f.run,
    guard: false,
  });
  assert.equal(await fw.cleanupStale(), 0);
  await fw.install();
  assert.ok(f.calls.some((c) => c.startsWith("ip6tables") && c.includes("-s 2001:db8:1::1")));
  assert.ok(!f.calls.some((c) => c.includes("SSG-GUARD")), "guard: false installs no guard");
});

Deno.test("planFromConfig() takes ports, interfaces, queue and responder port from the config", () => {
  const config = {
    protect: [parseCidr("198.51.100.0/24")],
    ports: [25, 587],
    interfaces: ["eth1"],
    responder: { ipv4: "auto", ipv6: "auto", port: 2525 },
    queue: { num: 7, maxlen: 1024, rcvbuf: 1 << 20 },
  } as unknown as GatewayConfig;
  const p = planFromConfig(config, { ipv4: "192.0.2.1" });
  assert.deepEqual(
    { ...p, protect: p.protect.map((c) => c.text) },
    {
      protect: ["198.51.100.0/24"],
      ports: [25, 587],
      interfaces: ["eth1"],
      responder4: "192.0.2.1",
      responder6: undefined,
      responderPort: 2525,
      queueNum: 7,
      guardMark: DIVERT_MARK,
    },
  );
  assert.equal(planFromConfig(config, { ipv4: "192.0.2.1" }, { guard: false }).guardMark, 0);
});

Deno.test("iptablesRemoveCommands() deletes the jump, then flushes and deletes the chain", () => {
  assert.deepEqual(iptablesRemoveCommands(4, "raw").map((steps) => steps.map(line)), [
    [
      "iptables -w 5 -t raw -D PREROUTING -m comment --comment ssg -j SSG-PRE",
      "iptables -w 5 -t raw -F SSG-PRE",
      "iptables -w 5 -t raw -X SSG-PRE",
    ],
    [
      "iptables -w 5 -t raw -D OUTPUT -m comment --comment ssg -j SSG-OUT",
      "iptables -w 5 -t raw -F SSG-OUT",
      "iptables -w 5 -t raw -X SSG-OUT",
    ],
  ]);
  assert.deepEqual(iptablesRemoveCommands(6, "mangle").map((steps) => steps.map(line)), [[
    "ip6tables -w 5 -t mangle -D PREROUTING -m comment --comment ssg -j SSG-GUARD",
    "ip6tables -w 5 -t mangle -F SSG-GUARD",
    "ip6tables -w 5 -t mangle -X SSG-GUARD",
  ]]);
});

/** A fake runner: answers by the first matching rule, records every command. */
class FakeRunner {
  readonly calls: string[] = [];
  constructor(
    readonly rules: [RegExp, Partial<CommandResult> | ((n: number) => Partial<CommandResult>)][],
  ) {}
  #counts = new Map<RegExp, number>();
  run = (cmd: FirewallCommand): Promise<CommandResult> => {
    const l = line(cmd);
    this.calls.push(l);
    for (const [re, res] of this.rules) {
      if (!re.test(l)) continue;
      const n = (this.#counts.get(re) ?? 0) + 1;
      this.#counts.set(re, n);
      const r = typeof res === "function" ? res(n) : res;
      return Promise.resolve({ code: 0, stdout: "", stderr: "", ...r });
    }
    return Promise.resolve({ code: 0, stdout: "", stderr: "" });
  };
}

const NO_NFT_QUEUE: [RegExp, Partial<CommandResult>] = [
  /^nft -f/,
  { code: 1, stderr: "Error: Could not process rule: No such file or directory\n" },
];
const NO_TABLE: [RegExp, Partial<CommandResult>] = [
  /^nft delete table/,
  { code: 1, stderr: "Error: No such file or directory" },
];

Deno.test("Firewall.detectBackend() picks nft when its queue statement works, else iptables, else fails", async () => {
  const cases: [string, [RegExp, Partial<CommandResult>][], string | RegExp][] = [
    ["nft with queue", [], "nft"],
    ["nft without queue (this dev kernel)", [NO_NFT_QUEUE], "iptables"],
    ["no nft binary", [[/^nft/, { code: -1, stderr: "not installed" }]], "iptables"],
    ["neither", [NO_NFT_QUEUE, [/^iptables -V/, { code: -1 }]], /install the iptables package/],
  ];
  for (const [name, rules, want] of cases) {
    const f = new FakeRunner(rules);
    if (typeof want === "string") assert.equal(await Firewall.detectBackend(f.run), want, name);
    else await assert.rejects(Firewall.detectBackend(f.run), want, name);
    assert.equal(f.calls[0], "nft -f /dev/stdin", `${name}: probes nft first`);
  }
  assert.match(NFT_QUEUE_PROBE.stdin!, /queue num 0 bypass\ndelete table inet ssg_probe\n$/);
});

Deno.test("Firewall.install() cleans stale rules first, then installs with the detected backend and logs it", async () => {
  const log = new MemoryLog();
  const f = new FakeRunner([NO_NFT_QUEUE, NO_TABLE]);
  const fw = new Firewall(plan(), log, { run: f.run });
  assert.equal(await fw.install(), "iptables");
  assert.equal(fw.backend, "iptables");
  assert.equal(fw.installed, true);
  const probe = f.calls.indexOf("nft -f /dev/stdin");
  assert.ok(
    f.calls.indexOf("nft delete table inet ssg") < probe,
    "stale cleanup runs before detection",
  );
  assert.deepEqual(f.calls.slice(probe + 2), iptablesInstallCommands(plan()).map(line));
  const ev = log.named("firewall.install");
  assert.equal(ev.length, 1);
  assert.equal(ev[0].fields.backend, "iptables");
});

Deno.test("Firewall.install() with nft loads the whole ruleset in one nft call", async () => {
  const f = new FakeRunner([NO_TABLE]);
  const fw = new Firewall(plan(), new MemoryLog(), { run: f.run });
  assert.equal(await fw.install(), "nft");
  assert.equal(f.calls.filter((c) => c === "nft -f /dev/stdin").length, 2); // probe + ruleset
  await fw.remove();
  assert.equal(f.calls.at(-1), "nft delete table inet ssg");
});

Deno.test("Firewall.install() rolls back and names the command when a rule is refused", async () => {
  const f = new FakeRunner([
    NO_NFT_QUEUE,
    NO_TABLE,
    [/-j NFQUEUE/, {
      code: 2,
      stderr: 'iptables v1.8.9 (nf_tables): unknown option "--queue-bypass"\n',
    }],
    [/-t (raw|mangle) -S$/, { stdout: "-N SSG-PRE\n" }],
    [/ -D /, (n) => ({ code: n % 2 === 1 ? 0 : 1 })],
  ]);
  const log = new MemoryLog();
  const fw = new Firewall(plan(), log, { run: f.run });
  await assert.rejects(
    fw.install(),
    (e) =>
      e instanceof FirewallError && /with iptables/.test(e.message) && /NFQUEUE/.test(e.message) &&
      /unknown option/.test(e.message),
  );
  assert.equal(fw.installed, false);
  const failedAt = f.calls.findIndex((c) => c.includes("-j NFQUEUE"));
  assert.ok(
    f.calls.slice(failedAt).some((c) => c.includes("-X SSG-PRE")),
    "removal ran after the failure",
  );
  assert.equal(log.named("firewall.remove").length, 1);
});

Deno.test("Firewall.remove() is idempotent and removes every jump rule even if duplicated", async () => {
  let jumps = 3; // a crash loop left three jump rules to SSG-PRE
  const f = new FakeRunner([
    NO_NFT_QUEUE,
    NO_TABLE,
    [/-t raw -D PREROUTING .* -j SSG-PRE$/, () => ({ code: jumps-- > 0 ? 0 : 1 })],
  ]);
  const log = new MemoryLog();
  const fw = new Firewall(
    plan({ protect: [parseCidr("198.51.100.0/24")], responder6: undefined }),
    log,
    { run: f.run },
  );
  await fw.install();
  jumps = 3;
  const before = f.calls.length;
  await fw.remove();
  const removal = f.calls.slice(before);
  assert.equal(
    removal.filter((c) => /-D PREROUTING .* SSG-PRE$/.test(c)).length,
    4,
    "3 deletes + 1 that fails",
  );
  assert.ok(removal.includes("iptables -w 5 -t raw -X SSG-PRE"));
  assert.ok(
    !removal.some((c) => c.startsWith("ip6tables") && / -[DFX] /.test(c)),
    "IPv6 untouched: not used",
  );
  const n = f.calls.length;
  await fw.remove();
  fw.removeSync();
  assert.equal(f.calls.length, n, "second remove() does nothing");
  assert.equal(log.named("firewall.remove").length, 1);
});

Deno.test("Firewall.cleanupStale() removes both backends' leftovers and reports how many", async () => {
  const cases: [
    string,
    [RegExp, Partial<CommandResult> | ((n: number) => Partial<CommandResult>)][],
    number,
  ][] = [
    ["nothing left", [NO_TABLE, [/-S$/, { stdout: "-P PREROUTING ACCEPT\n" }]], 0],
    ["only the nft table", [[/-S$/, { stdout: "" }]], 1],
    [
      "iptables raw chains with one jump each, IPv4 only",
      [
        NO_TABLE,
        [/^iptables .*-t raw -S$/, { stdout: "-N SSG-PRE\n-N SSG-OUT\n" }],
        [/^ip6tables .*-S$/, { stdout: "" }],
        [/^iptables .*-t mangle -S$/, { stdout: "" }],
        [/-D PREROUTING/, (n) => ({ code: n === 1 ? 0 : 1 })],
        [/-D OUTPUT/, (n) => ({ code: n === 1 ? 0 : 1 })],
      ],
      6, // 2 jumps + 2 flushes + 2 chain deletions
    ],
  ];
  for (const [name, rules, want] of cases) {
    const log = new MemoryLog();
    const f = new FakeRunner(rules);
    assert.equal(await Firewall.cleanupStale({ log, run: f.run }), want, name);
    assert.equal(log.named("firewall.stale_removed").length, want > 0 ? 1 : 0, name);
  }
});

Deno.test({
  name: "nftRuleset() output passes nft's parser (in a throw-away network namespace)",
  ignore: !isRoot() || !granted("run"),
  async fn() {
    const text = nftRuleset(plan({ interfaces: ["eth0", "wan+"], ports: [25, 587] }));
    const child = new Deno.Command("unshare", {
      args: ["--net", "nft", "-c", "-f", "/dev/stdin"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(15_000),
    }).spawn();
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(text));
    await w.close();
    const r = await child.output();
    const err = new TextDecoder().decode(r.stderr);
    // A kernel without CONFIG_NFT_QUEUE refuses the queue rules ("No such file or directory");
    // what must never happen is a syntax error.
    assert.doesNotMatch(err, /syntax error|unexpected/i, err);
    if (r.code !== 0) assert.match(err, /No such file or directory/, err);
  },
});
