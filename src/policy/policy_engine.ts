/**
 * The policy manager: judges one complete message, then remembers what it judged.
 *
 * Precedence (the README states exactly this):
 * 1. static allowlist (client IP/CIDR, sender address or @domain) → forward; nothing else is
 *    evaluated;
 * 2. blacklist — static, or dynamic from the state store (client IP, sender, sender domain) →
 *    reject 554 5.7.1;
 * 3. a spamtrap recipient → discard, and blacklist the sender and the client for
 *    `spamtraps.blacklist_for` (effects, carried out after the reply);
 * 4. rules in file order: every matching enforced rule's non-terminal actions (tag, alert, bcc,
 *    blacklist) accumulate until the first matching rule with a terminal action (forward,
 *    discard, reject, tempfail, quarantine, redirect), which decides — its own non-terminal
 *    actions included; observe-mode rules that match are only logged (`policy.observe`) and
 *    named in `verdict.observed`;
 * 5. no terminal match → forward (with whatever accumulated);
 * 6. a message clamd could not scan (down, slow, over `clamav.max_bytes` or clamd's own limits)
 *    whose verdict would be forward — the static allowlist excepted — gets `clamav.on_failure`
 *    instead (rule "virus-scan-failed", the reason in the evidence): what was not scanned must not
 *    pass as clean. Scanning happens only when a rule tests `virus`; the whole message is
 *    streamed to clamd once, concurrently with decoding;
 * 6b. likewise a message Rspamd could not score (down, slow, over `rspamd.max_bytes`, a malformed
 *    reply) gets `rspamd.on_failure` (rule "rspamd-failed"), unless that is "ignore": then it is
 *    judged without Rspamd (its conditions hold for nothing) and `policy.rspamd_ignored` is
 *    logged. Rspamd is asked only when a rule tests `rspamd`, concurrently with decoding and the
 *    clamd scan;
 * 6c. a message for which a DNS-list look-up failed (`dnsbl.on_failure: tempfail`) whose verdict
 *    would still be forward — the static allowlist excepted — gets 451 4.4.3 (rule
 *    "dnsbl-failed", the failed zones in the evidence); with `on_failure: ignore` (the default)
 *    a failed look-up counts as not listed and is logged (`dnsbl.failed`). Look-ups happen only
 *    when a rule tests `dnsbl`; they start at connect/EHLO/MAIL (`prefetch`) and run
 *    concurrently with decoding;
 * 6d. a message whose rules test `spf`/`dkim`/`dmarc`/`arc` and one of the tested checks could
 *    not be done (temperror: DNS down or slow) whose verdict would be forward — the static
 *    allowlist excepted — gets `auth.on_failure` (rule "auth-failed"). Verification happens only
 *    when a rule tests one of these or `auth.add_header` is on; SPF starts at MAIL FROM
 *    (`startChecks`), the rest concurrently with decoding, through the `dns:` resolver;
 * 7. a message SSG could not fully read (`facts.problems`: a bound passed, the parser failed)
 *    whose verdict would be forward — by a rule or by default; the static allowlist excepted —
 *    gets `content.undecodable` instead (rule "undecodable", the reasons in the evidence): what
 *    was not read must not pass as clean. A rule that stopped it on what was read still decides.
 * Then, after the client got its answer, the action runner calls `record()`: the verdict is
 * counted and thresholds are evaluated (they return effects: blacklist, alert).
 * A reject, tempfail or discard verdict carries no tag and no deliveries (nothing is delivered);
 * a quarantine verdict keeps the tag (applied to the stored copy) but no deliveries.
 *
 * Rules are compiled once, in the constructor (conditions into evaluators, lists into sets,
 * patterns into guarded RegExps); a message is decoded once (`message.ts`), and only as far as
 * the rules read it (`decode_needs.ts`: envelope-only rules decode nothing, header rules only the
 * header section), and each field normalised at most once, whatever the number of rules.
 *
 * Memory: a `StateStore` (given, or a private `:memory:` one owned by the engine). When any rule
 * tests `bulk`, every judged message's content fingerprint is recorded before the rules run, so
 * that the count includes this message and copies stopped by earlier rules still count.
 *
 * What it trusts: the rules (validated at load). What it does not: the message and the envelope
 * (attacker-controlled; they reach the log only through `EventLog`, which escapes them, and the
 * state store only as bound SQL parameters). Failure: the judge never throws for a bad message;
 * an internal bug rejects the promise, and the session then answers 451 and keeps nothing (see
 * `Judge`). A state-store failure while judging fails open (logged `policy.state_failed`: bulk
 * not reached, dynamic lists empty); in `record()` it throws, and the action runner logs it.
 */
import type {
  AccessList,
  AuthConfig,
  ClamavConfig,
  ContentConfig,
  DnsblConfig,
  DnsConfig,
  GreylistConfig,
  RspamdConfig,
  SpamtrapConfig,
} from "../config/config.ts";
import { ClamdClient, type ScanResult } from "../engines/clamd_client.ts";
import { describeResult, RspamdClient, type RspamdResult } from "../engines/rspamd_client.ts";
import {
  describeLookup,
  DnsblChecker,
  type DnsblResult,
  type DnsblSubjects,
} from "../engines/dns/dnsbl_checker.ts";
import { createResolver, type DnsResolver, resolverConfigFrom } from "../engines/dns/resolver.ts";
import { type AuthResults, MailAuthenticator } from "../engines/auth/mail_authenticator.ts";
import type { AuthDns } from "../engines/auth/mailauth_resolver.ts";
import { authCheckFailed } from "./auth_condition.ts";
import { CONTENT_DEFAULTS } from "../config/defaults.ts";
import { cidrContains } from "../config/cidr.ts";
import type { EventLog } from "../log/log.ts";
import type { Fingerprint } from "../state/bulk_fingerprint.ts";
import { decodeHere, type FactsDecoder, factsFingerprint } from "./decode_pool.ts";
import { StateStore } from "../state/state_store.ts";
import { canonicalIp } from "./canonical_ip.ts";
import {
  type CompiledCondition,
  compileNode,
  EvalContext,
  type EvalHooks,
  type Match,
  type Trace,
} from "./compile_condition.ts";
import { domainOf } from "./fields.ts";
import { Greylist, greylistReply, type GreylistResult } from "./greylist.ts";
import { type DecodeLimits, emptyFacts, type MessageFacts } from "./message.ts";
import { type DecodeNeeds, decodeNeedsOf } from "./decode_needs.ts";
import { type CompiledList, compileList } from "./named_list.ts";
import {
  type Action,
  authLeaves,
  type Condition,
  dnsblLeaves,
  envelopeOnly,
  greylists,
  rspamdLeaves,
  type Rule,
  type RuleMode,
  type Threshold,
  virusLeaves,
} from "./rule.ts";
import type {
  BlacklistKey,
  Delivery,
  EarlyChecks,
  Effect,
  Envelope,
  Judge,
  Reply,
  Tag,
  TransactionStart,
  Verdict,
} from "./verdict.ts";

/** The reply to a blacklisted client or sender (RFC 3463 5.7.1; RFC 5321 §3.8: 554). */
export const BLACKLIST_REPLY: Readonly<Reply> = Object.freeze({
  code: 554,
  enhanced: "5.7.1",
  text: "Access denied by policy",
});

