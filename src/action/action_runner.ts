/**
 * What a verdict does, as one object the SMTP session calls: `GatewayActions` composes the tag
 * transform, the quarantine store, bcc/redirect delivery, admin alerts and the blacklist hooks
 * behind the `ActionRunner` interface of the issue-3 design.
 *
 * Session order (the integrator's contract): judge → reject/tempfail: reply · discard: 250 ·
 * quarantine: `await quarantine()` then 250 (4xx when it rejects: 452 4.3.1 for kind "full",
 * 451 4.3.0 otherwise) · forward: `deliver()` each bcc first (any non-250 → 451), then the
 * server, or the redirect target instead; relay the final reply → `after()`.
 * `transform()` gives the bytes to forward, quarantine, bcc or redirect; `after()` must be given
 * the message AS RECEIVED (before `transform()`), because the alert loop mark is an `X-SSG-*`
 * field that `transform()` strips.
 *
 * `after()` never throws and never delays the client: effects run in the background, every
 * failure is logged; `settled()` waits for them (tests, graceful shutdown).
 *
 * Counters: the policy engine's `record()` is called once per transaction — except when the
 * client got a 4xx that the verdict did not ask for (quarantine disk full, server down): the
 * client will retry the same message, and counting it twice would make thresholds fire early.
 */
import type { QuarantineConfig, RelayConfig } from "../config/config.ts";
import type { EventLog } from "../log/log.ts";
import type { VerdictActions } from "../smtp/session.ts";
import { type AlertConfig, AlertMailer } from "./alert_mailer.ts";
import { deliver, deliveryServer } from "./delivery.ts";
import { applyAuthResults } from "./authentication_results.ts";
import { HeaderFieldError } from "./header_field.ts";
import { QuarantineError, QuarantineStore } from "./quarantine_store.ts";
import type { Connect } from "./send_message.ts";
import { DEFAULT_STRIP, tagMessage } from "./tag.ts";
import type { BlacklistKey, Delivery, Effect, Envelope, Reply, Verdict } from "./verdict_types.ts";

/**
 * What the SMTP session calls to carry out a verdict: the session declares the interface
 * (`VerdictActions`, so that the SMTP stage does not import the stages after it); this module
 * implements it.
 */
export type { VerdictActions as ActionRunner } from "../smtp/session.ts";
/** The `quarantine:` section of the rule file (`SsgConfig.quarantine`). */
export type { QuarantineConfig };

/** A dynamic blacklist entry to persist (the state store's job). */
export interface BlacklistEntry {
  /** What is blacklisted: a client IP, a sender address or a sender domain. */
  key: BlacklistKey;
  /** The IP, address or domain. */
  value: string;
  /** Expiry, milliseconds since the epoch. */
  untilMs: number;
  /** The rule or threshold that asked for it. */
  rule: string;
}

/** What `GatewayActions` is built from. */
export interface GatewayActionsOptions {
  /** Our host name (EHLO, alert Message-ID). */
  hostname: string;
  /** Timeouts of every outbound SMTP connection. */
  relay: RelayConfig;
  /** Opens outbound connections (main: `denoConnect`). */
  connect: Connect;
  /** Where action events go (`action.*`). */
  log: EventLog;
  /** The quarantine section; or a store (tests inject one with a failing file system). */
  quarantine?: QuarantineConfig | QuarantineStore;
  /** The alert section; or a mailer. */
  alert?: AlertConfig | AlertMailer;
  /** The policy engine's counters: records the verdict, returns threshold effects. */
  record?: (verdict: Verdict, envelope: Envelope, message: Uint8Array) => Effect[];
  /** Persists a dynamic blacklist entry (state store). */
  addBlacklist?: (entry: BlacklistEntry) => void;
  /** Blocks a client IP at the packet level until `untilMs` (main: `DivertService.block`). */
  onBlockClient?: (ip: string, untilMs: number) => void;
  /** Whether a key/value is on the static allowlist (never blacklisted; the design's rule 1). */
  isAllowlisted?: (key: BlacklistKey, value: string) => boolean;
  /** Inbound header fields always removed (default `X-SSG-*`). */
  strip?: readonly string[];
  /** Clock in milliseconds (tests). */
  now?: () => number;
}

/**
 * The reply for a failed `quarantine()`: 452 4.3.1 when the quarantine is full (RFC 3463 §3.4
 * "mail system full"; RFC 5321 §4.2.2 452 "insufficient system storage"), 451 4.3.0 for any
 * other failure. Never 250: the client keeps the message and retries (RFC 5321 §4.5.4.1).
 */
