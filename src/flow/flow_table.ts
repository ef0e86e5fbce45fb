/**
 * The flow table: which client (address + port, per family) is talking to which original server
 * (address + port), for every diverted TCP connection. The diverter consults it for every
 * packet; the responder learns each connection's original destination from it (through the
 * FlowEvents the diverter emits). With `relay.source: client` the Diverter keeps a second
 * FlowTable of the same kind for SSG's own relay connections (key: the client address and the
 * port the relay leg shows on the wire; see diverter.ts), so the two never share a key space.
 *
 * Hot path, so:
 * - lookup is an open-addressing hash (linear probing, load ≤ 1/2) over a plain array of flows,
 *   keyed by a hash computed straight from the packet bytes; no string, no boxed number, no
 *   allocation per packet. Flows are compared field by field after the hash matches.
 * - expiry is amortised: flows sit on intrusive doubly-linked lists ordered by deadline (the open
 *   flows by last activity, most recent at the tail; the closing flows by close time), so finding
 *   what has expired looks only at list heads. `expire(now, budget)` removes at most `budget`
 *   flows per call; the diverter calls it with a small budget per packet, and the owner of the
 *   table should call `expire(now)` from a timer too, because an idle table sees no packets.
 *
 * Lifetimes (all in milliseconds of the caller's clock, `now`):
 * - handshake: a flow is *embryonic* from its SYN until the client's first ACK; without a packet
 *   for `synTimeoutMs` (default 20 s) it ends. A client whose handshake is that slow sends another
 *   SYN, which simply opens the flow again. Without this, spoofed SYNs would hold entries for the
 *   whole idle timeout;
 * - idle: no packet for `idleSeconds` (config `flows.idleSeconds`, longer than the SMTP timeouts);
 * - RST seen in either direction: `rstLingerMs` more (default 3 s), so segments already in flight
 *   are still rewritten and never reach the real server or leak the responder's address;
 * - FIN seen in both directions: `finLingerMs` more (default 10 s; TIME_WAIT-like, long enough for
 *   the last ACK and a few retransmitted FINs, RFC 9293 §3.6);
 * - a new SYN with the same client address and port replaces the flow (the client reused the
 *   port; see Diverter for retransmitted SYNs).
 *
 * Bounded: at most `max` flows (config `flows.max`). When the table is full, `add()` first expires
 * what is due, then (unless `evictEmbryonic` is false) evicts the least recently active embryonic
 * flow — the SYN-cache defence of BSD's syncache: a SYN flood then only churns half-open entries
 * and never displaces an established connection, and a real client's handshake (one round trip)
 * survives unless the flood sends `max` SYNs within that round trip. When every flow is
 * established, `add()` refuses; the diverter then drops the SYN (fail closed — the client
 * retries), and counts it.
 *
 * Alternatives rejected: a Map keyed by a formatted string (an allocation per packet); a Map
 * keyed by a number (IPv4 address × 65536 + port is not a small integer, so V8 boxes it per
 * lookup, and IPv6 keys do not fit at all); a heap of deadlines (an O(log n) update per packet,
 * where the list move is O(1)); a periodic full scan (O(n) stalls on the packet thread).
 *
 * Security: client addresses and ports are chosen by strangers (an IPv6 client controls 64
 * address bits), so the hash is keyed with a random per-table seed; an attacker cannot
 * precompute colliding keys to turn lookups into long probe runs.
 *
 * The Diverter's table of diverted client flows holds established flows only: their half-open
 * state lives in a SynCache (syn_cache.ts) and a Flow is added at the client's handshake ACK. The
 * embryonic machinery here serves the relay flows (SSG's own connections, bounded by the port
 * range) and any owner that adds at the SYN.
 *
 * Caution: lifetime. A removed Flow object is detached from the table; holding one is safe, but
 * it no longer changes — except a flow that ended embryonic by eviction or handshake timeout
 * (never established): its object is recycled for a later SYN (a bounded pool of POOL_MAX), so a
 * SYN flood allocates nothing per SYN that outlives a young-generation GC. Measured (issue 8):
 * 400 k spoofed SYNs through a 65,536-flow table made ~800 B of old-generation garbage each and
 * grew the packet Worker's heap to ~300 MB and the process RSS by ~400 MB for good. Do not keep
 * a half-open flow past its `onEnd`.
 */
