/**
 * Token buckets per key (per rule, for admin alerts): at most `count` events per `seconds`,
 * refilled continuously, starting full. What is refused is counted, and the count is handed to
 * the next event that passes, so the alert that does go out can say how many were suppressed
 * ("excess counted and summarised in the next one").
 *
 * Bounded: at most `MAX_KEYS` keys are tracked; past it the bucket that was used least recently
 * is forgotten (keys are rule names, so this only matters for a pathological rule file).
 */

import { parseDuration } from "../config/units.ts";

/** Most keys tracked at once. */
export const MAX_KEYS = 10_000;

/** A rate: `count` events per `seconds`. */
export interface Rate {
  /** Events allowed per period (and the bucket's size: a burst of this many is allowed). */
  count: number;
  /** The period in seconds. */
  seconds: number;
}

/** The decision for one event. */
export interface RateDecision {
  /** Whether the event may happen now. */
  allowed: boolean;
  /** When allowed: how many events of this key were refused since the last allowed one. */
  suppressed: number;
  /** When allowed and `suppressed` > 0: time (ms since the epoch) of the first refused one. */
  suppressedSince?: number;
}

/**
 * Parses a rate as written in the rule file: "COUNT/DURATION" ("10/1h", "3/30m", "1/90s"); a
 * bare unit means one of it ("10/h"). Returns undefined when the text is not such a rate or
 * the count is not a positive integer or the duration not positive.
 */
export function parseRate(text: string): Rate | undefined {
  const m = /^\s*(\d{1,9})\s*\/\s*(\S+)\s*$/.exec(text);
  if (!m) return undefined;
  const count = Number(m[1]);
  const seconds = parseDuration(/^[a-z]+$/.test(m[2]) ? `1${m[2]}` : m[2]);
  if (count < 1 || seconds === undefined || seconds <= 0) return undefined;
  return { count, seconds };
}

interface Bucket {
  tokens: number;
  at: number;
  suppressed: number;
  suppressedSince?: number;
}

/** Token buckets per key ("10/1h" is parsed by the config loader; this takes the numbers). */
export class RateLimiter {
  readonly #rate: Rate;
  readonly #now: () => number;
  readonly #buckets = new Map<string, Bucket>();

  /** `rate.count` >= 1 and `rate.seconds` > 0; `now` returns milliseconds. */
  constructor(rate: Rate, now: () => number = Date.now) {
    if (!(rate.count >= 1) || !(rate.seconds > 0)) {
      throw new RangeError(`Invalid rate ${rate.count}/${rate.seconds}s`);
    }
    this.#rate = rate;
    this.#now = now;
  }

  /** Takes one token for `key` if there is one; otherwise counts the event as suppressed. */
  take(key: string): RateDecision {
    const now = this.#now();
    let b = this.#buckets.get(key);
    if (b) {
      this.#buckets.delete(key); // re-inserted below: Map order is least recently used first
      const refill = ((now - b.at) / 1000) * (this.#rate.count / this.#rate.seconds);
      b.tokens = Math.min(this.#rate.count, b.tokens + Math.max(0, refill));
      b.at = now;
    } else {
      b = { tokens: this.#rate.count, at: now, suppressed: 0 };
      if (this.#buckets.size >= MAX_KEYS) {
        const oldest = this.#buckets.keys().next().value;
        if (oldest !== undefined) this.#buckets.delete(oldest);
      }
    }
    this.#buckets.set(key, b);
    // A tiny epsilon absorbs floating-point error in the refill (e.g. 3 × 1/3 of a token).
    if (b.tokens >= 1 - 1e-9) {
      b.tokens = Math.max(0, b.tokens - 1);
      const decision: RateDecision = { allowed: true, suppressed: b.suppressed };
      if (b.suppressed > 0) decision.suppressedSince = b.suppressedSince;
      b.suppressed = 0;
      b.suppressedSince = undefined;
      return decision;
    }
    if (b.suppressed === 0) b.suppressedSince = now;
    b.suppressed++;
    return { allowed: false, suppressed: b.suppressed };
  }

  /** How many events of `key` are currently counted as suppressed. */
  pending(key: string): number {
    return this.#buckets.get(key)?.suppressed ?? 0;
  }
}
