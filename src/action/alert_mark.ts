/**
 * The loop mark on SSG's own alert mails: a header field `X-SSG-Alert-Mark` carrying an HMAC of
 * the alert's Message-ID, keyed by a secret only this process knows. If an alert ever comes back
 * through the gateway (an admin mailbox that forwards outside and back in, a misrouted relay),
 * `verify()` recognises it and the action runner raises no alert about it — so one alert can
 * never cause another.
 *
 * Why an HMAC and not just `Auto-Submitted` (RFC 3834 §5) or the null sender: both are easy for a
 * spammer to set, and "never alert on mail marked auto-generated" would let every spammer switch
 * alerts off. A forged mark does not verify. The secret is per process by default (an alert that
 * returns after a restart is then alerted on once more, which is bounded by the rate limit); main
 * may pass a persistent secret instead.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { fieldValue, findField, parseRawHeaders } from "./raw_headers.ts";

/** The header field that carries the mark. */
export const ALERT_MARK_HEADER = "X-SSG-Alert-Mark";

/** Signs and recognises alert Message-IDs. */
export class AlertMark {
  readonly #secret: Uint8Array;

  /** `secret`: at least 16 bytes; default 32 random bytes for this process. */
  constructor(secret?: Uint8Array) {
    if (secret && secret.length < 16) throw new RangeError("Alert mark secret must be >= 16 bytes");
    this.#secret = secret ?? crypto.getRandomValues(new Uint8Array(32));
  }

  /**
   * The mark for an alert whose Message-ID is `messageId` (with angle brackets): HMAC-SHA-256
   * cut to 128 bits (RFC 2104 §5 allows truncation to at least half the output), 32 hex digits,
   * so that the field fits on one line.
   */
  mark(messageId: string): string {
    return createHmac("sha256", this.#secret).update(messageId.trim()).digest("hex").slice(0, 32);
  }

  /**
   * Whether `message` is an alert this process sent: it has a Message-ID and an
   * `X-SSG-Alert-Mark` that is the HMAC of it. Security: untrusted bytes — a forged or
   * malformed mark simply does not verify.
   */
  verify(message: Uint8Array): boolean {
    const headers = parseRawHeaders(message);
    const markField = findField(headers, ALERT_MARK_HEADER);
    const idField = findField(headers, "Message-ID");
    if (!markField || !idField) return false;
    const got = fieldValue(message, markField, 256);
    if (!/^[0-9a-f]{32}$/.test(got)) return false;
    const want = this.mark(fieldValue(message, idField, 1024));
    return timingSafeEqual(new TextEncoder().encode(got), new TextEncoder().encode(want));
  }
}
