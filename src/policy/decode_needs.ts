/**
 * How much of a message the rules need decoded, found once from the rule set (issue 9): a
 * policy whose conditions read only the envelope, the session and the memory never pays for
 * MIME decoding; one that reads header fields by name (`header`) pays for the top-level header
 * section only; any other text field (subject, body, html, addresses, attachments) or `bulk`
 * (the fingerprint reads the subject and the body) needs the whole decode.
 *
 * Conservative by construction: a condition kind or field not named below as cheap needs the
 * whole decode, so a new field added to `FIELD_NAMES` is decoded fully until someone decides
 * otherwise here. What is not decoded is not looked at by any rule, so skipping it can never let
 * a message past a rule; the `content.undecodable` step then only concerns what was decoded.
 */
import type { Condition, FieldName, Rule } from "./rule.ts";

/** What must be decoded: nothing, the top-level header fields, or everything. */
export type DecodeNeeds = "none" | "headers" | "full";

/** Text fields read from the envelope only. */
const ENVELOPE_FIELDS: ReadonlySet<FieldName> = new Set<FieldName>([
  "mail_from",
  "rcpt_to",
  "sender_domain",
  "recipient_domain",
  "helo",
]);

const RANK: Record<DecodeNeeds, number> = { none: 0, headers: 1, full: 2 };

/** The larger of two needs. */
export function maxNeeds(a: DecodeNeeds, b: DecodeNeeds): DecodeNeeds {
  return RANK[a] >= RANK[b] ? a : b;
}

/** What one condition tree needs decoded. */
export function conditionNeeds(c: Condition): DecodeNeeds {
  switch (c.kind) {
    case "field":
      if (ENVELOPE_FIELDS.has(c.field)) return "none";
      // `header` with a name reads the named top-level fields; without one, every field.
      if (c.field === "header") return "headers";
      return "full";
    case "number":
    case "ip":
    case "flag":
    case "listed":
    case "virus": // the scanner reads the raw bytes itself
    case "rspamd": // so does rspamd
    case "auth": // SPF from the envelope; DKIM/DMARC/ARC (mailauth) from the raw bytes
    case "dnsbl": // client address and sender domain
      return "none";
    case "all":
    case "any":
      return c.conditions.reduce<DecodeNeeds>((n, x) => maxNeeds(n, conditionNeeds(x)), "none");
    case "not":
      return conditionNeeds(c.condition);
    default:
      return "full";
  }
}

/** What a rule set needs decoded (the most any rule needs). */
export function decodeNeedsOf(rules: readonly Rule[]): DecodeNeeds {
  return rules.reduce<DecodeNeeds>((n, r) => maxNeeds(n, conditionNeeds(r.when)), "none");
}
