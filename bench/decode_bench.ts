/**
 * Cost per message of decoding (issue 8): `decodeMessage` and `PolicyEngine.judge` on a 10 KB
 * text/plain message (8bit UTF-8, ordinary prose), with a 10-rule policy; decoding is shown
 * both ways: the plain reading (`plain_message.ts`) and mailparser.
 *
 * Also (issue 9) `judge` with rules that read only the envelope, or only a header field: they
 * decode nothing, or only the header section (`decode_needs.ts`).
 *
 * Run: `deno run -A bench/decode_bench.ts [ROUNDS]` (default 2000). Prints median, p99 and mean
 * in microseconds, after 200 warm-up rounds.
 */
import { simpleParser } from "mailparser";
import { decodeMessage, type MimeParser } from "../src/policy/message.ts";
import { PolicyEngine } from "../src/policy/policy_engine.ts";
import type { Rule } from "../src/policy/rule.ts";
import { CONTENT_DEFAULTS } from "../src/config/defaults.ts";
import { benchEnvelope, keywordRules, SILENT_LOG, textMessage, timeAsync } from "./bench_inputs.ts";

const ROUNDS = Number(Deno.args.find((a) => /^\d+$/.test(a)) ?? 2000);

const raw = textMessage(10);

const rules = keywordRules(10);
const log = SILENT_LOG;
const engine = new PolicyEngine(rules, log);
const envelope = benchEnvelope();

const measure = (name: string, f: () => Promise<unknown>) =>
  timeAsync(name, ROUNDS, f, { warmup: 200, bytes: raw.length });

// The same message through mailparser (a parser that is not `simpleParser` itself skips the
// plain reading, plain_message.ts): the cost before issue 9's fast path, in the same run.
const viaMailparser =
  ((i: unknown, o: unknown) =>
    (simpleParser as (i: unknown, o: unknown) => unknown)(i, o)) as MimeParser;
await measure("decodeMessage (plain reading)", () => decodeMessage(raw));
await measure("decodeMessage (mailparser)", () => decodeMessage(raw, {}, viaMailparser));
await measure("judge (decode + 10 rules)", () => engine.judge(raw, envelope));
engine.close();
const field = (f: "mail_from" | "header", header?: string): Rule => ({
  name: `only-${f}`,
  mode: "enforce",
  when: { kind: "field", field: f, header, operator: "contains", values: ["nothing-matches"] },
  actions: [{ type: "discard" }],
});
for (
  const [name, rule] of [["envelope", field("mail_from")], [
    "x-mailer header",
    field("header", "x-mailer"),
  ]] as const
) {
  for (const undecodable of ["quarantine", "forward"] as const) {
    const e = new PolicyEngine({
      rules: [rule],
      content: { ...CONTENT_DEFAULTS, undecodable },
    }, log);
    await measure(
      `judge (one ${name} rule, undecodable: ${undecodable}; decodes ${e.decodeNeeds})`,
      () => e.judge(raw, envelope),
    );
    e.close();
  }
}