export function quarantineFailureReply(error: unknown): Reply {
  if (error instanceof QuarantineError && error.kind === "full") {
    return { code: 452, enhanced: "4.3.1", text: "Insufficient system storage, try again later" };
  }
  return { code: 451, enhanced: "4.3.0", text: "Local error in processing, try again later" };
}

/** Most quarantine ids remembered for the alert of the same transaction. */
const MAX_REMEMBERED_IDS = 1000;

/** The gateway's action runner. */
export class GatewayActions implements VerdictActions {
  #o: GatewayActionsOptions;
  readonly #store: QuarantineStore | undefined;
  readonly #mailer: AlertMailer | undefined;
  readonly #now: () => number;
  readonly #pending = new Set<Promise<void>>();
  /** transactionId → quarantine id, so the alert can name the entry. */
  readonly #quarantined = new Map<string, string>();

  /** Throws `AlertConfigError` when the alert section is unusable. */
  constructor(opts: GatewayActionsOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
    const q = opts.quarantine;
    this.#store = q instanceof QuarantineStore
      ? q
      : q
      ? new QuarantineStore(q.dir, { maxBytes: q.maxBytes })
      : undefined;
    const a = opts.alert;
    this.#mailer = a instanceof AlertMailer ? a : a
      ? new AlertMailer({
        config: a,
        hostname: opts.hostname,
        connect: opts.connect,
        relay: opts.relay,
        log: opts.log,
        now: opts.now,
      })
      : undefined;
  }

  /**
   * Applies reloaded relay settings to the next bcc/redirect delivery (SIGHUP). The alert mailer
   * keeps its own (the `alert` section needs a restart).
   */
  reconfigure(change: { relay: RelayConfig }): void {
    this.#o = { ...this.#o, relay: change.relay };
  }

  /** The quarantine store, if configured (main calls `recover()` on it at start-up). */
  get store(): QuarantineStore | undefined {
    return this.#store;
  }

  /** The alert mailer, if configured. */
  get mailer(): AlertMailer | undefined {
    return this.#mailer;
  }

  /** The 4xx for a failed `quarantine()` (see `quarantineFailureReply`). */
  failureReply(error: unknown): Reply {
    return quarantineFailureReply(error);
  }

  transform(message: Uint8Array, verdict: Verdict): Uint8Array {
    const strip = this.#o.strip ?? DEFAULT_STRIP;
    let tagged: Uint8Array;
    try {
      tagged = tagMessage(message, verdict.tag, { strip });
    } catch (e) {
      if (!(e instanceof HeaderFieldError)) throw e;
      // The loader should have refused this tag; forward untagged rather than fail the mail.
      this.#o.log.event("action.tag.invalid", { rule: verdict.rule, error: e.message }, "error");
      tagged = tagMessage(message, undefined, { strip });
    }
    // Sender authentication: forged fields with our authserv-id out, ours in (RFC 8601 §5).
    const ar = verdict.authResults;
    return ar ? applyAuthResults(tagged, ar.authservId, ar.value) : tagged;
  }

