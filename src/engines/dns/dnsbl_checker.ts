/**
 * DNS block- and allowlists (DNSBL, DNSWL, RHSBL; RFC 5782): the client IP (IPv4 as reversed
 * octets, IPv6 as 32 reversed nibbles; an IPv4-mapped IPv6 address as its IPv4) and the sender and
 * HELO domains (RHSBL: the name itself) are looked up under each configured zone; each entry whose
 * reply matches adds its weight to a score, as Postfix's postscreen does.
 *
 * Lookups start as soon as the subject is known (`prefetch`: the client at connect, the HELO name at
 * EHLO, the sender domain at MAIL FROM) and share the resolver's cache and in-flight look-ups, so
 * that `check()` at the end of DATA mostly finds answers ready. `check()` runs every look-up
 * concurrently and is bounded by `dnsbl.timeout` as a whole.
 *
 * Trusts: the configured resolver's answers (A records) and nothing in the mail: names from the
 * envelope are validated (`normalizeName`) or skipped, never sent raw. A reply in 127.255.255.0/24
 * (a list's "query refused" codes) is a failure, not a listing. Failures are reported as such;
 * what the caller does with them is its `on_failure`.
 */
import { domainToASCII } from "node:url";
import { canonicalIp, parseIp } from "../../packet/ip_address.ts";
import type { DnsblConfig } from "../../config/config.ts";
import { type DnsblSite, isListRefusal, replyMatches } from "./dnsbl_site.ts";
import { type DnsResolver, normalizeName } from "./resolver.ts";

/** What is looked up: the client IP, the envelope sender's domain, the HELO name. */
export type DnsblTarget = "client" | "sender_domain" | "helo";

/** One look-up of one entry and what came of it. */
export interface DnsblLookup {
  /** The entry as written. */
  site: string;
  zone: string;
  target: DnsblTarget;
  /** The address or domain looked up. */
  subject: string;
  /** The DNS name asked for. */
  query: string;
  status: "listed" | "not listed" | "failed";
  /** The A records the list returned. */
  answers: string[];
  /** The weight added to the score (0 unless listed). */
  weight: number;
  /** The entry's weight (what a listing would have added). */
  entryWeight: number;
  /** Why it failed. */
  reason?: string;
}

/** Everything the lists said about one message's client, sender and HELO. */
export interface DnsblResult {
  /** Sum of the weights of the matching entries. */
  score: number;
  /** Every look-up, in configuration order. */
  lookups: DnsblLookup[];
  /** The listed ones (a view of `lookups`). */
  hits: DnsblLookup[];
  /** The failed ones (a view of `lookups`). */
  failures: DnsblLookup[];
  /** How long the check waited, in milliseconds. */
  ms: number;
}

/** The subjects of one message. */
export interface DnsblSubjects {
  clientIp?: string;
  /** The envelope sender (the domain is taken from it) or its domain. */
  sender?: string;
  helo?: string;
}

/** The reversed-address name under a zone, or undefined when `ip` is not an address. */
export function reversedIp(ip: string): string | undefined {
  const canon = canonicalIp(ip.trim());
  if (canon === undefined) return undefined;
  const b = parseIp(canon);
  if (!b) return undefined;
  if (b.length === 4) return [...b].reverse().join(".");
  const nibbles: string[] = [];
  for (const byte of b) nibbles.push((byte >> 4).toString(16), (byte & 15).toString(16));
  return nibbles.reverse().join(".");
}

/**
 * A domain fit to look up (lower case, ASCII/punycode, valid labels), or undefined: an address
 * literal (`[192.0.2.1]`), an empty or malformed name.
 */
export function lookupDomain(name: string): string | undefined {
  let d = name.trim().toLowerCase().replace(/\.$/, "");
  if (d === "" || d.startsWith("[") || parseIp(d)) return undefined;
  if (/[\u0080-\uffff]/.test(d)) {
    d = domainToASCII(d);
    if (d === "") return undefined;
  }
  return normalizeName(d);
}

/** The domain of an address (`user@Example.ORG` → `example.org`), or the text itself. */
function domainPart(sender: string): string {
  const at = sender.lastIndexOf("@");
  return at >= 0 ? sender.slice(at + 1) : sender;
}

/** Looks the client, sender domain and HELO name up in the configured lists. */
export class DnsblChecker {
  readonly #c: DnsblConfig;
  readonly #resolver: DnsResolver;

  /** `resolver` is shared (its cache and in-flight look-ups are what `prefetch` warms). */
  constructor(config: DnsblConfig, resolver: DnsResolver) {
    this.#c = config;
    this.#resolver = resolver;
  }

