/**
 * Our Authentication-Results header field (RFC 8601) on the message relayed to the server, and
 * the removal of forged ones: every inbound Authentication-Results field whose authserv-id is
 * ours is deleted before ours is added (§5: an MTA "MUST delete any discovered instance of this
 * header field that claims, by virtue of its authentication service identifier, to have been
 * added within its trust boundary but that did not come directly from another trusted MTA"), so the server can trust a field carrying our id
 * to be ours. Fields of other authserv-ids are kept (they are the sender's business, and the
 * server knows they are not ours). Haraka's `clean_auth_results` and OpenDKIM do the same.
 *
 * Pure and byte-exact, like `tag.ts`: everything but the removed fields and the added one is
 * copied unchanged. The field goes at the top of the header section (§5: "prepended … as close
 * to the Received header of the ADMD as possible"; SSG's own Received is put above it when the
 * message is relayed).
 *
 * Security: untrusted bytes (the message) and untrusted text in the value (domains and
 * addresses from the envelope and headers, put into mailauth's entries). The value is written as
 * printable ASCII only — control characters become spaces, other characters "?" — and folded at
 * spaces under 78 characters per line where possible, never past 998 (RFC 5322 §2.1.1).
 */
import { HARD_LINE_LIMIT, SOFT_LINE_LIMIT } from "./header_field.ts";
import { fieldValue, parseRawHeaders } from "./raw_headers.ts";

/** The field name. */
export const AUTH_RESULTS_FIELD = "Authentication-Results";

const encoder = new TextEncoder();

/**
 * The authserv-id of an Authentication-Results value (RFC 8601 §2.2: `[CFWS] authserv-id
 * [CFWS [version]] ";"`), lower case; "" when there is none. Comments, also nested, are skipped;
 * a quoted-string id is unquoted.
 */
export function authservIdOf(value: string): string {
  let i = 0;
  const skipCfws = () => {
    for (;;) {
      while (i < value.length && /\s/.test(value[i])) i++;
      if (value[i] !== "(") return;
      let depth = 0;
      for (; i < value.length; i++) {
        if (value[i] === "\\") i++;
        else if (value[i] === "(") depth++;
        else if (value[i] === ")" && --depth === 0) {
          i++;
          break;
        }
      }
    }
  };
  skipCfws();
  if (value[i] === '"') {
    let out = "";
    for (i++; i < value.length && value[i] !== '"'; i++) {
      if (value[i] === "\\") i++;
      out += value[i] ?? "";
    }
    return out.trim().toLowerCase();
  }
  const m = /^[^\s;()"]+/.exec(value.slice(i));
  return m ? m[0].toLowerCase() : "";
}

/** `Authentication-Results: value` CRLF, printable ASCII, folded at spaces. */
export function formatAuthResults(value: string): string {
  const clean = value
    // deno-lint-ignore no-control-regex
    .replace(/[\x00-\x1f\x7f]+/g, " ")
    .replace(/[^\x20-\x7e]/g, "?")
    .replace(/ {2,}/g, " ")
    .trim();
  let out = "";
  let line = `${AUTH_RESULTS_FIELD}:`;
  for (let token of clean.split(" ")) {
    if (token.length > HARD_LINE_LIMIT - 2) token = token.slice(0, HARD_LINE_LIMIT - 2);
    if (line.trim() !== "" && line.length + 1 + token.length > SOFT_LINE_LIMIT) {
      out += line + "\r\n";
      line = "";
    }
    line += " " + token;
  }
  return out + line + "\r\n";
}

/**
 * The message without inbound Authentication-Results fields carrying `authservId` (any case),
 * with `value` (when given) prepended as our field. Returns `message` itself when nothing changes.
 */
export function applyAuthResults(
  message: Uint8Array,
  authservId: string,
  value?: string,
): Uint8Array {
  const ours = authservId.toLowerCase();
  const headers = parseRawHeaders(message);
  const removed = headers.fields.filter((f) =>
    f.name.toLowerCase() === "authentication-results" &&
    authservIdOf(fieldValue(message, f)) === ours
  );
  if (value === undefined && removed.length === 0) return message;
  const added = value === undefined ? new Uint8Array(0) : encoder.encode(formatAuthResults(value));
  let size = added.length + message.length;
  for (const f of removed) size -= f.end - f.start;
  const out = new Uint8Array(size);
  out.set(added, 0);
  let o = added.length;
  let pos = 0;
  for (const f of removed) {
    out.set(message.subarray(pos, f.start), o);
    o += f.start - pos;
    pos = f.end;
  }
  out.set(message.subarray(pos), o);
  return out;
}