import { formatIp, parseIp } from "../packet/ip_address.ts";
import { hashClient, randomSeed, word } from "./flow_hash.ts";

/** Why a flow ended. */
export type FlowEndReason =
  | "rst"
  | "fin"
  | "idle"
  | "handshake"
  | "evicted"
  | "replaced"
  | "removed";

/** Which list a flow is on. */
const LIST_NONE = -1;
const LIST_OPEN = 0;
const LIST_FIN = 1;
const LIST_RST = 2;
const LIST_SYN = 3;
/** Most recycled Flow objects kept for reuse (see the module's Caution). */
const POOL_MAX = 4096;

/** One diverted TCP connection. Fields are read-only to everything but the FlowTable. */
export class Flow {
  /** Sequential id, unique per table, for logs. */
  id: number;
  /** 4 or 6. */
  family: 4 | 6;
  /** Client address (a copy: 4 or 16 bytes). */
  client: Uint8Array;
  /** Client TCP port. */
  clientPort: number;
  /** Original server address the client connected to (a copy). */
  server: Uint8Array;
  /** Original server TCP port. */
  serverPort: number;
  /** When the flow was created (its SYN). */
  created: number;
  /** Last packet seen, either direction. */
  lastSeen: number;
  /** Initial sequence number of the client's SYN (to tell a retransmitted SYN from a new one). */
  synSeq: number;
  /** FIN seen from the client. */
  finFromClient = false;
  /** FIN seen from the responder. */
  finFromResponder = false;
  /** RST seen in either direction. */
  rstSeen = false;
  /** The client has acknowledged the handshake (its first packet with ACK after the SYN). */
  established = false;
  /** When a closing flow will be removed; 0 while the flow is open. */
  closeAt = 0;
  /**
   * Relay flows only (a second FlowTable of the Diverter, see diverter.ts): the gateway's own
   * address of the relay socket (the packets' real source before the rewrite), its port and the
   * registration generation. Undefined / 0 for diverted client flows.
   */
  local: Uint8Array | undefined = undefined;
  /** Relay flows only: the relay socket's local port. */
  localPort = 0;
  /** Relay flows only: the generation of the registration the flow was made from. */
  gen = 0;

  /** @internal hash of the key */
  _hash = 0;
  /** @internal slot in the hash array, -1 when detached */
  _slot = -1;
  /** @internal address as 32-bit words, for cheap comparison */
  _w0 = 0;
  /** @internal */
  _w1 = 0;
  /** @internal */
  _w2 = 0;
  /** @internal */
  _w3 = 0;
  /** @internal clientIp, formatted on first use */
  _clientIp: string | undefined = undefined;
  /** @internal serverIp, formatted on first use */
  _serverIp: string | undefined = undefined;
  /** @internal list links */
  _prev: Flow | undefined = undefined;
  /** @internal */
  _next: Flow | undefined = undefined;
  /** @internal which list */
  _list = LIST_NONE;

  /** Called by FlowTable only: the address arrays must already be copies; `now` is in ms. */
  constructor(
    id: number,
    family: 4 | 6,
    client: Uint8Array,
    clientPort: number,
    server: Uint8Array,
    serverPort: number,
    synSeq: number,
    now: number,
  ) {
    this.id = id;
    this.family = family;
    this.client = client;
    this.clientPort = clientPort;
    this.server = server;
    this.serverPort = serverPort;
    this.created = now;
    this.lastSeen = now;
    this.synSeq = synSeq;
  }

  /** Client address as text (formatted on first use: a half-open flow never needs it). */
  get clientIp(): string {
    return this._clientIp ??= formatIp(this.client, 0, this.family);
  }
  /** Server address as text (formatted on first use). */
  get serverIp(): string {
    return this._serverIp ??= formatIp(this.server, 0, this.family);
  }

