/**
 * SSG's memory across messages, in one embedded SQLite database (`node:sqlite`'s
 * `DatabaseSync`): sliding-window counters, dynamic blacklist/allowlist entries with expiry, and
 * bulk fingerprints with the servers and recipients each reached. It survives restarts, so a
 * blacklisted client stays blocked after `ssg run` is restarted (main re-applies
 * `activeClientBlocks()` at start).
 *
 * Shape:
 * - `events(kind, key, at)`: one row per counted event; a count is `COUNT(*)` over the window,
 *   so the window slides exactly (no buckets whose edges a sender can time).
 * - `entries(list, key, value, until, rule, added)`: dynamic list entries; expired rows are
 *   ignored by every read at once and deleted a few at a time on later writes.
 * - `greylist(triplet, net, first, passed, until)` and `greylist_nets(net, passed, until)`: the
 *   greylisting memory (`policy/greylist.ts` holds the logic; new tables, no schema change for
 *   an older file: `CREATE TABLE IF NOT EXISTS` adds them).
 * - `bulk_clusters(id, sig, first, last)`, `bulk_bands(band, cluster)`, `bulk_hits(cluster,
 *   kind, value, at)`: content clusters found through MinHash LSH band keys
 *   (`bulk_fingerprint.ts`), each with the distinct servers (kind 0) and recipients (kind 1)
 *   it reached and when each was last reached.
 *
 * Bounds: every table holds at most `maxRows` rows; past it the oldest (or soonest expiring)
 * are evicted in small batches, so a flood of distinct senders cannot grow the file without end.
 * Rows older than the longest window in use (`retain()`) are purged incrementally.
 *
 * Durability and concurrency: WAL journal, `synchronous=NORMAL` (a power cut may lose the last
 * few commits, never the database), and `locking_mode=EXCLUSIVE`: one process — one writer —
 * owns the file; a second `ssg run` on the same file fails at start with a clear message
 * instead of two gateways fighting over it. All calls are synchronous and short (index probes);
 * `:memory:` gives a private throw-away store (tests, `ssg explain`).
 *
 * Group commit (issue 9: one commit per message was ~40–90 µs of main-thread time): the
 * per-message heuristics — bulk observations (`observeBulk`) and threshold counter events
 * (`addEvent`, `resetEvents`) — join one open transaction that is committed at most
 * `GROUP_COMMIT_MS` after its first write, after `GROUP_COMMIT_WRITES` writes, at the next fact
 * written, and by `close()`. Facts — dynamic blacklist/allowlist entries (`addEntry`,
 * `removeEntry`) and greylist rows — commit at once, with whatever is pending. So a clean stop
 * loses nothing; a crash of the process (kill -9, out of memory) loses at most the last
 * `GROUP_COMMIT_MS` of bulk and counter observations, never a list entry: a campaign's reach or
 * a sender's count is then a few copies lower, which the thresholds' margins absorb. A grouped
 * commit that fails in the background is rolled back (those observations are lost) and
 * reported by the next grouped write, which throws (and is itself skipped); facts are written
 * as usual. `:memory:` stores commit every write (nothing to lose; no timer left behind).
 *
 * Bulk look-ups: the cluster an exact copy of its first message joins (same signature:
 * similarity 1, so no cluster can be closer) is remembered in a small in-memory map keyed by
 * the first band key (`BULK_MEMO_SIZE` clusters, the most recently created or matched; a hit
 * counts only if the whole signature is equal), so repeated copies skip the band-candidate
 * query. It is a cache of the database: entries go with their cluster (drop, eviction, expiry)
 * and the whole map on any failed write or retention change.
 *
 * What it trusts: keys and values are attacker-influenced strings (sender addresses): they are
 * only ever bound as SQL parameters, never spliced into SQL text, and cut to `MAX_KEY_LENGTH`.
 */
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { dirname } from "node:path";
import {
  BANDS,
  type Fingerprint,
  SAME_CONTENT,
  SIGNATURE_SIZE,
  similarity,
} from "./bulk_fingerprint.ts";
import type { BlacklistKey } from "../policy/verdict.ts";

/** Default bound on the rows of each table. */
export const DEFAULT_MAX_ROWS = 100_000;
/** Longest key or value stored, in characters (an SMTP path is at most 256 octets). */
export const MAX_KEY_LENGTH = 512;
/** Expired rows deleted per write, at most (incremental purge). */
export const PURGE_BATCH = 200;
/** Least time between two incremental purges, in ms. */
export const PURGE_INTERVAL_MS = 1000;
/** Longest time a grouped (heuristic) write waits for its commit, in ms. */
export const GROUP_COMMIT_MS = 100;
/** Most grouped writes in one transaction before it is committed. */
export const GROUP_COMMIT_WRITES = 256;
/** Clusters whose exact signature is remembered in memory (see the module header). */
export const BULK_MEMO_SIZE = 1024;
/** Schema version written in `meta`. */
export const SCHEMA_VERSION = 1;