  /** The configuration in force. */
  get config(): DnsblConfig {
    return this.#c;
  }

  /** Every zone configured (for `listed_in` validation and summaries). */
  zones(): string[] {
    return [
      ...new Set([...this.#c.client, ...this.#c.senderDomain, ...this.#c.helo].map((s) => s.zone)),
    ];
  }

  /**
   * Starts the look-ups for what is known so far and returns at once; the answers land in the
   * resolver's cache (or are still in flight) when `check()` asks again.
   */
  prefetch(subjects: DnsblSubjects): void {
    for (const q of this.#questions(subjects)) {
      if (q.query) void this.#resolver.query(q.query, "A");
    }
  }

  /** All look-ups concurrently, bounded by `dnsbl.timeout`; never rejects. */
  async check(subjects: DnsblSubjects): Promise<DnsblResult> {
    const t0 = performance.now();
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), this.#c.timeoutSeconds * 1000);
    try {
      const lookups = await Promise.all(
        this.#questions(subjects).map(async (q): Promise<DnsblLookup> => {
          const base = {
            site: q.site.text,
            zone: q.site.zone,
            target: q.target,
            subject: q.subject,
            query: q.query ?? "",
            entryWeight: q.site.weight,
          };
          if (!q.query) {
            // Longer than a DNS name can be under this zone: it cannot be listed there.
            return {
              ...base,
              status: "not listed",
              answers: [],
              weight: 0,
              reason: "too long to look up under this zone",
            };
          }
          const a = await this.#resolver.query(q.query, "A", ac.signal);
          if (a.status === "nxdomain" || a.status === "nodata") {
            return { ...base, status: "not listed", answers: [], weight: 0 };
          }
          if (a.status === "error") {
            const reason = a.reason === "aborted"
              ? `no answer within the dnsbl timeout of ${this.#c.timeoutSeconds} s`
              : a.reason ?? "error";
            return { ...base, status: "failed", answers: [], weight: 0, reason };
          }
          const matching = a.records.filter((r) => replyMatches(q.site, r));
          if (matching.length > 0) {
            return { ...base, status: "listed", answers: a.records, weight: q.site.weight };
          }
          const refusal = a.records.find(isListRefusal);
          if (refusal) {
            return {
              ...base,
              status: "failed",
              answers: a.records,
              weight: 0,
              reason: `the list refused the query (${refusal})`,
            };
          }
          return { ...base, status: "not listed", answers: a.records, weight: 0 };
        }),
      );
      const hits = lookups.filter((l) => l.status === "listed");
      return {
        score: hits.reduce((s, l) => s + l.weight, 0),
        lookups,
        hits,
        failures: lookups.filter((l) => l.status === "failed"),
        ms: performance.now() - t0,
      };
    } finally {
      clearTimeout(timer);
    }
  }

  /** Each (entry, subject) pair to look up, in configuration order. */
  #questions(
    s: DnsblSubjects,
  ): { site: DnsblSite; target: DnsblTarget; subject: string; query?: string }[] {
    const out: { site: DnsblSite; target: DnsblTarget; subject: string; query?: string }[] = [];
    const add = (sites: DnsblSite[], target: DnsblTarget, subject: string, name: string) => {
      for (const site of sites) {
        out.push({ site, target, subject, query: normalizeName(`${name}.${site.zone}`) });
      }
    };
    const rev = s.clientIp ? reversedIp(s.clientIp) : undefined;
    if (rev) add(this.#c.client, "client", canonicalIp(s.clientIp!.trim()) ?? s.clientIp!, rev);
    const sd = s.sender ? lookupDomain(domainPart(s.sender)) : undefined;
    if (sd) add(this.#c.senderDomain, "sender_domain", sd, sd);
    const helo = s.helo ? lookupDomain(s.helo) : undefined;
    if (helo) add(this.#c.helo, "helo", helo, helo);
    return out;
  }
}

/** One line for logs and evidence: `zen.example.org: client 192.0.2.5 → 127.0.0.2 (+3)`. */
export function describeLookup(l: DnsblLookup): string {
  const what = l.target === "client"
    ? `client ${l.subject}`
    : l.target === "helo"
    ? `helo ${l.subject}`
    : `sender domain ${l.subject}`;
  switch (l.status) {
    case "listed":
      return `${l.zone}: ${what} → ${l.answers.join(",")} (${l.weight > 0 ? "+" : ""}${l.weight})`;
    case "not listed":
      return `${l.zone}: ${what} not listed${
        l.answers.length ? ` (${l.answers.join(",")} outside ${l.site})` : ""
      }`;
    default:
      return `${l.zone}: ${what} FAILED: ${l.reason}`;
  }
}
