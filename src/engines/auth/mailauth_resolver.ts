/**
 * The DNS resolver mailauth is given: SSG's own resolver (`src/engines/dns/resolver.ts`, its
 * `DnsAnswer`) put into the shape of Node's `dns.promises.resolve`, which is what mailauth's
 * `resolver` option expects: an array of answers (TXT: an array of character-string chunks per
 * record; MX: `{ exchange, priority }`), or an Error whose `code` says why there is none.
 *
 * Mapping (mailauth reads these codes, lib/spf/index.js `limitedResolver`): NXDOMAIN →
 * `ENOTFOUND` and an empty answer → `ENODATA` (both "void": SPF counts them, RFC 7208 §4.6.4; a
 * missing key or DMARC record); every other failure (server down, SERVFAIL, REFUSED, a timeout,
 * our own deadline) → `ETIMEOUT`/`ESERVFAIL`, which mailauth turns into `temperror` — never into
 * "none", so a DNS outage can never look like an unsigned or unprotected domain.
 *
 * Limits: every query carries the verification's AbortSignal (the whole check's deadline); at
 * most `MAX_QUERIES` questions per verification, and identical questions share one answer
 * (SPF at MAIL FROM and DKIM/DMARC at end of data reuse the same lookups).
 */

/** Record types mailauth asks for. */
export type AuthDnsType = "A" | "AAAA" | "TXT" | "MX" | "PTR" | "CNAME";

/** What SSG's resolver answers (the subset of `DnsAnswer` used here). */
export interface AuthDnsAnswer {
  /** ok, no such name, no record of that type, or a failure. */
  status: "ok" | "nxdomain" | "nodata" | "error";
  /** Answers as text (A/AAAA addresses, names, "10 mx.example" for MX, joined TXT). */
  records: string[];
  /** TXT only: each record's character-strings. */
  txt?: string[][];
  /** Why, for "error". */
  reason?: string;
}

/** The resolver SSG gives (structurally `DnsResolver` of `src/engines/dns/resolver.ts`, so
 * that tests may pass a fake). */
export interface AuthDns {
  /** One question; never throws for a DNS failure (status "error"). */
  query(name: string, type: AuthDnsType, signal?: AbortSignal): Promise<AuthDnsAnswer>;
}

/** mailauth's resolver signature (Node's `dns.promises.resolve`). */
export type MailauthResolver = (name: string, type: string) => Promise<unknown[]>;

/** Most DNS questions one message's verification may ask (SPF alone may ask 10 + 2 × 10 MX). */
export const MAX_QUERIES = 100;

const TYPES: ReadonlySet<string> = new Set(["A", "AAAA", "TXT", "MX", "PTR", "CNAME"]);

/** An Error carrying a Node-style DNS `code`, as mailauth expects. */
export class DnsLookupError extends Error {
  /** `ENOTFOUND`, `ENODATA`, `ETIMEOUT`, `ESERVFAIL`, `EBADNAME`. */
  readonly code: string;
  /** `message` says which question failed; `code` is what mailauth reads. */
  constructor(code: string, message: string) {
    super(message);
    this.name = "DnsLookupError";
    this.code = code;
  }
}

/**
 * A mailauth resolver over `dns`, for one verification: answers are shared per (type, name),
 * every query gets `signal`, and past `MAX_QUERIES` questions or after `signal` fired each
 * question fails with `ETIMEOUT` (a temperror for the check that asked).
 */
export function mailauthResolver(dns: AuthDns, signal?: AbortSignal): MailauthResolver {
  const answers = new Map<string, Promise<unknown[]>>();
  return (name: string, type: string): Promise<unknown[]> => {
    const t = String(type).toUpperCase();
    const n = String(name).toLowerCase().replace(/\.$/, "");
    const key = `${t} ${n}`;
    const known = answers.get(key);
    if (known) return known;
    let answer: Promise<unknown[]>;
    if (!TYPES.has(t)) {
      answer = Promise.reject(new DnsLookupError("EBADNAME", `unsupported record type ${t}`));
    } else if (signal?.aborted) {
      answer = Promise.reject(new DnsLookupError("ETIMEOUT", `${t} ${n}: out of time`));
    } else if (answers.size >= MAX_QUERIES) {
      answer = Promise.reject(
        new DnsLookupError("ETIMEOUT", `${t} ${n}: more than ${MAX_QUERIES} DNS questions`),
      );
    } else {
      answer = ask(dns, n, t as AuthDnsType, signal);
    }
    answer.catch(() => {}); // each caller gets the rejection; none is unhandled here
    answers.set(key, answer);
    return answer;
  };
}

async function ask(
  dns: AuthDns,
  name: string,
  type: AuthDnsType,
  signal?: AbortSignal,
): Promise<unknown[]> {
  let a: AuthDnsAnswer;
  try {
    a = await dns.query(name, type, signal);
  } catch (e) {
    throw new DnsLookupError("ESERVFAIL", `${type} ${name}: ${e instanceof Error ? e.message : e}`);
  }
  switch (a.status) {
    case "nxdomain":
      throw new DnsLookupError("ENOTFOUND", `${type} ${name}: no such domain`);
    case "nodata":
      throw new DnsLookupError("ENODATA", `${type} ${name}: no ${type} record`);
    case "error": {
      const why = a.reason ?? "DNS failure";
      // A name the resolver refuses to ask is the name's fault (mailauth: permerror), any other
      // failure is the network's (temperror).
      const code = /not a valid name/.test(why)
        ? "EBADNAME"
        : /time|abort|no answer/i.test(why)
        ? "ETIMEOUT"
        : "ESERVFAIL";
      throw new DnsLookupError(code, `${type} ${name}: ${why}`);
    }
  }
  const out = toNodeShape(type, a);
  if (out.length === 0) throw new DnsLookupError("ENODATA", `${type} ${name}: no ${type} record`);
  return out;
}

/** Node's shapes: TXT → string[][], MX → {exchange, priority}[], others → string[]. */
function toNodeShape(type: AuthDnsType, a: AuthDnsAnswer): unknown[] {
  if (type === "TXT") return a.txt ?? a.records.map((r) => [r]);
  if (type === "MX") {
    const out: { exchange: string; priority: number }[] = [];
    for (const r of a.records) {
      const m = /^\s*(\d{1,5})\s+(\S+?)\.?\s*$/.exec(r);
      if (m) out.push({ priority: Number(m[1]), exchange: m[2] });
    }
    return out;
  }
  return a.records.map((r) => r.replace(/\.$/, ""));
}
