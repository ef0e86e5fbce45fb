/**
 * Condition trees (rule.ts) → evaluators, compiled once when the policy is built, so that
 * judging a message does no parsing, no allocation of needles, no normalisation of the rule's
 * values and no regular-expression compilation.
 *
 * Text tests run on normalised text (`foldText`: NFKC + case fold + default-ignorable characters
 * removed + white space runs made one space) on both sides. The normalised form of each field is
 * computed at most once per message (`EvalContext`); texts are bounded by the decoder
 * (`content.max_text_chars`, white space runs counted once), so the cost of a `contains` test is
 * bounded by (that bound × number of values) whatever the message; `matches`
 * patterns were admitted by `regex_guard.ts` and scan at most their own budget of characters.
 *
 * Every node can also *trace* itself (`CompiledCondition.trace`): the same test, but recording for
 * each leaf whether it held and why (which value matched which text, or what the field was) —
 * what `ssg explain` prints. Tracing evaluates every child (no short-circuit), so it is for
 * explanation only; `test` short-circuits.
 */
import { cidrContains, parseCidr } from "../config/cidr.ts";
import type { Cidr } from "../config/config.ts";
import { canonicalIp } from "./canonical_ip.ts";
import { FIELD_EXTRACTORS, type FieldInput, headerTexts } from "./fields.ts";
import { foldText } from "./fold_text.ts";
import {
  type CompiledList,
  compileList,
  listHasAddress,
  listHasDomain,
  listHasIp,
  listWordIn,
} from "./named_list.ts";
import { guardRegex, runGuarded } from "./regex_guard.ts";
import type { Condition, FieldCondition, FieldName, RspamdCondition } from "./rule.ts";
import type { ScanResult } from "../engines/clamd_client.ts";
import { describeResult, type RspamdResult } from "../engines/rspamd_client.ts";
import { describeLookup, type DnsblResult } from "../engines/dns/dnsbl_checker.ts";
import type { AuthResults } from "../engines/auth/mail_authenticator.ts";
import { describeAuthLeaf, testAuthLeaf } from "./auth_condition.ts";

/**
 * Most characters of one field text that a test scans: the largest `content.max_text_chars`
 * allowed, so that it never cuts a text the decoder read whole (a longer text already made the
 * message undecodable, `message.ts`); it only bounds texts from elsewhere.
 */
export const MAX_SCAN_CHARS = 64 * 1024 * 1024;

/** One leaf test that held: what was tested, how, against which value, and the text it held on. */
export interface Match {
  /** The field or leaf ("subject", "header x-mailer", "client_ip", "bulk"). */
  field: string;
  /** The operator ("contains", "in", "over", ...). */
  operator: string;
  /** The value as written in the rule file (or the list entry that matched). */
  value: string;
  /** The text that matched (cut to 80 characters), when there is one. */
  text?: string;
}

/** Memory the engine gives the evaluators (absent: `bulk` and `listed` never hold). */
export interface EvalHooks {
  /** Distinct servers and recipients this message's fingerprint reached within the window. */
  bulk?: (withinSeconds: number) => { servers: number; recipients: number };
  /** What of client/sender is on the list now (a description), or undefined. */
  listed?: (list: "blacklist" | "allowlist") => string | undefined;
  /** Spamtrap addresses (lower case). */
  spamtraps?: ReadonlySet<string>;
  /** What the virus scanner said about this message (absent: not scanned; `virus` never holds). */
  virus?: ScanResult;
  /** What Rspamd said about this message (absent: not scored; `rspamd` never holds). */
  rspamd?: RspamdResult;
  /**
   * What the DNS lists said about this message's client, sender and HELO (absent: not looked
   * up; `dnsbl` never holds), and whether failed look-ups must leave score tests undecided.
   */
  dnsbl?: { result: DnsblResult; strict: boolean };
  /** What SPF/DKIM/DMARC/ARC verification found (absent: not verified; no auth leaf holds). */
  auth?: AuthResults;
}

/** The per-message state evaluators share: the input and each field's normalised texts. */
export class EvalContext {
  /** The message facts and envelope being judged. */
  readonly input: FieldInput;
  /** The engine's memory (bulk counts, lists, spamtraps). */
  readonly hooks: EvalHooks;
  readonly #folded = new Map<string, string[]>();
  /** Creates the context for one message; without `hooks`, `bulk` and `listed` never hold. */
  constructor(input: FieldInput, hooks: EvalHooks = {}) {
    this.input = input;
    this.hooks = hooks;
  }
  /** The field's texts (a header's values when `header` is given), normalised and capped; once per message. */
  folded(field: FieldName, header?: string): string[] {
    const key = header === undefined ? field : `header:${header}`;
    let v = this.#folded.get(key);
    if (!v) {
      const raw = header === undefined
        ? FIELD_EXTRACTORS[field](this.input)
        : headerTexts(this.input.facts, header);
      v = raw.map((t) => foldText(t.length > MAX_SCAN_CHARS ? t.slice(0, MAX_SCAN_CHARS) : t));
      this.#folded.set(key, v);
    }
    return v;
  }
}