  /** @internal FlowTable only: makes a recycled (detached, never established) flow a new one. */
  _reuse(
    id: number,
    family: 4 | 6,
    clientBytes: Uint8Array,
    clientOffset: number,
    clientPort: number,
    serverBytes: Uint8Array,
    serverOffset: number,
    serverPort: number,
    synSeq: number,
    now: number,
  ): void {
    const n = family === 4 ? 4 : 16;
    if (this.client.length !== n) this.client = new Uint8Array(n);
    if (this.server.length !== n) this.server = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      this.client[i] = clientBytes[clientOffset + i];
      this.server[i] = serverBytes[serverOffset + i];
    }
    this.id = id;
    this.family = family;
    this.clientPort = clientPort;
    this.serverPort = serverPort;
    this.created = now;
    this.lastSeen = now;
    this.synSeq = synSeq;
    this.finFromClient = false;
    this.finFromResponder = false;
    this.rstSeen = false;
    this.established = false;
    this.closeAt = 0;
    this.local = undefined;
    this.localPort = 0;
    this.gen = 0;
    this._clientIp = undefined;
    this._serverIp = undefined;
    this._w1 = 0;
    this._w2 = 0;
    this._w3 = 0;
  }

  /** Whether the flow is closing (RST seen, or FIN both ways) and will be removed at closeAt. */
  get closing(): boolean {
    return this.closeAt !== 0;
  }
}

/** Options of a FlowTable. */
export interface FlowTableOptions {
  /** Most concurrent flows (config `flows.max`); at least 1. */
  max: number;
  /** Idle expiry in seconds (config `flows.idleSeconds`); more than 0. */
  idleSeconds: number;
  /** Linger after an RST, ms (default 3000). */
  rstLingerMs?: number;
  /** Lifetime of an embryonic flow without a packet, ms (default 20000, at most the idle time). */
  synTimeoutMs?: number;
  /** When full, evict the least recently active embryonic flow for a new one (default true). */
  evictEmbryonic?: boolean;
  /** Linger after FIN in both directions, ms (default 10000). */
  finLingerMs?: number;
  /** Hash seed; random by default. Set only in tests that need reproducible layouts. */
  seed?: number;
}

/** Counters of a FlowTable. */
export interface FlowTableStats {
  /** Flows in the table now. */
  active: number;
  /** Embryonic flows now (handshake not completed). */
  halfOpen: number;
  /** Flows created since start. */
  created: number;
  /** Flows refused because the table was full. */
  full: number;
  /** Flows ended, by reason. */
  endedRst: number;
  /** Ended after FIN in both directions and the linger time. */
  endedFin: number;
  /** Ended after `idleSeconds` without a packet. */
  endedIdle: number;
  /** Ended because a new flow from the same client address and port replaced it. */
  endedReplaced: number;
  /** Ended by an explicit `remove`. */
  endedRemoved: number;
  /** Ended as embryonic (handshake not completed) after `synTimeoutMs` without a packet. */
  endedHandshake: number;
  /** Embryonic flows evicted from a full table for a new one. */
  endedEvicted: number;
}

class FlowList {
  head: Flow | undefined = undefined;
  tail: Flow | undefined = undefined;
  size = 0;
  constructor(readonly id: number) {}
  push(f: Flow): void {
    this.size++;
    f._list = this.id;
    f._prev = this.tail;
    f._next = undefined;
    if (this.tail) this.tail._next = f;
    else this.head = f;
    this.tail = f;
  }
  unlink(f: Flow): void {
    this.size--;
    if (f._prev) f._prev._next = f._next;
    else this.head = f._next;
    if (f._next) f._next._prev = f._prev;
    else this.tail = f._prev;
    f._prev = undefined;
    f._next = undefined;
    f._list = LIST_NONE;
  }
}

/** Thrown for options a FlowTable cannot work with. */
export class FlowTableError extends Error {
  /** Creates the error; `name` is "FlowTableError". */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "FlowTableError";
  }
}

