/**
 * Greylisting (issue 10), as postgrey and OpenBSD spamd do it: a mail from a triplet never seen
 * — (client network, envelope sender, recipient) — is refused with a temporary 451 4.7.1; a real
 * MTA retries, a spam cannon mostly does not. A retry at least `delay` after the first sighting
 * and within `retry_window` of it passes; the passed triplet is then remembered for
 * `pass_lifetime` after its last use (each use refreshes it, at most once an hour:
 * `REFRESH_SLACK_MS`), so regular correspondents wait
 * once. A client network whose retries passed for `auto_allow_after` distinct triplets is allowed
 * outright (postgrey's auto-whitelist-clients): a big sender's pool is not greylisted per
 * recipient for ever.
 *
 * The triplet: the client address cut to its network (`network_prefix`, /24 and /64 by default,
 * because a provider's outbound relays retry from a neighbour address), the envelope sender
 * lowercased (`<>` for the null sender), the recipient lowercased. A retry before `delay` does
 * NOT restart the wait (postgrey's behaviour; spamd's too): a client that retries every minute
 * passes after `delay` like any other.
 *
 * State: rows in the state store (`greylist`, `greylist_nets`; `StateStore.greylistTransaction`),
 * so the memory survives a restart; one transaction per check. Bounded: `max_entries` triplets
 * and as many networks (the soonest expiring are evicted first), expired rows purged as writes go.
 *
 * What it trusts: nothing of the triplet (sender and recipient are the client's words; they are
 * bound SQL parameters, cut to `MAX_PART`). The clock is injected (`now`), for tests.
 */
import type { GreylistConfig } from "../config/config.ts";
import { GREYLIST_DEFAULTS } from "../config/defaults.ts";
import { maskBytes } from "../packet/cidr.ts";
import { canonicalIp, formatIp, parseIp } from "../packet/ip_address.ts";
import type { StateStore } from "../state/state_store.ts";
import type { Reply } from "./verdict.ts";

/**
 * A passed triplet's or an allowed network's expiry is pushed forward only when this much of it
 * is used up: a correspondent writing many times an hour costs one read, not one write per mail.
 */
export const REFRESH_SLACK_MS = 3600_000;

/** Longest sender or recipient kept in a triplet key (an SMTP path is at most 256 octets). */
export const MAX_PART = 320;

/** What one greylist check found. */
export interface GreylistResult {
  /** Whether the mail may go on (to the next rules). */
  pass: boolean;
  /**
   * Why: "new" (first sighting, deferred), "early" (retried before the delay, deferred),
   * "retried" (the retry passed now), "known" (passed before, refreshed), "network" (the
   * client network is auto-allowed). A triplet whose retry window closed is "new" again.
   */
  reason: "new" | "early" | "retried" | "known" | "network";
  /** Seconds until a retry can pass (deferred results only; at least 1). */
  retryInSeconds?: number;
  /** The client network of the triplet ("192.0.2.0/24"). */
  network: string;
}

/** The parts of a triplet, as the session or the envelope has them. */
export interface TripletInput {
  /** The client's IP address. */
  clientIp: string;
  /** The envelope sender ("" for the null sender). */
  sender: string;
  /** One recipient. */
  recipient: string;
}

/**
 * The network of a client address ("192.0.2.0/24", "2001:db8:1::/64"); an IPv4-mapped IPv6
 * address counts as IPv4 (`canonicalIp`). Text that is not an address is kept as it is.
 */
export function tripletNetwork(ip: string, prefix: { ipv4: number; ipv6: number }): string {
  const canonical = canonicalIp(ip.trim()) ?? ip.trim().toLowerCase();
  const bytes = parseIp(canonical);
  if (!bytes) return canonical;
  const bits = bytes.length === 4 ? prefix.ipv4 : prefix.ipv6;
  return `${formatIp(maskBytes(bytes, bits))}/${bits}`;
}

