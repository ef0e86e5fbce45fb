/**
 * Validation of the `rules:` section of the rule file into `Rule` data.
 *
 * Every mistake is reported with its line and column (through `YamlReader`) and the walk goes on,
 * so one `ssg check` shows them all. Unknown keys are errors, never ignored: a misspelt `actoin`
 * that is silently skipped is a rule that silently does nothing.
 *
 * Limits (so that a rule file cannot make judging a message expensive): at most `MAX_RULES`
 * rules, `MAX_VALUES` values per field test, `MAX_VALUE_LENGTH` characters per value, condition
 * trees at most `MAX_DEPTH` deep.
 */
import { isMap, isScalar, type Scalar, type YAMLMap } from "yaml";
import type { YamlReader, YNode } from "../config/yaml_reader.ts";
import { foldText } from "./fold_text.ts";
import {
  type Action,
  ACTION_NAMES,
  COMBINATOR_NAMES,
  type Condition,
  DEFAULT_REJECT_REPLY,
  FIELD_NAMES,
  type FieldName,
  OPERATOR_NAMES,
  type OperatorName,
  type Rule,
  type RuleMode,
  type SourcePos,
  TERMINAL_ACTIONS,
} from "./rule.ts";
import type { Reply } from "./verdict.ts";

/** Most rules in one file. */
export const MAX_RULES = 10_000;
/** Most values in one field test (`contains: [...]`). */
export const MAX_VALUES = 10_000;
/** Longest value of a field test, in characters. */
export const MAX_VALUE_LENGTH = 1_000;
/** Deepest condition tree (all/any/not nesting). */
export const MAX_DEPTH = 32;
/** Longest reply text of `reject`, in characters (a reply line is at most 512 octets, RFC 5321 §4.5.3.1.5). */
export const MAX_REPLY_TEXT = 200;

const RULE_KEYS = ["name", "when", "action", "reply", "mode"] as const;
const REPLY_KEYS = ["code", "enhanced", "text"] as const;
const CONDITION_KEYS = [...FIELD_NAMES, ...COMBINATOR_NAMES] as const;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/**
 * Reads the `rules:` list. Issues go to `reader`; rules with errors are left out of the result
 * (the caller refuses the whole file when there is any issue).
 */
export function parseRules(node: YNode, reader: YamlReader, fallback?: YNode): Rule[] {
  if (node === undefined || (isScalar(node) && node.value === null)) return [];
  const items = reader.list(node, `"rules"`, fallback);
  if (!items) return [];
  if (items.length > MAX_RULES) {
    reader.report(node, `"rules" has ${items.length} rules; at most ${MAX_RULES} are allowed`);
    return [];
  }
  const rules: Rule[] = [];
  const seen = new Map<string, SourcePos>();
  items.forEach((item, index) => {
    const rule = parseRule(item, index, reader, seen);
    if (rule) rules.push(rule);
  });
  return rules;
}

function parseRule(
  node: YNode,
  index: number,
  reader: YamlReader,
  seen: Map<string, SourcePos>,
): Rule | undefined {
  const before = reader.issues.length;
  const peeked = peekName(node);
  const label = peeked ? `rule "${peeked}"` : `rule #${index + 1}`;
  const f = reader.fields(node, label, RULE_KEYS, `in ${label}`);
  if (!f) return undefined;
  const at = reader.pos(f.node);

  let name: string | undefined;
  if (!f.has("name")) {
    reader.report(f.node, `${label} has no "name"`);
  } else {
    name = reader.string(f.get("name"), `"name"`, {
      max: 64,
      pattern: NAME_RE,
      patternText: "letters, digits, '_', '.', '-' (starting with a letter or digit)",
    }, f.key("name"));
    if (name !== undefined) {
      const first = seen.get(name);
      if (first) {
        reader.report(
          f.get("name"),
          `duplicate rule name "${name}" (first at line ${first.line})`,
        );
      } else {
        seen.set(name, reader.pos(f.get("name")));
      }
    }
  }

  let when: Condition | undefined;
  if (!f.has("when")) reader.report(f.node, `${label} has no "when"`);
  else when = parseCondition(f.get("when"), reader, label, 0, f.key("when"));

  let actions: Action[] | undefined;
  if (!f.has("action")) reader.report(f.node, `${label} has no "action"`);
  else {actions = parseActions(
      f.get("action"),
      f.get("reply"),
      f.key("reply"),
      reader,
      f.key("action"),
    );}

  let mode: RuleMode = "enforce";
  if (f.has("mode")) {
    mode = reader.oneOf(f.get("mode"), `"mode"`, ["enforce", "observe"] as const, f.key("mode")) ??
      "enforce";
  }

  if (reader.issues.length !== before || !name || !when || !actions) return undefined;
  return { name, when, actions, mode, at };
}