/** Client address+port → Flow, bounded, with amortised expiry. See the module comment. */
export class FlowTable {
  /** Most concurrent flows. */
  readonly max: number;
  /** Idle expiry, ms. */
  readonly idleMs: number;
  /** Linger after RST, ms. */
  readonly rstLingerMs: number;
  /** Lifetime of an embryonic flow without a packet, ms. */
  readonly synTimeoutMs: number;
  /** Whether a full table evicts an embryonic flow for a new one. */
  readonly evictEmbryonic: boolean;
  /** Linger after FIN both ways, ms. */
  readonly finLingerMs: number;
  /**
   * Called for every flow that leaves the table (expiry, replacement, `remove`), after it left.
   * The Diverter sets this to emit "end" FlowEvents.
   */
  onEnd: ((flow: Flow, reason: FlowEndReason) => void) | undefined = undefined;

  #slots: (Flow | undefined)[];
  #mask: number;
  #seed: number;
  #size = 0;
  #nextId = 1;
  #open = new FlowList(LIST_OPEN);
  #fin = new FlowList(LIST_FIN);
  #rst = new FlowList(LIST_RST);
  #syn = new FlowList(LIST_SYN);
  /** Recycled never-established flows (see the module's Caution). */
  #pool: Flow[] = [];
  #created = 0;
  #full = 0;
  #ended = { rst: 0, fin: 0, idle: 0, handshake: 0, evicted: 0, replaced: 0, removed: 0 };

  /** Validates `opts` (throws FlowTableError) and allocates an empty table. */
  constructor(opts: FlowTableOptions) {
    if (!Number.isInteger(opts.max) || opts.max < 1 || opts.max > 1 << 24) {
      throw new FlowTableError(`flows.max must be an integer 1..16777216, got ${opts.max}`);
    }
    if (!(opts.idleSeconds > 0)) {
      throw new FlowTableError(`flows.idleSeconds must be more than 0, got ${opts.idleSeconds}`);
    }
    this.max = opts.max;
    this.idleMs = opts.idleSeconds * 1000;
    this.rstLingerMs = opts.rstLingerMs ?? 3000;
    // Never longer than the idle timeout: an embryonic flow must not outlive an idle open one.
    this.synTimeoutMs = opts.synTimeoutMs ?? Math.min(20000, this.idleMs);
    this.evictEmbryonic = opts.evictEmbryonic ?? true;
    this.finLingerMs = opts.finLingerMs ?? 10000;
    let cap = 16;
    while (cap < opts.max * 2) cap *= 2;
    this.#slots = new Array<Flow | undefined>(cap).fill(undefined);
    this.#mask = cap - 1;
    this.#seed = opts.seed ?? randomSeed();
  }

  /** Flows in the table. */
  get size(): number {
    return this.#size;
  }

  #hash(family: 4 | 6, b: Uint8Array, o: number, port: number): number {
    return hashClient(this.#seed, family, b, o, port);
  }

  /**
   * The flow of the client whose address (of `family`) is at `bytes[offset..]` and whose port is
   * `port`, or undefined. Hot path: no allocation.
   */
  find(family: 4 | 6, bytes: Uint8Array, offset: number, port: number): Flow | undefined {
    const h = this.#hash(family, bytes, offset, port);
    const slots = this.#slots;
    const mask = this.#mask;
    for (let i = h & mask;; i = (i + 1) & mask) {
      const f = slots[i];
      if (f === undefined) return undefined;
      if (
        f._hash === h && f.clientPort === port && f.family === family &&
        f._w0 === word(bytes, offset) &&
        (family === 4 ||
          (f._w1 === word(bytes, offset + 4) && f._w2 === word(bytes, offset + 8) &&
            f._w3 === word(bytes, offset + 12)))
      ) {
        return f;
      }
    }
  }

  /**
   * The flow of a client given as address text and port, or undefined (also for text that is
   * not an address). Parses the text: for tests and diagnostics, not the hot path.
   */
  lookup(clientIp: string, clientPort: number): Flow | undefined {
    const bytes = parseIp(clientIp);
    if (!bytes) return undefined;
    return this.find(bytes.length === 4 ? 4 : 6, bytes, 0, clientPort);
  }

