/**
 * The SYN cache: the half-open (embryonic) diverted connections, from the client's SYN until its
 * handshake ACK, in a FIXED block of typed arrays allocated once — no object, no Map entry, no
 * allocation per SYN. A diverted connection becomes a Flow (FlowTable) only when the client
 * acknowledges the handshake; until then all the packet path needs is "which server did this
 * client address and port ask for", and that is what an entry holds (BSD's syncache, sized
 * and compacted).
 *
 * Why (issue 8): with half-open flows as Flow objects in the FlowTable, a spoofed SYN flood filled
 * the table with objects, the packet Worker's heap grew to hold them and its RSS (~+140 MB) was
 * never given back. Here the memory of the half-open state is the same before, during and after a
 * flood: `capacity` × ~90 bytes (6 MB for 65,536 entries), allocated at start.
 *
 * Bound and order: a ring of `capacity` slots written in SYN order. A new SYN takes the next slot;
 * when that slot still holds a live entry it is evicted (the OLDEST half-open entry: under a flood
 * of R SYNs/s a real client's entry lives capacity / R seconds — 0.6 s for 65,536 at 100 k/s — far
 * longer than a handshake round trip; a client slower than that retransmits its SYN, which makes a
 * new entry). Entries quiet for `synTimeoutMs` are treated as gone and reclaimed by `expire`.
 * A retransmitted SYN does not move its entry (so a flood cannot keep entries alive either).
 *
 * Lookup: open addressing (linear probing, load ≤ 1/2) over an Int32Array of slot numbers, keyed
 * by the client address and port with a random per-cache seed (see flow_hash.ts); deletion by
 * backward shift, so probe runs never grow with churn.
 *
 * Caution: a slot number is valid only until the next `insert` (which may evict it) or `remove`.
 */
import { hashClient, randomSeed, word } from "./flow_hash.ts";

/** Options of a SynCache. */
export interface SynCacheOptions {
  /** Most half-open entries (a hard bound; the memory is allocated at construction). */
  capacity: number;
  /** An entry older than this is gone, ms (the FlowTable's `synTimeoutMs`, default 20 s). */
  synTimeoutMs?: number;
  /** Hash seed; random by default (tests only). */
  seed?: number;
}

/** Counters of a SynCache. */
export interface SynCacheStats {
  /** Live entries now (an upper bound: entries past their timeout count until reclaimed). */
  size: number;
  /** Entries inserted since start (one per diverted SYN that was not a retransmission). */
  inserted: number;
  /** Live entries overwritten by a newer SYN because the cache was full. */
  evicted: number;
  /** Entries that reached `synTimeoutMs` without a handshake ACK. */
  expired: number;
  /** Entries removed on purpose (handshake completed, reset, replaced). */
  removed: number;
}

const ADDR = 32; // client address (16) + server address (16) per slot
const EMPTY = -1;

/** Client address+port → requested server, for half-open connections. See the module comment. */
export class SynCache {
  /** Most entries. */
  readonly capacity: number;
  /** Lifetime of an entry, ms. */
  readonly synTimeoutMs: number;

  #seed: number;
  /** Per slot: client address at [s*32, +16), server address at [s*32+16, +16). */
  #addr: Uint8Array;
  /** Per slot: hash of the key; meaningful only while `#pos[s]` ≥ 0. */
  #hash: Int32Array;
  /** Per slot: client port | family << 16. */
  #key: Int32Array;
  /** Per slot: server port. */
  #serverPort: Int32Array;
  /** Per slot: the client's SYN sequence number (as int32). */
  #seq: Int32Array;
  /** Per slot: time of the SYN, ms. */
  #time: Float64Array;
  /** Per slot: its position in #index, EMPTY when the slot is free. */
  #pos: Int32Array;
  /** Hash index: slot numbers, EMPTY for a free position. */
  #index: Int32Array;
  #mask: number;
  /** The ring's next slot to write (the oldest entry when the ring is full). */
  #next = 0;
  /** Slots from #next onward already known free (so expiry never rescans them). */
  #scanned = 0;
  #size = 0;
  #inserted = 0;
  #evicted = 0;
  #expired = 0;
  #removed = 0;

