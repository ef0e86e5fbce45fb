/**
 * The bound on message bytes held in memory by all sessions together.
 *
 * SSG holds each message whole until the policy has judged it (a before-queue proxy has nowhere
 * else to put it), so `smtp.max_message_bytes` × `smtp.max_sessions` could exceed a router's RAM
 * (25 MiB × 500 = 12.5 GiB with the defaults). Every DATA reader reserves what it stores from one
 * shared budget (`smtp.max_inflight_bytes`); when a reservation fails the message is read to its
 * real end without being stored and the client gets 452 4.3.1 "insufficient system storage"
 * (RFC 5321 §4.2.2 / RFC 3463 X.3.1) — a temporary failure: the client keeps the message and
 * retries, as with Postfix's queue-full answer.
 */

/** Shared, bounded count of stored message bytes. */
export class MemoryBudget {
  /** Most bytes that may be reserved at once (a reload may change it; lowering it below what is
   * reserved only makes new reservations fail until enough is given back). */
  limit: number;
  #used = 0;

  /** Creates an empty budget of `limit` bytes. */
  constructor(limit: number) {
    this.limit = limit;
  }

  /** Bytes reserved now. */
  get used(): number {
    return this.#used;
  }

  /** Reserves `n` bytes; false (and nothing reserved) when that would pass the limit. */
  tryReserve(n: number): boolean {
    if (n <= 0) return true;
    if (this.#used + n > this.limit) return false;
    this.#used += n;
    return true;
  }

  /** Gives back `n` bytes reserved earlier. */
  release(n: number): void {
    this.#used = Math.max(0, this.#used - n);
  }
}
