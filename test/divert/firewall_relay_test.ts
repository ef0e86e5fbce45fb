/**
 * Firewall rules of the relay source (`relay.source: client`): both backends, pure, no root —
 * plus nft's own parser on the ruleset in a throw-away namespace when running as root.
 */
import assert from "node:assert/strict";
import { parseCidr } from "../../src/packet/cidr.ts";
import {
  type DiversionPlan,
  DIVERT_MARK,
  FirewallError,
  iptablesInstallCommands,
  nftRuleset,
} from "../../src/divert/firewall.ts";
import { isRoot } from "../ffi/test_permissions.ts";

function plan(over: Partial<DiversionPlan> = {}): DiversionPlan {
  return {
    protect: [parseCidr("198.51.100.0/24"), parseCidr("2001:db8:25::/64")],
    ports: [25],
    interfaces: ["cli0"],
    responder4: "192.0.2.1",
    responder6: "2001:db8:1::1",
    responderPort: 10025,
    queueNum: 25,
    guardMark: DIVERT_MARK,
    relaySource: { first: 61000, last: 61999 },
    ...over,
  };
}

Deno.test("iptablesInstallCommands() with the relay source queues relay sockets on OUTPUT and the servers' replies on PREROUTING, notracked, on any interface", () => {
  const cmds = iptablesInstallCommands(plan()).map((c) => c.argv.join(" "));
  for (
    const [fam, tool, net] of [[4, "iptables", "198.51.100.0/24"], [
      6,
      "ip6tables",
      "2001:db8:25::/64",
    ]] as const
  ) {
    const out = `${tool} -w 5 -t raw -A SSG-OUT -p tcp -d ${net} --dport 25 --sport 61000:61999`;
    const pre = `${tool} -w 5 -t raw -A SSG-PRE -p tcp -s ${net} --sport 25`;
    for (const rule of [out, pre]) {
      assert.ok(cmds.includes(`${rule} -j CT --notrack`), `IPv${fam}: ${rule} notrack`);
      assert.ok(
        cmds.includes(`${rule} -j NFQUEUE --queue-num 25 --queue-bypass`),
        `IPv${fam}: ${rule} queued`,
      );
      assert.ok(
        cmds.indexOf(`${rule} -j CT --notrack`) <
          cmds.indexOf(`${tool} -w 5 -t raw -I PREROUTING 1 -m comment --comment ssg -j SSG-PRE`),
        "before the jump rules: traffic only enters complete chains",
      );
    }
  }
  assert.equal(
    cmds.filter((c) => c.includes("-i cli0")).length,
    4,
    "only the diverted inbound rules are per interface",
  );
});

Deno.test("iptablesInstallCommands() and nftRuleset() without the relay source have no relay rules", () => {
  const p = plan({ relaySource: undefined });
  assert.equal(
    iptablesInstallCommands(p).some((c) =>
      c.argv.includes("--sport") && c.argv.includes("-s") && c.argv.includes("198.51.100.0/24")
    ),
    false,
  );
  assert.doesNotMatch(nftRuleset(p), /saddr \{|tcp sport 61000/);
});

Deno.test("nftRuleset() with the relay source adds one rule per family to prerouting and output", () => {
  const text = nftRuleset(plan());
  assert.match(
    text,
    /ip daddr \{ 198\.51\.100\.0\/24 \} tcp dport \{ 25 \} tcp sport 61000-61999 notrack queue num 25 bypass/,
  );
  assert.match(
    text,
    /ip6 saddr \{ 2001:db8:25::\/64 \} tcp sport \{ 25 \} notrack queue num 25 bypass/,
  );
  const pre = text.slice(text.indexOf("chain prerouting"), text.indexOf("chain output"));
  assert.match(pre, /ip saddr \{ 198\.51\.100\.0\/24 \} tcp sport/);
  assert.doesNotMatch(
    pre,
    /iifname[^\n]*saddr/,
    "the replies come from the server side: no interface match",
  );
});

Deno.test("a relay source range that holds the responder port, or is not a range, is refused", () => {
  assert.throws(
    () => iptablesInstallCommands(plan({ relaySource: { first: 10000, last: 10025 } })),
    FirewallError,
  );
  assert.throws(
    () => nftRuleset(plan({ relaySource: { first: 10025, last: 10025 } })),
    FirewallError,
  );
  iptablesInstallCommands(plan({ relaySource: { first: 10026, last: 10026 } })); // limit+1: fine
  iptablesInstallCommands(plan({ relaySource: { first: 10000, last: 10024 } })); // limit-1: fine
  assert.throws(
    () => nftRuleset(plan({ relaySource: { first: 62000, last: 61000 } })),
    /invalid relay source/,
  );
});

Deno.test({
  name: "nft accepts the relay source ruleset (its own parser, a throw-away namespace)",
  ignore: !isRoot(),
  async fn() {
    const ns = `ssgt-fwrelay-${crypto.randomUUID().slice(0, 8)}`;
    const run = (args: string[], stdin?: string) => {
      const p = new Deno.Command(args[0], {
        args: args.slice(1),
        stdin: stdin === undefined ? "null" : "piped",
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(15_000),
      }).spawn();
      if (stdin !== undefined) {
        const w = p.stdin.getWriter();
        void w.write(new TextEncoder().encode(stdin)).then(() => w.close());
      }
      return p.output();
    };
    assert.equal((await run(["ip", "netns", "add", ns])).code, 0);
    try {
      // -c: check only; the queue statement may be missing from this kernel, so only the parse counts.
      const r = await run(
        ["ip", "netns", "exec", ns, "nft", "-c", "-f", "/dev/stdin"],
        nftRuleset(plan()),
      );
      const err = new TextDecoder().decode(r.stderr);
      assert.ok(r.code === 0 || /No such file or directory/.test(err), err);
      assert.doesNotMatch(err, /syntax error/);
    } finally {
      await run(["ip", "netns", "del", ns]);
    }
  },
});