/** The rule's name if it is written plainly, so that messages about the rule can use it. */
function peekName(node: YNode): string | undefined {
  if (!isMap(node)) return undefined;
  for (const pair of (node as YAMLMap).items) {
    const k = pair.key as YNode;
    const v = pair.value as YNode;
    if (isScalar(k) && k.value === "name" && isScalar(v) && typeof v.value === "string") {
      const s = v.value;
      if (s.length <= 64 && NAME_RE.test(s)) return s;
    }
  }
  return undefined;
}

/**
 * A condition is a mapping of field tests and combinators; several keys in one mapping must all
 * hold (an implicit `all`), e.g. `{ subject: {contains: [a]}, body: {contains: [b]} }`.
 */
function parseCondition(
  node: YNode,
  reader: YamlReader,
  label: string,
  depth: number,
  fallback?: YNode,
): Condition | undefined {
  if (depth > MAX_DEPTH) {
    reader.report(
      node,
      `condition of ${label} is nested deeper than ${MAX_DEPTH} levels`,
      fallback,
    );
    return undefined;
  }
  const before = reader.issues.length;
  const f = reader.fields(
    node,
    `condition of ${label}`,
    CONDITION_KEYS,
    `in condition of ${label}`,
    fallback,
  );
  if (!f) return undefined;
  const at = reader.pos(f.node);
  const names = f.names();
  if (names.length === 0) {
    // Only unknown keys: those are already reported, and "empty" would be noise.
    if (reader.issues.length !== before) return undefined;
    reader.report(
      f.node,
      `condition of ${label} is empty; expected one of ${CONDITION_KEYS.join(", ")}`,
      fallback,
    );
    return undefined;
  }
  const parts: Condition[] = [];
  let ok = true;
  for (const key of names) {
    const value = f.get(key);
    const keyNode = f.key(key);
    let part: Condition | Condition[] | undefined;
    if (key === "all" || key === "any") {
      part = parseCombinator(key, value, reader, label, depth, keyNode);
    } else if (key === "not") {
      const inner = parseCondition(value, reader, label, depth + 1, keyNode);
      part = inner && { kind: "not", condition: inner, at: reader.pos(keyNode) };
    } else {
      part = parseFieldTests(key as FieldName, value, reader, keyNode);
    }
    if (!part) ok = false;
    else if (Array.isArray(part)) parts.push(...part);
    else parts.push(part);
  }
  if (!ok) return undefined;
  return parts.length === 1 ? parts[0] : { kind: "all", conditions: parts, at };
}

function parseCombinator(
  kind: "all" | "any",
  node: YNode,
  reader: YamlReader,
  label: string,
  depth: number,
  keyNode: Scalar | undefined,
): Condition | undefined {
  const items = reader.list(node, `"${kind}"`, keyNode);
  if (!items) return undefined;
  if (items.length === 0) {
    reader.report(node, `"${kind}" must list at least one condition`, keyNode);
    return undefined;
  }
  const conditions: Condition[] = [];
  let ok = true;
  for (const item of items) {
    if (reader.exhausted) return undefined; // an alias bomb: stop at once, already reported
    const c = parseCondition(item, reader, label, depth + 1, node);
    if (c) conditions.push(c);
    else ok = false;
  }
  return ok ? { kind, conditions, at: reader.pos(keyNode) } : undefined;
}

/** `subject: { contains: [...], equals: [...] }`: one leaf per operator, all must hold. */
function parseFieldTests(
  field: FieldName,
  node: YNode,
  reader: YamlReader,
  keyNode: Scalar | undefined,
): Condition[] | undefined {
  const before = reader.issues.length;
  const f = reader.fields(node, `"${field}"`, OPERATOR_NAMES, `in "${field}"`, keyNode);
  if (!f) return undefined;
  if (f.names().length === 0) {
    if (reader.issues.length !== before) return undefined;
    reader.report(
      f.node,
      `"${field}" needs an operator: one of ${OPERATOR_NAMES.join(", ")}`,
      keyNode,
    );
    return undefined;
  }
  const out: Condition[] = [];
  let ok = true;
  for (const op of f.names() as OperatorName[]) {
    const values = parseValues(f.get(op), `"${op}"`, reader, f.key(op));
    if (!values) ok = false;
    else out.push({ kind: "field", field, operator: op, values, at: reader.pos(f.key(op)) });
  }
  return ok ? out : undefined;
}

