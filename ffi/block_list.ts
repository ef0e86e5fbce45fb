/**
 * The packet-level blacklist the queue Worker consults for every diverted SYN: client address
 * (canonical text, see ip_key.ts) → until when (epoch ms). Bounded: past `max` entries the expired
 * ones go first, then the oldest added, so a flood of block() calls cannot grow memory.
 */

/** Client addresses whose new connections are dropped until a deadline. */
export class BlockList {
  /** Most entries kept. */
  readonly max: number;
  #until = new Map<string, number>();

  /** Creates an empty list holding at most `max` entries (default 65536). */
  constructor(max = 65536) {
    this.max = max;
  }

  /** Entries held (expired ones included until they are looked up or evicted). */
  get size(): number {
    return this.#until.size;
  }

  /** Blocks `key` until `untilMs`; a later call for the same key replaces the deadline. */
  add(key: string, untilMs: number, now = Date.now()): void {
    this.#until.delete(key); // re-insert last: Map order is the eviction order
    this.#until.set(key, untilMs);
    if (this.#until.size <= this.max) return;
    for (const [k, until] of this.#until) if (until <= now) this.#until.delete(k);
    for (const k of this.#until.keys()) {
      if (this.#until.size <= this.max) break;
      this.#until.delete(k);
    }
  }

  /** Whether `key` is blocked at `now`; an expired entry is removed on the way. */
  has(key: string, now = Date.now()): boolean {
    const until = this.#until.get(key);
    if (until === undefined) return false;
    if (until > now) return true;
    this.#until.delete(key);
    return false;
  }
}