/** The parts of the configuration the engine uses (an `SsgConfig` fits). */
export interface PolicyInput {
  /** The rules, evaluated in order. */
  rules: Rule[];
  /** Named lists: name → entries. */
  lists?: Record<string, string[]>;
  /** Static allowlist. */
  allowlist?: AccessList;
  /** Static blacklist. */
  blacklist?: AccessList;
  /** Spamtrap addresses. */
  spamtraps?: SpamtrapConfig;
  /** Thresholds over recorded verdicts, in order. */
  thresholds?: Threshold[];
  /** Decoding bounds and the undecodable verdict (default `CONTENT_DEFAULTS`). */
  content?: ContentConfig;
  /** Where clamd listens and the scan-failure verdict (needed when a rule tests `virus`). */
  clamav?: ClamavConfig;
  /** Greylisting parameters (default `GREYLIST_DEFAULTS`; used when a rule greylists). */
  greylist?: GreylistConfig;
  /** Where Rspamd listens and the scoring-failure verdict (needed when a rule tests `rspamd`). */
  rspamd?: RspamdConfig;
  /** The resolver (needed when a rule tests `dnsbl`, unless `PolicyEngineOptions.resolver`). */
  dns?: DnsConfig;
  /** The DNS lists and their failure verdict (needed when a rule tests `dnsbl`). */
  dnsbl?: DnsblConfig;
  /** Sender authentication (needed when a rule tests spf/dkim/dmarc/arc; uses `dns`). */
  auth?: AuthConfig;
}

/** The reply to a message that could not be fully read, when `content.undecodable` is reject. */
export const UNDECODABLE_REJECT: Readonly<Reply> = Object.freeze({
  code: 554,
  enhanced: "5.6.0",
  text: "Message content could not be fully checked",
});

/** The reply when `content.undecodable` is tempfail. */
export const UNDECODABLE_TEMPFAIL: Readonly<Reply> = Object.freeze({
  code: 451,
  enhanced: "4.6.0",
  text: "Message content could not be fully checked, try again later",
});

/** The reply when a message could not be scanned and `clamav.on_failure` is tempfail. */
export const SCAN_FAILED_TEMPFAIL: Readonly<Reply> = Object.freeze({
  code: 451,
  enhanced: "4.3.0",
  text: "Virus scan unavailable, try again later",
});

/** The reply when a message could not be scored and `rspamd.on_failure` is tempfail. */
export const RSPAMD_FAILED_TEMPFAIL: Readonly<Reply> = Object.freeze({
  code: 451,
  enhanced: "4.3.0",
  text: "Spam check unavailable, try again later",
});

/** The reply when a message could not be scored and `rspamd.on_failure` is reject. */
export const RSPAMD_FAILED_REJECT: Readonly<Reply> = Object.freeze({
  code: 554,
  enhanced: "5.7.0",
  text: "Message could not be checked for spam",
});

/** The reply when a message could not be scanned and `clamav.on_failure` is reject. */
export const SCAN_FAILED_REJECT: Readonly<Reply> = Object.freeze({
  code: 554,
  enhanced: "5.7.0",
  text: "Message could not be scanned for viruses",
});

/** The reply when a DNS-list look-up failed and `dnsbl.on_failure` is tempfail (RFC 3463 4.4.3). */
export const DNSBL_FAILED_TEMPFAIL: Readonly<Reply> = Object.freeze({
  code: 451,
  enhanced: "4.4.3",
  text: "DNS list lookup failed, try again later",
});

/** The reply when a tested authentication check failed and `auth.on_failure` is tempfail
 * (RFC 3463 X.4.3: directory server failure — the DNS). */
export const AUTH_FAILED_TEMPFAIL: Readonly<Reply> = Object.freeze({
  code: 451,
  enhanced: "4.4.3",
  text: "Sender authentication unavailable, try again later",
});

/** The reply when a tested authentication check failed and `auth.on_failure` is reject. */
export const AUTH_FAILED_REJECT: Readonly<Reply> = Object.freeze({
  code: 554,
  enhanced: "5.7.0",
  text: "Sender could not be authenticated",
});

/** The decode bounds `content:` sets. */
export function decodeLimitsOf(content: ContentConfig | undefined): Partial<DecodeLimits> {
  const c = content ?? CONTENT_DEFAULTS;
  return {
    maxParts: c.maxParts,
    maxDepth: c.maxDepth,
    maxHeaderBytes: c.maxHeaderBytes,
    maxHeaders: c.maxHeaders,
    maxTextChars: c.maxTextChars,
    timeoutMs: c.timeoutSeconds * 1000,
  };
}

/** Options of the engine. */
export interface PolicyEngineOptions {
  /** Bounds on decoding each message (see `DecodeLimits`). */
  decodeLimits?: Partial<DecodeLimits>;
  /** The memory; absent: a private in-memory store that lives as long as the engine. */
  state?: StateStore;
  /** Clock in milliseconds (tests). */
  now?: () => number;
  /** The DNS resolver for `dnsbl` and sender authentication (default: one made from `dns:`,
   * owned by the engine; absent both, every authentication check is a temperror). */
  resolver?: DnsResolver;
  /**
   * Where messages are decoded (default: on the calling thread; main passes a `DecodePool`'s
   * `decode`, so that decoding runs on other cores while judging stays here with the state).
   */
  decode?: FactsDecoder;
}

/** What one rule did with one message (for `ssg explain` and tests). */
export interface RuleResult {
  /** The rule's name. */
  rule: string;
  /** Whether the rule enforces or only observes. */
  mode: RuleMode;
  /** Whether its condition held. */
  matched: boolean;
  /** Which leaf tests held, e.g. `subject contains "lottery"`. */
  evidence?: string;
  /** The rule's terminal action, if it has one. */
  action?: Action["type"];
  /** Every action of the rule, in order. */
  actions: Action["type"][];
  /** True when this rule decided the verdict. */
  decided: boolean;
  /**
   * What the match did: "decided", "accumulated" (non-terminal actions taken), "observed"
   * (observe mode), "after decision" (matched after the deciding rule: no effect), "no match".
   */
  outcome: "decided" | "accumulated" | "observed" | "after decision" | "no match";
  /** Leaf by leaf (only when evaluated with `explain`). */
  trace?: Trace;
}

/** One precedence step before the rules (allowlist, blacklist, spamtrap). */
export interface StepResult {
  /** Which step. */
  step: "allowlist" | "blacklist" | "spamtrap";
  /** Whether it applied (client or sender listed, a recipient a spamtrap). */
  holds: boolean;
  /** What was found, or why not (e.g. "not blacklisted"). */
  detail: string;
}

/** The outcome of evaluating the policy against one message. */
export interface Evaluation {
  /** The decision. */
  verdict: Verdict;
  /** The precedence steps checked before the rules, in order. */
  steps: StepResult[];
  /** One entry per rule evaluated, in order (all rules when `explain` was asked). */
  results: RuleResult[];
}

