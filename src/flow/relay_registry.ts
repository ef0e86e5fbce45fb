/**
 * The relay registry: which client a relay socket speaks for, shared between the main thread
 * (the relay connector, which binds each client-mode relay socket to a port of its own range
 * before connecting) and the queue Worker (the Diverter, which reads it when that socket's SYN
 * arrives on the OUTPUT hook).
 *
 * Why shared memory and not a message: the SYN is in the kernel's queue the moment `connect()`
 * runs, and the Worker may judge it before a posted message could be dispatched (it yields to
 * its event loop only between batches). A registration written into a SharedArrayBuffer BEFORE
 * `connect()` is visible to the Worker when the SYN arrives: the fields are written first, then
 * the generation is stored with `Atomics.store`; the reader loads the generation, reads the fields
 * and loads the generation again (a seqlock): a slot being rewritten reads as empty.
 *
 * Layout: one slot per port of the range `[first, last]`, `SLOT_WORDS` 32-bit words each:
 * generation (0: free), family, flags, client address (4 words), client port, server address
 * (4 words), server port. Lookup is `port - first`: O(1), no hash, no allocation.
 *
 * What it limits: the range is at most 4096 ports (one relay connection per port at a time: the
 * range bounds concurrent client-mode relay connections; the connector falls back to the
 * gateway's address when it is exhausted).
 *
 * Caution: lifetime. A lease must be released when its socket is closed; the Worker keeps its
 * own flow (with the generation) for the packets that follow the SYN, so a released or reused
 * slot never disturbs a connection that is still closing.
 */
import { formatIp, parseIp } from "../packet/ip_address.ts";
import { MAX_RELAY_PORTS } from "../config/relay_source.ts";

export { MAX_RELAY_PORTS };

/** 32-bit words per slot. */
export const SLOT_WORDS = 16;
/** Flag: keep the client's own port on the wire (the server's route to the client is proven). */
export const FLAG_KEEP_PORT = 1;

const GEN = 0;
const FAMILY = 1;
const FLAGS = 2;
const CLIENT = 3;
const CLIENT_PORT = 7;
const SERVER = 8;
const SERVER_PORT = 12;

function word(b: Uint8Array, o: number): number {
  return (b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3];
}
function putWord(b: Uint8Array, o: number, w: number): void {
  b[o] = w >>> 24;
  b[o + 1] = (w >>> 16) & 0xff;
  b[o + 2] = (w >>> 8) & 0xff;
  b[o + 3] = w & 0xff;
}

/** A registration as the Worker reads it (reused object: copy what you keep). */
export class RelayRegistration {
  /** Generation of the registration (never 0 for a valid one). */
  gen = 0;
  /** 4 or 6. */
  family: 4 | 6 = 4;
  /** FLAG_* bits. */
  flags = 0;
  /** Client address (first 4 or 16 bytes valid). */
  readonly client = new Uint8Array(16);
  /** Client TCP port (its connection to the server, as diverted). */
  clientPort = 0;
  /** Server address (first 4 or 16 bytes valid). */
  readonly server = new Uint8Array(16);
  /** Server TCP port. */
  serverPort = 0;
}

/** A registry that cannot be built, or a registration that cannot be written. */
export class RelayRegistryError extends Error {
  /** Creates the error; `name` is "RelayRegistryError". */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "RelayRegistryError";
  }
}

/** What the connector holds for one relay socket: its port; `release()` when the socket closed. */
export interface RelayLease {
  /** The local port to bind the relay socket to. */
  readonly port: number;
  /** The registration's generation. */
  readonly gen: number;
  /** Frees the port for another relay socket; safe to call twice. */
  release(): void;
}

/** The shared table of relay socket registrations. See the module comment. */
export class RelayRegistry {
  /** First port of the range. */
  readonly first: number;
  /** Last port of the range (inclusive). */
  readonly last: number;
  /** The shared words (post `buffer` to the Worker, which wraps it with `RelayRegistry.attach`). */
  readonly words: Int32Array;
  /** Main-thread side only: ports handed out and not yet released. */
  #leased: Uint8Array;
  #next = 0;
  #gen = 0;
  #leasedCount = 0;

  /** A new, empty registry for ports `first..last` (main thread). */
  constructor(first: number, last: number, words?: Int32Array) {
    if (
      !Number.isInteger(first) || !Number.isInteger(last) || first < 1 || last > 65535 ||
      last < first || last - first + 1 > MAX_RELAY_PORTS
    ) {
      throw new RelayRegistryError(
        `relay source ports must be a range within 1..65535 of at most ${MAX_RELAY_PORTS} ports, ` +
          `got ${first}-${last}`,
      );
    }
    this.first = first;
    this.last = last;
    const n = last - first + 1;
    if (words && words.length !== n * SLOT_WORDS) {
      throw new RelayRegistryError(
        `shared registry has ${words.length} words, want ${n * SLOT_WORDS}`,
      );
    }
    this.words = words ?? new Int32Array(new SharedArrayBuffer(n * SLOT_WORDS * 4));
    this.#leased = new Uint8Array(n);
  }