  /**
   * Creates the flow for a client (address at `clientBytes[clientOffset..]`) to a server
   * (address at `serverBytes[serverOffset..]`). An existing flow with the same client address
   * and port is removed first ("replaced"). Returns undefined, and counts it, when the table
   * is full even after expiring what is due at `now`.
   */
  add(
    family: 4 | 6,
    clientBytes: Uint8Array,
    clientOffset: number,
    clientPort: number,
    serverBytes: Uint8Array,
    serverOffset: number,
    serverPort: number,
    synSeq: number,
    now: number,
  ): Flow | undefined {
    const old = this.find(family, clientBytes, clientOffset, clientPort);
    if (old) this.remove(old, "replaced");
    if (this.#size >= this.max) {
      // Flows past their deadline must not keep a new client out; clear a few.
      this.expire(now, 64);
      if (this.#size >= this.max && this.evictEmbryonic && this.#syn.head !== undefined) {
        this.remove(this.#syn.head, "evicted");
      }
      if (this.#size >= this.max) {
        this.#full++;
        return undefined;
      }
    }
    const n = family === 4 ? 4 : 16;
    let f = this.#pool.pop();
    if (f !== undefined) {
      f._reuse(
        this.#nextId++,
        family,
        clientBytes,
        clientOffset,
        clientPort,
        serverBytes,
        serverOffset,
        serverPort,
        synSeq >>> 0,
        now,
      );
    } else {
      f = new Flow(
        this.#nextId++,
        family,
        clientBytes.slice(clientOffset, clientOffset + n),
        clientPort,
        serverBytes.slice(serverOffset, serverOffset + n),
        serverPort,
        synSeq >>> 0,
        now,
      );
    }
    f._w0 = word(f.client, 0);
    if (family === 6) {
      f._w1 = word(f.client, 4);
      f._w2 = word(f.client, 8);
      f._w3 = word(f.client, 12);
    }
    f._hash = this.#hash(family, f.client, 0, clientPort);
    const slots = this.#slots;
    const mask = this.#mask;
    let i = f._hash & mask;
    while (slots[i] !== undefined) i = (i + 1) & mask;
    slots[i] = f;
    f._slot = i;
    this.#size++;
    this.#created++;
    this.#syn.push(f);
    return f;
  }

  /** Records activity at `now`: moves the flow to the tail of its idle order (open or embryonic). */
  touch(flow: Flow, now: number): void {
    flow.lastSeen = now;
    const list = flow._list === LIST_OPEN
      ? this.#open
      : flow._list === LIST_SYN
      ? this.#syn
      : undefined;
    if (list !== undefined && list.tail !== flow) {
      list.unlink(flow);
      list.push(flow);
    }
  }

  /** Records the client's acknowledgement of the handshake: the flow is no longer embryonic. */
  noteEstablished(flow: Flow, now: number): void {
    flow.established = true;
    flow.lastSeen = now;
    if (flow._list === LIST_SYN) {
      this.#syn.unlink(flow);
      this.#open.push(flow);
    }
  }

  #listOf(flow: Flow): FlowList | undefined {
    switch (flow._list) {
      case LIST_OPEN:
        return this.#open;
      case LIST_SYN:
        return this.#syn;
      case LIST_FIN:
        return this.#fin;
      case LIST_RST:
        return this.#rst;
    }
    return undefined;
  }

  /** Records a FIN from the client or the responder; after both, the flow lingers then ends. */
  noteFin(flow: Flow, fromClient: boolean, now: number): void {
    if (fromClient) flow.finFromClient = true;
    else flow.finFromResponder = true;
    if (
      flow.finFromClient && flow.finFromResponder &&
      (flow._list === LIST_OPEN || flow._list === LIST_SYN)
    ) {
      this.#listOf(flow)!.unlink(flow);
      flow.closeAt = now + this.finLingerMs;
      this.#fin.push(flow);
    }
  }

