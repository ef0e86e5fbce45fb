/**
 * The policy as data: rules, their condition trees and their actions, exactly as validated from
 * the rule file (see `parse_rules.ts`). `PolicyEngine` compiles these once into evaluators.
 *
 * Shape, chosen so the rule language can grow without a rewrite:
 * - a condition is a tree: leaves test one thing about the message or its transaction, inner
 *   nodes combine (`all`, `any`, `not`);
 * - text leaves test one *field* with one *operator* (`subject: { contains: [...] }`); a field is
 *   a name in `FIELD_NAMES`, read through one extractor table (`fields.ts`), so a new text field
 *   is one table entry plus its name here;
 * - other leaves: numbers (`size`, `rcpt_count`), addresses (`client_ip`, `server`), flags
 *   (`tls`, `spamtrap`), memory (`bulk`, `listed`), a virus scanner's finding (`virus`), a
 *   spam scorer's verdict (`rspamd`), DNS lists (`dnsbl`);
 * - a rule has a list of actions, of which at most one is *terminal* (decides the verdict); the
 *   others (`tag`, `alert`, `bcc`, `blacklist`) accumulate.
 *
 * Everything here is plain data (no functions, no RegExp objects), so rules can be printed,
 * compared and reloaded.
 */
import type { BlacklistKey, Reply, Tag } from "./verdict.ts";

/** Where something was written in the rule file (1-based). */
export interface SourcePos {
  /** 1-based line. */
  line: number;
  /** 1-based column. */
  column: number;
}

/**
 * Text fields a condition can test (how each is read: `fields.ts`):
 * - `subject`: the decoded Subject; `header`: every field of a given name (`header: { name: X }`);
 * - `body`: the text of the text/plain parts and every HTML part as text; `html`: the HTML
 *   parts only, as text;
 * - `from`, `to`, `cc`: each mailbox of that header, as its address and its display name;
 *   `from_name`/`to_name`/`cc_name`: display names only; `from_address`/...: addresses only;
 * - `mail_from`, `rcpt_to`: the envelope sender and recipients (SMTP MAIL/RCPT);
 * - `sender_domain`, `recipient_domain`: the domain part of those;
 * - `helo`: the HELO/EHLO name the client gave;
 * - `attachment_name`, `attachment_type`: file name and MIME type of each attachment.
 */
export const FIELD_NAMES = [
  "subject",
  "header",
  "body",
  "html",
  "from",
  "to",
  "cc",
  "from_name",
  "to_name",
  "cc_name",
  "from_address",
  "to_address",
  "cc_address",
  "mail_from",
  "rcpt_to",
  "sender_domain",
  "recipient_domain",
  "helo",
  "attachment_name",
  "attachment_type",
] as const;
/** A message field a text condition can test. */
export type FieldName = typeof FIELD_NAMES[number];

/**
 * Operators of a text test, all on normalised text (NFKC, case fold, invisible characters
 * removed, white space runs made one space — `fold_text.ts`):
 * - `contains`: the field contains any of the values;
 * - `equals`: the whole field equals any of the values, surrounding white space ignored;
 * - `matches`: a regular expression (any of the patterns) finds a match — within the budget of
 *   `regex_guard.ts` (patterns that can backtrack catastrophically are refused at load, and the
 *   text scanned is cut to what the pattern can afford);
 * - `in_list`: against a named list (`lists:`): on address, domain and HELO fields the field
 *   equals an entry (an "@domain" entry matches every address of the domain); on free-text
 *   fields (subject, header, body, html, names, attachments) the field contains an entry.
 */
export const OPERATOR_NAMES = ["contains", "equals", "matches", "in_list"] as const;
/** An operator of a text test. */
export type OperatorName = typeof OPERATOR_NAMES[number];

/** Names of the combinators of the condition tree. */
export const COMBINATOR_NAMES = ["all", "any", "not"] as const;

/** Leaf keys that are not text fields. */
export const SPECIAL_CONDITION_NAMES = [
  "size",
  "rcpt_count",
  "client_ip",
  "server",
  "tls",
  "spamtrap",
  "bulk",
  "listed",
  "virus",
  "authenticated",
  "rspamd",
  "dnsbl",
  "spf",
  "dkim",
  "dmarc",
  "arc",
] as const;

/** A text leaf: one field tested with one operator against values (any may match). */
export interface FieldCondition {
  /** Discriminant: a text leaf. */
  kind: "field";
  /** The field tested. */
  field: FieldName;
  /** How it is tested against `values`. */
  operator: OperatorName;
  /** `field: header` only: the header field name (any case). */
  header?: string;
  /**
   * The values as written in the rule file (normalised only when compiled); for `matches` the
   * patterns; for `in_list` the list's name (one value).
   */
  values: string[];
  /** Where the leaf was written. */
  at?: SourcePos;
}