  /** The Worker's view of a registry created on the main thread. */
  static attach(first: number, last: number, words: Int32Array): RelayRegistry {
    return new RelayRegistry(first, last, words);
  }

  /** Ports in the range. */
  get size(): number {
    return this.last - this.first + 1;
  }

  /** Ports leased now (main thread). */
  get leased(): number {
    return this.#leasedCount;
  }

  /** Whether `port` is in the range (hot path). */
  inRange(port: number): boolean {
    return port >= this.first && port <= this.last;
  }

  /**
   * Leases a free port and registers `client` (ip:port) → `server` (ip:port) on it, before the
   * socket connects (main thread). `keepPort`: the relay leg may use the client's own port on the
   * wire. `skip`: ports the caller found busy (EADDRINUSE) in this attempt. Undefined when every
   * port is leased or the addresses are not of one family.
   */
  lease(
    client: { ip: string; port: number },
    server: { ip: string; port: number },
    keepPort: boolean,
    skip?: ReadonlySet<number>,
  ): RelayLease | undefined {
    const c = parseIp(client.ip);
    const s = parseIp(server.ip);
    if (!c || !s || c.length !== s.length) return undefined;
    const n = this.size;
    for (let tries = 0; tries < n; tries++) {
      const i = this.#next;
      this.#next = (this.#next + 1) % n;
      if (this.#leased[i] !== 0 || skip?.has(this.first + i)) continue;
      this.#leased[i] = 1;
      this.#leasedCount++;
      this.#gen = (this.#gen % 0x7ffffffe) + 1;
      const gen = this.#gen;
      this.#write(i, gen, c, client.port, s, server.port, keepPort ? FLAG_KEEP_PORT : 0);
      let released = false;
      return {
        port: this.first + i,
        gen,
        release: () => {
          if (released) return;
          released = true;
          // Only our own registration: never clear a later one on the same port.
          if (Atomics.load(this.words, i * SLOT_WORDS + GEN) === gen) {
            Atomics.store(this.words, i * SLOT_WORDS + GEN, 0);
          }
          this.#leased[i] = 0;
          this.#leasedCount--;
        },
      };
    }
    return undefined;
  }

  #write(
    i: number,
    gen: number,
    c: Uint8Array,
    clientPort: number,
    s: Uint8Array,
    serverPort: number,
    flags: number,
  ): void {
    const w = this.words;
    const o = i * SLOT_WORDS;
    Atomics.store(w, o + GEN, 0);
    w[o + FAMILY] = c.length === 4 ? 4 : 6;
    w[o + FLAGS] = flags;
    for (let k = 0; k < 4; k++) {
      w[o + CLIENT + k] = 4 * k < c.length ? word(c, 4 * k) : 0;
      w[o + SERVER + k] = 4 * k < s.length ? word(s, 4 * k) : 0;
    }
    w[o + CLIENT_PORT] = clientPort;
    w[o + SERVER_PORT] = serverPort;
    Atomics.store(w, o + GEN, gen);
  }

  /**
   * Reads the registration of `port` into `out` (Worker, hot path for SYNs only: no allocation).
   * False when the port is outside the range, free, or being rewritten.
   */
  read(port: number, out: RelayRegistration): boolean {
    if (!this.inRange(port)) return false;
    const w = this.words;
    const o = (port - this.first) * SLOT_WORDS;
    const gen = Atomics.load(w, o + GEN);
    if (gen === 0) return false;
    out.family = w[o + FAMILY] === 6 ? 6 : 4;
    out.flags = w[o + FLAGS];
    for (let k = 0; k < 4; k++) {
      putWord(out.client, 4 * k, w[o + CLIENT + k]);
      putWord(out.server, 4 * k, w[o + SERVER + k]);
    }
    out.clientPort = w[o + CLIENT_PORT];
    out.serverPort = w[o + SERVER_PORT];
    out.gen = gen;
    return Atomics.load(w, o + GEN) === gen;
  }

  /** The registration of `port` as text, for tests and diagnostics (allocates). */
  describe(port: number): { client: string; server: string; flags: number } | undefined {
    const r = new RelayRegistration();
    if (!this.read(port, r)) return undefined;
    const n = r.family === 4 ? 4 : 16;
    return {
      client: `${formatIp(r.client.subarray(0, n), 0, r.family)}:${r.clientPort}`,
      server: `${formatIp(r.server.subarray(0, n), 0, r.family)}:${r.serverPort}`,
      flags: r.flags,
    };
  }
}