/** A string or a non-empty list of strings, each non-empty after normalisation. */
function parseValues(
  node: YNode,
  label: string,
  reader: YamlReader,
  keyNode: Scalar | undefined,
): string[] | undefined {
  const items = reader.list(node, `${label}`, keyNode, true);
  if (!items) return undefined;
  if (items.length === 0) {
    reader.report(node, `${label} must list at least one string`, keyNode);
    return undefined;
  }
  if (items.length > MAX_VALUES) {
    reader.report(node, `${label} has ${items.length} values; at most ${MAX_VALUES} are allowed`);
    return undefined;
  }
  const values: string[] = [];
  let ok = true;
  for (const item of items) {
    const v = reader.string(item, `${label} value`, { max: MAX_VALUE_LENGTH }, node);
    if (v === undefined) {
      ok = false;
    } else if (foldText(v).trim() === "") {
      reader.report(item, `${label} value is blank after normalisation`);
      ok = false;
    } else {
      values.push(v);
    }
  }
  return ok ? values : undefined;
}

/** `action: discard` or `action: [discard]`; at most one terminal action. */
function parseActions(
  node: YNode,
  replyNode: YNode,
  replyKey: Scalar | undefined,
  reader: YamlReader,
  keyNode: Scalar | undefined,
): Action[] | undefined {
  const items = reader.list(node, `"action"`, keyNode, true);
  if (!items) return undefined;
  if (items.length === 0) {
    reader.report(node, `"action" must name at least one action`, keyNode);
    return undefined;
  }
  const names: string[] = [];
  let ok = true;
  for (const item of items) {
    const a = reader.oneOf(item, `"action"`, ACTION_NAMES, keyNode);
    if (a === undefined) ok = false;
    else names.push(a);
  }
  if (!ok) return undefined;
  const terminal = names.filter((n) => (TERMINAL_ACTIONS as readonly string[]).includes(n));
  if (terminal.length > 1) {
    reader.report(
      node,
      `"action" may name only one of ${TERMINAL_ACTIONS.join(", ")}, got ${terminal.join(", ")}`,
    );
    return undefined;
  }
  const hasReject = names.includes("reject");
  let reply: Reply | undefined;
  if (replyKey) {
    if (!hasReject) {
      reader.report(replyKey, `"reply" applies only to action reject`);
      return undefined;
    }
    reply = parseReply(replyNode, reader, replyKey);
    if (!reply) return undefined;
  }
  return names.map((n): Action => {
    if (n === "reject") return { type: "reject", reply: reply ?? { ...DEFAULT_REJECT_REPLY } };
    return { type: n as "forward" | "discard" };
  });
}

/**
 * `reply: { code: 550, enhanced: "5.7.1", text: "..." }`. The code is 4xx or 5xx (RFC 5321
 * §4.2.1); the enhanced code's class must equal the code's first digit (RFC 3463 §2, RFC 2034
 * §3); the text is single-line printable ASCII, because it goes verbatim into an SMTP reply.
 */
function parseReply(node: YNode, reader: YamlReader, keyNode: Scalar): Reply | undefined {
  const f = reader.fields(node, `"reply"`, REPLY_KEYS, `in "reply"`, keyNode);
  if (!f) return undefined;
  const before = reader.issues.length;
  const code = f.has("code")
    ? reader.int(f.get("code"), `"reply.code"`, 400, 599, f.key("code"))
    : DEFAULT_REJECT_REPLY.code;
  let enhanced: string | undefined;
  if (f.has("enhanced")) {
    enhanced = reader.string(f.get("enhanced"), `"reply.enhanced"`, {
      max: 11,
      pattern: /^[245]\.\d{1,3}\.\d{1,3}$/,
      patternText: 'an enhanced status code like "5.7.1" (RFC 3463)',
    }, f.key("enhanced"));
    if (enhanced !== undefined && code !== undefined && enhanced[0] !== String(code)[0]) {
      reader.report(
        f.get("enhanced"),
        `"reply.enhanced" ${enhanced} must start with ${String(code)[0]} to match code ${code}`,
      );
      enhanced = undefined;
    }
  } else if (code !== undefined) {
    enhanced = `${String(code)[0]}.7.1`;
  }
  const text = f.has("text")
    ? reader.string(f.get("text"), `"reply.text"`, {
      max: MAX_REPLY_TEXT,
      pattern: /^[\x20-\x7e]+$/,
      patternText: "printable ASCII on one line",
    }, f.key("text"))
    : DEFAULT_REJECT_REPLY.text;
  if (reader.issues.length !== before || code === undefined || !enhanced || text === undefined) {
    return undefined;
  }
  return { code, enhanced, text };
}
