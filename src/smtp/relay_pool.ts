/**
 * Relay connections kept open between client sessions (`relay.reuse_idle`), so that the next
 * session towards the same server skips the TCP connect, the greeting, EHLO and STARTTLS: what
 * Postfix's SMTP client does with its connection cache (smtp_connection_cache_on_demand,
 * smtp_connection_cache_time_limit = 2 s, smtp_connection_reuse_time_limit = 300 s).
 *
 * Which connections come here: only those that left with the gateway's address (`relay.source:
 * gateway`; with the client's address the connection is that client's own), usable, with no
 * reply outstanding and never used for AUTH (`RelayClient.reusable`), after the session's last
 * transaction ended (the session sends RSET first when one was open). A connection that announced
 * its client with XCLIENT is not kept: the server's session has become that client's (Postfix
 * refuses a second XCLIENT there). With XFORWARD the next session's MAIL carries its own client's
 * attributes (`RelayClient.reannounce`).
 *
 * What it limits: an idle connection is kept at most `reuseIdle` seconds (then QUIT), serves at
 * most `reuseSessions` sessions and lives at most `reuseTime` seconds; at most
 * MAX_IDLE_PER_SERVER idle connections per server and MAX_IDLE in all (the oldest is closed to
 * make room). A connection made under other relay settings (a reload) is never handed out.
 * A connection the server closed while idle is found out by the first MAIL on it, which then goes
 * on a new connection (server_link.ts); the other idle connections of that server are closed
 * then too (they are as old, so likely as dead: a restart, an idle timeout).
 */
import type { RelayConfig } from "../config/config.ts";
import { reuseLimits } from "../config/defaults.ts";
import type { RelayClient } from "./relay_client.ts";

/** Most idle connections kept towards one server. */
export const MAX_IDLE_PER_SERVER = 32;
/** Most idle connections kept in all. */
export const MAX_IDLE = 1024;
/** How often idle connections are checked for expiry, ms. */
const SWEEP_MS = 500;

interface Idle {
  relay: RelayClient;
  /** The relay settings it was made under, as text (a reload may change them). */
  config: string;
  /** When it became idle (ms, the pool's clock). */
  since: number;
  /** Idle limit, ms. */
  idleMs: number;
}

/** Still usable and within its idle limit at `now`. */
function fresh(e: Idle, now: number): boolean {
  return e.relay.usable && now - e.since <= e.idleMs;
}

/** The relay settings as text, computed once per settings object (one per configuration). */
const settingsText = new WeakMap<RelayConfig, string>();
function settingsOf(config: RelayConfig): string {
  let text = settingsText.get(config);
  if (text === undefined) settingsText.set(config, text = JSON.stringify(config));
  return text;
}

/** Counters for the `ssg.stats` line. */
export interface RelayPoolStats {
  /** Connections put aside at a session's end. */
  relayKept: number;
  /** Sessions served by a kept connection. */
  relayReused: number;
  /** Kept connections closed unused (idle limit, room, reload, shutdown). */
  relayExpired: number;
  /** Kept connections the server had closed, found out by their first command. */
  relayStale: number;
  /** Idle now. */
  relayIdle: number;
}

/** The idle relay connections of all sessions, by server. */
export class RelayPool {
  #idle = new Map<string, Idle[]>();
  #count = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  #closed = false;
  #now: () => number;
  #stats = { relayKept: 0, relayReused: 0, relayExpired: 0, relayStale: 0 };

  /** `now`: the clock in ms (tests pass their own). */
  constructor(opts: { now?: () => number } = {}) {
    this.#now = opts.now ?? (() => performance.now());
  }

  /** The pool key of a server and the name SSG gives it in EHLO. */
  static key(server: { ip: string; port: number }, hostname: string): string {
    return `${server.ip} ${server.port} ${hostname}`;
  }

  /** Idle connections now. */
  get size(): number {
    return this.#count;
  }