interface CompiledRule {
  rule: Rule;
  node: CompiledCondition;
  terminal: Action | undefined;
  /** The rule's action is `greylist`. */
  greylist: boolean;
  /** A greylist rule that the session applies per recipient at RCPT time (see `checkRecipient`). */
  atRcpt: boolean;
}

/** Message facts for evaluating envelope-only conditions at RCPT time (no content yet). */
const NO_CONTENT: MessageFacts = Object.freeze(emptyFacts(0, "fallback"));

const TERMINAL: ReadonlySet<Action["type"]> = new Set([
  "forward",
  "discard",
  "reject",
  "tempfail",
  "quarantine",
  "redirect",
]);

/** Judges messages against a fixed policy; remembers verdicts in a state store. */
export class PolicyEngine {
  readonly #rules: CompiledRule[];
  readonly #log: EventLog;
  readonly #limits: Partial<DecodeLimits>;
  readonly #allow: AccessList;
  readonly #block: AccessList;
  readonly #traps: ReadonlySet<string>;
  readonly #trapSeconds: number;
  readonly #thresholds: Threshold[];
  readonly #state: StateStore;
  readonly #ownsState: boolean;
  readonly #now: () => number;
  readonly #usesBulk: boolean;
  readonly #needs: DecodeNeeds;
  readonly #decode: FactsDecoder;
  /** Fingerprints computed with the facts (by the decoder), used by `#hooks`. */
  readonly #fingerprints = new WeakMap<MessageFacts, Fingerprint>();
  readonly #undecodable: ContentConfig["undecodable"];
  readonly #scanner: ClamdClient | undefined;
  readonly #scanFailure: ClamavConfig["onFailure"];
  readonly #greylist: Greylist | undefined;
  /** The enforced rules that decide at RCPT time, in order, up to the last RCPT greylist rule. */
  #rcptPrefix: CompiledRule[];
  readonly #scorer: RspamdClient | undefined;
  readonly #scoreFailure: RspamdConfig["onFailure"];
  readonly #dnsbl: DnsblChecker | undefined;
  readonly #ownResolver: DnsResolver | undefined;
  readonly #auth: MailAuthenticator | undefined;
  readonly #authConfig: AuthConfig | undefined;
  /** The checks rules test (on_failure applies when one of them is a temperror). */
  readonly #authTested: ReadonlySet<"spf" | "dkim" | "dmarc" | "arc">;