  /** Records an RST in either direction: the flow lingers briefly, then ends. */
  noteRst(flow: Flow, now: number): void {
    flow.rstSeen = true;
    if (flow._list !== LIST_RST && flow._list !== LIST_NONE) {
      const closeAt = now + this.rstLingerMs;
      if (flow._list === LIST_FIN && flow.closeAt <= closeAt) return; // already ends sooner
      this.#listOf(flow)!.unlink(flow);
      flow.closeAt = closeAt;
      this.#rst.push(flow);
    }
  }

  /** Removes a flow now (no-op when it is no longer in the table) and reports it to `onEnd`. */
  remove(flow: Flow, reason: FlowEndReason = "removed"): void {
    if (flow._slot < 0) return;
    this.#listOf(flow)?.unlink(flow);
    this.#deleteSlot(flow._slot);
    flow._slot = -1;
    this.#size--;
    this.#ended[reason]++;
    this.onEnd?.(flow, reason);
    if (
      !flow.established && (reason === "evicted" || reason === "handshake") &&
      this.#pool.length < POOL_MAX
    ) {
      this.#pool.push(flow);
    }
  }

  // Linear probing deletion by backward shift (Knuth 6.4, Algorithm R): no tombstones, so probe
  // runs never grow with churn.
  #deleteSlot(i: number): void {
    const slots = this.#slots;
    const mask = this.#mask;
    slots[i] = undefined;
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      const f = slots[j];
      if (f === undefined) return;
      const k = f._hash & mask;
      // Move f back to the hole at i unless its home k lies cyclically in (i, j].
      const inRange = i <= j ? (i < k && k <= j) : (i < k || k <= j);
      if (!inRange) {
        slots[i] = f;
        f._slot = i;
        slots[j] = undefined;
        i = j;
      }
    }
  }

  /**
   * Removes flows whose time has come at `now`: closing flows past `closeAt`, embryonic flows
   * quiet for `synTimeoutMs`, open flows idle for `idleSeconds`. At most `budget` removals per call. Returns how many were removed.
   */
  expire(now: number, budget = Infinity): number {
    let n = 0;
    while (n < budget) {
      const f = this.#rst.head;
      if (f === undefined || f.closeAt > now) break;
      this.remove(f, "rst");
      n++;
    }
    while (n < budget) {
      const f = this.#fin.head;
      if (f === undefined || f.closeAt > now) break;
      this.remove(f, "fin");
      n++;
    }
    const synBefore = now - this.synTimeoutMs;
    while (n < budget) {
      const f = this.#syn.head;
      if (f === undefined || f.lastSeen > synBefore) break;
      this.remove(f, "handshake");
      n++;
    }
    const idleBefore = now - this.idleMs;
    while (n < budget) {
      const f = this.#open.head;
      if (f === undefined || f.lastSeen > idleBefore) break;
      this.remove(f, "idle");
      n++;
    }
    return n;
  }

  /** Every flow in the table (any order). Allocates: not for the hot path. */
  *values(): IterableIterator<Flow> {
    for (const f of this.#slots) if (f !== undefined) yield f;
  }

  /** Removes every flow (reason "removed"), e.g. at shutdown. */
  clear(): void {
    for (const f of [...this.values()]) this.remove(f, "removed");
  }

  /** Counters. */
  stats(): FlowTableStats {
    return {
      active: this.#size,
      halfOpen: this.#syn.size,
      created: this.#created,
      full: this.#full,
      endedRst: this.#ended.rst,
      endedFin: this.#ended.fin,
      endedIdle: this.#ended.idle,
      endedReplaced: this.#ended.replaced,
      endedRemoved: this.#ended.removed,
      endedHandshake: this.#ended.handshake,
      endedEvicted: this.#ended.evicted,
    };
  }

  /** Longest probe run in the hash array (for tests and diagnostics; scans the whole array). */
  maxProbeLength(): number {
    let worst = 0;
    for (const f of this.#slots) {
      if (f === undefined) continue;
      const d = (f._slot - (f._hash & this.#mask) + this.#slots.length) & this.#mask;
      if (d + 1 > worst) worst = d + 1;
    }
    return worst;
  }
}