  /** Allocates the whole cache; throws RangeError for a capacity outside 1..16,777,216. */
  constructor(opts: SynCacheOptions) {
    const n = opts.capacity;
    if (!Number.isInteger(n) || n < 1 || n > 1 << 24) {
      throw new RangeError(`SynCache capacity must be an integer 1..16777216, got ${n}`);
    }
    this.capacity = n;
    this.synTimeoutMs = opts.synTimeoutMs ?? 20_000;
    this.#seed = opts.seed ?? randomSeed();
    this.#addr = new Uint8Array(n * ADDR);
    this.#hash = new Int32Array(n);
    this.#key = new Int32Array(n);
    this.#serverPort = new Int32Array(n);
    this.#seq = new Int32Array(n);
    this.#time = new Float64Array(n);
    this.#pos = new Int32Array(n).fill(EMPTY);
    let cap = 16;
    while (cap < n * 2) cap *= 2;
    this.#index = new Int32Array(cap).fill(EMPTY);
    this.#mask = cap - 1;
    this.#scanned = n;
  }

  /** Entries held (including any past their timeout not yet reclaimed). */
  get size(): number {
    return this.#size;
  }

  /** Bytes allocated for the cache (fixed at construction). */
  get bytes(): number {
    return this.#addr.byteLength + this.#hash.byteLength * 5 + this.#time.byteLength +
      this.#index.byteLength;
  }

