/**
 * One DNS list entry as an administrator writes it, in Postfix's `postscreen_dnsbl_sites` syntax:
 * `zone[=reply]*weight`, e.g. `zen.example.org=127.0.0.[2..11]*3` or `wl.example.org=127.0.[0..255].[2..3]*-5`
 * (a negative weight: an allowlist, DNSWL). `reply` is four dot-separated octet patterns, each a
 * number or a bracketed set of numbers and `a..b` ranges separated by `;` (`127.0.0.[2;4..7]`);
 * without it any A reply counts, except the 127.255.255.0/24 codes (see `isListRefusal`).
 *
 * Trusts: nothing; a pattern is parsed into number ranges (no regular expressions), so testing a
 * reply costs at most 4 × (ranges) comparisons.
 */

/** An inclusive range of octet values. */
export type OctetRange = readonly [number, number];

/** A parsed list entry. */
export interface DnsblSite {
  /** The entry as written (for logs and evidence). */
  text: string;
  /** The list's DNS zone, lower case, no trailing dot. */
  zone: string;
  /** Added to the score when the reply matches (default 1; negative for allowlists). */
  weight: number;
  /** Per octet, the allowed values; absent: any reply outside 127.255.255.0/24. */
  reply?: OctetRange[][];
}

/** Largest absolute weight accepted. */
export const MAX_WEIGHT = 1000;

const LABEL = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;

/** Parses `zone[=reply][*weight]`; throws a `RangeError` saying what was expected. */
export function parseDnsblSite(text: string): DnsblSite {
  const t = text.trim();
  const star = t.lastIndexOf("*");
  let head = t;
  let weight = 1;
  if (star >= 0) {
    const w = t.slice(star + 1);
    if (!/^[+-]?\d{1,4}$/.test(w) || Math.abs(Number(w)) > MAX_WEIGHT || Number(w) === 0) {
      throw new RangeError(
        `"${text}": the weight after "*" must be a non-zero integer from -${MAX_WEIGHT} to ${MAX_WEIGHT}`,
      );
    }
    weight = Number(w);
    head = t.slice(0, star);
  }
  const eq = head.indexOf("=");
  const zone = (eq >= 0 ? head.slice(0, eq) : head).toLowerCase().replace(/\.$/, "");
  if (!isZone(zone)) {
    throw new RangeError(`"${text}": "${zone}" is not a DNS zone name (e.g. zen.example.org)`);
  }
  const site: DnsblSite = { text: t, zone, weight };
  if (eq >= 0) site.reply = parseReplyPattern(head.slice(eq + 1), text);
  return site;
}

/** A zone name: at least two labels of letters, digits, '-' or '_'; at most 200 characters. */
function isZone(zone: string): boolean {
  if (zone.length === 0 || zone.length > 200) return false;
  const labels = zone.split(".");
  return labels.length >= 2 && labels.every((l) => LABEL.test(l));
}

function parseReplyPattern(p: string, text: string): OctetRange[][] {
  const bad = (why: string) =>
    new RangeError(
      `"${text}": the reply pattern "${p}" ${why} (expected e.g. 127.0.0.2 or 127.0.0.[2..11] or 127.0.0.[2;4..7])`,
    );
  // Split on dots outside brackets ("[1..3]" holds dots of its own).
  const parts: string[] = [];
  let depth = 0;
  let cur = "";
  for (const ch of p) {
    if (ch === "[") depth++;
    if (ch === "]") depth--;
    if (depth < 0 || depth > 1) throw bad("has unbalanced brackets");
    if (ch === "." && depth === 0) {
      parts.push(cur);
      cur = "";
    } else cur += ch;
  }
  parts.push(cur);
  if (depth !== 0) throw bad("has unbalanced brackets");
  if (parts.length !== 4) throw bad("must have four octets");
  return parts.map((part) => {
    const set = /^\[(.*)\]$/.exec(part);
    const items = set ? set[1].split(";") : [part];
    if (items.length > 64) throw bad("has too many alternatives");
    return items.map((item): OctetRange => {
      const m = /^(\d{1,3})(?:\.\.(\d{1,3}))?$/.exec(item);
      if (!m || (!set && m[2] !== undefined)) throw bad(`has "${item}"`);
      const lo = Number(m[1]);
      const hi = m[2] === undefined ? lo : Number(m[2]);
      if (lo > 255 || hi > 255 || lo > hi) throw bad(`has the range "${item}"`);
      return [lo, hi];
    });
  });
}

/**
 * Whether `address` (an A record) is one of the list's refusal codes, 127.255.255.0/24 (Spamhaus
 * and others: 127.255.255.254 "query through a public resolver", .255 "excessive queries", .252
 * "typo in the zone"): not a listing, so a lookup failure.
 */
export function isListRefusal(address: string): boolean {
  return address.startsWith("127.255.255.");
}

/** Whether an A record of the list counts as a listing for this entry. */
export function replyMatches(site: DnsblSite, address: string): boolean {
  const octets = address.split(".").map(Number);
  if (octets.length !== 4 || octets.some((o) => !Number.isInteger(o) || o < 0 || o > 255)) {
    return false;
  }
  if (!site.reply) return !isListRefusal(address);
  return site.reply.every((ranges, i) =>
    ranges.some(([lo, hi]) => octets[i] >= lo && octets[i] <= hi)
  );
}