  /** Compiles the policy (already validated) and logs verdicts to `log`. */
  constructor(policy: Rule[] | PolicyInput, log: EventLog, options: PolicyEngineOptions = {}) {
    const p: PolicyInput = Array.isArray(policy) ? { rules: policy } : policy;
    const lists = new Map<string, CompiledList>();
    for (const [name, entries] of Object.entries(p.lists ?? {})) {
      lists.set(name, compileList(name, entries));
    }
    this.#rules = p.rules.map((rule) => ({
      rule,
      node: compileNode(rule.when, {
        lists,
        onMissingList: (name) =>
          log.event(
            "policy.list_missing",
            { rule: rule.name, list: name, used_as: "empty" },
            "warning",
          ),
      }),
      terminal: rule.actions.find((a) => TERMINAL.has(a.type)),
      greylist: greylists(rule),
      atRcpt: false,
    }));
    // RCPT time: greylist rules whose outcome the envelope alone decides — their own condition
    // is envelope-only and so is every enforced rule before them that could decide instead (a
    // terminal action or another greylist). Content rules that only accumulate (tag, alert,
    // bcc, blacklist) cannot stop greylisting and do not count. The first content rule that
    // could decide ends the prefix: the greylist rules after it wait for the end of data.
    this.#rcptPrefix = [];
    for (const c of this.#rules) {
      if (c.rule.mode === "observe") continue;
      const decides = c.terminal !== undefined || c.greylist;
      if (!envelopeOnly(c.rule.when)) {
        if (decides) break;
        continue;
      }
      if (!decides) continue;
      c.atRcpt = c.greylist;
      this.#rcptPrefix.push(c);
    }
    if (!this.#rcptPrefix.some((c) => c.atRcpt)) this.#rcptPrefix = [];

    this.#log = log;
    this.#limits = { ...decodeLimitsOf(p.content), ...options.decodeLimits };
    this.#undecodable = p.content?.undecodable ?? CONTENT_DEFAULTS.undecodable;
    // Only a policy that tests `virus` pays for a scan; one that does without a `clamav:`
    // section (the loader refuses that) gets scan errors, hence on_failure, never "clean".
    const clamav = p.clamav;
    this.#scanFailure = clamav?.onFailure ?? "tempfail";
    this.#scanner = virusLeaves(p.rules).length === 0 ? undefined : new ClamdClient(
      clamav
        ? {
          address: clamav.address,
          timeoutMs: clamav.timeoutSeconds * 1000,
          maxBytes: clamav.maxBytes,
        }
        : { address: { path: "/nonexistent/clamav-not-configured" }, timeoutMs: 1, maxBytes: 0 },
    );
    // Likewise Rspamd: asked only when a rule tests `rspamd`; without an `rspamd:` section (the
    // loader refuses that) every check fails, hence on_failure, never "clean".
    const rspamd = p.rspamd;
    this.#scoreFailure = rspamd?.onFailure ?? "tempfail";
    this.#scorer = rspamdLeaves(p.rules).length === 0 ? undefined : new RspamdClient(
      rspamd
        ? {
          address: rspamd.address,
          pathPrefix: rspamd.pathPrefix,
          timeoutMs: rspamd.timeoutSeconds * 1000,
          maxBytes: rspamd.maxBytes,
          ...(rspamd.password === undefined ? {} : { password: rspamd.password }),
        }
        : { address: { hostname: "127.0.0.1", port: 1 }, timeoutMs: 1, maxBytes: 0 },
    );
    // Only a policy that tests `dnsbl`, or verifies senders, looks anything up.
    const usesDnsbl = dnsblLeaves(p.rules).length > 0;
    const tested = authLeaves(p.rules);
    const usesAuth = tested.length > 0 || p.auth?.addHeader === true;
    const d = p.dns;
    this.#ownResolver = (usesDnsbl || usesAuth) && !options.resolver && d
      ? createResolver(resolverConfigFrom(d))
      : undefined;
    const resolver = options.resolver ?? this.#ownResolver;
    if (usesDnsbl) {
      if (!p.dnsbl || !resolver) {
        throw new Error(`a rule tests "dnsbl" but the policy has no "dnsbl" and "dns" sections`);
      }
      this.#dnsbl = new DnsblChecker(p.dnsbl, resolver);
    }
    // Sender authentication; without a resolver (the loader refuses that) every check is a
    // temperror, hence on_failure, never "pass".
    this.#authTested = new Set(tested.map((l) => l.check));
    this.#authConfig = p.auth;
    this.#auth = usesAuth
      ? new MailAuthenticator({
        authservId: p.auth?.authservId ?? "localhost",
        checks: p.auth?.checks ?? ["spf", "dkim", "dmarc", "arc"],
        timeoutMs: (p.auth?.timeoutSeconds ?? 10) * 1000,
        dns: resolver ?? NO_DNS,
      })
      : undefined;
    this.#allow = p.allowlist ?? { clients: [], senders: [] };
    this.#block = p.blacklist ?? { clients: [], senders: [] };
    this.#traps = new Set((p.spamtraps?.addresses ?? []).map((a) => a.toLowerCase()));
    this.#trapSeconds = p.spamtraps?.blacklistSeconds ?? 86400;
    this.#thresholds = p.thresholds ?? [];
    this.#ownsState = options.state === undefined;
    this.#state = options.state ?? StateStore.open(":memory:");
    this.#now = options.now ?? Date.now;
    this.#greylist = this.#rules.some((c) => c.greylist)
      ? new Greylist(this.#state, p.greylist, this.#now)
      : undefined;
    const bulkWindows = p.rules.flatMap((r) => bulkWindowsOf(r.when));
    this.#usesBulk = bulkWindows.length > 0;
    this.#needs = decodeNeedsOf(p.rules);
    this.#decode = options.decode ?? decodeHere;
    this.#state.retain({
      eventSeconds: Math.max(60, ...this.#thresholds.map((t) => t.withinSeconds)),
      bulkSeconds: Math.max(60, ...bulkWindows),
    });
  }

  /** The decode bounds in force (from `content:`, then the options). */
  get decodeLimits(): Partial<DecodeLimits> {
    return { ...this.#limits };
  }

  /** How much of each message the rules need decoded (`decode_needs.ts`). */
  get decodeNeeds(): DecodeNeeds {
    return this.#needs;
  }

  /** Whether messages are scanned for viruses (some rule tests `virus`). */
  get scans(): boolean {
    return this.#scanner !== undefined;
  }

  /** Streams `message` to clamd (undefined when no rule tests `virus`); never rejects. */
  scan(message: Uint8Array): Promise<ScanResult> | undefined {
    return this.#scanner?.scan(message);
  }

  /** Whether messages are sent to Rspamd (some rule tests `rspamd`). */
  get scores(): boolean {
    return this.#scorer !== undefined;
  }

  /** Sends `message` to Rspamd (undefined when no rule tests `rspamd`); never rejects. */
  score(message: Uint8Array, envelope: Envelope): Promise<RspamdResult> | undefined {
    return this.#scorer?.check(message, {
      ip: envelope.client.ip,
      helo: envelope.helo,
      mailFrom: envelope.mailFrom,
      rcptTo: envelope.rcptTo,
      ...(envelope.authUser ? { user: envelope.authUser } : {}),
      queueId: envelope.transactionId,
    });
  }

  /** Whether DNS lists are looked up (some rule tests `dnsbl`). */
  get looksUp(): boolean {
    return this.#dnsbl !== undefined;
  }

  /**
   * Starts the DNS-list look-ups for what the session knows so far (the client at connect, the
   * HELO name at EHLO, the sender at MAIL FROM); returns at once. No-op when no rule tests
   * `dnsbl`.
   */
  prefetch(subjects: DnsblSubjects): void {
    try {
      this.#dnsbl?.prefetch(subjects);
    } catch (e) {
      // Only a warm-up: the check at the end of DATA asks again.
      this.#log.event("dnsbl.prefetch_failed", { error: String(e) }, "warning");
    }
  }

  /** Looks the envelope's client, sender and HELO up (undefined when no rule tests `dnsbl`). */
  dnsblCheck(envelope: Envelope): Promise<DnsblResult> | undefined {
    return this.#dnsbl?.check({
      clientIp: envelope.client.ip,
      sender: envelope.mailFrom,
      helo: envelope.helo,
    });
  }

  /** Whether senders are verified (a rule tests spf/dkim/dmarc/arc, or auth.add_header). */
  get authenticates(): boolean {
    return this.#auth !== undefined;
  }

  /**
   * Starts what can be checked before the message arrives (SPF, at MAIL FROM); undefined when
   * this policy verifies nothing. Bound: safe to pass around (`StartChecks`).
   */
  readonly startChecks = (start: TransactionStart): EarlyChecks | undefined => {
    const spf = this.#auth?.startSpf({
      ip: canonicalIp(start.client.ip),
      helo: start.helo,
      mailFrom: start.mailFrom,
    });
    return spf ? { spf } : undefined;
  };

  /** Verifies the sender of `message` (undefined when this policy verifies nothing). */
  authenticate(message: Uint8Array, envelope: Envelope): Promise<AuthResults> | undefined {
    return this.#auth?.verify(message, {
      ip: canonicalIp(envelope.client.ip),
      helo: envelope.helo,
      mailFrom: envelope.mailFrom,
    }, envelope.early?.spf);
  }

  /** What goes on a verdict for the relayed message's Authentication-Results (see `VerdictExtras`). */
  authResultsOf(auth: AuthResults | undefined): Verdict["authResults"] {
    const c = this.#authConfig;
    if (!c) return undefined;
    return c.addHeader && auth ? { authservId: c.authservId, value: auth.header } : {
      authservId: c.authservId,
    };
  }

  /** Number of rules in force. */
  get size(): number {
    return this.#rules.length;
  }

  /** The state store in use. */
  get state(): StateStore {
    return this.#state;
  }

  /** Closes the state store if the engine opened it (a given store is the caller's). */
  close(): void {
    if (this.#ownsState) this.#state.close();
    this.#ownResolver?.close?.();
  }

  /** The `Judge` the SMTP session calls at end of data (bound; safe to pass around). */
  readonly judge: Judge = async (message: Uint8Array, envelope: Envelope): Promise<Verdict> => {
    const t0 = performance.now();
    // The scan runs while the message is decoded: its cost hides behind the decoder's.
    let scanMs: number | undefined;
    const scanning = this.scan(message)?.then((r) => {
      scanMs = performance.now() - t0;
      return r;
    });
    let rspamdMs: number | undefined;
    const scoring = this.score(message, envelope)?.then((r) => {
      rspamdMs = performance.now() - t0;
      return r;
    });
    const listing = this.dnsblCheck(envelope);
    const authing = this.authenticate(message, envelope);
    const decoded = await this.#decode({
      raw: message,
      needs: this.#needs,
      limits: this.#limits,
      checkBounds: this.#undecodable !== "forward",
      fingerprint: this.#usesBulk,
    });
    const facts = decoded.facts;
    if (decoded.fingerprint) this.#fingerprints.set(facts, decoded.fingerprint);
    const scan = await scanning;
    const scored = await scoring;
    const dnsbl = await listing;
    const auth = await authing;
    const t1 = performance.now();
    const { verdict, results } = this.evaluate(
      facts,
      envelope,
      false,
      this.#now(),
      scan,
      scored,
      dnsbl,
      auth,
    );
    if (scored?.status === "error" && this.#scoreFailure === "ignore") {
      this.#log.event("policy.rspamd_ignored", {
        session: envelope.sessionId,
        tx: envelope.transactionId,
        error: scored.reason,
        action: verdict.action,
      }, "warning");
    }
    const authResults = this.authResultsOf(auth);
    if (authResults) verdict.authResults = authResults;
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
    for (const f of dnsbl?.failures ?? []) {
      this.#log.event("dnsbl.failed", {
        session: envelope.sessionId,
        tx: envelope.transactionId,
        zone: f.zone,
        query: f.query,
        reason: f.reason,
        on_failure: this.#dnsbl!.config.onFailure,
      }, "warning");
    }
    this.#log.event("policy.verdict", {
      session: envelope.sessionId,
      tx: envelope.transactionId,
      action: verdict.action,
      rule: verdict.rule,
      evidence: verdict.evidence,
      code: verdict.action === "reject" || verdict.action === "tempfail"
        ? verdict.reply.code
        : undefined,
      tag: verdict.tag ? "yes" : undefined,
      deliveries: verdict.deliveries?.map((d) => `${d.kind}:${d.to.join("+")}`),
      effects: verdict.effects?.map((e) => `${e.type}:${e.rule}`),
      decoder: facts.decoder,
      size: facts.size,
      scan: scan
        ? scan.status === "infected" ? `infected:${scan.signature}` : scan.status
        : undefined,
      scan_error: scan?.status === "error" ? scan.reason : undefined,
      scan_ms: scanMs === undefined ? undefined : round(scanMs),
      rspamd: scored?.status === "scored" ? describeResult(scored) : scored?.status,
      rspamd_error: scored?.status === "error" ? scored.reason : undefined,
      rspamd_ms: rspamdMs === undefined ? undefined : round(rspamdMs),
      dnsbl_score: dnsbl?.score,
      dnsbl_listed: dnsbl?.hits.length ? dnsbl.hits.map(describeLookup) : undefined,
      dnsbl_failed: dnsbl?.failures.length || undefined,
      dnsbl_ms: dnsbl ? round(dnsbl.ms) : undefined,
      auth: auth ? authSummary(auth) : undefined,
      auth_ms: auth ? round(auth.ms) : undefined,
      decode_ms: round(t1 - t0),
      eval_ms: round(t2 - t1),
    });
    return verdict;
  };

  /** Whether the session must ask `checkRecipient` at each RCPT (some rule greylists there). */
  get checksRecipients(): boolean {
    return this.#rcptPrefix.length > 0;
  }

  /**
   * RCPT time: whether this recipient is greylisted now. `envelope.rcptTo` holds the one
   * recipient asked about (before the server is asked: a greylisted recipient never reaches it).
   * Returns the 451 reply, or undefined to go on. Never greylisted: authenticated sessions,
   * clients and senders on the static allowlist, blacklisted ones (the end of data rejects
   * them), spamtrap recipients (the trap must see the mail). The enforced rules before the
   * greylist rule run in order on the envelope: one that decides otherwise (e.g. `forward` for a
   * partner) ends the check. A state-store failure fails open (logged `policy.state_failed`).
   */
  checkRecipient(envelope: Envelope, now: number = this.#now()): Reply | undefined {
    if (this.#rcptPrefix.length === 0 || envelope.authenticated) return undefined;
    try {
      return this.#checkRecipient(envelope, now);
    } catch (e) {
      // `RecipientCheck` never throws: a bug here must not end the session.
      this.#log.event("policy.error", {
        session: envelope.sessionId,
        tx: envelope.transactionId,
        op: "check_recipient",
        error: String(e instanceof Error ? e.message : e),
      }, "error");
      return undefined;
    }
  }

  #checkRecipient(envelope: Envelope, now: number): Reply | undefined {
    const clientIp = canonicalIp(envelope.client.ip);
    const sender = envelope.mailFrom.trim().toLowerCase();
    const senderDomain = domainOf(sender);
    if (this.#staticHit(this.#allow, clientIp, sender, senderDomain)) return undefined;
    if (envelope.rcptTo.some((r) => this.#traps.has(r.trim().toLowerCase()))) return undefined;
    if (this.#blacklistHit(clientIp, sender, senderDomain, now)) return undefined;
    const ctx = new EvalContext(
      { facts: NO_CONTENT, envelope },
      this.#hooks(NO_CONTENT, envelope, clientIp, sender, senderDomain, now, false),
    );
    for (const c of this.#rcptPrefix) {
      if (!c.node.test(ctx)) continue;
      if (!c.greylist) return undefined;
      const deferred = this.#greylistCheck(c, envelope, now, false);
      if (deferred) return deferred.reply;
    }
    return undefined;
  }

  /**
   * Runs a greylist rule's check for every recipient of `envelope`; the tempfail verdict when
   * any triplet is deferred (with the longest wait), else undefined. `peek`: record nothing.
   */
  #greylistCheck(
    c: CompiledRule,
    envelope: Envelope,
    now: number,
    peek: boolean,
  ): { action: "tempfail"; rule: string; reply: Reply; evidence: string } | undefined {
    const gl = this.#greylist!;
    let wait = 0;
    const deferred: string[] = [];
    for (const recipient of envelope.rcptTo) {
      const t = { clientIp: envelope.client.ip, sender: envelope.mailFrom, recipient };
      const r: GreylistResult | undefined = this.#safe(
        "greylist",
        envelope,
        () => peek ? gl.peek(t, now) : gl.check(t, now),
        undefined,
      );
      if (!r) continue; // fails open
      if (!peek) {
        this.#log.event(r.pass ? "greylist.pass" : "greylist.defer", {
          session: envelope.sessionId,
          tx: envelope.transactionId,
          rule: c.rule.name,
          network: r.network,
          sender: envelope.mailFrom || "<>",
          rcpt: recipient,
          reason: r.reason,
          retry_in: r.retryInSeconds,
          at: c.atRcpt ? "rcpt" : "data",
        }, r.pass && r.reason !== "retried" ? "debug" : "info");
      }
      if (r.pass) continue;
      wait = Math.max(wait, r.retryInSeconds ?? 1);
      deferred.push(`${recipient} (${r.reason}, network ${r.network})`);
    }
    if (deferred.length === 0) return undefined;
    return {
      action: "tempfail",
      rule: c.rule.name,
      reply: greylistReply(wait),
      evidence: `greylisted: ${deferred.join(", ")}; retry in ${wait}s`,
    };
  }

  /**
   * Evaluates the policy against decoded facts. Stops at the deciding step or rule, unless
   * `explain` is set, in which case every rule is evaluated and traced (the verdict is the same).
   * `scan` is what clamd said (see `scan()`); absent, `virus` never holds, and when this engine
   * scans (`scans`) its absence counts as a failed scan. `scored` is what Rspamd said (see
   * `score()`), alike. `dnsbl` likewise is what the DNS lists
   * said (see `dnsblCheck()`); absent when this engine looks up, every list counts as failed.
   */
  evaluate(
    facts: MessageFacts,
    envelope: Envelope,
    explain = false,
    now: number = this.#now(),
    scan?: ScanResult,
    scored?: RspamdResult,
    dnsbl?: DnsblResult,
    auth?: AuthResults,
  ): Evaluation {
    const steps: StepResult[] = [];
    const results: RuleResult[] = [];
    const clientIp = canonicalIp(envelope.client.ip);
    const sender = envelope.mailFrom.trim().toLowerCase();
    const senderDomain = domainOf(sender);
    const partial = (e: string) => withProblems(e, facts);

    // 1. Static allowlist: wins over everything.
    const allowed = this.#staticHit(this.#allow, clientIp, sender, senderDomain);
    steps.push({
      step: "allowlist",
      holds: allowed !== undefined,
      detail: allowed ?? "not allowlisted",
    });
    if (allowed && !explain) {
      return {
        verdict: { action: "forward", rule: "allowlist", evidence: allowed },
        steps,
        results,
      };
    }

    // 2. Blacklist, static or dynamic.
    const blocked = allowed ? undefined : this.#blacklistHit(clientIp, sender, senderDomain, now);
    steps.push({
      step: "blacklist",
      holds: blocked !== undefined,
      detail: allowed ? "skipped: allowlisted" : blocked ?? "not blacklisted",
    });
    if (blocked && !explain) {
      return {
        verdict: {
          action: "reject",
          rule: "blacklist",
          reply: { ...BLACKLIST_REPLY },
          evidence: blocked,
        },
        steps,
        results,
      };
    }

    // 3. Spamtraps.
    const trap = envelope.rcptTo.find((r) => this.#traps.has(r.trim().toLowerCase()));
    steps.push({
      step: "spamtrap",
      holds: trap !== undefined,
      detail: trap ? `recipient ${trap} is a spamtrap` : "no recipient is a spamtrap",
    });
    let early: Verdict | undefined;
    if (allowed) early = { action: "forward", rule: "allowlist", evidence: allowed };
    else if (blocked) {
      early = {
        action: "reject",
        rule: "blacklist",
        reply: { ...BLACKLIST_REPLY },
        evidence: blocked,
      };
    } else if (trap) {
      const evidence = `recipient ${trap} is a spamtrap`;
      const effects: Effect[] = [
        {
          type: "blacklist",
          key: "client_ip",
          value: clientIp,
          seconds: this.#trapSeconds,
          rule: "spamtrap",
          evidence,
        },
      ];
      if (sender !== "") {
        effects.push({
          type: "blacklist",
          key: "sender",
          value: sender,
          seconds: this.#trapSeconds,
          rule: "spamtrap",
          evidence,
        });
      }
      early = { action: "discard", rule: "spamtrap", evidence, effects };
    }
    if (early && !explain) return { verdict: early, steps, results };

    // 4. Rules.
    const scanned: ScanResult | undefined = this.#scanner
      ? scan ?? { status: "error", reason: "the message was not given to the virus scanner" }
      : undefined;
    const rspamd: RspamdResult | undefined = this.#scorer
      ? scored ?? { status: "error", reason: "the message was not given to rspamd" }
      : undefined;
    const listing: DnsblResult | undefined = this.#dnsbl
      ? dnsbl ?? notLookedUp(clientIp)
      : undefined;
    const dnsblStrict = this.#dnsbl?.config.onFailure === "tempfail";
    const ctx = new EvalContext(
      { facts, envelope },
      {
        ...this.#hooks(facts, envelope, clientIp, sender, senderDomain, now, !early),
        virus: scanned,
        rspamd,
        auth,
        dnsbl: listing ? { result: listing, strict: dnsblStrict } : undefined,
      },
    );
    const tag: Tag = { headers: [] };
    const deliveries: Delivery[] = [];
    const effects: Effect[] = [];
    const observed: string[] = [];
    const accumulatedEvidence: string[] = [];
    let verdict: Verdict | undefined = early;
    for (const c of this.#rules) {
      const matches = c.node.test(ctx);
      const matched = matches !== null;
      const evidence = matched ? describeMatches(matches, c) : undefined;
      const result: RuleResult = {
        rule: c.rule.name,
        mode: c.rule.mode,
        matched,
        evidence,
        action: c.greylist ? "greylist" : c.terminal?.type,
        actions: c.rule.actions.map((a) => a.type),
        decided: false,
        outcome: "no match",
      };
      if (explain) result.trace = c.node.trace(ctx);
      results.push(result);
      if (!matched) continue;
      if (c.rule.mode === "observe") {
        result.outcome = "observed";
        if (verdict === undefined) observed.push(c.rule.name);
        continue;
      }
      if (verdict !== undefined) {
        result.outcome = "after decision";
        continue;
      }
      if (c.greylist) {
        // Greylisting decides only when it defers. Applied per recipient at RCPT time when the
        // envelope decides it (the session asked `checkRecipient`: every recipient here
        // passed); here for the others, or in `ssg explain` (which only peeks).
        const skip = envelope.authenticated
          ? "skipped: authenticated session"
          : c.atRcpt && !explain
          ? "passed at RCPT time"
          : undefined;
        const deferred = skip ? undefined : this.#greylistCheck(c, envelope, now, explain);
        if (deferred) {
          result.decided = true;
          result.outcome = "decided";
          result.evidence = `${evidence}; ${deferred.evidence}`;
          verdict = { ...deferred, evidence: partial(result.evidence) };
          if (!explain) break;
        } else {
          result.outcome = "accumulated";
          result.evidence = `${evidence}; ${skip ?? "greylist passed"}`;
        }
        continue;
      }
      this.#accumulate(
        c.rule,
        evidence!,
        clientIp,
        sender,
        senderDomain,
        tag,
        deliveries,
        effects,
      );
      if (c.terminal) {
        result.decided = true;
        result.outcome = "decided";
        verdict = makeVerdict(c.terminal, c.rule.name, partial(evidence!));
        if (!explain) break;
      } else {
        result.outcome = "accumulated";
        accumulatedEvidence.push(`${c.rule.name}: ${evidence}`);
      }
    }
    const decidedByRule = verdict !== undefined && verdict !== early;
    verdict ??= {
      action: "forward",
      evidence: accumulatedEvidence.length
        ? partial(accumulatedEvidence.join("; "))
        : facts.problems.length
        ? partial("no rule matched")
        : undefined,
    };
    if (
      scanned?.status === "error" && verdict.action === "forward" &&
      verdict.rule !== "allowlist" && this.#scanFailure !== "forward"
    ) {
      // 6. Not scanned: never forwarded as clean.
      const why = [`virus scan failed: ${scanned.reason}`];
      if (verdict.rule) why.push(`would be forwarded by ${verdict.rule}`);
      if (accumulatedEvidence.length) why.push(accumulatedEvidence.join("; "));
      verdict = failureVerdict(this.#scanFailure, "virus-scan-failed", why.join("; "));
    }
    if (
      rspamd?.status === "error" && verdict.action === "forward" &&
      verdict.rule !== "allowlist" && this.#scoreFailure !== "ignore"
    ) {
      // 6b. Not scored: never forwarded as clean.
      const why = [`rspamd check failed: ${rspamd.reason}`];
      if (verdict.rule) why.push(`would be forwarded by ${verdict.rule}`);
      if (accumulatedEvidence.length) why.push(accumulatedEvidence.join("; "));
      verdict = failureVerdict(this.#scoreFailure, "rspamd-failed", why.join("; "));
    }
    if (
      listing?.failures.length && dnsblStrict && verdict.action === "forward" &&
      verdict.rule !== "allowlist"
    ) {
      // 6c. A DNS list could not be asked, and the administrator chose not to pass such mail.
      const why = [`DNS list look-up failed: ${listing.failures.map(describeLookup).join("; ")}`];
      if (verdict.rule) why.push(`would be forwarded by ${verdict.rule}`);
      if (accumulatedEvidence.length) why.push(accumulatedEvidence.join("; "));
      verdict = {
        action: "tempfail",
        rule: "dnsbl-failed",
        reply: { ...DNSBL_FAILED_TEMPFAIL },
        evidence: why.join("; "),
      };
    }
    const authFailed = [...this.#authTested].map((c) => authCheckFailed(c, auth)).filter((x) =>
      x !== undefined
    );
    const authOnFailure = this.#authConfig?.onFailure ?? "tempfail";
    if (
      authFailed.length && verdict.action === "forward" && verdict.rule !== "allowlist" &&
      authOnFailure !== "forward"
    ) {
      // 6d. A tested check could not be done: never forwarded as if it had passed.
      const why = [`sender authentication failed: ${authFailed.join("; ")}`];
      if (verdict.rule) why.push(`would be forwarded by ${verdict.rule}`);
      if (accumulatedEvidence.length) why.push(accumulatedEvidence.join("; "));
      verdict = failureVerdict(authOnFailure, "auth-failed", why.join("; "));
    }
    if (
      facts.problems.length && verdict.action === "forward" && verdict.rule !== "allowlist" &&
      this.#undecodable !== "forward"
    ) {
      // 7. Not fully read: never forwarded as clean.
      const why = [`message not fully read: ${facts.problems.join("; ")}`];
      if (verdict.rule) why.push(`would be forwarded by ${verdict.rule}`);
      if (accumulatedEvidence.length) why.push(accumulatedEvidence.join("; "));
      verdict = failureVerdict(this.#undecodable, "undecodable", why.join("; "));
    }
    if (decidedByRule || verdict !== early) {
      attachExtras(verdict, tag, deliveries, effects, observed);
    }
    return { verdict, steps, results };
  }

  /**
   * Records a verdict after the client got its answer and evaluates the thresholds; returns
   * their effects (blacklist entries and alerts, for the action runner to carry out — this
   * method does not add blacklist entries itself). Signature fits
   * `GatewayActionsOptions.record`; `message` is unused (thresholds key on the envelope).
   */
  record(
    verdict: Verdict,
    envelope: Envelope,
    _message?: Uint8Array,
    now: number = this.#now(),
  ): Effect[] {
    const out: Effect[] = [];
    // A greylist deferral is not a judgement on the sender: thresholds do not count it.
    if (this.#rules.some((c) => c.greylist && c.rule.name === verdict.rule)) return out;
    for (const t of this.#thresholds) {
      if (!(t.count as string[]).includes(verdict.action)) continue;
      const value = keyValue(t.key, envelope);
      if (value === "") continue;
      const kind = `threshold:${t.name}`;
      this.#state.addEvent(kind, value, now);
      const n = this.#state.countEvents(kind, value, t.withinSeconds, now);
      if (n < t.atLeast) continue;
      const evidence = `${t.key} ${value}: ${n} × ${
        t.count.join("/")
      } within ${t.withinSeconds}s (threshold ${t.atLeast})`;
      // Start counting again: the next firing needs `atLeast` new verdicts.
      this.#state.resetEvents(kind, value);
      if (t.actions.includes("blacklist") && t.blacklistSeconds) {
        out.push({
          type: "blacklist",
          key: t.key,
          value,
          seconds: t.blacklistSeconds,
          rule: t.name,
          evidence,
        });
      }
      if (t.actions.includes("alert")) out.push({ type: "alert", rule: t.name, evidence });
      this.#log.event("policy.threshold", {
        session: envelope.sessionId,
        tx: envelope.transactionId,
        threshold: t.name,
        key: t.key,
        value,
        count: n,
        actions: t.actions,
      });
    }
    return out;
  }

  /**
   * Whether a key/value is on the static allowlist (`GatewayActionsOptions.isAllowlisted`:
   * an allowlisted client or sender is never blacklisted).
   */
  isAllowlisted(key: BlacklistKey, value: string): boolean {
    const v = value.trim().toLowerCase();
    if (key === "client_ip") {
      return this.#allow.clients.some((c) => cidrContains(c, canonicalIp(v)));
    }
    if (key === "sender") return this.#staticHit(this.#allow, "", v, domainOf(v)) !== undefined;
    return this.#allow.senders.includes(`@${v}`);
  }

  /** The static blacklist's client networks (main blocks them at the packet level). */
  staticBlockedClients(): string[] {
    return this.#block.clients.map((c) => c.text);
  }

  #hooks(
    facts: MessageFacts,
    envelope: Envelope,
    clientIp: string,
    sender: string,
    senderDomain: string,
    now: number,
    recordBulk: boolean,
  ): EvalHooks {
    let cluster: number | undefined;
    if (this.#usesBulk && recordBulk) {
      const fp = this.#fingerprints.get(facts) ?? factsFingerprint(facts);
      if (fp) {
        cluster = this.#safe(
          "observe_bulk",
          envelope,
          () => this.#state.observeBulk(fp, canonicalIp(envelope.server.ip), envelope.rcptTo, now),
          undefined,
        );
      }
    }
    return {
      spamtraps: this.#traps,
      bulk: (within) =>
        cluster === undefined ? { servers: 0, recipients: 0 } : this.#safe(
          "bulk_reach",
          envelope,
          () => this.#state.bulkReach(cluster!, within, now),
          { servers: 0, recipients: 0 },
        ),
      listed: (list) =>
        list === "blacklist"
          ? this.#blacklistHit(clientIp, sender, senderDomain, now)
          : this.#staticHit(this.#allow, clientIp, sender, senderDomain) ??
            this.#dynamicHit("allowlist", clientIp, sender, senderDomain, now),
    };
  }

  /**
   * Runs a state-store call; on failure (disk full, a corrupt file) logs `policy.state_failed`
   * and returns `fallback`: memory fails open — bulk counts as not reached and dynamic lists as
   * empty — so that a broken state file degrades the policy to its content rules instead of
   * tempfailing every message.
   */
  #safe<T>(op: string, envelope: Envelope | undefined, fn: () => T, fallback: T): T {
    try {
      return fn();
    } catch (e) {
      this.#log.event("policy.state_failed", {
        session: envelope?.sessionId,
        tx: envelope?.transactionId,
        op,
        error: String(e instanceof Error ? e.message : e),
      }, "error");
      return fallback;
    }
  }

  #accumulate(
    rule: Rule,
    evidence: string,
    clientIp: string,
    sender: string,
    senderDomain: string,
    tag: Tag,
    deliveries: Delivery[],
    effects: Effect[],
  ): void {
    for (const a of rule.actions) {
      switch (a.type) {
        case "tag":
          for (const h of a.tag.headers) {
            if (
              !tag.headers.some((x) =>
                x.name.toLowerCase() === h.name.toLowerCase() && x.value === h.value
              )
            ) {
              tag.headers.push({ ...h });
            }
          }
          // The first prefix wins: "[SPAM] [SPAM] " helps nobody.
          if (a.tag.subjectPrefix && tag.subjectPrefix === undefined) {
            tag.subjectPrefix = a.tag.subjectPrefix;
          }
          break;
        case "bcc":
          deliveries.push(
            a.server
              ? { kind: "bcc", to: [...a.to], server: { ...a.server } }
              : { kind: "bcc", to: [...a.to] },
          );
          break;
        case "redirect":
          deliveries.push(
            a.server
              ? { kind: "redirect", to: [...a.to], server: { ...a.server } }
              : { kind: "redirect", to: [...a.to] },
          );
          break;
        case "alert":
          effects.push({ type: "alert", rule: rule.name, evidence });
          break;
        case "blacklist": {
          const value = a.key === "client_ip"
            ? clientIp
            : a.key === "sender"
            ? sender
            : senderDomain;
          if (value !== "") {
            effects.push({
              type: "blacklist",
              key: a.key,
              value,
              seconds: a.seconds,
              rule: rule.name,
              evidence,
            });
          }
          break;
        }
        default:
          break;
      }
    }
  }

  /** A description of the static entry that matches, if any. */
  #staticHit(
    list: AccessList,
    clientIp: string,
    sender: string,
    senderDomain: string,
  ): string | undefined {
    const net = clientIp === "" ? undefined : list.clients.find((c) => cidrContains(c, clientIp));
    if (net) return `client ${clientIp} is in ${net.text}`;
    if (sender !== "" && list.senders.includes(sender)) return `sender ${sender} is listed`;
    if (senderDomain !== "" && list.senders.includes(`@${senderDomain}`)) {
      return `sender domain @${senderDomain} is listed`;
    }
    return undefined;
  }

  #blacklistHit(
    clientIp: string,
    sender: string,
    senderDomain: string,
    now: number,
  ): string | undefined {
    const s = this.#staticHit(this.#block, clientIp, sender, senderDomain);
    if (s) return `${s} (static blacklist)`;
    return this.#dynamicHit("blacklist", clientIp, sender, senderDomain, now);
  }

  #dynamicHit(
    list: "blacklist" | "allowlist",
    clientIp: string,
    sender: string,
    senderDomain: string,
    now: number,
  ): string | undefined {
    const probes: [BlacklistKey, string, string][] = [
      ["client_ip", clientIp, "client"],
      ["sender", sender, "sender"],
      ["sender_domain", senderDomain, "sender domain"],
    ];
    for (const [key, value, what] of probes) {
      if (value === "") continue;
      const e = this.#safe(
        "list_lookup",
        undefined,
        () => this.#state.getEntry(list, key, value, now),
        undefined,
      );
      if (e) {
        return `${what} ${value} is on the dynamic ${list} (by ${e.rule}, until ${
          new Date(e.untilMs).toISOString()
        })`;
      }
    }
    return undefined;
  }
}

