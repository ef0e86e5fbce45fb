/**
 * The `alert` action: a mail to the admin mailboxes through the configured relay, and optionally
 * a JSON POST to a webhook — rate-limited per rule, with the null sender, loop-marked.
 *
 * - Envelope sender `<>` (RFC 5321 §4.5.5 / RFC 3834 §3.1.2 style): nobody may answer or bounce
 *   an alert, so an alert can never start a mail loop or land on a forged sender.
 * - Rate: a token bucket per rule (`alert.rate`, e.g. 10/1h). Refused alerts are counted and the
 *   next alert that goes out says how many were suppressed and since when.
 * - Loops: every alert carries an HMAC mark of its Message-ID (`alert_mark.ts`); the action runner
 *   asks `isOwnAlert()` and never alerts about a returning alert.
 * - Content: see `alert_message.ts` (injection-proof by construction).
 * - Webhook: `fetch` POST of the cleaned facts as JSON with `AbortSignal.timeout` (a stalled
 *   endpoint cannot hold anything); the response body is always consumed or cancelled.
 *
 * Failures never propagate: `alert()` resolves with what happened, and logs it
 * (`action.alert.sent|suppressed|failed`, `action.webhook.sent|failed`). There is no retry
 * queue: an alert that the relay refuses is logged and lost (the log keeps the facts).
 */
import type { AlertConfig, RelayConfig } from "../config/config.ts";
import type { EventLog } from "../log/log.ts";
import { AlertMark } from "./alert_mark.ts";
import { type AlertContent, buildAlertMessage } from "./alert_message.ts";
import { RateLimiter } from "./rate_limiter.ts";
import { type Connect, isSendableAddress, sendMessage, type SendResult } from "./send_message.ts";

/** The `alert:` section of the rule file (`SsgConfig.alert`). */
export type { AlertConfig };

/** The alert configuration is unusable. */
export class AlertConfigError extends Error {
  /** `message` says which setting is wrong; `cause` keeps the underlying error. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "AlertConfigError";
  }
}

/** What the mailer needs. */
export interface AlertMailerOptions {
  /** The `alert:` section. */
  config: AlertConfig;
  /** Our host name (EHLO, Message-ID). */
  hostname: string;
  /** Opens the connection to the relay. */
  connect: Connect;
  /** Timeouts. */
  relay: RelayConfig;
  /** Where `action.alert.*` and `action.webhook.*` events go. */
  log: EventLog;
  /** Loop-mark key (default: random per process). */
  secret?: Uint8Array;
  /** Clock in milliseconds (tests). */
  now?: () => number;
}

/** What became of one alert. */
export interface AlertOutcome {
  /** "sent": the relay accepted it; "suppressed": rate limit; "failed": the relay did not. */
  mail: "sent" | "suppressed" | "failed";
  /** The relay's reply, when it was tried. */
  reply?: SendResult;
  /** "sent" / "failed" when a webhook is configured and was called; absent otherwise. */
  webhook?: "sent" | "failed";
  /** The alert's Message-ID, when one was built. */
  messageId?: string;
  /** How many suppressed alerts this one summarised. */
  summarised?: number;
}

/** Sends admin alerts. */
export class AlertMailer {
  readonly #opts: AlertMailerOptions;
  readonly #limiter: RateLimiter;
  readonly #mark: AlertMark;
  readonly #now: () => number;

  /** Throws `AlertConfigError` for unusable addresses, rate or webhook URL. */
  constructor(opts: AlertMailerOptions) {
    const c = opts.config;
    if (c.to.length === 0) throw new AlertConfigError("alert.to: at least one address is needed");
    for (const a of [c.from, ...c.to]) {
      if (!isSendableAddress(a) || !/^[\x21-\x7e]+@[\x21-\x7e]+$/.test(a)) {
        throw new AlertConfigError(`alert: ${JSON.stringify(a)} is not a plain mail address`);
      }
    }
    if (c.webhook) {
      let url: URL;
      try {
        url = new URL(c.webhook.url);
      } catch (e) {
        throw new AlertConfigError(`alert.webhook.url: not a URL`, { cause: e });
      }
      if (url.protocol !== "http:" && url.protocol !== "https:") {
        throw new AlertConfigError("alert.webhook.url: must be http: or https:");
      }
    }
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
    try {
      this.#limiter = new RateLimiter(c.rate, this.#now);
    } catch (e) {
      throw new AlertConfigError(`alert.rate: ${(e as Error).message}`, { cause: e });
    }
    this.#mark = new AlertMark(opts.secret);
  }