  /** Counters since start. */
  stats(): RelayPoolStats {
    return { ...this.#stats, relayIdle: this.#count };
  }

  /**
   * The most recently idle usable connection for `key` made under `config`, taken out of the
   * pool; undefined when there is none. Expired ones met on the way are closed.
   */
  take(key: string, config: RelayConfig): RelayClient | undefined {
    const list = this.#idle.get(key);
    if (!list) return undefined;
    const now = this.#now();
    const settings = settingsOf(config);
    let found: RelayClient | undefined;
    while (list.length > 0 && !found) {
      const e = list.pop()!;
      this.#count--;
      if (e.config === settings && fresh(e, now)) found = e.relay;
      else this.#expire(e.relay);
    }
    if (list.length === 0) this.#idle.delete(key);
    if (found) this.#stats.relayReused++;
    return found;
  }

  /**
   * Keeps `relay` for the next session towards `key` when it may be reused (see the module
   * doc); returns false when it was not kept (the caller says QUIT).
   */
  give(key: string, relay: RelayClient, config: RelayConfig): boolean {
    const limits = reuseLimits(config);
    if (this.#closed || limits.idle <= 0 || !relay.reusable) return false;
    if (relay.sessions >= limits.sessions) return false;
    if (performance.now() - relay.openedAt >= limits.time * 1000) return false;
    let list = this.#idle.get(key);
    if (!list) this.#idle.set(key, list = []);
    if (list.length >= MAX_IDLE_PER_SERVER) {
      this.#expire(list.shift()!.relay);
      this.#count--;
    } else if (this.#count >= MAX_IDLE) this.#evictOldest();
    list.push({
      relay,
      config: settingsOf(config),
      since: this.#now(),
      idleMs: limits.idle * 1000,
    });
    this.#count++;
    this.#stats.relayKept++;
    this.#startSweeping();
    return true;
  }

  /** A kept connection of `key` was found closed by the server: the others go too. */
  stale(key: string): void {
    this.#stats.relayStale++;
    const list = this.#idle.get(key);
    if (!list) return;
    this.#idle.delete(key);
    this.#count -= list.length;
    for (const e of list) this.#expire(e.relay);
  }

  /** Closes expired idle connections (QUIT, not awaited). */
  sweep(): void {
    const now = this.#now();
    for (const [key, list] of this.#idle) {
      const keep: Idle[] = [];
      for (const e of list) {
        if (fresh(e, now)) keep.push(e);
        else this.#expire(e.relay);
      }
      this.#count -= list.length - keep.length;
      if (keep.length === 0) this.#idle.delete(key);
      else if (keep.length < list.length) this.#idle.set(key, keep);
    }
    if (this.#count === 0) this.#stopSweeping();
  }

  /** Says QUIT on every idle connection and keeps no more (gateway stop). */
  async close(): Promise<void> {
    this.#closed = true;
    this.#stopSweeping();
    const all = [...this.#idle.values()].flat();
    this.#idle.clear();
    this.#count = 0;
    this.#stats.relayExpired += all.length;
    await Promise.all(all.map((e) => e.relay.quit()));
  }

  #evictOldest(): void {
    let oldestKey: string | undefined;
    let oldest = Infinity;
    for (const [key, list] of this.#idle) {
      if (list.length > 0 && list[0].since < oldest) {
        oldest = list[0].since;
        oldestKey = key;
      }
    }
    if (oldestKey === undefined) return;
    const list = this.#idle.get(oldestKey)!;
    this.#expire(list.shift()!.relay);
    this.#count--;
    if (list.length === 0) this.#idle.delete(oldestKey);
  }

  #expire(relay: RelayClient): void {
    this.#stats.relayExpired++;
    void relay.quit();
  }

  #startSweeping(): void {
    if (this.#timer !== undefined) return;
    this.#timer = setInterval(() => this.sweep(), SWEEP_MS);
    Deno.unrefTimer(this.#timer as unknown as number);
  }

  #stopSweeping(): void {
    if (this.#timer === undefined) return;
    clearInterval(this.#timer);
    this.#timer = undefined;
  }
}