/** The state store could not be opened or used. */
export class StateError extends Error {
  /** The error class name, "StateError". */
  override name = "StateError";
  /** Creates the error; `options.cause` is kept as `cause`. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/** Which dynamic list. */
export type ListName = "blacklist" | "allowlist";

/** A dynamic list entry. */
export interface ListEntry {
  /** Which list the entry is on. */
  list: ListName;
  /** What `value` is: a client IP, a sender address or a sender domain. */
  key: BlacklistKey;
  /** Canonical IP, or lower-case address/domain. */
  value: string;
  /** Expiry, ms since the epoch. */
  untilMs: number;
  /** The rule, threshold or step that added it. */
  rule: string;
  /** When it was added, ms since the epoch. */
  addedMs: number;
}

/** One greylist triplet as stored (times in ms since the epoch). */
export interface GreylistRow {
  /** First sighting (the delay and the retry window count from here). */
  firstMs: number;
  /** When a retry passed; 0 while the triplet waits. */
  passedMs: number;
  /** When the row expires: end of the retry window, or last use + pass lifetime. */
  untilMs: number;
}

/** One client network's greylist record. */
export interface GreylistNetRow {
  /** Triplets of this network that passed. */
  passed: number;
  /** When the record expires (last pass or use + pass lifetime). */
  untilMs: number;
}

/** Reads and writes of greylist rows inside one `greylistTransaction`. */
export interface GreylistRows {
  /** The stored triplet, expired or not. */
  triplet(key: string): GreylistRow | undefined;
  /** Stores (or replaces) a triplet. */
  putTriplet(key: string, net: string, row: GreylistRow): void;
  /** The stored network record, expired or not. */
  network(net: string): GreylistNetRow | undefined;
  /** Stores (or replaces) a network record. */
  putNetwork(net: string, row: GreylistNetRow): void;
}

/** Options of `StateStore.open`. */
export interface StateStoreOptions {
  /** Most rows per table (default 100000). */
  maxRows?: number;
  /** Called when a client IP is blacklisted (main: `DivertService.block`). */
  onBlockClient?: (ip: string, untilMs: number) => void;
  /** Create the file's directory (mode 0700) when missing (default true). */
  createDir?: boolean;
}

/** Memory across messages. */
export class StateStore {
  readonly #db: DatabaseSync;
  readonly #maxRows: number;
  readonly #st: Record<string, StatementSync>;
  readonly #rows: Record<TableName, number>;
  #closed = false;
  #lastPurgeMs = -Infinity;
  #eventRetentionMs = 30 * 86400_000;
  #bulkRetentionMs = 86400_000;
  /** Whether grouped writes wait for a shared commit (file stores). */
  readonly #grouping: boolean;
  /** Grouped writes in the open transaction (0: none open). */
  #pending = 0;
  #groupTimer: ReturnType<typeof setTimeout> | undefined;
  /** A background group commit that failed, reported by the next grouped write. */
  #groupError: unknown;
  /**
   * First band key → a live cluster, its stored signature and its `last` (see the module header);
   * a hit counts only when the whole signature is equal.
   */
  readonly #memo = new Map<number, { id: number; sig: Uint32Array; last: number }>();
  /** Cluster id → its `#memo` key. */
  readonly #memoKeys = new Map<number, number>();
  /** Called when a client IP is blacklisted; main wires it to the packet-level block. */
  onBlockClient: ((ip: string, untilMs: number) => void) | undefined;