  /**
   * The slot of the live entry for the client (address of `family` at `bytes[offset..]`, `port`)
   * at `now`, or -1. An entry past its timeout is reclaimed and not returned. Hot path.
   */
  find(family: 4 | 6, bytes: Uint8Array, offset: number, port: number, now: number): number {
    const h = hashClient(this.#seed, family, bytes, offset, port);
    const index = this.#index;
    const mask = this.#mask;
    const key = port | (family << 16);
    const n = family === 4 ? 4 : 16;
    for (let i = h & mask;; i = (i + 1) & mask) {
      const s = index[i];
      if (s === EMPTY) return -1;
      if (this.#hash[s] !== h || this.#key[s] !== key) continue;
      const a = s * ADDR;
      let same = true;
      for (let k = 0; k < n; k += 4) {
        if (word(this.#addr, a + k) !== word(bytes, offset + k)) {
          same = false;
          break;
        }
      }
      if (!same) continue;
      if (now - this.#time[s] >= this.synTimeoutMs) {
        this.#expired++;
        this.#free(s);
        return -1;
      }
      return s;
    }
  }

  /**
   * Records a SYN: client (address of `family` at `clientBytes[clientOffset..]`, `clientPort`)
   * asked for the server at `serverBytes[serverOffset..]`:`serverPort`. An entry for the same
   * client is replaced. Returns the new slot. Never fails: a full cache evicts its oldest entry.
   */
  insert(
    family: 4 | 6,
    clientBytes: Uint8Array,
    clientOffset: number,
    clientPort: number,
    serverBytes: Uint8Array,
    serverOffset: number,
    serverPort: number,
    seq: number,
    now: number,
  ): number {
    const old = this.find(family, clientBytes, clientOffset, clientPort, now);
    if (old >= 0) this.remove(old);
    const s = this.#next;
    this.#next = s + 1 === this.capacity ? 0 : s + 1;
    if (this.#scanned > 0) this.#scanned--;
    if (this.#pos[s] !== EMPTY) {
      if (now - this.#time[s] >= this.synTimeoutMs) this.#expired++;
      else this.#evicted++;
      this.#free(s);
    }
    const n = family === 4 ? 4 : 16;
    const a = s * ADDR;
    const addr = this.#addr;
    for (let i = 0; i < n; i++) {
      addr[a + i] = clientBytes[clientOffset + i];
      addr[a + 16 + i] = serverBytes[serverOffset + i];
    }
    const h = hashClient(this.#seed, family, clientBytes, clientOffset, clientPort);
    this.#hash[s] = h;
    this.#key[s] = clientPort | (family << 16);
    this.#serverPort[s] = serverPort;
    this.#seq[s] = seq | 0;
    this.#time[s] = now;
    const index = this.#index;
    const mask = this.#mask;
    let i = h & mask;
    while (index[i] !== EMPTY) i = (i + 1) & mask;
    index[i] = s;
    this.#pos[s] = i;
    this.#size++;
    this.#inserted++;
    return s;
  }

  /** Removes the entry in slot `s` (no-op for a free slot). */
  remove(s: number): void {
    if (this.#pos[s] === EMPTY) return;
    this.#removed++;
    this.#free(s);
  }

  /** The server port asked for by the entry in slot `s`. */
  serverPort(s: number): number {
    return this.#serverPort[s];
  }
  /** The client's SYN sequence number (uint32) of the entry in slot `s`. */
  seq(s: number): number {
    return this.#seq[s] >>> 0;
  }
  /** The family (4 or 6) of the entry in slot `s`. */
  family(s: number): 4 | 6 {
    return (this.#key[s] >>> 16) === 6 ? 6 : 4;
  }
  /** The bytes holding every server address; slot `s`'s is at `serverOffset(s)`. */
  get addresses(): Uint8Array {
    return this.#addr;
  }
  /** Offset of slot `s`'s server address in `addresses`. */
  serverOffset(s: number): number {
    return s * ADDR + 16;
  }

  /** Whether slot `s` asked for the server whose address (`n` bytes) is at `b[o..]` and `port`. */
  sameServer(s: number, b: Uint8Array, o: number, n: number, port: number): boolean {
    if (this.#serverPort[s] !== port) return false;
    const a = s * ADDR + 16;
    const addr = this.#addr;
    for (let i = 0; i < n; i++) if (addr[a + i] !== b[o + i]) return false;
    return true;
  }

  /**
   * Reclaims entries past their timeout at `now`, oldest first, looking at `budget` slots at most.
   * Returns how many were reclaimed. Call from a timer too: an idle cache sees no packets.
   */
  expire(now: number, budget = Infinity): number {
    let n = 0;
    const cap = this.capacity;
    const before = now - this.synTimeoutMs;
    for (let steps = 0; steps < budget && this.#scanned < cap && this.#size > 0; steps++) {
      let s = this.#next + this.#scanned;
      if (s >= cap) s -= cap;
      if (this.#pos[s] !== EMPTY) {
        if (this.#time[s] > before) break;
        this.#expired++;
        this.#free(s);
        n++;
      }
      this.#scanned++;
    }
    if (this.#size === 0) this.#scanned = cap;
    return n;
  }

  /** Counters. */
  stats(): SynCacheStats {
    return {
      size: this.#size,
      inserted: this.#inserted,
      evicted: this.#evicted,
      expired: this.#expired,
      removed: this.#removed,
    };
  }

  // Frees slot s and deletes it from the index by backward shift (Knuth 6.4, Algorithm R).
  #free(s: number): void {
    const index = this.#index;
    const mask = this.#mask;
    let i = this.#pos[s];
    this.#pos[s] = EMPTY;
    this.#size--;
    index[i] = EMPTY;
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      const t = index[j];
      if (t === EMPTY) return;
      const k = this.#hash[t] & mask;
      const inRange = i <= j ? (i < k && k <= j) : (i < k || k <= j);
      if (!inRange) {
        index[i] = t;
        this.#pos[t] = i;
        index[j] = EMPTY;
        i = j;
      }
    }
  }
}