  /** Whether `message` is an alert this mailer sent (a verified loop mark). */
  isOwnAlert(message: Uint8Array): boolean {
    return this.#mark.verify(message);
  }

  /** Sends one alert for `content.rule`, unless its rate is exhausted. Never rejects. */
  async alert(content: Omit<AlertContent, "time" | "suppressed">): Promise<AlertOutcome> {
    const { log, config } = this.#opts;
    const ids = {
      session: content.envelope.sessionId,
      transaction: content.envelope.transactionId,
    };
    const decision = this.#limiter.take(content.rule);
    if (!decision.allowed) {
      log.event("action.alert.suppressed", {
        ...ids,
        rule: content.rule,
        suppressed: decision.suppressed,
      });
      return { mail: "suppressed" };
    }
    let built;
    try {
      built = buildAlertMessage(
        {
          ...content,
          time: new Date(this.#now()),
          suppressed: { count: decision.suppressed, since: decision.suppressedSince },
        },
        { from: config.from, to: config.to, hostname: this.#opts.hostname, mark: this.#mark },
      );
    } catch (e) {
      log.event("action.alert.failed", { ...ids, rule: content.rule, error: String(e) }, "error");
      return { mail: "failed" };
    }
    const [reply, webhook] = await Promise.all([
      sendMessage(
        {
          server: config.relay,
          hostname: this.#opts.hostname,
          connect: this.#opts.connect,
          relay: this.#opts.relay,
        },
        { mailFrom: "", rcptTo: config.to },
        built.bytes,
      ),
      config.webhook ? this.#post(config.webhook, built.facts, built.messageId) : undefined,
    ]);
    const sent = reply.code === 250;
    log.event(sent ? "action.alert.sent" : "action.alert.failed", {
      ...ids,
      rule: content.rule,
      message_id: built.messageId,
      relay: `${config.relay.host}:${config.relay.port}`,
      reply: `${reply.code} ${reply.enhanced ?? ""} ${reply.text}`.replace(/\s+/g, " ").trim(),
      stage: reply.stage,
      summarised: decision.suppressed,
    }, sent ? "info" : "warning");
    const outcome: AlertOutcome = {
      mail: sent ? "sent" : "failed",
      reply,
      messageId: built.messageId,
      summarised: decision.suppressed,
    };
    if (webhook) outcome.webhook = webhook;
    return outcome;
  }

  async #post(
    hook: { url: string; timeoutSeconds: number },
    facts: unknown,
    messageId: string,
  ): Promise<"sent" | "failed"> {
    const { log } = this.#opts;
    try {
      const res = await fetch(hook.url, {
        method: "POST",
        headers: { "content-type": "application/json", "user-agent": "ssg-alert" },
        body: JSON.stringify({ event: "ssg.alert", messageId, ...facts as object }),
        signal: AbortSignal.timeout(Math.max(1, hook.timeoutSeconds * 1000)),
        redirect: "manual", // a webhook that redirects is misconfigured, not to be followed
      });
      await res.body?.cancel();
      const ok = res.status >= 200 && res.status <= 299;
      log.event(ok ? "action.webhook.sent" : "action.webhook.failed", {
        url: hook.url,
        status: res.status,
        message_id: messageId,
      }, ok ? "info" : "warning");
      return ok ? "sent" : "failed";
    } catch (e) {
      log.event("action.webhook.failed", {
        url: hook.url,
        error: e instanceof Error ? `${e.name}: ${e.message}` : String(e),
        message_id: messageId,
      }, "warning");
      return "failed";
    }
  }
}