/** The DNS-list result when the engine looks up but was given none: every list failed. */
function notLookedUp(clientIp: string): DnsblResult {
  const failure = {
    site: "(every list)",
    zone: "(every list)",
    target: "client" as const,
    subject: clientIp,
    query: "",
    status: "failed" as const,
    answers: [],
    weight: 0,
    entryWeight: 0,
    reason: "the message was not given to the DNS-list check",
  };
  return { score: 0, lookups: [failure], hits: [], failures: [failure], ms: 0 };
}

/** A resolver for a policy given none: every question fails, so every check is a temperror. */
const NO_DNS: AuthDns = {
  query: () => Promise.resolve({ status: "error", records: [], reason: "no DNS resolver" }),
};

/** `spf=pass,dkim=pass:example.org,dmarc=pass,arc=none` for the verdict log line. */
export function authSummary(a: AuthResults): string {
  const parts: string[] = [];
  if (a.spf) parts.push(`spf=${a.spf.result}`);
  if (a.dkim) {
    parts.push(
      `dkim=${a.dkim.map((d) => (d.domain ? `${d.result}:${d.domain}` : d.result)).join("+")}`,
    );
  }
  if (a.dmarc) parts.push(`dmarc=${a.dmarc.result}${a.dmarc.policy ? `:${a.dmarc.policy}` : ""}`);
  if (a.arc) parts.push(`arc=${a.arc.result}`);
  return parts.join(",");
}

