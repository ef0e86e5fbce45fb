/**
 * Condition trees (rule.ts) → evaluator functions, compiled once when the policy is built, so
 * that judging a message does no parsing, no allocation of needles and no normalisation of the
 * rule's values.
 *
 * Text tests run on normalised text (`foldText`: NFKC + case fold + default-ignorable characters
 * removed) on both sides. The normalised form of each field is computed at most once per
 * message (`EvalContext`), and capped at `MAX_SCAN_CHARS`, so the cost of a `contains` test is
 * bounded by (cap × number of values) whatever the message. No regular expression is built
 * from rule values or run on message text here.
 */
import { foldText } from "./fold_text.ts";
import { FIELD_EXTRACTORS, type FieldInput } from "./fields.ts";
import type { Condition, FieldName, OperatorName } from "./rule.ts";

/** Most characters of one field text that a test scans (after normalisation). */
export const MAX_SCAN_CHARS = 1024 * 1024;

/** One leaf test that held: which field, which operator, which of the rule's values. */
export interface Match {
  field: FieldName;
  operator: OperatorName;
  /** The value as written in the rule file. */
  value: string;
}

/** The per-message state evaluators share: the input and each field's normalised texts. */
export class EvalContext {
  readonly input: FieldInput;
  readonly #folded = new Map<FieldName, string[]>();
  constructor(input: FieldInput) {
    this.input = input;
  }
  /** The field's texts, normalised and capped; computed once per message. */
  folded(field: FieldName): string[] {
    let v = this.#folded.get(field);
    if (!v) {
      v = FIELD_EXTRACTORS[field](this.input).map((t) =>
        foldText(t.length > MAX_SCAN_CHARS ? t.slice(0, MAX_SCAN_CHARS) : t)
      );
      this.#folded.set(field, v);
    }
    return v;
  }
}

/**
 * Evaluates a condition: `null` when it does not hold, else the leaf matches that made it hold
 * (possibly none, e.g. for a `not`).
 */
export type Evaluator = (ctx: EvalContext) => Match[] | null;

/** Compiles a condition tree into one evaluator. */
export function compileCondition(c: Condition): Evaluator {
  switch (c.kind) {
    case "field":
      return compileFieldTest(c.field, c.operator, c.values);
    case "all": {
      const parts = c.conditions.map(compileCondition);
      return (ctx) => {
        const out: Match[] = [];
        for (const p of parts) {
          const m = p(ctx);
          if (!m) return null;
          out.push(...m);
        }
        return out;
      };
    }
    case "any": {
      const parts = c.conditions.map(compileCondition);
      return (ctx) => {
        for (const p of parts) {
          const m = p(ctx);
          if (m) return m;
        }
        return null;
      };
    }
    case "not": {
      const inner = compileCondition(c.condition);
      return (ctx) => (inner(ctx) ? null : []);
    }
  }
}

/** A leaf: the field's texts against the values; the first value that holds is the evidence. */
function compileFieldTest(field: FieldName, op: OperatorName, values: string[]): Evaluator {
  // `equals` ignores surrounding white space; `contains` keeps it (" pills " means a word).
  const needles = values.map((v) => ({
    value: v,
    folded: op === "equals" ? foldText(v).trim() : foldText(v),
  }));
  switch (op) {
    case "contains":
      return (ctx) => {
        for (const text of ctx.folded(field)) {
          for (const n of needles) {
            if (text.includes(n.folded)) return [{ field, operator: op, value: n.value }];
          }
        }
        return null;
      };
    case "equals":
      return (ctx) => {
        for (const text of ctx.folded(field)) {
          const t = text.trim();
          for (const n of needles) {
            if (t === n.folded) return [{ field, operator: op, value: n.value }];
          }
        }
        return null;
      };
  }
}
