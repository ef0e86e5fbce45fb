/**
 * Validation of the `rules:` section of the rule file into `Rule` data.
 *
 * Every mistake is reported with its line and column (through `YamlReader`) and the walk goes on,
 * so one `ssg check` shows them all. Unknown keys are errors, never ignored: a misspelt `actoin`
 * that is silently skipped is a rule that silently does nothing.
 *
 * Limits (so that a rule file cannot make judging a message expensive): at most `MAX_RULES`
 * rules, `MAX_VALUES` values per field test, `MAX_VALUE_LENGTH` characters per value, condition
 * trees at most `MAX_DEPTH` deep, and every `matches` pattern admitted by the regex budget
 * (`regex_guard.ts`) — a pattern that could backtrack catastrophically is a load error.
 */
import { isMap, isScalar, type Scalar, type YAMLMap } from "yaml";
import { cut, type Fields, type YamlReader, type YNode } from "../config/yaml_reader.ts";
import { parseCidr } from "../config/cidr.ts";
import { parseHostPort } from "../config/host_port.ts";
import {
  ARC_RESULTS,
  DKIM_RESULTS,
  DMARC_POLICIES,
  DMARC_RESULTS,
  SPF_RESULTS,
} from "../engines/auth/auth_values.ts";
import { foldText } from "./fold_text.ts";
import { guardRegex, MAX_PATTERN_LENGTH } from "./regex_guard.ts";
import {
  type Action,
  ACTION_NAMES,
  type AuthCondition,
  COMBINATOR_NAMES,
  type Condition,
  DEFAULT_REJECT_REPLY,
  DEFAULT_TEMPFAIL_REPLY,
  type DnsblCondition,
  FIELD_NAMES,
  type FieldCondition,
  type FieldName,
  NUMBER_OPERATORS,
  type NumberField,
  type NumberOperator,
  OPERATOR_NAMES,
  type OperatorName,
  RSPAMD_ACTIONS,
  type RspamdAction,
  type RspamdCondition,
  type Rule,
  type RuleMode,
  type ServerAddress,
  type SourcePos,
  SPECIAL_CONDITION_NAMES,
  TERMINAL_ACTIONS,
} from "./rule.ts";
import type { BlacklistKey, Reply, Tag } from "./verdict.ts";

/** Most rules in one file. */
export const MAX_RULES = 10_000;
/** Most values in one field test (`contains: [...]`). */
export const MAX_VALUES = 10_000;
/** Longest value of a field test, in characters. */
export const MAX_VALUE_LENGTH = 1_000;
/** Most patterns in one `matches`. */
export const MAX_PATTERNS = 100;
/** Deepest condition tree (all/any/not nesting). */
export const MAX_DEPTH = 32;
/** Longest reply text of `reject`, in characters (a reply line is at most 512 octets, RFC 5321 §4.5.3.1.5). */
export const MAX_REPLY_TEXT = 200;
/** Longest `tag` header value (a header line should stay under 998 octets, RFC 5322 §2.1.1). */
export const MAX_TAG_VALUE = 900;
/** Longest `tag` Subject prefix. */
export const MAX_SUBJECT_PREFIX = 100;
/** Longest bulk window: 7 days. */
export const MAX_BULK_WINDOW = 7 * 86400;
/** Longest blacklist entry: 365 days. */
export const MAX_BLACKLIST_SECONDS = 365 * 86400;

const RULE_KEYS = [
  "name",
  "when",
  "action",
  "reply",
  "mode",
  "tag",
  "redirect",
  "bcc",
  "blacklist",
] as const;
const REPLY_KEYS = ["code", "enhanced", "text"] as const;
const TAG_KEYS = ["header", "subject_prefix"] as const;
const DELIVERY_KEYS = ["to", "server"] as const;
const BLACKLIST_KEYS = ["key", "for"] as const;
const BLACKLIST_KEY_NAMES = ["client_ip", "sender", "sender_domain"] as const;
const HEADER_KEYS = ["name", ...OPERATOR_NAMES] as const;
const IP_KEYS = ["in", "in_list"] as const;
const BULK_KEYS = ["servers", "recipients", "within"] as const;
const CONDITION_KEYS = [...FIELD_NAMES, ...SPECIAL_CONDITION_NAMES, ...COMBINATOR_NAMES] as const;
/** Names of rules, lists and thresholds. */
export const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
/** RFC 5322 §3.6.8 field name: printable ASCII except colon. */
const HEADER_NAME_RE = /^[\x21-\x39\x3b-\x7e]+$/;
// deno-lint-ignore no-control-regex
const CONTROL_RE = /[\x00-\x1f\x7f]/;
/** A plain mail address (RFC 5321 Mailbox, simplified: no quoted local part, no address literal). */
export const ADDRESS_RE =
  /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** What rules may refer to, defined elsewhere in the file. */
