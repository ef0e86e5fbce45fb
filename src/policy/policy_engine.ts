/**
 * The policy manager: judges one complete message against the rules, in order.
 *
 * Precedence: rules are evaluated in file order; the first matching rule in `enforce` mode with a
 * terminal action (forward, discard, reject) decides the verdict and ends evaluation; a rule in
 * `observe` mode that matches is logged (`policy.observe`) and evaluation goes on as if it had
 * not matched; when no rule decides, the message is forwarded.
 *
 * Rules are compiled once, in the constructor (conditions into evaluators); a message is decoded
 * once (`message.ts`) and each field normalised at most once, whatever the number of rules.
 *
 * What it trusts: the rules (validated at load). What it does not: the message and the envelope
 * (attacker-controlled; they reach the log only through `EventLog`, which escapes them).
 * Failure: the judge never throws for a bad message (the decoder judges what it could read and
 * says so in the evidence); an internal bug rejects the promise, and the session then answers
 * 451 and keeps nothing (see `Judge`).
 */
import type { EventLog } from "../log/log.ts";
import { compileCondition, EvalContext, type Evaluator, type Match } from "./compile_condition.ts";
import { type DecodeLimits, decodeMessage, type MessageFacts } from "./message.ts";
import type { Action, Rule, RuleMode } from "./rule.ts";
import type { Envelope, Judge, Verdict } from "./verdict.ts";

/** Options of the engine. */
export interface PolicyEngineOptions {
  /** Bounds on decoding each message (see `DecodeLimits`). */
  decodeLimits?: Partial<DecodeLimits>;
}

/** What one rule did with one message (for `ssg explain` and tests). */
export interface RuleResult {
  rule: string;
  mode: RuleMode;
  matched: boolean;
  /** Which field tests held, e.g. `subject contains "lottery"`. */
  evidence?: string;
  /** The rule's terminal action, if it has one. */
  action?: Action["type"];
  /** True when this rule decided the verdict. */
  decided: boolean;
}

/** The outcome of evaluating every relevant rule against one message. */
export interface Evaluation {
  verdict: Verdict;
  /** One entry per rule evaluated, in order (all rules when `explain` was asked). */
  results: RuleResult[];
}

interface CompiledRule {
  rule: Rule;
  test: Evaluator;
  terminal: Action | undefined;
}

/** Judges messages against a fixed list of rules. */
export class PolicyEngine {
  readonly #rules: CompiledRule[];
  readonly #log: EventLog;
  readonly #limits: Partial<DecodeLimits>;

  /** Compiles `rules` (already validated) and logs verdicts to `log`. */
  constructor(rules: Rule[], log: EventLog, options: PolicyEngineOptions = {}) {
    this.#rules = rules.map((rule) => ({
      rule,
      test: compileCondition(rule.when),
      terminal: rule.actions.find((a) =>
        a.type === "forward" || a.type === "discard" || a.type === "reject"
      ),
    }));
    this.#log = log;
    this.#limits = options.decodeLimits ?? {};
  }

  /** Number of rules in force. */
  get size(): number {
    return this.#rules.length;
  }

  /** The `Judge` the SMTP session calls at end of data (bound; safe to pass around). */
  readonly judge: Judge = async (message: Uint8Array, envelope: Envelope): Promise<Verdict> => {
    const t0 = performance.now();
    const facts = await decodeMessage(message, this.#limits);
    const t1 = performance.now();
    const { verdict, results } = this.evaluate(facts, envelope);
    const t2 = performance.now();
    for (const r of results) {
      if (r.mode === "observe" && r.matched) {
        this.#log.event("policy.observe", {
          session: envelope.sessionId,
          tx: envelope.transactionId,
          rule: r.rule,
          would: r.action ?? "none",
          evidence: r.evidence,
        });
      }
    }
    this.#log.event("policy.verdict", {
      session: envelope.sessionId,
      tx: envelope.transactionId,
      action: verdict.action,
      rule: verdict.rule,
      evidence: verdict.evidence,
      code: verdict.action === "reject" ? verdict.reply.code : undefined,
      decoder: facts.decoder,
      size: facts.size,
      decode_ms: round(t1 - t0),
      eval_ms: round(t2 - t1),
    });
    return verdict;
  };

  /**
   * Evaluates the rules against decoded facts. Stops at the deciding rule, unless `explain` is
   * set, in which case every rule is evaluated and reported (the verdict is the same).
   */
  evaluate(facts: MessageFacts, envelope: Envelope, explain = false): Evaluation {
    const ctx = new EvalContext({ facts, envelope });
    const results: RuleResult[] = [];
    let verdict: Verdict | undefined;
    for (const c of this.#rules) {
      const matches = c.test(ctx);
      const matched = matches !== null;
      const evidence = matched ? describeMatches(matches, c) : undefined;
      const decides = matched && verdict === undefined && c.rule.mode === "enforce" &&
        c.terminal !== undefined;
      results.push({
        rule: c.rule.name,
        mode: c.rule.mode,
        matched,
        evidence,
        action: c.terminal?.type,
        decided: decides,
      });
      if (decides) {
        verdict = makeVerdict(c.terminal!, c.rule.name, withProblems(evidence!, facts));
        if (!explain) break;
      }
    }
    verdict ??= {
      action: "forward",
      evidence: facts.problems.length ? withProblems("no rule matched", facts) : undefined,
    };
    return { verdict, results };
  }
}

function makeVerdict(action: Action, rule: string, evidence: string): Verdict {
  switch (action.type) {
    case "forward":
      return { action: "forward", rule, evidence };
    case "discard":
      return { action: "discard", rule, evidence };
    case "reject":
      return { action: "reject", rule, reply: { ...action.reply }, evidence };
  }
}

/** `subject contains "lottery"`; several leaves joined with " and ". */
function describeMatches(matches: Match[], c: CompiledRule): string {
  if (matches.length === 0) return `condition of rule "${c.rule.name}" holds`;
  return matches.map((m) => `${m.field} ${m.operator} ${JSON.stringify(m.value)}`).join(" and ");
}

/** Adds why the judgement may be partial, so a verdict never hides an incomplete decode. */
function withProblems(evidence: string, facts: MessageFacts): string {
  return facts.problems.length
    ? `${evidence}; partial decode: ${facts.problems.join("; ")}`
    : evidence;
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