  private constructor(db: DatabaseSync, opts: StateStoreOptions, memory: boolean) {
    this.#db = db;
    this.#grouping = !memory;
    this.#maxRows = opts.maxRows ?? DEFAULT_MAX_ROWS;
    this.onBlockClient = opts.onBlockClient;
    db.exec(SCHEMA);
    const version = db.prepare("SELECT v FROM meta WHERE k = 'schema'").get() as
      | { v: string }
      | undefined;
    if (!version) {
      db.prepare("INSERT INTO meta(k, v) VALUES ('schema', ?)").run(String(SCHEMA_VERSION));
    } else if (Number(version.v) !== SCHEMA_VERSION) {
      throw new StateError(
        `state database has schema version ${version.v}; this SSG understands ${SCHEMA_VERSION}`,
      );
    }
    const p = (sql: string) => db.prepare(sql);
    this.#st = {
      addEvent: p("INSERT INTO events(kind, key, at) VALUES (?, ?, ?)"),
      countEvents: p("SELECT COUNT(*) AS n FROM events WHERE kind = ? AND key = ? AND at > ?"),
      resetEvents: p("DELETE FROM events WHERE kind = ? AND key = ?"),
      evictEvents: p("DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?)"),
      purgeEvents: p(
        "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE at <= ? LIMIT ?)",
      ),
      upsertEntry: p(
        `INSERT INTO entries(list, key, value, until, rule, added) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT(list, key, value) DO UPDATE SET
           until = MAX(until, excluded.until), rule = excluded.rule, added = excluded.added`,
      ),
      getEntry: p(
        "SELECT until, rule, added FROM entries WHERE list = ? AND key = ? AND value = ? AND until > ?",
      ),
      deleteEntry: p("DELETE FROM entries WHERE list = ? AND key = ? AND value = ?"),
      listEntries: p(
        "SELECT list, key, value, until, rule, added FROM entries WHERE list = ? AND until > ? ORDER BY added",
      ),
      clientBlocks: p(
        "SELECT value, until FROM entries WHERE list = 'blacklist' AND key = 'client_ip' AND until > ? ORDER BY until",
      ),
      evictEntries: p(
        "DELETE FROM entries WHERE rowid IN (SELECT rowid FROM entries ORDER BY until LIMIT ?)",
      ),
      purgeEntries: p(
        "DELETE FROM entries WHERE rowid IN (SELECT rowid FROM entries WHERE until <= ? LIMIT ?)",
      ),
      bandCandidates: p(
        `SELECT DISTINCT c.id AS id, c.sig AS sig FROM bulk_bands b JOIN bulk_clusters c ON c.id = b.cluster
         WHERE b.band IN (${new Array(BANDS).fill("?").join(", ")}) AND c.last > ?`,
      ),
      addCluster: p("INSERT INTO bulk_clusters(sig, first, last) VALUES (?, ?, ?)"),
      touchCluster: p("UPDATE bulk_clusters SET last = ? WHERE id = ?"),
      addBand: p("INSERT OR IGNORE INTO bulk_bands(band, cluster) VALUES (?, ?)"),
      addHit: p(
        `INSERT INTO bulk_hits(cluster, kind, value, at) VALUES (?, ?, ?, ?)
         ON CONFLICT(cluster, kind, value) DO UPDATE SET at = MAX(at, excluded.at)`,
      ),
      hitExists: p("SELECT 1 AS x FROM bulk_hits WHERE cluster = ? AND kind = ? AND value = ?"),
      reach: p(
        "SELECT kind, COUNT(*) AS n FROM bulk_hits WHERE cluster = ? AND at > ? GROUP BY kind",
      ),
      oldClusters: p("SELECT id FROM bulk_clusters WHERE last <= ? ORDER BY last LIMIT ?"),
      oldestClusters: p("SELECT id FROM bulk_clusters ORDER BY last LIMIT ?"),
      dropCluster: p("DELETE FROM bulk_clusters WHERE id = ?"),
      dropBands: p("DELETE FROM bulk_bands WHERE cluster = ?"),
      dropHits: p("DELETE FROM bulk_hits WHERE cluster = ?"),
      evictHits: p(
        "DELETE FROM bulk_hits WHERE rowid IN (SELECT rowid FROM bulk_hits ORDER BY at LIMIT ?)",
      ),
      greyGet: p("SELECT first, passed, until FROM greylist WHERE triplet = ?"),
      greyPut: p(
        `INSERT INTO greylist(triplet, net, first, passed, until) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT(triplet) DO UPDATE SET
           first = excluded.first, passed = excluded.passed, until = excluded.until`,
      ),
      greyEvict: p(
        "DELETE FROM greylist WHERE rowid IN (SELECT rowid FROM greylist ORDER BY until LIMIT ?)",
      ),
      greyPurge: p(
        "DELETE FROM greylist WHERE rowid IN (SELECT rowid FROM greylist WHERE until <= ? LIMIT ?)",
      ),
      greyNetGet: p("SELECT passed, until FROM greylist_nets WHERE net = ?"),
      greyNetPut: p(
        `INSERT INTO greylist_nets(net, passed, until) VALUES (?, ?, ?)
         ON CONFLICT(net) DO UPDATE SET passed = excluded.passed, until = excluded.until`,
      ),
      greyNetEvict: p(
        "DELETE FROM greylist_nets WHERE net IN (SELECT net FROM greylist_nets ORDER BY until LIMIT ?)",
      ),
      greyNetPurge: p(
        "DELETE FROM greylist_nets WHERE net IN (SELECT net FROM greylist_nets WHERE until <= ? LIMIT ?)",
      ),
      purgeHits: p(
        "DELETE FROM bulk_hits WHERE rowid IN (SELECT rowid FROM bulk_hits WHERE at <= ? LIMIT ?)",
      ),
    };
    const count = (t: string) =>
      Number((db.prepare(`SELECT COUNT(*) AS n FROM ${t}`).get() as { n: number }).n);
    this.#rows = {
      events: count("events"),
      entries: count("entries"),
      bulk_clusters: count("bulk_clusters"),
      bulk_hits: count("bulk_hits"),
      greylist: count("greylist"),
      greylist_nets: count("greylist_nets"),
    };
  }

  /**
   * Opens (creating if missing) the database at `path`, or a private in-memory one for
   * ":memory:". Throws `StateError` when the file cannot be opened, is not an SSG state
   * database, or is held by another process.
   */
  static open(path: string, opts: StateStoreOptions = {}): StateStore {
    const memory = path === ":memory:";
    if (!memory && opts.createDir !== false) {
      try {
        Deno.mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
      } catch (e) {
        throw new StateError(
          `cannot create the directory of state file "${path}": ${(e as Error).message}`,
          {
            cause: e,
          },
        );
      }
    }
    let db: DatabaseSync | undefined;
    try {
      db = new DatabaseSync(path);
      if (!memory) {
        db.exec("PRAGMA locking_mode = EXCLUSIVE");
        const mode = db.prepare("PRAGMA journal_mode = WAL").get() as { journal_mode: string };
        if (mode.journal_mode !== "wal") {
          throw new Error(`journal mode is ${mode.journal_mode}, not wal`);
        }
        db.exec("PRAGMA synchronous = NORMAL");
      }
      return new StateStore(db, opts, memory);
    } catch (e) {
      try {
        db?.close();
      } catch { /* already failing */ }
      if (e instanceof StateError) throw e;
      const why = (e as Error).message;
      const hint = /locked|busy/i.test(why)
        ? " (is another ssg running with the same state file?)"
        : "";
      throw new StateError(`cannot open state file "${path}": ${why}${hint}`, { cause: e });
    }
  }

  /**
   * Commits the grouped writes, then closes the database; safe to call twice. A failing final
   * commit loses the grouped observations (as a crash would) and does not stop the close.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#pending > 0) {
      try {
        this.#commit();
      } catch {
        this.#abandon();
      }
    }
    this.#db.close();
  }

  /** Whether `close()` was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Rows currently in each table (for tests and `ssg check`-style summaries). */
  get rowCounts(): Readonly<Record<TableName, number>> {
    return { ...this.#rows };
  }

  /**
   * How long counter events and bulk hits are kept: the longest threshold window and the
   * longest bulk window in force (the engine sets them on every (re)load).
   */
  retain(opts: { eventSeconds?: number; bulkSeconds?: number }): void {
    if (opts.eventSeconds !== undefined) {
      this.#eventRetentionMs = Math.max(1, opts.eventSeconds) * 1000;
    }
    if (opts.bulkSeconds !== undefined) {
      this.#bulkRetentionMs = Math.max(1, opts.bulkSeconds) * 1000;
      this.#forgetMemo(); // a longer window may bring clusters back to life
    }
  }

  // ---- counters -------------------------------------------------------------------------

  /** Records one event for (kind, key) at `nowMs`. */
  addEvent(kind: string, key: string, nowMs: number): void {
    this.#write(nowMs, () => {
      this.#st.addEvent.run(cut(kind), cut(key), nowMs);
      this.#rows.events++;
      this.#bound("events", this.#st.evictEvents);
    }, true);
  }

  /** Events for (kind, key) in the window (nowMs − windowSeconds, nowMs]. */
  countEvents(kind: string, key: string, windowSeconds: number, nowMs: number): number {
    this.#open();
    const r = this.#st.countEvents.get(cut(kind), cut(key), nowMs - windowSeconds * 1000) as {
      n: number;
    };
    return Number(r.n);
  }

  /** Forgets every event of (kind, key) (a threshold that fired starts counting again). */
  resetEvents(kind: string, key: string): void {
    this.#write(undefined, () => {
      const r = this.#st.resetEvents.run(cut(kind), cut(key));
      this.#rows.events = Math.max(0, this.#rows.events - Number(r.changes));
    }, true);
  }

  // ---- dynamic lists --------------------------------------------------------------------

  /**
   * Adds (or extends) a dynamic entry. A blacklisted client IP is also passed to
   * `onBlockClient`. An entry already present keeps the later of the two expiries.
   */
  addEntry(
    list: ListName,
    key: BlacklistKey,
    value: string,
    untilMs: number,
    rule: string,
    nowMs = Date.now(),
  ): void {
    const v = cut(value.trim().toLowerCase());
    this.#write(nowMs, () => {
      const existed = this.#st.getEntry.get(list, key, v, -Infinity) !== undefined;
      this.#st.upsertEntry.run(list, key, v, untilMs, cut(rule), nowMs);
      if (!existed) {
        this.#rows.entries++;
        this.#bound("entries", this.#st.evictEntries);
      }
    });
    if (list === "blacklist" && key === "client_ip") this.onBlockClient?.(v, untilMs);
  }

  /**
   * The action runner's hook (`GatewayActionsOptions.addBlacklist`): persists a dynamic
   * blacklist entry. Does not call `onBlockClient` when `notify` is false (the runner blocks
   * the packet path itself).
   */
  addBlacklist(
    entry: { key: BlacklistKey; value: string; untilMs: number; rule: string },
    notify = true,
  ): void {
    const hook = this.onBlockClient;
    if (!notify) this.onBlockClient = undefined;
    try {
      this.addEntry("blacklist", entry.key, entry.value, entry.untilMs, entry.rule);
    } finally {
      this.onBlockClient = hook;
    }
  }

  /** The live entry for (list, key, value), if any. */
  getEntry(list: ListName, key: BlacklistKey, value: string, nowMs: number): ListEntry | undefined {
    this.#open();
    const v = cut(value.trim().toLowerCase());
    const r = this.#st.getEntry.get(list, key, v, nowMs) as
      | { until: number; rule: string; added: number }
      | undefined;
    return r &&
      { list, key, value: v, untilMs: Number(r.until), rule: r.rule, addedMs: Number(r.added) };
  }

  /** Removes an entry (e.g. an administrator lifting a blacklisting); true when one was removed. */
  removeEntry(list: ListName, key: BlacklistKey, value: string): boolean {
    let n = 0;
    this.#write(undefined, () => {
      n = Number(this.#st.deleteEntry.run(list, key, cut(value.trim().toLowerCase())).changes);
      this.#rows.entries = Math.max(0, this.#rows.entries - n);
    });
    return n > 0;
  }

  /** Every live entry of a list, oldest first. */
  entries(list: ListName, nowMs: number): ListEntry[] {
    this.#open();
    return (this.#st.listEntries.all(list, nowMs) as {
      list: ListName;
      key: BlacklistKey;
      value: string;
      until: number;
      rule: string;
      added: number;
    }[]).map((r) => ({
      list: r.list,
      key: r.key,
      value: r.value,
      untilMs: Number(r.until),
      rule: r.rule,
      addedMs: Number(r.added),
    }));
  }

  /** Every client IP blacklisted at `nowMs`, with its expiry (main re-applies them at start). */
  activeClientBlocks(nowMs: number): { ip: string; untilMs: number }[] {
    this.#open();
    return (this.#st.clientBlocks.all(nowMs) as { value: string; until: number }[]).map((r) => ({
      ip: r.value,
      untilMs: Number(r.until),
    }));
  }

  // ---- bulk -----------------------------------------------------------------------------

  /**
   * Records that content `fp` reached `server` for `recipients` at `nowMs`, joining the most
   * similar live cluster (estimated Jaccard ≥ `SAME_CONTENT`) or starting one. Returns the
   * cluster id, for `bulkReach`.
   */
  observeBulk(
    fp: Fingerprint,
    server: string,
    recipients: readonly string[],
    nowMs: number,
  ): number {
    let cluster = 0;
    this.#write(nowMs, () => {
      const since = nowMs - this.#bulkRetentionMs;
      const key = fp.bands[0];
      const known = this.#memo.get(key);
      if (known && known.last > since && similarity(known.sig, fp.signature) === 1) {
        // An exact copy of the cluster's first message: similarity 1, none can be closer.
        cluster = known.id;
      } else {
        const rows = this.#st.bandCandidates.all(...fp.bands, since) as {
          id: number;
          sig: Uint8Array;
        }[];
        let best = -1;
        for (const r of rows) {
          const sig = new Uint32Array(
            r.sig.buffer.slice(r.sig.byteOffset, r.sig.byteOffset + SIGNATURE_SIZE * 4),
          );
          const s = similarity(sig, fp.signature);
          if (s >= SAME_CONTENT && s > best) {
            best = s;
            cluster = Number(r.id);
          }
        }
        if (best === 1) this.#remember(key, cluster, fp.signature, nowMs);
      }
      if (cluster === 0) {
        const sig = new Uint8Array(fp.signature.buffer.slice(0));
        cluster = Number(this.#st.addCluster.run(sig, nowMs, nowMs).lastInsertRowid);
        for (const b of fp.bands) this.#st.addBand.run(b, cluster);
        this.#rows.bulk_clusters++;
        this.#remember(key, cluster, fp.signature, nowMs);
        if (this.#rows.bulk_clusters > this.#maxRows) this.#evictClusters(this.#batch(), cluster);
      } else {
        this.#st.touchCluster.run(nowMs, cluster);
        const k = this.#memoKeys.get(cluster);
        const m = k === undefined ? undefined : this.#memo.get(k);
        if (m?.id === cluster) m.last = nowMs;
      }
      // One row per distinct (cluster, server) and (cluster, recipient), holding when it was
      // last reached: a reach count is bounded by distinct values, not by copies sent.
      const hits: [number, string][] = [[0, cut(server)]];
      for (const r of new Set(recipients.map((x) => cut(x.trim().toLowerCase())))) {
        if (r !== "") hits.push([1, r]);
      }
      for (const [kind, value] of hits) {
        if (this.#st.hitExists.get(cluster, kind, value) === undefined) this.#rows.bulk_hits++;
        this.#st.addHit.run(cluster, kind, value, nowMs);
      }
      this.#bound("bulk_hits", this.#st.evictHits);
    }, true);
    return cluster;
  }

  /** Distinct servers and recipients cluster `id` reached in (nowMs − withinSeconds, nowMs]. */
  bulkReach(
    id: number,
    withinSeconds: number,
    nowMs: number,
  ): { servers: number; recipients: number } {
    this.#open();
    const rows = this.#st.reach.all(id, nowMs - withinSeconds * 1000) as {
      kind: number;
      n: number;
    }[];
    let servers = 0;
    let recipients = 0;
    for (const r of rows) {
      if (Number(r.kind) === 0) servers = Number(r.n);
      else recipients = Number(r.n);
    }
    return { servers, recipients };
  }

  // ---- greylisting ----------------------------------------------------------------------

  /**
   * Runs `fn` over the greylist tables in one transaction (one commit for a whole check),
   * after purging a few expired rows. `maxEntries` bounds the triplets (and, separately, the
   * networks): past it the soonest expiring are evicted.
   */
  greylistTransaction<T>(nowMs: number, maxEntries: number, fn: (rows: GreylistRows) => T): T {
    let out: T | undefined;
    this.#write(nowMs, () => {
      out = fn(this.#greyRows);
      for (
        const [table, evict] of [["greylist", this.#st.greyEvict], [
          "greylist_nets",
          this.#st.greyNetEvict,
        ]] as const
      ) {
        if (this.#rows[table] <= maxEntries) continue;
        const batch = Math.max(this.#rows[table] - maxEntries, Math.floor(maxEntries / 100), 1);
        const n = Number(evict.run(batch).changes);
        this.#rows[table] = Math.max(0, this.#rows[table] - n);
      }
    });
    return out as T;
  }

  /** The greylist rows of one transaction (see `greylistTransaction`). */
  readonly #greyRows: GreylistRows = {
    triplet: (key) => {
      const r = this.#st.greyGet.get(key) as
        | { first: number; passed: number; until: number }
        | undefined;
      return r &&
        { firstMs: Number(r.first), passedMs: Number(r.passed), untilMs: Number(r.until) };
    },
    putTriplet: (key, net, row) => {
      if (this.#st.greyGet.get(key) === undefined) this.#rows.greylist++;
      this.#st.greyPut.run(key, net, row.firstMs, row.passedMs, row.untilMs);
    },
    network: (net) => {
      const r = this.#st.greyNetGet.get(net) as { passed: number; until: number } | undefined;
      return r && { passed: Number(r.passed), untilMs: Number(r.until) };
    },
    putNetwork: (net, row) => {
      if (this.#st.greyNetGet.get(net) === undefined) this.#rows.greylist_nets++;
      this.#st.greyNetPut.run(net, row.passed, row.untilMs);
    },
  };

  // ---- internals ------------------------------------------------------------------------

  #open(): void {
    if (this.#closed) throw new StateError("the state store is closed");
  }

  /**
   * Runs `fn` in one transaction, after purging a few expired rows (at `nowMs`; none when it is
   * undefined: the call has no clock). A `grouped` write (a heuristic observation) may leave the
   * transaction open for later writes to share (see the module header); any other write commits
   * it, with whatever was pending. `fn` runs inside a savepoint when it joins an open group, so
   * its failure undoes only its own changes.
   */
  #write(nowMs: number | undefined, fn: () => void, grouped = false): void {
    this.#open();
    // Reported by the next grouped write (skipped: an observation), never by a fact's write,
    // which must not be lost for an earlier heuristic's failure.
    if (grouped && this.#groupError !== undefined) {
      const e = this.#groupError;
      this.#groupError = undefined;
      throw new StateError(
        `a grouped commit of the state store failed (its observations are lost): ${
          (e as Error).message
        }`,
        { cause: e },
      );
    }
    const joined = this.#pending > 0;
    this.#db.exec(joined ? "SAVEPOINT w" : "BEGIN IMMEDIATE");
    try {
      if (nowMs !== undefined) this.#purge(nowMs);
      fn();
      if (joined) this.#db.exec("RELEASE w");
      if (grouped && this.#grouping && this.#pending + 1 < GROUP_COMMIT_WRITES) {
        this.#pending++;
        if (this.#groupTimer === undefined) {
          const timer = setTimeout(() => this.#commitGroup(), GROUP_COMMIT_MS);
          Deno.unrefTimer(timer as unknown as number);
          this.#groupTimer = timer;
        }
      } else {
        this.#commit();
      }
    } catch (e) {
      try {
        if (joined && this.#db.isTransaction) {
          this.#db.exec("ROLLBACK TO w");
          this.#db.exec("RELEASE w");
        } else if (this.#db.isTransaction) {
          this.#db.exec("ROLLBACK");
        }
      } catch { /* the original error matters */ }
      // SQLite rolls the whole transaction back on some errors (disk full, I/O): then the
      // group's earlier writes are gone too.
      if (!this.#db.isTransaction) this.#endGroup();
      // Row counts may be off after a rollback; recount rather than drift.
      this.#recount();
      this.#forgetMemo();
      throw e instanceof StateError
        ? e
        : new StateError(`state store write failed: ${(e as Error).message}`, {
          cause: e,
        });
    }
  }

  /** Commits the open transaction (grouped writes included). */
  #commit(): void {
    this.#db.exec("COMMIT");
    this.#endGroup();
  }

  /** The group timer fired: commit; a failure is kept for the next grouped write to report. */
  #commitGroup(): void {
    this.#groupTimer = undefined;
    if (this.#closed || this.#pending === 0) return;
    try {
      this.#commit();
    } catch (e) {
      this.#abandon();
      this.#groupError = e;
    }
  }

  /** Rolls back the open group after a failed commit (its observations are lost). */
  #abandon(): void {
    try {
      if (this.#db.isTransaction) this.#db.exec("ROLLBACK");
    } catch { /* nothing more to undo */ }
    this.#endGroup();
    try {
      this.#recount();
    } catch { /* the database is unusable; the next write says so */ }
    this.#forgetMemo();
  }

  #endGroup(): void {
    this.#pending = 0;
    if (this.#groupTimer !== undefined) clearTimeout(this.#groupTimer);
    this.#groupTimer = undefined;
  }

  /** Remembers live cluster `id`, whose stored signature is `sig` (first band key `key`). */
  #remember(key: number, id: number, sig: Uint32Array, last: number): void {
    const old = this.#memoKeys.get(id);
    if (old !== undefined) this.#memo.delete(old);
    const displaced = this.#memo.get(key);
    if (displaced !== undefined) this.#memoKeys.delete(displaced.id);
    this.#memo.delete(key);
    this.#memo.set(key, { id, sig: sig.slice(), last });
    this.#memoKeys.set(id, key);
    if (this.#memo.size > BULK_MEMO_SIZE) {
      const [k, v] = this.#memo.entries().next().value!;
      this.#memo.delete(k);
      if (this.#memoKeys.get(v.id) === k) this.#memoKeys.delete(v.id);
    }
  }

  #forgetMemo(): void {
    this.#memo.clear();
    this.#memoKeys.clear();
  }

  #purge(nowMs: number): void {
    // At most once per second of clock (and whenever the clock goes back): each purge is a few
    // index range probes, cheap but not free on every message.
    if (nowMs >= this.#lastPurgeMs && nowMs - this.#lastPurgeMs < PURGE_INTERVAL_MS) return;
    this.#lastPurgeMs = nowMs;
    const n1 = Number(this.#st.purgeEntries.run(nowMs, PURGE_BATCH).changes);
    this.#rows.entries = Math.max(0, this.#rows.entries - n1);
    const n2 = Number(
      this.#st.purgeEvents.run(nowMs - this.#eventRetentionMs, PURGE_BATCH).changes,
    );
    this.#rows.events = Math.max(0, this.#rows.events - n2);
    const n3 = Number(this.#st.purgeHits.run(nowMs - this.#bulkRetentionMs, PURGE_BATCH).changes);
    this.#rows.bulk_hits = Math.max(0, this.#rows.bulk_hits - n3);
    const n4 = Number(this.#st.greyPurge.run(nowMs, PURGE_BATCH).changes);
    this.#rows.greylist = Math.max(0, this.#rows.greylist - n4);
    const n5 = Number(this.#st.greyNetPurge.run(nowMs, PURGE_BATCH).changes);
    this.#rows.greylist_nets = Math.max(0, this.#rows.greylist_nets - n5);
    const old = this.#st.oldClusters.all(nowMs - this.#bulkRetentionMs, 20) as { id: number }[];
    for (const { id } of old) this.#dropCluster(Number(id));
  }

  #batch(): number {
    return Math.max(1, Math.floor(this.#maxRows / 100));
  }

  #bound(table: "events" | "entries" | "bulk_hits", evict: StatementSync): void {
    if (this.#rows[table] <= this.#maxRows) return;
    const n = Number(evict.run(Math.max(this.#rows[table] - this.#maxRows, this.#batch())).changes);
    this.#rows[table] = Math.max(0, this.#rows[table] - n);
  }

  #evictClusters(n: number, keep: number): void {
    const rows = this.#st.oldestClusters.all(n + 1) as { id: number }[];
    let dropped = 0;
    for (const { id } of rows) {
      if (Number(id) === keep || dropped >= n) continue;
      this.#dropCluster(Number(id));
      dropped++;
    }
  }

  #dropCluster(id: number): void {
    const k = this.#memoKeys.get(id);
    if (k !== undefined) {
      this.#memo.delete(k);
      this.#memoKeys.delete(id);
    }
    this.#st.dropBands.run(id);
    const hits = Number(this.#st.dropHits.run(id).changes);
    this.#rows.bulk_hits = Math.max(0, this.#rows.bulk_hits - hits);
    const c = Number(this.#st.dropCluster.run(id).changes);
    this.#rows.bulk_clusters = Math.max(0, this.#rows.bulk_clusters - c);
  }

  #recount(): void {
    for (const t of TABLES) {
      this.#rows[t] = Number(
        (this.#db.prepare(`SELECT COUNT(*) AS n FROM ${t}`).get() as { n: number }).n,
      );
    }
  }
}

const TABLES = [
  "events",
  "entries",
  "bulk_clusters",
  "bulk_hits",
  "greylist",
  "greylist_nets",
] as const;
/** The tables whose rows are counted and bounded. */
type TableName = typeof TABLES[number];

function cut(s: string): string {
  return s.length > MAX_KEY_LENGTH ? s.slice(0, MAX_KEY_LENGTH) : s;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY, kind TEXT NOT NULL, key TEXT NOT NULL, at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS events_kind_key_at ON events (kind, key, at);
CREATE INDEX IF NOT EXISTS events_at ON events (at);
CREATE TABLE IF NOT EXISTS entries (
  list TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, until INTEGER NOT NULL,
  rule TEXT NOT NULL, added INTEGER NOT NULL, PRIMARY KEY (list, key, value));
CREATE INDEX IF NOT EXISTS entries_until ON entries (until);
CREATE TABLE IF NOT EXISTS bulk_clusters (
  id INTEGER PRIMARY KEY, sig BLOB NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS bulk_clusters_last ON bulk_clusters (last);
CREATE TABLE IF NOT EXISTS bulk_bands (
  band INTEGER NOT NULL, cluster INTEGER NOT NULL, PRIMARY KEY (band, cluster)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS bulk_bands_cluster ON bulk_bands (cluster);
CREATE TABLE IF NOT EXISTS bulk_hits (
  cluster INTEGER NOT NULL, kind INTEGER NOT NULL, value TEXT NOT NULL, at INTEGER NOT NULL,
  PRIMARY KEY (cluster, kind, value));
CREATE INDEX IF NOT EXISTS bulk_hits_at ON bulk_hits (at);
CREATE TABLE IF NOT EXISTS greylist (
  triplet TEXT PRIMARY KEY, net TEXT NOT NULL, first INTEGER NOT NULL, passed INTEGER NOT NULL,
  until INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS greylist_until ON greylist (until);
CREATE TABLE IF NOT EXISTS greylist_nets (
  net TEXT PRIMARY KEY, passed INTEGER NOT NULL, until INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS greylist_nets_until ON greylist_nets (until);
`;
