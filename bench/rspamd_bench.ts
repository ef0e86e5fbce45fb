/**
 * Cost per message of Rspamd scoring (issue 10), against a real Rspamd started with the tests'
 * minimal config (test/engines/rspamd_fixture.ts: the C core and one regexp rule, no Lua rules —
 * so this measures SSG's side, connect, request, reply, JSON, plus Rspamd's per-task overhead,
 * not the cost of Rspamd's full rule set), on the same 10 KB clean text message as
 * decode_bench.ts:
 *
 * - `RspamdClient.check` alone;
 * - `PolicyEngine.judge` with 10 keyword rules (no rspamd) and with the same 10 rules plus
 *   `rspamd: { action: reject }` (the check runs concurrently with decoding): the difference is
 *   what a message pays for the check.
 *
 * Run: `deno run -A bench/rspamd_bench.ts [ROUNDS] [--kb N]` (default 1000 rounds of 10 KB).
 * Prints median, p99 and mean in microseconds, after 100 warm-up rounds. Needs rspamd
 * (scripts/setup.sh).
 */
import type { EventLog } from "../src/log/log.ts";
import { describeResult, RspamdClient } from "../src/engines/rspamd_client.ts";
import { PolicyEngine } from "../src/policy/policy_engine.ts";
import type { Rule } from "../src/policy/rule.ts";
import type { Envelope } from "../src/policy/verdict.ts";
import { startRspamd } from "../test/engines/rspamd_fixture.ts";
import { benchEnvelope, keywordRules, SILENT_LOG, textMessage, timeAsync } from "./bench_inputs.ts";

const kbAt = Deno.args.indexOf("--kb");
const KB = kbAt >= 0 ? Number(Deno.args[kbAt + 1]) : 10;
const ROUNDS = Number(Deno.args.find((a, i) => /^\d+$/.test(a) && i !== kbAt + 1) ?? 1000);

const raw = textMessage(KB);

const rspamdRule = {
  name: "rspamd-reject",
  mode: "enforce",
  when: { kind: "rspamd", actions: ["reject"] },
  actions: [{ type: "reject", reply: { code: 550, enhanced: "5.7.1", text: "Spam" } }],
} as unknown as Rule;
const log: EventLog = SILENT_LOG;
const envelope: Envelope = benchEnvelope();

function measure(name: string, f: () => Promise<unknown>): Promise<number> {
  return timeAsync(name, ROUNDS, f, { bytes: raw.length });
}

const server = await startRspamd();
try {
  const rspamd = {
    address: { hostname: server.host, port: server.port },
    pathPrefix: "",
    timeoutSeconds: 30,
    maxBytes: 25 * 1024 * 1024,
    onFailure: "tempfail" as const,
  };
  const client = new RspamdClient({ address: rspamd.address, timeoutMs: 30_000, maxBytes: 25e6 });
  const first = await client.check(raw, { ip: "192.0.2.10", helo: "", mailFrom: "", rcptTo: [] });
  if (first.status !== "scored") throw new Error(`expected a score, got ${describeResult(first)}`);
  console.log(`rspamd says: ${describeResult(first)}`);
  await measure(
    `RspamdClient.check (${KB} KB, clean)`,
    () => client.check(raw, { ip: "192.0.2.10", helo: "mx", mailFrom: "a@b", rcptTo: ["c@d"] }),
  );
  const plain = new PolicyEngine({ rules: keywordRules(10), rspamd }, log);
  const scoring = new PolicyEngine({ rules: [...keywordRules(10), rspamdRule], rspamd }, log);
  const v = await scoring.judge(raw, envelope);
  if (v.action !== "forward") throw new Error(`expected forward, got ${JSON.stringify(v)}`);
  const a = await measure(
    "judge, 10 rules, no rspamd rule (not asked)",
    () => plain.judge(raw, envelope),
  );
  const b = await measure(
    "judge, 10 rules + rspamd: { action: reject } (check ∥ decode)",
    () => scoring.judge(raw, envelope),
  );
  console.log(`rspamd cost per message in judge (median difference): ${(b - a).toFixed(0)} µs`);
  plain.close();
  scoring.close();
} finally {
  await server.stop();
}
