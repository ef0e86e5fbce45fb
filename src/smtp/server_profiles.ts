/**
 * What SSG has learnt about each protected server, so the responder can answer as that server
 * would: its greeting, its EHLO name and capabilities, and the shape of its 250 reply to end of
 * data (so a discard looks like a delivery).
 *
 * Learnt from the relay's own connections (greeting, EHLO reply, end-of-data replies), never from
 * a client. Trusts: the server's replies as text only (sanitised by the relay; the EHLO keywords
 * are only ever compared against the fixed list SSG supports, see `hello_phase.ts`).
 *
 * Limits: at most `max` servers (least recently learnt or used evicted first), each entry fresh
 * for `ttlMs` (then it is learnt again at the next contact; every relay connection refreshes
 * it). An entry is small (a few hundred bytes), so memory is bounded by `max`.
 */
import type { SmtpConfig } from "../config/config.ts";
import type { SmtpReply } from "./reply.ts";

/** One server's learnt profile. */
export interface ServerProfile {
  /** The server's 220 greeting lines (sanitised text, without the code). */
  greeting: string[];
  /** The first line of its EHLO reply: its host name (e.g. Postfix's myhostname). */
  ehloName: string;
  /** EHLO keywords (upper case) with their parameters. */
  extensions: ReadonlyMap<string, string>;
  /** Whether the relay learnt them under TLS (a server may offer AUTH only then). */
  tls: boolean;
  /** The keywords the server offers before STARTTLS, in its order (STARTTLS included), when the
   * relay saw them: what a plaintext client is offered. */
  plainExtensions?: ReadonlyMap<string, string>;
  /** Its last 250 reply to end of data (text lines and enhanced code), when one was seen. */
  deliveryReply?: SmtpReply;
  /** Its last 221 reply to QUIT, when one was seen: a client's QUIT gets it at once. */
  goodbyeReply?: SmtpReply;
  /** When the capabilities were learnt (ms, the cache's clock). */
  learnedAt: number;
}

/** Default freshness of a learnt profile (1 hour). */
export const DEFAULT_PROFILE_TTL_MS = 3600_000;
/** Default most servers remembered. */
export const DEFAULT_PROFILE_MAX = 4096;

/** A bounded, expiring cache of server profiles keyed by address and port. */
export class ServerProfiles {
  #entries = new Map<string, ServerProfile>();
  #ttlMs: number;
  #max: number;
  #now: () => number;

  /** `ttlMs` freshness, `max` entries; `now` is the clock (tests pin it). */
  constructor(
    opts: { ttlMs?: number; max?: number; now?: () => number } = {},
  ) {
    this.#ttlMs = opts.ttlMs ?? DEFAULT_PROFILE_TTL_MS;
    this.#max = Math.max(1, opts.max ?? DEFAULT_PROFILE_MAX);
    this.#now = opts.now ?? (() => Date.now());
  }

  /** The cache `smtp.server_profile_ttl` and `smtp.server_profile_max` ask for. */
  static forConfig(smtp: SmtpConfig): ServerProfiles {
    return new ServerProfiles({
      ttlMs: (smtp.serverProfileTtl ?? DEFAULT_PROFILE_TTL_MS / 1000) * 1000,
      max: smtp.serverProfileMax ?? DEFAULT_PROFILE_MAX,
    });
  }

  /** Servers currently remembered. */
  get size(): number {
    return this.#entries.size;
  }

  /** The fresh profile of `server`, or undefined (never learnt, or older than the TTL). */
  get(server: { ip: string; port: number }): ServerProfile | undefined {
    const key = keyOf(server);
    const p = this.#entries.get(key);
    if (!p) return undefined;
    if (this.#now() - p.learnedAt >= this.#ttlMs) {
      this.#entries.delete(key);
      return undefined;
    }
    // Most recently used last: eviction takes the first.
    this.#entries.delete(key);
    this.#entries.set(key, p);
    return p;
  }

  /** Records what a relay connection learnt (keeps the last delivery reply shape). */
  learn(
    server: { ip: string; port: number },
    seen: {
      greeting: string[];
      ehloName: string;
      extensions: ReadonlyMap<string, string>;
      tls?: boolean;
      plainExtensions?: ReadonlyMap<string, string>;
    },
  ): ServerProfile {
    const key = keyOf(server);
    const old = this.#entries.get(key);
    const p: ServerProfile = {
      greeting: [...seen.greeting],
      ehloName: seen.ehloName,
      extensions: new Map(seen.extensions),
      tls: seen.tls === true,
      plainExtensions: seen.plainExtensions ? new Map(seen.plainExtensions) : undefined,
      deliveryReply: old?.deliveryReply,
      goodbyeReply: old?.goodbyeReply,
      learnedAt: this.#now(),
    };
    this.#entries.delete(key);
    this.#entries.set(key, p);
    while (this.#entries.size > this.#max) {
      const first = this.#entries.keys().next().value as string;
      this.#entries.delete(first);
    }
    return p;
  }

  /** Records the server's 221 reply to QUIT, which later sessions give their clients at once. */
  saidGoodbye(server: { ip: string; port: number }, r: SmtpReply): void {
    const p = this.#entries.get(keyOf(server));
    if (p && r.code === 221) p.goodbyeReply = { ...r, lines: [...r.lines] };
  }

  /** Records the server's 250 reply to end of data, the shape a discard's reply copies. */
  delivered(server: { ip: string; port: number }, r: SmtpReply): void {
    const p = this.#entries.get(keyOf(server));
    if (p && r.code === 250) p.deliveryReply = { ...r, lines: [...r.lines] };
  }
}

function keyOf(s: { ip: string; port: number }): string {
  return s.ip.includes(":") ? `[${s.ip}]:${s.port}` : `${s.ip}:${s.port}`;
}