/** Numeric fields: the raw message size in bytes, and the number of envelope recipients. */
export type NumberField = "size" | "rcpt_count";
/** Comparisons of a numeric test: > (`over`), < (`under`), >= (`at_least`), <= (`at_most`). */
export const NUMBER_OPERATORS = ["over", "under", "at_least", "at_most"] as const;
/** A comparison of a numeric test. */
export type NumberOperator = typeof NUMBER_OPERATORS[number];

/** A numeric leaf: `size: { over: 5M }`, `rcpt_count: { at_least: 20 }`. */
export interface NumberCondition {
  /** Discriminant: a numeric leaf. */
  kind: "number";
  /** The number tested: message size in bytes, or envelope recipient count. */
  field: NumberField;
  /** The comparison. */
  operator: NumberOperator;
  /** The bound compared against (bytes for `size`). */
  value: number;
  /** Where the leaf was written. */
  at?: SourcePos;
}

/**
 * An address leaf: the client's IP (`client_ip`) or the protected server the mail was for
 * (`server`) lies in one of the networks, or in a named list's networks.
 */
export interface IpCondition {
  /** Discriminant: an address leaf. */
  kind: "ip";
  /** The client's address, or the protected server's. */
  field: "client_ip" | "server";
  /** Networks in normal form ("192.0.2.0/24", "2001:db8::1/128"). */
  networks: string[];
  /** A named list whose IP/CIDR entries also count. */
  list?: string;
  /** Where the leaf was written. */
  at?: SourcePos;
}

/**
 * A boolean leaf: `tls: true` (the session used STARTTLS), `spamtrap: true` (a recipient is one),
 * `authenticated: true` (the server accepted the client's AUTH in this session).
 */
export interface FlagCondition {
  /** Discriminant: a boolean leaf. */
  kind: "flag";
  /** The flag tested: STARTTLS used, a recipient is a spamtrap, or the client authenticated. */
  field: "tls" | "spamtrap" | "authenticated";
  /** The value the flag must have. */
  value: boolean;
  /** Where the leaf was written. */
  at?: SourcePos;
}

/**
 * The bulk leaf: the message's normalised-body fingerprint reached at least `servers` distinct
 * protected servers OR at least `recipients` distinct recipients within `withinSeconds` (this
 * message included). At least one of the two is set.
 */
export interface BulkCondition {
  /** Discriminant: the bulk leaf. */
  kind: "bulk";
  /** Fires at this many distinct protected servers. */
  servers?: number;
  /** Fires at this many distinct recipients. */
  recipients?: number;
  /** The sliding window, in seconds. */
  withinSeconds: number;
  /** Where the leaf was written. */
  at?: SourcePos;
}

/** The client IP, sender or sender domain is currently on the (static or dynamic) list. */
export interface ListedCondition {
  /** Discriminant: the listed leaf. */
  kind: "listed";
  /** Which list is consulted. */
  list: "blacklist" | "allowlist";
  /** Where the leaf was written. */
  at?: SourcePos;
}

/**
 * The virus leaf (needs a `clamav:` section): `virus: true` holds when clamd found a signature,
 * `virus: false` when clamd said the message is clean, and `virus: { contains: [...] }` when the
 * signature name contains one of the values (any case). A scan that failed makes none of them
 * hold; the engine's `clamav.on_failure` verdict covers that case.
 */
export interface VirusCondition {
  /** Discriminant: the virus leaf. */
  kind: "virus";
  /** True: a signature was found; false: the scan said clean. */
  value: boolean;
  /** With `value` true: only signatures whose name contains one of these (any case). */
  signatures?: string[];
  /** Where the leaf was written. */
  at?: SourcePos;
}

/** The actions Rspamd recommends, in its own spelling (`add_header` etc. are accepted at load). */
export const RSPAMD_ACTIONS = [
  "no action",
  "greylist",
  "add header",
  "rewrite subject",
  "soft reject",
  "reject",
] as const;
/** An action Rspamd recommends. */
export type RspamdAction = typeof RSPAMD_ACTIONS[number];

/**
 * The Rspamd leaf (needs an `rspamd:` section): holds when every test given holds —
 * `score_at_least` (score ≥ n), `score_below` (score < n), `action` (Rspamd recommends one of
 * these), `symbol` (one of these symbols fired; names compared in any case). A message Rspamd
 * could not score makes it hold for nothing; the engine's `rspamd.on_failure` covers that case.
 */
export interface RspamdCondition {
  /** Discriminant: the rspamd leaf. */
  kind: "rspamd";
  /** Holds when the score is at least this. */
  scoreAtLeast?: number;
  /** Holds when the score is below this. */
  scoreBelow?: number;
  /** Holds when Rspamd's action is one of these. */
  actions?: RspamdAction[];
  /** Holds when one of these symbols fired. */
  symbols?: string[];
  /** Where the leaf was written. */
  at?: SourcePos;
}