/** The value a threshold or blacklist key has for this envelope ("" when none). */
function keyValue(key: BlacklistKey, envelope: Envelope): string {
  if (key === "client_ip") return canonicalIp(envelope.client.ip);
  const sender = envelope.mailFrom.trim().toLowerCase();
  return key === "sender" ? sender : domainOf(sender);
}

/** The replies of each failure verdict. */
const FAILURE_REPLIES = {
  "undecodable": { reject: UNDECODABLE_REJECT, tempfail: UNDECODABLE_TEMPFAIL },
  "virus-scan-failed": { reject: SCAN_FAILED_REJECT, tempfail: SCAN_FAILED_TEMPFAIL },
  "rspamd-failed": { reject: RSPAMD_FAILED_REJECT, tempfail: RSPAMD_FAILED_TEMPFAIL },
  "auth-failed": { reject: AUTH_FAILED_REJECT, tempfail: AUTH_FAILED_TEMPFAIL },
} as const;

/**
 * The verdict `content.undecodable` (rule "undecodable"), `clamav.on_failure` (rule
 * "virus-scan-failed"), `rspamd.on_failure` (rule "rspamd-failed") or `auth.on_failure` (rule
 * "auth-failed") gives.
 */
function failureVerdict(
  action: "quarantine" | "tempfail" | "reject",
  rule: "undecodable" | "virus-scan-failed" | "rspamd-failed" | "auth-failed",
  evidence: string,
): Verdict {
  switch (action) {
    case "reject":
      return { action, rule, reply: { ...FAILURE_REPLIES[rule].reject }, evidence };
    case "tempfail":
      return { action, rule, reply: { ...FAILURE_REPLIES[rule].tempfail }, evidence };
    default:
      return { action: "quarantine", rule, evidence };
  }
}