export interface RuleContext {
  /** Names of the lists defined in `lists:`. */
  lists: ReadonlySet<string>;
}

/**
 * Reads the `rules:` list. Issues go to `reader`; rules with errors are left out of the result
 * (the caller refuses the whole file when there is any issue).
 */
export function parseRules(
  node: YNode,
  reader: YamlReader,
  fallback?: YNode,
  ctx: RuleContext = { lists: new Set() },
): Rule[] {
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
    const rule = parseRule(item, index, reader, seen, ctx);
    if (rule) rules.push(rule);
  });
  return rules;
}

function parseRule(
  node: YNode,
  index: number,
  reader: YamlReader,
  seen: Map<string, SourcePos>,
  ctx: RuleContext,
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
  else when = parseCondition(f.get("when"), reader, label, 0, ctx, f.key("when"));

  let actions: Action[] | undefined;
  if (!f.has("action")) reader.report(f.node, `${label} has no "action"`);
  else actions = parseActions(f.get("action"), f, reader);

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
 * A condition is a mapping of leaf tests and combinators; several keys in one mapping must all
 * hold (an implicit `all`), e.g. `{ subject: {contains: [a]}, size: {over: 1M} }`.
 */
function parseCondition(
  node: YNode,
  reader: YamlReader,
  label: string,
  depth: number,
  ctx: RuleContext,
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
      part = parseCombinator(key, value, reader, label, depth, ctx, keyNode);
    } else if (key === "not") {
      const inner = parseCondition(value, reader, label, depth + 1, ctx, keyNode);
      part = inner && { kind: "not", condition: inner, at: reader.pos(keyNode) };
    } else if ((FIELD_NAMES as readonly string[]).includes(key)) {
      part = parseFieldTests(key as FieldName, value, reader, ctx, keyNode);
    } else {
      part = parseSpecial(key as SpecialName, value, reader, ctx, keyNode);
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
  ctx: RuleContext,
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
    const c = parseCondition(item, reader, label, depth + 1, ctx, node);
    if (c) conditions.push(c);
    else ok = false;
  }
  return ok ? { kind, conditions, at: reader.pos(keyNode) } : undefined;
}

/**
 * `subject: { contains: [...], matches: "..." }`: one leaf per operator, all must hold.
 * `header: { name: X-Mailer, matches: "^bulk" }`: the same, on the named header field.
 */
function parseFieldTests(
  field: FieldName,
  node: YNode,
  reader: YamlReader,
  ctx: RuleContext,
  keyNode: Scalar | undefined,
): Condition[] | undefined {
  const before = reader.issues.length;
  const keys = field === "header" ? HEADER_KEYS : OPERATOR_NAMES;
  const f = reader.fields(node, `"${field}"`, keys, `in "${field}"`, keyNode);
  if (!f) return undefined;
  let header: string | undefined;
  if (field === "header") {
    if (!f.has("name")) {
      reader.report(f.node, `"header" needs "name": the header field to test, e.g. X-Mailer`);
    } else {
      header = reader.string(f.get("name"), `"header.name"`, {
        max: 100,
        pattern: HEADER_NAME_RE,
        patternText: "a header field name (printable ASCII, no colon or space)",
      }, f.key("name"));
    }
  }
  const ops = f.names().filter((n) => n !== "name") as OperatorName[];
  if (ops.length === 0) {
    if (reader.issues.length !== before) return undefined;
    reader.report(
      f.node,
      `"${field}" needs an operator: one of ${OPERATOR_NAMES.join(", ")}`,
      keyNode,
    );
    return undefined;
  }
  const out: Condition[] = [];
  for (const op of ops) {
    let values: string[] | undefined;
    if (op === "in_list") values = parseListRef(f.get(op), reader, ctx, f.key(op));
    else if (op === "matches") values = parsePatterns(f.get(op), reader, f.key(op));
    else values = parseValues(f.get(op), `"${op}"`, reader, f.key(op));
    if (values) {
      const leaf: FieldCondition = {
        kind: "field",
        field,
        operator: op,
        values,
        at: reader.pos(f.key(op)),
      };
      if (header !== undefined) leaf.header = header.toLowerCase();
      out.push(leaf);
    }
  }
  return reader.issues.length === before ? out : undefined;
}