/** The reply to a deferred triplet: RFC 3463 4.7.1 (delivery not authorized, temporarily). */
export function greylistReply(retryInSeconds: number): Reply {
  return {
    code: 451,
    enhanced: "4.7.1",
    text: `Greylisted, try again in ${retryInSeconds} seconds`,
  };
}

/** The greylisting memory over a state store. */
export class Greylist {
  readonly #store: StateStore;
  readonly #cfg: GreylistConfig;
  readonly #now: () => number;

  /** A greylist over `store` with `config` (default `GREYLIST_DEFAULTS`) and clock `now`. */
  constructor(store: StateStore, config?: GreylistConfig, now: () => number = Date.now) {
    this.#store = store;
    this.#cfg = config ?? GREYLIST_DEFAULTS;
    this.#now = now;
  }

  /** The parameters in force. */
  get config(): Readonly<GreylistConfig> {
    return this.#cfg;
  }

  /** The triplet key and network of an input. */
  triplet(t: TripletInput): { key: string; network: string } {
    const network = tripletNetwork(t.clientIp, this.#cfg.networkPrefix);
    const sender = t.sender.trim().toLowerCase().slice(0, MAX_PART) || "<>";
    const rcpt = t.recipient.trim().toLowerCase().slice(0, MAX_PART);
    return { key: `${network} ${sender} ${rcpt}`, network };
  }

  /**
   * Checks one triplet and records what it learnt (first sighting, a pass, a refresh). May throw
   * `StateError` (the caller decides whether to fail open).
   */
  check(t: TripletInput, nowMs: number = this.#now()): GreylistResult {
    return this.#run(t, nowMs, true);
  }

  /** What `check` would say, without recording anything (`ssg explain`). */
  peek(t: TripletInput, nowMs: number = this.#now()): GreylistResult {
    return this.#run(t, nowMs, false);
  }

  #run(t: TripletInput, nowMs: number, write: boolean): GreylistResult {
    const c = this.#cfg;
    const { key, network } = this.triplet(t);
    const delayMs = c.delaySeconds * 1000;
    const lifeMs = c.passLifetimeSeconds * 1000;
    return this.#store.greylistTransaction(nowMs, c.maxEntries, (rows) => {
      const net = rows.network(network);
      const netLive = net !== undefined && net.untilMs > nowMs;
      if (netLive && c.autoAllowAfter > 0 && net.passed >= c.autoAllowAfter) {
        if (write && net.untilMs < nowMs + lifeMs - REFRESH_SLACK_MS) {
          rows.putNetwork(network, { passed: net.passed, untilMs: nowMs + lifeMs });
        }
        return { pass: true, reason: "network", network };
      }
      const row = rows.triplet(key);
      if (row === undefined || row.untilMs <= nowMs) {
        if (write) {
          rows.putTriplet(key, network, {
            firstMs: nowMs,
            passedMs: 0,
            untilMs: nowMs + c.retryWindowSeconds * 1000,
          });
        }
        return {
          pass: false,
          reason: "new",
          retryInSeconds: c.delaySeconds,
          network,
        };
      }
      if (row.passedMs > 0) {
        if (write && row.untilMs < nowMs + lifeMs - REFRESH_SLACK_MS) {
          rows.putTriplet(key, network, { ...row, untilMs: nowMs + lifeMs });
        }
        return { pass: true, reason: "known", network };
      }
      const waited = nowMs - row.firstMs;
      if (waited < delayMs) {
        return {
          pass: false,
          reason: "early",
          retryInSeconds: Math.max(1, Math.ceil((delayMs - waited) / 1000)),
          network,
        };
      }
      if (write) {
        rows.putTriplet(key, network, { ...row, passedMs: nowMs, untilMs: nowMs + lifeMs });
        rows.putNetwork(network, {
          passed: (netLive ? net.passed : 0) + 1,
          untilMs: nowMs + lifeMs,
        });
      }
      return { pass: true, reason: "retried", network };
    });
  }
}