/**
 * Evaluates a condition: `null` when it does not hold, else the leaf matches that made it hold
 * (possibly none, e.g. for a `not`).
 */
export type Evaluator = (ctx: EvalContext) => Match[] | null;

/** What a node did, for `ssg explain`. */
export interface Trace {
  /** The node as text (`subject contains "lottery"`, `any`, `not`). */
  test: string;
  /** Whether the node held. */
  holds: boolean;
  /** Why: what matched, or what the field was. */
  detail?: string;
  /** The child nodes' traces (combinators only). */
  children?: Trace[];
}

/** A compiled condition: a fast test and a tracing one. */
export interface CompiledCondition {
  /** The fast test, used for every message. */
  test: Evaluator;
  /** The same test, recording what each node did (for `ssg explain`). */
  trace(ctx: EvalContext): Trace;
}

/** What conditions may refer to. */
export interface CompileEnv {
  /** Named lists, compiled. */
  lists: ReadonlyMap<string, CompiledList>;
  /** Told about a list a condition names but `lists` lacks (it is then empty). */
  onMissingList?: (name: string) => void;
}

function missingList(name: string, env: CompileEnv): CompiledList {
  env.onMissingList?.(name);
  return compileList(name, []);
}

const EMPTY_ENV: CompileEnv = { lists: new Map() };

/** Compiles a condition tree into one evaluator. */
export function compileCondition(c: Condition, env: CompileEnv = EMPTY_ENV): Evaluator {
  return compileNode(c, env).test;
}