/** A list name that the `lists:` section defines. */
function parseListRef(
  node: YNode,
  reader: YamlReader,
  ctx: RuleContext,
  keyNode: Scalar | undefined,
): string[] | undefined {
  const name = reader.string(node, `"in_list"`, {
    max: 64,
    pattern: NAME_RE,
    patternText: 'the name of a list in "lists"',
  }, keyNode);
  if (name === undefined) return undefined;
  if (!ctx.lists.has(name)) {
    const known = [...ctx.lists].join(", ");
    reader.report(
      node,
      `unknown list "${name}"; ${
        known ? `defined lists: ${known}` : `no list is defined in "lists"`
      }`,
      keyNode,
    );
    return undefined;
  }
  return [name];
}

/** One pattern or a list of them, each admitted by the regex budget (`regex_guard.ts`). */
function parsePatterns(
  node: YNode,
  reader: YamlReader,
  keyNode: Scalar | undefined,
): string[] | undefined {
  const items = reader.list(node, `"matches"`, keyNode, true);
  if (!items) return undefined;
  if (items.length === 0) {
    reader.report(node, `"matches" must give at least one pattern`, keyNode);
    return undefined;
  }
  if (items.length > MAX_PATTERNS) {
    reader.report(node, `"matches" has ${items.length} patterns; at most ${MAX_PATTERNS}`, keyNode);
    return undefined;
  }
  const out: string[] = [];
  let ok = true;
  for (const item of items) {
    const p = reader.string(item, `"matches" pattern`, { max: MAX_PATTERN_LENGTH }, node);
    if (p === undefined) {
      ok = false;
      continue;
    }
    try {
      guardRegex(p);
      out.push(p);
    } catch (e) {
      reader.report(item, `"matches" pattern refused: ${(e as Error).message}`, node);
      ok = false;
    }
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

type SpecialName = typeof SPECIAL_CONDITION_NAMES[number];

/** The leaves that are not text fields. */
function parseSpecial(
  key: SpecialName,
  node: YNode,
  reader: YamlReader,
  ctx: RuleContext,
  keyNode: Scalar | undefined,
): Condition | Condition[] | undefined {
  const at = reader.pos(keyNode);
  switch (key) {
    case "size":
    case "rcpt_count":
      return parseNumberTests(key, node, reader, keyNode);
    case "client_ip":
    case "server":
      return parseIpTest(key, node, reader, ctx, keyNode);
    case "tls":
    case "spamtrap":
    case "authenticated": {
      const value = reader.bool(node, `"${key}"`, keyNode);
      return value === undefined ? undefined : { kind: "flag", field: key, value, at };
    }
    case "listed": {
      const list = reader.oneOf(node, `"listed"`, ["blacklist", "allowlist"] as const, keyNode);
      return list === undefined ? undefined : { kind: "listed", list, at };
    }
    case "bulk":
      return parseBulk(node, reader, keyNode);
    case "virus":
      return parseVirus(node, reader, keyNode);
    case "rspamd":
      return parseRspamd(node, reader, keyNode);
    case "dnsbl":
      return parseDnsbl(node, reader, keyNode);
    case "spf":
    case "dkim":
    case "dmarc":
    case "arc":
      return parseAuth(key, node, reader, keyNode);
  }
}

const RSPAMD_KEYS = ["score_at_least", "score_below", "action", "symbol"] as const;
/** Largest |score| an `rspamd` test may name (Rspamd's scores are small; this catches typos). */
const MAX_RSPAMD_SCORE = 10_000;

/**
 * `rspamd: { score_at_least: 6 }`, `rspamd: { action: [reject, soft reject] }`,
 * `rspamd: { symbol: GTUBE }`; several keys: all must hold.
 */
function parseRspamd(
  node: YNode,
  reader: YamlReader,
  keyNode: Scalar | undefined,
): Condition | undefined {
  const before = reader.issues.length;
  const f = reader.fields(node, `"rspamd"`, RSPAMD_KEYS, `in "rspamd"`, keyNode);
  if (!f) return undefined;
  if (f.names().length === 0) {
    if (reader.issues.length === before) {
      reader.report(f.node, `"rspamd" needs one of ${RSPAMD_KEYS.join(", ")}`, keyNode);
    }
    return undefined;
  }
  const c: RspamdCondition = { kind: "rspamd", at: reader.pos(keyNode) };
  for (const key of ["score_at_least", "score_below"] as const) {
    if (!f.has(key)) continue;
    const v = reader.resolve(f.get(key));
    const n = isScalar(v) ? v.value : undefined;
    if (typeof n !== "number" || !Number.isFinite(n) || Math.abs(n) > MAX_RSPAMD_SCORE) {
      reader.report(
        v,
        `"rspamd.${key}" must be a number from -${MAX_RSPAMD_SCORE} to ${MAX_RSPAMD_SCORE}`,
        f.key(key),
      );
    } else if (key === "score_at_least") c.scoreAtLeast = n;
    else c.scoreBelow = n;
  }
  if (f.has("action")) {
    const items = reader.list(f.get("action"), `"rspamd.action"`, f.key("action"), true) ?? [];
    const actions: RspamdAction[] = [];
    for (const item of items) {
      const v = reader.resolve(item);
      const t = isScalar(v) && typeof v.value === "string"
        ? v.value.trim().toLowerCase().replace(/_/g, " ")
        : undefined;
      if (t === undefined || !(RSPAMD_ACTIONS as readonly string[]).includes(t)) {
        reader.report(
          v,
          `"rspamd.action" must be one of ${RSPAMD_ACTIONS.map((a) => `"${a}"`).join(", ")}`,
          f.key("action"),
        );
      } else if (!actions.includes(t as RspamdAction)) actions.push(t as RspamdAction);
    }
    if (items.length === 0 && reader.issues.length === before) {
      reader.report(
        f.get("action"),
        `"rspamd.action" must name at least one action`,
        f.key("action"),
      );
    }
    c.actions = actions;
  }
  if (f.has("symbol")) {
    const items = reader.list(f.get("symbol"), `"rspamd.symbol"`, f.key("symbol"), true) ?? [];
    if (items.length === 0 && reader.issues.length === before) {
      reader.report(
        f.get("symbol"),
        `"rspamd.symbol" must name at least one symbol`,
        f.key("symbol"),
      );
    }
    if (items.length > MAX_VALUES) {
      reader.report(
        f.get("symbol"),
        `"rspamd.symbol" has ${items.length} names; at most ${MAX_VALUES}`,
      );
    }
    const symbols: string[] = [];
    for (const item of items.slice(0, MAX_VALUES)) {
      const t = reader.string(item, `"rspamd.symbol" name`, {
        max: 128,
        pattern: /^[A-Za-z0-9_.-]+$/,
        patternText: "a symbol name (letters, digits, _ . -), e.g. GTUBE",
      }, f.get("symbol"));
      if (t !== undefined) symbols.push(t);
    }
    c.symbols = symbols;
  }
  if (
    c.scoreAtLeast !== undefined && c.scoreBelow !== undefined &&
    c.scoreBelow <= c.scoreAtLeast && reader.issues.length === before
  ) {
    reader.report(
      f.get("score_below"),
      `"rspamd.score_below" (${c.scoreBelow}) must be above "rspamd.score_at_least" (${c.scoreAtLeast}): nothing could match`,
      f.key("score_below"),
    );
  }
  return reader.issues.length === before ? c : undefined;
}

/** Keys of a `dnsbl` leaf. */
const DNSBL_TEST_KEYS = ["score_at_least", "score_at_most", "listed_in"] as const;

/** `dnsbl: { score_at_least: 3 }`, `dnsbl: { listed_in: [zen.example.org] }`: all must hold. */
function parseDnsbl(
  node: YNode,
  reader: YamlReader,
  keyNode: Scalar | undefined,
): Condition | undefined {
  const before = reader.issues.length;
  const f = reader.fields(node, `"dnsbl"`, DNSBL_TEST_KEYS, `in "dnsbl"`, keyNode);
  if (!f) return undefined;
  const c: DnsblCondition = { kind: "dnsbl", at: reader.pos(keyNode) };
  for (
    const [key, prop] of [["score_at_least", "scoreAtLeast"], [
      "score_at_most",
      "scoreAtMost",
    ]] as const
  ) {
    if (f.has(key)) {
      c[prop] = reader.int(f.get(key), `"dnsbl.${key}"`, -100_000, 100_000, f.key(key));
    }
  }
  if (f.has("listed_in")) {
    const zones = parseValues(f.get("listed_in"), `"dnsbl.listed_in"`, reader, f.key("listed_in"));
    if (zones) c.listedIn = zones.map((z) => z.toLowerCase().replace(/\.$/, ""));
  }
  if (reader.issues.length === before && f.names().length === 0) {
    reader.report(
      f.node,
      `"dnsbl" needs "score_at_least", "score_at_most" or "listed_in" (a zone of the "dnsbl" section)`,
      keyNode,
    );
  }
  return reader.issues.length === before ? c : undefined;
}

/** The results each authentication leaf accepts (RFC 8601 §2.7; mailauth's values). */
const AUTH_RESULT_NAMES: Record<AuthCondition["check"], readonly string[]> = {
  spf: SPF_RESULTS,
  dkim: DKIM_RESULTS,
  dmarc: DMARC_RESULTS,
  arc: ARC_RESULTS,
};

/**
 * `spf: fail`, `spf: [fail, softfail]`, `dkim: pass`, `dkim: { result: pass, domain: x.example }`,
 * `dmarc: { result: fail, policy: [reject, quarantine] }`, `arc: none`.
 */
function parseAuth(
  check: AuthCondition["check"],
  node: YNode,
  reader: YamlReader,
  keyNode: Scalar | undefined,
): Condition | undefined {
  const at = reader.pos(keyNode);
  const allowed = AUTH_RESULT_NAMES[check];
  const words = (n: YNode, label: string, choices: readonly string[], k?: Scalar) => {
    const items = reader.list(n, label, k, true);
    if (!items) return undefined;
    if (items.length === 0) {
      reader.report(n, `${label} must name at least one of ${choices.join(", ")}`, k);
      return undefined;
    }
    const out: string[] = [];
    for (const item of items) {
      const v = reader.oneOf(item, label, choices, k);
      if (v === undefined) return undefined;
      if (!out.includes(v)) out.push(v);
    }
    return out;
  };
  if (!isMap(node)) {
    const results = words(node, `"${check}"`, allowed, keyNode);
    return results === undefined ? undefined : { kind: "auth", check, results, at };
  }
  const keys = check === "dkim"
    ? ["result", "domain"]
    : check === "dmarc"
    ? ["result", "policy"]
    : ["result"];
  const before = reader.issues.length;
  const f = reader.fields(node, `"${check}"`, keys, `in "${check}"`, keyNode);
  if (!f) return undefined;
  if (!f.has("result")) {
    if (reader.issues.length === before) {
      reader.report(f.node, `"${check}" needs "result" (one of ${allowed.join(", ")})`, keyNode);
    }
    return undefined;
  }
  const results = words(f.get("result"), `"${check}.result"`, allowed, f.key("result"));
  const c: AuthCondition = { kind: "auth", check, results: results ?? [], at };
  if (f.has("domain")) {
    const d = reader.string(f.get("domain"), `"dkim.domain"`, {
      max: 253,
      pattern: /^[A-Za-z0-9_](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$/,
      patternText: "a domain name",
    }, f.key("domain"));
    if (d === undefined) return undefined;
    c.domain = d.toLowerCase();
  }
  if (f.has("policy")) {
    const p = words(f.get("policy"), `"dmarc.policy"`, DMARC_POLICIES, f.key("policy"));
    if (p === undefined) return undefined;
    c.policies = p;
  }
  return results === undefined ? undefined : c;
}

/** `virus: true`, `virus: false` or `virus: { contains: [Eicar, Phishing] }`. */
function parseVirus(
  node: YNode,
  reader: YamlReader,
  keyNode: Scalar | undefined,
): Condition | undefined {
  const at = reader.pos(keyNode);
  if (!isMap(node)) {
    const value = reader.bool(node, `"virus"`, keyNode);
    return value === undefined ? undefined : { kind: "virus", value, at };
  }
  const before = reader.issues.length;
  const f = reader.fields(node, `"virus"`, ["contains"], `in "virus"`, keyNode);
  if (!f) return undefined;
  if (!f.has("contains")) {
    if (reader.issues.length === before) {
      reader.report(f.node, `"virus" needs true, false or "contains" (signature names)`, keyNode);
    }
    return undefined;
  }
  const values = parseValues(f.get("contains"), `"virus.contains"`, reader, f.key("contains"));
  return values === undefined ? undefined : { kind: "virus", value: true, signatures: values, at };
}

/** `size: { over: 5M }`, `rcpt_count: { at_least: 20, at_most: 100 }`: all must hold. */
function parseNumberTests(
  field: NumberField,
  node: YNode,
  reader: YamlReader,
  keyNode: Scalar | undefined,
): Condition[] | undefined {
  const before = reader.issues.length;
  const f = reader.fields(node, `"${field}"`, NUMBER_OPERATORS, `in "${field}"`, keyNode);
  if (!f) return undefined;
  if (f.names().length === 0) {
    if (reader.issues.length === before) {
      reader.report(f.node, `"${field}" needs one of ${NUMBER_OPERATORS.join(", ")}`, keyNode);
    }
    return undefined;
  }
  const out: Condition[] = [];
  for (const op of f.names() as NumberOperator[]) {
    const label = `"${field}.${op}"`;
    const value = field === "size"
      ? reader.size(f.get(op), label, 0, 1 << 30, f.key(op))
      : reader.int(f.get(op), label, 0, 1_000_000, f.key(op));
    if (value !== undefined) {
      out.push({ kind: "number", field, operator: op, value, at: reader.pos(f.key(op)) });
    }
  }
  return reader.issues.length === before ? out : undefined;
}

/** `client_ip: { in: [203.0.113.0/24], in_list: partners }` (either or both; any may hold). */
function parseIpTest(
  field: "client_ip" | "server",
  node: YNode,
  reader: YamlReader,
  ctx: RuleContext,
  keyNode: Scalar | undefined,
): Condition | undefined {
  const before = reader.issues.length;
  const f = reader.fields(node, `"${field}"`, IP_KEYS, `in "${field}"`, keyNode);
  if (!f) return undefined;
  if (!f.has("in") && !f.has("in_list")) {
    if (reader.issues.length === before) {
      reader.report(f.node, `"${field}" needs "in" (networks) or "in_list" (a list name)`, keyNode);
    }
    return undefined;
  }
  const networks: string[] = [];
  if (f.has("in")) {
    const items = reader.list(f.get("in"), `"${field}.in"`, f.key("in"), true);
    if (items && items.length === 0) {
      reader.report(f.get("in"), `"${field}.in" must list at least one network`, f.key("in"));
    }
    for (const item of items ?? []) {
      const t = reader.string(item, `"${field}.in" entry`, { max: 64 }, f.get("in"));
      if (t === undefined) continue;
      try {
        networks.push(parseCidr(t).text);
      } catch (e) {
        reader.report(item, (e as Error).message, f.get("in"));
      }
    }
  }
  let list: string | undefined;
  if (f.has("in_list")) list = parseListRef(f.get("in_list"), reader, ctx, f.key("in_list"))?.[0];
  if (reader.issues.length !== before) return undefined;
  const c: Condition = { kind: "ip", field, networks, at: reader.pos(keyNode) };
  if (list !== undefined) c.list = list;
  return c;
}

/** `bulk: { servers: 3, recipients: 20, within: 10m }`. */
function parseBulk(
  node: YNode,
  reader: YamlReader,
  keyNode: Scalar | undefined,
): Condition | undefined {
  const before = reader.issues.length;
  const f = reader.fields(node, `"bulk"`, BULK_KEYS, `in "bulk"`, keyNode);
  if (!f) return undefined;
  const c: Condition = { kind: "bulk", withinSeconds: 0, at: reader.pos(keyNode) };
  if (f.has("servers")) {
    c.servers = reader.int(f.get("servers"), `"bulk.servers"`, 1, 100_000, f.key("servers"));
  }
  if (f.has("recipients")) {
    c.recipients = reader.int(
      f.get("recipients"),
      `"bulk.recipients"`,
      1,
      1_000_000,
      f.key("recipients"),
    );
  }
  if (!f.has("servers") && !f.has("recipients") && reader.issues.length === before) {
    reader.report(f.node, `"bulk" needs "servers" and/or "recipients"`, keyNode);
  }
  if (!f.has("within")) {
    if (reader.issues.length === before) {
      reader.report(f.node, `"bulk" needs "within": the window, e.g. 10m`, keyNode);
    }
  } else {
    c.withinSeconds = reader.duration(
      f.get("within"),
      `"bulk.within"`,
      1,
      MAX_BULK_WINDOW,
      f.key("within"),
    ) ?? 0;
  }
  return reader.issues.length === before ? c : undefined;
}

/** Option blocks of a rule and the action each belongs to. */
const OPTION_OF: Record<string, readonly string[]> = {
  reply: ["reject", "tempfail"],
  tag: ["tag"],
  redirect: ["redirect"],
  bcc: ["bcc"],
  blacklist: ["blacklist"],
};

/**
 * `action: discard` or `action: [quarantine, alert]`; at most one terminal action, no action
 * twice; each option block (`reply`, `tag`, `redirect`, `bcc`, `blacklist`) only with its action,
 * and `tag`, `redirect`, `bcc` require theirs.
 */
function parseActions(
  node: YNode,
  f: Fields,
  reader: YamlReader,
): Action[] | undefined {
  const keyNode = f.key("action");
  const items = reader.list(node, `"action"`, keyNode, true);
  if (!items) return undefined;
  if (items.length === 0) {
    reader.report(node, `"action" must name at least one action`, keyNode);
    return undefined;
  }
  const before = reader.issues.length;
  const names: string[] = [];
  for (const item of items) {
    const a = reader.oneOf(item, `"action"`, ACTION_NAMES, keyNode);
    if (a === undefined) continue;
    if (names.includes(a)) reader.report(item, `"action" names "${a}" twice`);
    else names.push(a);
  }
  if (reader.issues.length !== before) return undefined;
  const terminal = names.filter((n) => (TERMINAL_ACTIONS as readonly string[]).includes(n));
  if (names.includes("greylist") && names.length > 1) {
    reader.report(
      node,
      `"action" greylist stands alone (it defers, or lets the next rules decide); got ${
        names.join(", ")
      }`,
    );
    return undefined;
  }
  if (terminal.length > 1) {
    reader.report(
      node,
      `"action" may name only one of ${TERMINAL_ACTIONS.join(", ")}, got ${terminal.join(", ")}`,
    );
    return undefined;
  }
  for (const [option, owners] of Object.entries(OPTION_OF)) {
    if (f.has(option) && !owners.some((o) => names.includes(o))) {
      reader.report(f.key(option), `"${option}" applies only to action ${owners.join(" or ")}`);
    }
  }
  for (const needs of ["tag", "redirect", "bcc"]) {
    if (names.includes(needs) && !f.has(needs)) {
      reader.report(
        node,
        `action "${needs}" needs a "${needs}" block${NEEDS_EXAMPLE[needs]}`,
        keyNode,
      );
    }
  }
  if (reader.issues.length !== before) return undefined;

  const out: Action[] = [];
  for (const n of names) {
    switch (n) {
      case "forward":
      case "discard":
      case "quarantine":
      case "alert":
      case "greylist":
        out.push({ type: n });
        break;
      case "reject":
      case "tempfail": {
        const dflt = n === "reject" ? DEFAULT_REJECT_REPLY : DEFAULT_TEMPFAIL_REPLY;
        const reply = f.has("reply") ? parseReply(f.get("reply"), reader, f.key("reply")!, n) : {
          ...dflt,
        };
        if (reply) out.push({ type: n, reply });
        break;
      }
      case "tag": {
        const tag = parseTag(f.get("tag"), reader, f.key("tag")!);
        if (tag) out.push({ type: "tag", tag });
        break;
      }
      case "redirect":
      case "bcc": {
        const d = parseDelivery(n, f.get(n), reader, f.key(n)!);
        if (d) out.push({ type: n, ...d });
        break;
      }
      case "blacklist": {
        const b = parseBlacklistBlock(
          f.has("blacklist") ? f.get("blacklist") : undefined,
          reader,
          f.key("blacklist") ?? keyNode,
        );
        if (b) out.push({ type: "blacklist", ...b });
        break;
      }
    }
  }
  return reader.issues.length === before ? out : undefined;
}

const NEEDS_EXAMPLE: Record<string, string> = {
  tag: `, e.g. tag: { header: "X-Spam-Flag: YES", subject_prefix: "[SPAM] " }`,
  redirect: `, e.g. redirect: { to: [quarantine@corp.example] }`,
  bcc: `, e.g. bcc: { to: [archive@corp.example], server: "198.51.100.27:25" }`,
};

/**
 * `reply: { code: 550, enhanced: "5.7.1", text: "..." }`. The code is 4xx or 5xx for reject
 * and 4xx for tempfail (RFC 5321 §4.2.1); the enhanced code's class must equal the code's first
 * digit (RFC 3463 §2, RFC 2034 §3); the text is single-line printable ASCII, because it goes
 * verbatim into an SMTP reply.
 */
function parseReply(
  node: YNode,
  reader: YamlReader,
  keyNode: Scalar,
  action: "reject" | "tempfail",
): Reply | undefined {
  const f = reader.fields(node, `"reply"`, REPLY_KEYS, `in "reply"`, keyNode);
  if (!f) return undefined;
  const before = reader.issues.length;
  const dflt = action === "reject" ? DEFAULT_REJECT_REPLY : DEFAULT_TEMPFAIL_REPLY;
  const code = f.has("code")
    ? reader.int(f.get("code"), `"reply.code"`, 400, action === "reject" ? 599 : 499, f.key("code"))
    : dflt.code;
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
    : dflt.text;
  if (reader.issues.length !== before || code === undefined || !enhanced || text === undefined) {
    return undefined;
  }
  return { code, enhanced, text };
}

/**
 * `tag: { header: "X-Spam-Flag: YES", subject_prefix: "[SPAM] " }`; `header` may be a list.
 * Names are RFC 5322 §2.2 field names; values and the prefix may not hold control characters
 * (no CR/LF: a tag must never be able to start a new header field).
 */
function parseTag(node: YNode, reader: YamlReader, keyNode: Scalar): Tag | undefined {
  const before = reader.issues.length;
  const f = reader.fields(node, `"tag"`, TAG_KEYS, `in "tag"`, keyNode);
  if (!f) return undefined;
  const tag: Tag = { headers: [] };
  if (f.has("header")) {
    const items = reader.list(f.get("header"), `"tag.header"`, f.key("header"), true) ?? [];
    for (const item of items) {
      const t = reader.string(item, `"tag.header"`, { max: MAX_TAG_VALUE + 100 }, f.get("header"));
      if (t === undefined) continue;
      const colon = t.indexOf(":");
      const name = colon > 0 ? t.slice(0, colon).trim() : "";
      const value = colon > 0 ? t.slice(colon + 1).trim() : "";
      if (!HEADER_NAME_RE.test(name) || name.length > 76) {
        reader.report(
          item,
          `"tag.header" must be "Name: value" with a header field name, got "${cut(t)}"`,
        );
      } else if (CONTROL_RE.test(value) || value.length > MAX_TAG_VALUE) {
        reader.report(
          item,
          `"tag.header" value must be one line of at most ${MAX_TAG_VALUE} characters without control characters`,
        );
      } else {
        tag.headers.push({ name, value });
      }
    }
  }
  if (f.has("subject_prefix")) {
    const p = reader.string(f.get("subject_prefix"), `"tag.subject_prefix"`, {
      max: MAX_SUBJECT_PREFIX,
    }, f.key("subject_prefix"));
    if (p !== undefined && CONTROL_RE.test(p)) {
      reader.report(
        f.get("subject_prefix"),
        `"tag.subject_prefix" must not hold control characters`,
      );
    } else if (p !== undefined) {
      tag.subjectPrefix = p;
    }
  }
  if (!f.has("header") && !f.has("subject_prefix") && reader.issues.length === before) {
    reader.report(f.node, `"tag" needs "header" and/or "subject_prefix"`, keyNode);
  }
  return reader.issues.length === before ? tag : undefined;
}

/** `redirect:`/`bcc:` `{ to: [addresses], server: "host:port" }` (server optional). */
function parseDelivery(
  kind: "redirect" | "bcc",
  node: YNode,
  reader: YamlReader,
  keyNode: Scalar,
): { to: string[]; server?: ServerAddress } | undefined {
  const before = reader.issues.length;
  const f = reader.fields(node, `"${kind}"`, DELIVERY_KEYS, `in "${kind}"`, keyNode);
  if (!f) return undefined;
  const to = f.has("to")
    ? parseAddresses(f.get("to"), `"${kind}.to"`, reader, f.key("to"))
    : (reader.report(f.node, `"${kind}" needs "to": the recipient addresses`, keyNode), undefined);
  let server: ServerAddress | undefined;
  if (f.has("server")) {
    const t = reader.string(f.get("server"), `"${kind}.server"`, { max: 300 }, f.key("server"));
    if (t !== undefined) {
      const hp = parseHostPort(t);
      if (typeof hp === "string") reader.report(f.get("server"), `"${kind}.server": ${hp}`);
      else server = hp;
    }
  }
  if (reader.issues.length !== before || !to) return undefined;
  return server ? { to, server } : { to };
}

/** A non-empty list of mail addresses (lower-cased domain, kept local part). */
export function parseAddresses(
  node: YNode,
  label: string,
  reader: YamlReader,
  keyNode: YNode,
): string[] | undefined {
  const items = reader.list(node, label, keyNode, true);
  if (!items) return undefined;
  if (items.length === 0) {
    reader.report(node, `${label} must list at least one address`, keyNode);
    return undefined;
  }
  if (items.length > MAX_VALUES) {
    reader.report(node, `${label} has ${items.length} addresses; at most ${MAX_VALUES}`, keyNode);
    return undefined;
  }
  const out: string[] = [];
  let ok = true;
  for (const item of items) {
    const a = reader.string(item, `${label} entry`, {
      max: 254,
      pattern: ADDRESS_RE,
      patternText: "a mail address like user@example.com",
    }, node);
    if (a === undefined) ok = false;
    else out.push(a);
  }
  return ok ? out : undefined;
}

/** `blacklist: { key: client_ip | sender | sender_domain, for: 24h }` (key default client_ip). */
export function parseBlacklistBlock(
  node: YNode,
  reader: YamlReader,
  keyNode: YNode,
  keys: readonly string[] = BLACKLIST_KEYS,
): { key: BlacklistKey; seconds: number } | undefined {
  const before = reader.issues.length;
  if (node === undefined || (isScalar(node) && node.value === null)) {
    reader.report(
      keyNode,
      `action "blacklist" needs a "blacklist" block, e.g. blacklist: { key: client_ip, for: 24h }`,
    );
    return undefined;
  }
  const f = reader.fields(node, `"blacklist"`, keys, `in "blacklist"`, keyNode);
  if (!f) return undefined;
  let key: BlacklistKey = "client_ip";
  if (f.has("key")) {
    key = reader.oneOf(f.get("key"), `"blacklist.key"`, BLACKLIST_KEY_NAMES, f.key("key")) ?? key;
  }
  let seconds = 0;
  if (!f.has("for")) reader.report(f.node, `"blacklist" needs "for": how long, e.g. 24h`, keyNode);
  else {
    seconds =
      reader.duration(f.get("for"), `"blacklist.for"`, 1, MAX_BLACKLIST_SECONDS, f.key("for")) ??
        0;
  }
  return reader.issues.length === before ? { key, seconds } : undefined;
}