/**
 * The DNS-list leaf (needs a `dnsbl:` section): every test given must hold. `scoreAtLeast` /
 * `scoreAtMost` on the summed weights of the matching entries; `listedIn`: some entry of one of
 * these zones matched. A look-up that failed counts as not listed; with `dnsbl.on_failure:
 * tempfail` a score test holds only if it would whatever the failed look-ups said.
 */
export interface DnsblCondition {
  /** Discriminant: the DNS-list leaf. */
  kind: "dnsbl";
  /** The score is at least this. */
  scoreAtLeast?: number;
  /** The score is at most this (e.g. -1: an allowlist outweighs the blocklists). */
  scoreAtMost?: number;
  /** Listed in one of these zones (lower case). */
  listedIn?: string[];
  /** Where the leaf was written. */
  at?: SourcePos;
}

/**
 * A sender-authentication leaf (`auth:` section; npm mailauth): `spf: fail`, `dkim: pass`,
 * `dmarc: { result: fail, policy: reject }`, `arc: none`. It holds when the check's result is one
 * of `results` — for `dkim`, when some signature's is (with `domain`: a signature of that d=);
 * `none` when the message is not signed — and, for `dmarc` with `policies`, the From domain's
 * published policy is one of them. A check that could not be done (DNS down, out of time) has
 * the result `temperror`; the engine's `auth.on_failure` covers a rule that tests it otherwise.
 */
export interface AuthCondition {
  /** Discriminant: an authentication leaf. */
  kind: "auth";
  /** Which check. */
  check: "spf" | "dkim" | "dmarc" | "arc";
  /** Results that make it hold (lower case, validated per check). */
  results: string[];
  /** `dkim` only: the signing domain (d=), lower case. */
  domain?: string;
  /** `dmarc` only: the published policies (none, quarantine, reject). */
  policies?: string[];
  /** Where the leaf was written. */
  at?: SourcePos;
}

/** True when every child is true (and for an empty list). */
export interface AllCondition {
  /** Discriminant: every child must hold. */
  kind: "all";
  /** The children. */
  conditions: Condition[];
  /** Where the combinator was written. */
  at?: SourcePos;
}

/** True when at least one child is true. */
export interface AnyCondition {
  /** Discriminant: some child must hold. */
  kind: "any";
  /** The children. */
  conditions: Condition[];
  /** Where the combinator was written. */
  at?: SourcePos;
}

/** True when the child is false. */
export interface NotCondition {
  /** Discriminant: negation. */
  kind: "not";
  /** The negated child. */
  condition: Condition;
  /** Where the combinator was written. */
  at?: SourcePos;
}

/** A node of a rule's condition tree. */
export type Condition =
  | FieldCondition
  | NumberCondition
  | IpCondition
  | FlagCondition
  | BulkCondition
  | ListedCondition
  | VirusCondition
  | RspamdCondition
  | DnsblCondition
  | AuthCondition
  | AllCondition
  | AnyCondition
  | NotCondition;

/** Actions that decide the verdict; a rule has at most one, and the first matching one wins. */
export const TERMINAL_ACTIONS = [
  "forward",
  "discard",
  "reject",
  "tempfail",
  "quarantine",
  "redirect",
] as const;
/** Actions that accumulate over every matching rule up to the deciding one. */
export const NON_TERMINAL_ACTIONS = ["tag", "alert", "bcc", "blacklist"] as const;
/**
 * `greylist` decides only when it defers (451 4.7.1, the triplet is new or retried too soon);
 * when the triplet passed, evaluation goes on with the next rule. It stands alone in a rule.
 */
export const GREYLIST_ACTION = "greylist";
/** Every action name the rule file accepts. */
export const ACTION_NAMES = [
  ...TERMINAL_ACTIONS,
  ...NON_TERMINAL_ACTIONS,
  GREYLIST_ACTION,
] as const;
/** A terminal action's name. */
export type TerminalActionName = typeof TERMINAL_ACTIONS[number];

/** An SMTP server given as `host:port` in the rule file. */
export interface ServerAddress {
  /** IP address (IPv6 without brackets) or host name (not resolved at load). */
  host: string;
  /** TCP port, 1 to 65535 (default 25). */
  port: number;
}

/** What a matching rule does. */
export type Action =
  | { type: "forward" }
  | { type: "discard" }
  | { type: "reject"; reply: Reply }
  | { type: "tempfail"; reply: Reply }
  | { type: "quarantine" }
  | { type: "redirect"; to: string[]; server?: ServerAddress }
  | { type: "tag"; tag: Tag }
  | { type: "alert" }
  | { type: "bcc"; to: string[]; server?: ServerAddress }
  | { type: "blacklist"; key: BlacklistKey; seconds: number }
  | { type: "greylist" };