/** Compiles a condition tree into a test and a tracer. */
export function compileNode(c: Condition, env: CompileEnv = EMPTY_ENV): CompiledCondition {
  switch (c.kind) {
    case "all": {
      const parts = c.conditions.map((x) => compileNode(x, env));
      return {
        test: (ctx) => {
          const out: Match[] = [];
          for (const p of parts) {
            const m = p.test(ctx);
            if (!m) return null;
            out.push(...m);
          }
          return out;
        },
        trace: (ctx) => {
          const children = parts.map((p) => p.trace(ctx));
          return { test: "all of", holds: children.every((t) => t.holds), children };
        },
      };
    }
    case "any": {
      const parts = c.conditions.map((x) => compileNode(x, env));
      return {
        test: (ctx) => {
          for (const p of parts) {
            const m = p.test(ctx);
            if (m) return m;
          }
          return null;
        },
        trace: (ctx) => {
          const children = parts.map((p) => p.trace(ctx));
          return { test: "any of", holds: children.some((t) => t.holds), children };
        },
      };
    }
    case "not": {
      const inner = compileNode(c.condition, env);
      return {
        test: (ctx) => (inner.test(ctx) ? null : []),
        trace: (ctx) => {
          const t = inner.trace(ctx);
          return { test: "not", holds: !t.holds, children: [t] };
        },
      };
    }
    case "field":
      return leaf(compileFieldTest(c, env));
    case "number": {
      const name = c.operator.replace("_", " ");
      const read = c.field === "size"
        ? (ctx: EvalContext) => ctx.input.facts.size
        : (ctx: EvalContext) => ctx.input.envelope.rcptTo.length;
      const cmp = c.operator === "over"
        ? (n: number) => n > c.value
        : c.operator === "under"
        ? (n: number) => n < c.value
        : c.operator === "at_least"
        ? (n: number) => n >= c.value
        : (n: number) => n <= c.value;
      return leaf({
        describe: `${c.field} ${name} ${c.value}`,
        run: (ctx) => {
          const n = read(ctx);
          const m = cmp(n)
            ? { field: c.field, operator: c.operator, value: String(c.value) }
            : null;
          return { match: m, detail: `${c.field} is ${n}` };
        },
      });
    }
    case "ip": {
      const nets: Cidr[] = c.networks.map((n) => parseCidr(n));
      const list = c.list === undefined
        ? undefined
        : env.lists.get(c.list) ?? missingList(c.list, env);
      const what = [...c.networks, ...(c.list ? [`list ${c.list}`] : [])].join(", ");
      return leaf({
        describe: `${c.field} in ${what}`,
        run: (ctx) => {
          const ip = canonicalIp(
            c.field === "client_ip" ? ctx.input.envelope.client.ip : ctx.input.envelope.server.ip,
          );
          const net = nets.find((n) => cidrContains(n, ip));
          let m: Match | null = null;
          if (net) m = { field: c.field, operator: "in", value: net.text, text: ip };
          else if (list && listHasIp(list, ip)) {
            m = { field: c.field, operator: "in_list", value: list.name, text: ip };
          }
          return { match: m, detail: `${c.field} is ${ip}` };
        },
      });
    }
    case "flag":
      return leaf({
        describe: `${c.field}: ${c.value}`,
        run: (ctx) => {
          let actual: boolean;
          let detail: string;
          if (c.field === "tls") {
            actual = ctx.input.envelope.tls;
            detail = actual ? "the session used TLS" : "the session did not use TLS";
          } else if (c.field === "authenticated") {
            actual = ctx.input.envelope.authenticated === true;
            detail = actual
              ? "the server accepted the client's AUTH"
              : "the client did not authenticate";
          } else {
            const traps = ctx.hooks.spamtraps;
            const hit = traps
              ? ctx.input.envelope.rcptTo.find((r) => traps.has(r.toLowerCase()))
              : undefined;
            actual = hit !== undefined;
            detail = hit ? `recipient ${hit} is a spamtrap` : "no recipient is a spamtrap";
          }
          const m = actual === c.value
            ? { field: c.field, operator: "is", value: String(c.value) }
            : null;
          return { match: m, detail };
        },
      });
    case "bulk": {
      const parts: string[] = [];
      if (c.servers !== undefined) parts.push(`servers ≥ ${c.servers}`);
      if (c.recipients !== undefined) parts.push(`recipients ≥ ${c.recipients}`);
      return leaf({
        describe: `bulk ${parts.join(" or ")} within ${c.withinSeconds}s`,
        run: (ctx) => {
          const seen = ctx.hooks.bulk?.(c.withinSeconds);
          if (!seen) return { match: null, detail: "no state store: bulk is never true" };
          const hit = (c.servers !== undefined && seen.servers >= c.servers) ||
            (c.recipients !== undefined && seen.recipients >= c.recipients);
          const detail =
            `this content reached ${seen.servers} servers and ${seen.recipients} recipients within ${c.withinSeconds}s`;
          return {
            match: hit ? { field: "bulk", operator: "reached", value: parts.join(" or ") } : null,
            detail,
          };
        },
      });
    }
    case "virus": {
      const needles = (c.signatures ?? []).map((v) => v.toLowerCase());
      return leaf({
        describe: c.signatures
          ? `virus contains ${c.signatures.map((v) => JSON.stringify(v)).join(", ")}`
          : `virus: ${c.value}`,
        run: (ctx) => {
          const scan = ctx.hooks.virus;
          if (!scan) return { match: null, detail: "not scanned: virus is never true" };
          if (scan.status === "error") {
            return {
              match: null,
              detail: `scan failed (${scan.reason}): virus is neither true nor false`,
            };
          }
          if (scan.status === "clean") {
            return {
              match: c.value ? null : { field: "virus", operator: "is", value: "false" },
              detail: "clamd found no signature",
            };
          }
          const detail = `clamd found ${scan.signature}`;
          if (!c.value) return { match: null, detail };
          const lower = scan.signature.toLowerCase();
          const hit = needles.length === 0
            ? scan.signature
            : c.signatures!.find((_, i) => lower.includes(needles[i]));
          return {
            match: hit === undefined
              ? null
              : { field: "virus", operator: "found", value: scan.signature },
            detail,
          };
        },
      });
    }
    case "rspamd": {
      const wanted = c.symbols?.map((s) => s.toUpperCase());
      return leaf({
        describe: describeRspamdLeaf(c),
        run: (ctx) => {
          const r = ctx.hooks.rspamd;
          if (!r) return { match: null, detail: "not scored: rspamd is never true" };
          if (r.status === "error") {
            return {
              match: null,
              detail: `not scored (${r.reason}): rspamd holds for nothing`,
            };
          }
          const detail = describeResult(r);
          if (c.scoreAtLeast !== undefined && !(r.score >= c.scoreAtLeast)) {
            return { match: null, detail };
          }
          if (c.scoreBelow !== undefined && !(r.score < c.scoreBelow)) {
            return { match: null, detail };
          }
          if (c.actions && !(c.actions as readonly string[]).includes(r.action)) {
            return { match: null, detail };
          }
          let hit: string | undefined;
          if (wanted) {
            hit = r.symbols.find((s) => wanted.includes(s.name.toUpperCase()))?.name;
            if (hit === undefined) return { match: null, detail };
          }
          return {
            match: {
              field: "rspamd",
              operator: "scored",
              value: hit === undefined ? detail : `${hit} fired; ${detail}`,
            },
            detail,
          };
        },
      });
    }
    case "auth":
      return leaf({
        describe: describeAuthLeaf(c),
        run: (ctx) => {
          const r = testAuthLeaf(c, ctx.hooks.auth);
          return {
            match: r.hit === null ? null : { field: c.check, operator: "is", value: r.hit },
            detail: r.detail,
          };
        },
      });
    case "dnsbl": {
      const parts: string[] = [];
      if (c.scoreAtLeast !== undefined) parts.push(`score at least ${c.scoreAtLeast}`);
      if (c.scoreAtMost !== undefined) parts.push(`score at most ${c.scoreAtMost}`);
      if (c.listedIn) parts.push(`listed in ${c.listedIn.join(" or ")}`);
      return leaf({
        describe: `dnsbl ${parts.join(" and ")}`,
        run: (ctx) => {
          const d = ctx.hooks.dnsbl;
          if (!d) return { match: null, detail: "not looked up: dnsbl is never true" };
          const r = d.result;
          // Strict (on_failure tempfail): the score could have been anywhere between these.
          let low = r.score;
          let high = r.score;
          if (d.strict) {
            for (const f of r.failures) {
              const w = f.entryWeight;
              if (w < 0) low += w;
              else high += w;
            }
          }
          const shown = r.hits.map(describeLookup).join("; ");
          const failed = r.failures.length ? `; ${r.failures.map(describeLookup).join("; ")}` : "";
          const detail = `score ${r.score}${shown ? `: ${shown}` : ": listed nowhere"}${failed}`;
          const holds = (c.scoreAtLeast === undefined || low >= c.scoreAtLeast) &&
            (c.scoreAtMost === undefined || high <= c.scoreAtMost) &&
            (c.listedIn === undefined || r.hits.some((h) => c.listedIn!.includes(h.zone)));
          if (!holds) return { match: null, detail };
          const which = c.listedIn ? r.hits.filter((h) => c.listedIn!.includes(h.zone)) : r.hits;
          const value = c.listedIn
            ? which.map(describeLookup).join("; ")
            : `${r.score}${which.length ? ` (${which.map(describeLookup).join("; ")})` : ""}`;
          return {
            match: { field: "dnsbl", operator: c.listedIn ? "listed" : "score", value },
            detail,
          };
        },
      });
    }
    case "listed":
      return leaf({
        describe: `listed: ${c.list}`,
        run: (ctx) => {
          const why = ctx.hooks.listed?.(c.list);
          return {
            match: why ? { field: "listed", operator: "on", value: c.list, text: why } : null,
            detail: why ?? `neither client nor sender is on the ${c.list}`,
          };
        },
      });
  }
}

