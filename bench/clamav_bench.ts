/**
 * Cost per message of virus scanning (issue 10), against a real clamd started with the test
 * signature database (test/engines/clamd_fixture.ts: two signatures, so this measures SSG's side
 * — connect, INSTREAM, reply — plus clamd's per-stream work, not the matcher cost of a full
 * ClamAV database), on the same 10 KB clean text message as decode_bench.ts:
 *
 * - `ClamdClient.scan` alone;
 * - `PolicyEngine.judge` with 10 keyword rules (no scan) and with the same 10 rules plus
 *   `virus: true` (the scan runs concurrently with decoding): the difference is what a message
 *   pays for the scan.
 *
 * Run: `deno run -A bench/clamav_bench.ts [ROUNDS] [--kb N]` (default 1000 rounds of 10 KB). Prints median, p99 and mean
 * in microseconds, after 100 warm-up rounds. Needs clamav-daemon (scripts/setup.sh).
 */
import type { EventLog } from "../src/log/log.ts";
import { ClamdClient } from "../src/engines/clamd_client.ts";
import { PolicyEngine } from "../src/policy/policy_engine.ts";
import type { Rule } from "../src/policy/rule.ts";
import type { Envelope } from "../src/policy/verdict.ts";
import { startClamd } from "../test/engines/clamd_fixture.ts";
import { benchEnvelope, keywordRules, SILENT_LOG, textMessage, timeAsync } from "./bench_inputs.ts";

const kbAt = Deno.args.indexOf("--kb");
const KB = kbAt >= 0 ? Number(Deno.args[kbAt + 1]) : 10;
const ROUNDS = Number(Deno.args.find((a, i) => /^\d+$/.test(a) && i !== kbAt + 1) ?? 1000);

const raw = textMessage(KB);

const virusRule = {
  name: "no-viruses",
  mode: "enforce",
  when: { kind: "virus", value: true },
  actions: [{ type: "reject", reply: { code: 554, enhanced: "5.7.1", text: "Virus found" } }],
} as unknown as Rule;
const log: EventLog = SILENT_LOG;
const envelope: Envelope = benchEnvelope();

function measure(name: string, f: () => Promise<unknown>): Promise<number> {
  return timeAsync(name, ROUNDS, f, { bytes: raw.length });
}

const clamd = await startClamd();
try {
  const clamav = {
    address: { path: clamd.socket },
    timeoutSeconds: 30,
    maxBytes: 25 * 1024 * 1024,
    onFailure: "tempfail" as const,
  };
  const client = new ClamdClient({ address: clamav.address, timeoutMs: 30_000, maxBytes: 25e6 });
  const first = await client.scan(raw);
  if (first.status !== "clean") throw new Error(`expected clean, got ${JSON.stringify(first)}`);
  await measure(`ClamdClient.scan (${KB} KB, clean)`, () => client.scan(raw));
  const plain = new PolicyEngine({ rules: keywordRules(10), clamav }, log);
  const scanning = new PolicyEngine({ rules: [...keywordRules(10), virusRule], clamav }, log);
  const v = await scanning.judge(raw, envelope);
  if (v.action !== "forward") throw new Error(`expected forward, got ${JSON.stringify(v)}`);
  const a = await measure(
    "judge, 10 rules, no virus rule (no scan)",
    () => plain.judge(raw, envelope),
  );
  const b = await measure(
    "judge, 10 rules + virus: true (scan ∥ decode)",
    () => scanning.judge(raw, envelope),
  );
  console.log(`scan cost per message in judge (median difference): ${(b - a).toFixed(0)} µs`);
  plain.close();
  scanning.close();
} finally {
  await clamd.stop();
}