function makeVerdict(action: Action, rule: string, evidence: string): Verdict {
  switch (action.type) {
    case "discard":
      return { action: "discard", rule, evidence };
    case "reject":
      return { action: "reject", rule, reply: { ...action.reply }, evidence };
    case "tempfail":
      return { action: "tempfail", rule, reply: { ...action.reply }, evidence };
    case "quarantine":
      return { action: "quarantine", rule, evidence };
    default: // forward, redirect (its delivery was accumulated)
      return { action: "forward", rule, evidence };
  }
}

/** Puts the accumulated extras on the verdict, keeping only those that mean something for it. */
function attachExtras(
  v: Verdict,
  tag: Tag,
  deliveries: Delivery[],
  effects: Effect[],
  observed: string[],
): void {
  const delivers = v.action === "forward";
  const tags = v.action === "forward" || v.action === "quarantine";
  if (tags && (tag.headers.length || tag.subjectPrefix !== undefined)) v.tag = tag;
  if (delivers && deliveries.length) v.deliveries = deliveries;
  if (effects.length) v.effects = effects;
  if (observed.length) v.observed = observed;
}

/** Every `bulk` window in a condition tree. */
function bulkWindowsOf(c: Condition): number[] {
  switch (c.kind) {
    case "bulk":
      return [c.withinSeconds];
    case "all":
    case "any":
      return c.conditions.flatMap(bulkWindowsOf);
    case "not":
      return bulkWindowsOf(c.condition);
    default:
      return [];
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