/** A leaf: its description and a run that gives the match (or null) and what it saw. */
interface LeafTest {
  describe: string;
  run(ctx: EvalContext): { match: Match | null; detail: string };
  /** A faster test without the detail (default: run().match). */
  fast?: (ctx: EvalContext) => Match | null;
}

function leaf(t: LeafTest): CompiledCondition {
  const fast = t.fast ?? ((ctx: EvalContext) => t.run(ctx).match);
  return {
    test: (ctx) => {
      const m = fast(ctx);
      return m ? [m] : null;
    },
    trace: (ctx) => {
      const r = t.run(ctx);
      return {
        test: t.describe,
        holds: r.match !== null,
        detail: r.match ? describeMatch(r.match) : r.detail,
      };
    },
  };
}

/** `"lottery" in "win the lottery now"`. */
function describeMatch(m: Match): string {
  const v = JSON.stringify(m.value);
  return m.text === undefined ? `${m.operator} ${v}` : `${v} ~ ${JSON.stringify(m.text)}`;
}

/** Fields whose `in_list` means "equals an entry (or lies in an @domain entry)". */
const ADDRESS_FIELDS: ReadonlySet<FieldName> = new Set([
  "from",
  "to",
  "cc",
  "from_address",
  "to_address",
  "cc_address",
  "mail_from",
  "rcpt_to",
]);
/** Fields whose `in_list` means "is one of the list's domains". */
const DOMAIN_FIELDS: ReadonlySet<FieldName> = new Set([
  "sender_domain",
  "recipient_domain",
  "helo",
]);