  async quarantine(message: Uint8Array, envelope: Envelope, verdict: Verdict): Promise<string> {
    const ids = { session: envelope.sessionId, transaction: envelope.transactionId };
    if (!this.#store) {
      this.#o.log.event(
        "action.quarantine.failed",
        { ...ids, error: "no quarantine configured" },
        "error",
      );
      throw new QuarantineError("io", "No quarantine directory is configured");
    }
    try {
      const id = await this.#store.store(message, envelope, verdict);
      this.#remember(envelope.transactionId, id);
      this.#o.log.event("action.quarantine", {
        ...ids,
        id,
        rule: verdict.rule,
        size: message.length,
      });
      return id;
    } catch (e) {
      this.#o.log.event("action.quarantine.failed", {
        ...ids,
        rule: verdict.rule,
        kind: e instanceof QuarantineError ? e.kind : "io",
        error: e instanceof Error ? e.message : String(e),
      }, "error");
      throw e;
    }
  }

  async deliver(
    delivery: Delivery,
    message: Uint8Array,
    envelope: Envelope,
  ): Promise<{ code: number; text: string }> {
    const r = await deliver(delivery, message, envelope, {
      hostname: this.#o.hostname,
      connect: this.#o.connect,
      relay: this.#o.relay,
    });
    const server = deliveryServer(delivery, envelope);
    this.#o.log.event(r.code === 250 ? "action.deliver" : "action.deliver.failed", {
      session: envelope.sessionId,
      transaction: envelope.transactionId,
      kind: delivery.kind,
      server: `${server.host}:${server.port}`,
      to: delivery.to,
      reply: `${r.code} ${r.enhanced ?? ""} ${r.text}`.replace(/\s+/g, " ").trim(),
      stage: r.stage,
    }, r.code === 250 ? "info" : "warning");
    return { code: r.code, text: r.enhanced ? `${r.enhanced} ${r.text}` : r.text };
  }

  after(
    verdict: Verdict,
    envelope: Envelope,
    outcome: { code: number },
    message: Uint8Array,
  ): void {
    let p: Promise<void>;
    try {
      p = this.#after(verdict, envelope, outcome, message);
    } catch (e) {
      p = Promise.reject(e);
    }
    const tracked = p.catch((e) => {
      this.#o.log.event("action.after.failed", {
        session: envelope.sessionId,
        transaction: envelope.transactionId,
        error: e instanceof Error ? e.message : String(e),
      }, "error");
    }).finally(() => this.#pending.delete(tracked));
    this.#pending.add(tracked);
  }

  /** Resolves when every effect started by `after()` so far has finished. */
  async settled(): Promise<void> {
    while (this.#pending.size > 0) await Promise.all([...this.#pending]);
  }

  async #after(
    verdict: Verdict,
    envelope: Envelope,
    outcome: { code: number },
    message: Uint8Array,
  ): Promise<void> {
    const ids = { session: envelope.sessionId, transaction: envelope.transactionId };
    const quarantineId = this.#quarantined.get(envelope.transactionId);
    this.#quarantined.delete(envelope.transactionId);
    const effects: Effect[] = [...(verdict.effects ?? [])];
    // A 4xx the verdict did not ask for means the client will send the same message again.
    const retried = outcome.code >= 400 && outcome.code <= 499 && verdict.action !== "tempfail";
    if (this.#o.record && !retried) {
      try {
        effects.push(...this.#o.record(verdict, envelope, message));
      } catch (e) {
        this.#o.log.event("action.record.failed", { ...ids, error: String(e) }, "error");
      }
    }
    const own = this.#mailer?.isOwnAlert(message) ?? false;
    const alerted = new Set<string>();
    const work: Promise<unknown>[] = [];
    for (const effect of effects) {
      if (effect.type === "blacklist") {
        this.#blacklist(effect, ids);
        continue;
      }
      if (alerted.has(effect.rule)) continue; // one alert per rule per message
      alerted.add(effect.rule);
      if (own) {
        this.#o.log.event("action.alert.loop", { ...ids, rule: effect.rule }, "warning");
      } else if (!this.#mailer) {
        this.#o.log.event("action.alert.unconfigured", { ...ids, rule: effect.rule }, "warning");
      } else {
        work.push(this.#mailer.alert({
          rule: effect.rule,
          reason: effect.evidence,
          verdict,
          envelope,
          message,
          quarantineId,
          outcome,
        }));
      }
    }
    await Promise.all(work);
  }

  #blacklist(
    e: Extract<Effect, { type: "blacklist" }>,
    ids: { session: string; transaction: string },
  ): void {
    const fields = { ...ids, key: e.key, value: e.value, seconds: e.seconds, rule: e.rule };
    if (e.value === "" || !(e.seconds > 0)) {
      this.#o.log.event("action.blacklist.skipped", { ...fields, why: "empty" }, "warning");
      return;
    }
    if (this.#o.isAllowlisted?.(e.key, e.value)) {
      this.#o.log.event("action.blacklist.skipped", { ...fields, why: "allowlisted" });
      return;
    }
    const untilMs = this.#now() + e.seconds * 1000;
    try {
      this.#o.addBlacklist?.({ key: e.key, value: e.value, untilMs, rule: e.rule });
    } catch (err) {
      this.#o.log.event("action.blacklist.failed", { ...fields, error: String(err) }, "error");
    }
    if (e.key === "client_ip") {
      try {
        this.#o.onBlockClient?.(e.value, untilMs);
      } catch (err) {
        this.#o.log.event("action.block.failed", { ...fields, error: String(err) }, "error");
      }
    }
    this.#o.log.event("action.blacklist", { ...fields, until: new Date(untilMs).toISOString() });
  }

  #remember(transactionId: string, id: string): void {
    if (this.#quarantined.size >= MAX_REMEMBERED_IDS) {
      const oldest = this.#quarantined.keys().next().value;
      if (oldest !== undefined) this.#quarantined.delete(oldest);
    }
    this.#quarantined.set(transactionId, id);
  }
}
