/**
 * The policy as data: rules, their condition trees and their actions, exactly as validated from
 * the rule file (see `parse_rules.ts`). `PolicyEngine` compiles these once into evaluators.
 *
 * Shape, chosen so the rule language can grow without a rewrite:
 * - a condition is a tree: leaves test one *field* of the message with one *operator*
 *   (`subject: { contains: [...] }`), inner nodes combine (`all`, `any`, `not`);
 * - a field is a name in `FIELD_NAMES`, read from a message through one extractor table
 *   (`fields.ts`), so a new field is one table entry plus its name here;
 * - a rule has a list of actions, of which at most one is *terminal* (decides the verdict).
 *
 * Everything here is plain data (no functions), so rules can be printed, compared and reloaded.
 */
import type { Reply } from "./verdict.ts";

/** Where something was written in the rule file (1-based). */
export interface SourcePos {
  line: number;
  column: number;
}

/**
 * Fields a condition can test (how each is read: `fields.ts`):
 * - `subject`: the decoded Subject;
 * - `body`: the text of the text/plain parts, and every HTML part as text;
 * - `from`, `to`, `cc`: each mailbox of that header, as its address and its display name;
 * - `mail_from`, `rcpt_to`: the envelope sender and recipients (SMTP MAIL/RCPT);
 * - `helo`: the HELO/EHLO name the client gave;
 * - `attachment_name`, `attachment_type`: file name and MIME type of each attachment.
 */
export const FIELD_NAMES = [
  "subject",
  "body",
  "from",
  "to",
  "cc",
  "mail_from",
  "rcpt_to",
  "helo",
  "attachment_name",
  "attachment_type",
] as const;
/** A message field a condition can test. */
export type FieldName = typeof FIELD_NAMES[number];

/**
 * Operators of a field test. `contains`: the field contains any of the values, case-insensitive
 * and Unicode-normalised (NFKC + case fold). `equals`: the whole field equals any of the values
 * under the same normalisation, surrounding white space ignored.
 */
export const OPERATOR_NAMES = ["contains", "equals"] as const;
/** An operator of a field test. */
export type OperatorName = typeof OPERATOR_NAMES[number];

/** Names of the combinators of the condition tree. */
export const COMBINATOR_NAMES = ["all", "any", "not"] as const;

/** A leaf: one field tested with one operator against a list of values (any may match). */
export interface FieldCondition {
  kind: "field";
  field: FieldName;
  operator: OperatorName;
  /** The values as written in the rule file (normalised only when compiled). */
  values: string[];
  at?: SourcePos;
}

/** True when every child is true (and for an empty list). */
export interface AllCondition {
  kind: "all";
  conditions: Condition[];
  at?: SourcePos;
}

/** True when at least one child is true. */
export interface AnyCondition {
  kind: "any";
  conditions: Condition[];
  at?: SourcePos;
}

/** True when the child is false. */
export interface NotCondition {
  kind: "not";
  condition: Condition;
  at?: SourcePos;
}

/** A node of a rule's condition tree. */
export type Condition = FieldCondition | AllCondition | AnyCondition | NotCondition;

/** Actions that decide the verdict; a rule has at most one, and the first matching one wins. */
export const TERMINAL_ACTIONS = ["forward", "discard", "reject"] as const;
/** Every action name the rule file accepts (later issues add non-terminal ones: tag, alert, ...). */
export const ACTION_NAMES = [...TERMINAL_ACTIONS] as const;

/** What a matching rule does. */
export type Action =
  | { type: "forward" }
  | { type: "discard" }
  | { type: "reject"; reply: Reply };

/** `enforce` (default): actions take effect. `observe`: evaluated and logged, not enforced. */
export type RuleMode = "enforce" | "observe";

/** The reply of `reject` when the rule gives none (RFC 3463 5.7.1: delivery not authorized). */
export const DEFAULT_REJECT_REPLY: Readonly<Reply> = Object.freeze({
  code: 550,
  enhanced: "5.7.1",
  text: "Message rejected by policy",
});

/** A policy rule as loaded from the rule file. */
export interface Rule {
  /** Unique name, used in verdicts and logs. */
  name: string;
  /** When the rule matches. */
  when: Condition;
  /** What it does when it matches (at most one terminal action). */
  actions: Action[];
  /** Whether the actions are enforced or only logged. */
  mode: RuleMode;
  /** Where the rule starts in the rule file. */
  at?: SourcePos;
}