/** A text leaf: the field's texts against the values; the first value that holds is the evidence. */
function compileFieldTest(c: FieldCondition, env: CompileEnv): LeafTest {
  const { field, operator: op, values, header } = c;
  const fieldName = header === undefined ? field : `header ${header}`;
  const texts = (ctx: EvalContext) => ctx.folded(field, header);
  const shown = values.slice(0, 3).map((v) => JSON.stringify(v)).join(", ") +
    (values.length > 3 ? `, … (${values.length})` : "");
  const describe = `${fieldName} ${op} ${op === "in_list" ? values[0] : shown}`;
  const seen = (ctx: EvalContext) => {
    const t = texts(ctx);
    if (t.length === 0) return `${fieldName} is absent`;
    return `${fieldName} is ${t.slice(0, 3).map((x) => JSON.stringify(excerpt(x))).join(", ")}${
      t.length > 3 ? `, … (${t.length})` : ""
    }`;
  };
  let test: (ctx: EvalContext) => Match | null;
  switch (op) {
    case "contains": {
      // `contains` keeps surrounding white space (" pills " means a word).
      const needles = values.map((v) => ({ value: v, folded: foldText(v) }));
      test = (ctx) => {
        for (const text of texts(ctx)) {
          for (const n of needles) {
            const at = text.indexOf(n.folded);
            if (at >= 0) {
              return {
                field: fieldName,
                operator: op,
                value: n.value,
                text: around(text, at, n.folded.length),
              };
            }
          }
        }
        return null;
      };
      break;
    }
    case "equals": {
      const needles = values.map((v) => ({ value: v, folded: foldText(v).trim() }));
      test = (ctx) => {
        for (const text of texts(ctx)) {
          const t = text.trim();
          for (const n of needles) {
            if (t === n.folded) {
              return { field: fieldName, operator: op, value: n.value, text: excerpt(t) };
            }
          }
        }
        return null;
      };
      break;
    }
    case "matches": {
      const patterns = values.map((v) => guardRegex(v));
      test = (ctx) => {
        for (const text of texts(ctx)) {
          for (const p of patterns) {
            const m = runGuarded(p, text);
            if (m !== null) {
              return { field: fieldName, operator: op, value: p.source, text: excerpt(m) };
            }
          }
        }
        return null;
      };
      break;
    }
    case "in_list": {
      // Validated at load; an engine built from the rules alone (without `lists`) gets an
      // empty list, and says so through `onMissingList`, rather than failing to start.
      const list = env.lists.get(values[0]) ?? missingList(values[0], env);
      if (ADDRESS_FIELDS.has(field)) {
        test = (ctx) => {
          for (const text of texts(ctx)) {
            const a = text.trim();
            if (listHasAddress(list, a)) {
              return { field: fieldName, operator: op, value: list.name, text: a };
            }
          }
          return null;
        };
      } else if (DOMAIN_FIELDS.has(field)) {
        test = (ctx) => {
          for (const text of texts(ctx)) {
            const d = text.trim();
            if (listHasDomain(list, d)) {
              return { field: fieldName, operator: op, value: list.name, text: d };
            }
          }
          return null;
        };
      } else {
        test = (ctx) => {
          for (const text of texts(ctx)) {
            const w = listWordIn(list, text);
            if (w !== undefined) {
              return {
                field: fieldName,
                operator: op,
                value: w,
                text: around(text, text.indexOf(w), w.length),
              };
            }
          }
          return null;
        };
      }
      break;
    }
  }
  return {
    describe,
    fast: test,
    run: (ctx) => {
      const m = test(ctx);
      return { match: m, detail: m ? "" : seen(ctx) };
    },
  };
}

/** At most 80 characters of `s`. */
function excerpt(s: string): string {
  return s.length > 80 ? s.slice(0, 77) + "…" : s;
}

/** The match in its context, at most ~80 characters. */
function around(text: string, at: number, len: number): string {
  const from = Math.max(0, at - 20);
  const to = Math.min(text.length, at + len + 20);
  return (from > 0 ? "…" : "") + text.slice(from, Math.min(to, from + 80)) +
    (to < text.length ? "…" : "");
}

/** How an `rspamd` condition reads in logs, `ssg explain` and the configuration summary. */
export function describeRspamdLeaf(c: RspamdCondition): string {
  const parts: string[] = [];
  if (c.scoreAtLeast !== undefined) parts.push(`score ≥ ${c.scoreAtLeast}`);
  if (c.scoreBelow !== undefined) parts.push(`score < ${c.scoreBelow}`);
  if (c.actions) parts.push(`action ${c.actions.map((a) => JSON.stringify(a)).join(" or ")}`);
  if (c.symbols) parts.push(`symbol ${c.symbols.join(" or ")}`);
  return `rspamd ${parts.join(" and ")}`;
}