/** `enforce` (default): actions take effect. `observe`: evaluated and logged, not enforced. */
export type RuleMode = "enforce" | "observe";

/** The reply of `reject` when the rule gives none (RFC 3463 5.7.1: delivery not authorized). */
export const DEFAULT_REJECT_REPLY: Readonly<Reply> = Object.freeze({
  code: 550,
  enhanced: "5.7.1",
  text: "Message rejected by policy",
});

/** The reply of `tempfail` when the rule gives none (RFC 3463 4.7.1, RFC 5321 §4.2.5: 451). */
export const DEFAULT_TEMPFAIL_REPLY: Readonly<Reply> = Object.freeze({
  code: 451,
  enhanced: "4.7.1",
  text: "Try again later",
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

/** The verdict actions a threshold may count. */
export const COUNTABLE_VERDICTS = [
  "forward",
  "discard",
  "reject",
  "tempfail",
  "quarantine",
] as const;

/**
 * Memory across messages: after each verdict is recorded, a threshold counts the verdicts named
 * in `count` per `key` over a sliding window; at `atLeast` within `withinSeconds` it fires its
 * actions (blacklist the key for `blacklistSeconds`, alert) and its count for that key restarts.
 */
export interface Threshold {
  /** Unique name, used in logs and alerts. */
  name: string;
  /** The verdict actions counted. */
  count: (typeof COUNTABLE_VERDICTS)[number][];
  /** What the count is kept per: client IP, sender or sender domain. */
  key: BlacklistKey;
  /** Count at which the threshold fires. */
  atLeast: number;
  /** The sliding window, in seconds. */
  withinSeconds: number;
  /** What it does when it fires. */
  actions: ("blacklist" | "alert")[];
  /** How long `blacklist` lasts (set when `actions` has blacklist). */
  blacklistSeconds?: number;
  /** Where the threshold was written. */
  at?: SourcePos;
}

/** Whether a rule's action is `greylist`. */
export function greylists(rule: Rule): boolean {
  return rule.actions.some((a) => a.type === "greylist");
}

/**
 * Whether a condition can be decided from the envelope alone — the client, the server, HELO,
 * TLS, AUTH, the sender and the recipient — i.e. at RCPT time, before any content. `rcpt_count`
 * and `spamtrap` look at the final recipient list and count as content here; `listed` reads
 * the client and sender only.
 */
export function envelopeOnly(c: Condition): boolean {
  switch (c.kind) {
    case "field":
      return ENVELOPE_FIELDS.has(c.field);
    case "ip":
    case "listed":
      return true;
    case "flag":
      return c.field !== "spamtrap";
    case "all":
    case "any":
      return c.conditions.every(envelopeOnly);
    case "not":
      return envelopeOnly(c.condition);
    default: // number (size, rcpt_count), bulk, virus
      return false;
  }
}

const ENVELOPE_FIELDS: ReadonlySet<FieldName> = new Set([
  "mail_from",
  "rcpt_to",
  "sender_domain",
  "recipient_domain",
  "helo",
]);

/** Every leaf of kind `kind` in the rules' conditions, through `all`, `any` and `not`. */
export function leavesOf<K extends Condition["kind"]>(
  rules: readonly Rule[],
  kind: K,
): Extract<Condition, { kind: K }>[] {
  const walk = (c: Condition): Extract<Condition, { kind: K }>[] => {
    if (c.kind === kind) return [c as Extract<Condition, { kind: K }>];
    if (c.kind === "all" || c.kind === "any") return c.conditions.flatMap(walk);
    if (c.kind === "not") return walk(c.condition);
    return [];
  };
  return rules.flatMap((r) => walk(r.when));
}

/** Every `virus` leaf of the rules' conditions (the engine scans only when there is one). */
export function virusLeaves(rules: readonly Rule[]): VirusCondition[] {
  return leavesOf(rules, "virus");
}

/** Every `rspamd` leaf of the rules' conditions (the engine asks Rspamd only when there is one). */
export function rspamdLeaves(rules: readonly Rule[]): RspamdCondition[] {
  return leavesOf(rules, "rspamd");
}

/** Every `dnsbl` leaf of the rules' conditions (the engine looks up only when there is one). */
export function dnsblLeaves(rules: readonly Rule[]): DnsblCondition[] {
  return leavesOf(rules, "dnsbl");
}

/** Every `spf`/`dkim`/`dmarc`/`arc` leaf (the engine verifies senders only when there is one). */
export function authLeaves(rules: readonly Rule[]): AuthCondition[] {
  return leavesOf(rules, "auth");
}
