/**
 * What the end-to-end benches set up the same way: the rule file SSG runs with (the namespace
 * tests' gateway/log/state sections, the relay settings of the arm, the shipped or the test rules)
 * and the internal server (smtp-sink in the server namespace). Not a test.
 *
 * @module
 */
import { REPO_ROOT, ruleFileText } from "../../test/netns/helpers.ts";
import type { Topology } from "../../test/netns/topology.ts";
import { join } from "node:path";

/** Which address the relay leg leaves with (`relay.source`). */
export type RelaySource = "client" | "gateway";

/** A `--relay-source` value, checked. */
export function relaySource(value: string | undefined): RelaySource {
  const v = value ?? "client";
  if (v !== "client" && v !== "gateway") {
    throw new Error(`--relay-source: "${v}" is not client or gateway`);
  }
  return v;
}

/** A rule file's text with `lines` (e.g. "source: gateway") added at the top of `relay:`. */
export function withRelaySettings(ruleText: string, ...lines: string[]): string {
  return ruleText.replace(/^relay:\n/m, `relay:\n${lines.map((l) => `  ${l}\n`).join("")}`);
}

/**
 * The rule file of a bench arm: the namespace tests' sections with `relay.source: source`, and
 * either their two rules (`rules` "test") or the shipped rules/default.yaml's lists and rules
 * ("shipped").
 */
export function benchRuleFile(logFile: string, rules: string, source: RelaySource): string {
  const base = withRelaySettings(ruleFileText({ logFile, level: "info" }), `source: ${source}`);
  if (rules === "test") return base;
  if (rules !== "shipped") throw new Error(`--rules: "${rules}" is not shipped or test`);
  const shipped = Deno.readTextFileSync(join(REPO_ROOT, "rules", "default.yaml"));
  const lists = /^lists:\n(?:(?:[ #].*)?\n)*/m.exec(shipped)?.[0] ?? "";
  return `${base.slice(0, base.search(/^rules:/m))}${lists}${
    shipped.slice(shipped.search(/^rules:/m))
  }`;
}

/**
 * Starts smtp-sink on the server's address (no dumps: no disk in the path; up to 512 sessions).
 * `counter`: its running "sess=N quit=N mesg=N" output (`-c`) on a piped stdout; `xclient`
 * false: it does not offer XCLIENT (`-C`), as a server without it.
 */
export function startSink(
  t: Topology,
  opts: { counter?: boolean; xclient?: boolean } = {},
): Deno.ChildProcess {
  return t.spawn(t.ns.server, [
    "/usr/sbin/smtp-sink",
    "-u",
    "root",
    ...(opts.counter ? ["-c"] : []),
    ...(opts.xclient === false ? ["-C"] : []),
    "-m",
    "512",
    `${t.addr.server4}:25`,
    "512",
  ], { stdout: opts.counter ? "piped" : "null", stderr: "null" });
}
