/**
 * The `tag` action and the anti-forgery strip: the message that is forwarded or quarantined, with
 * SSG's header fields added and the Subject prefixed — and with every inbound copy of SSG's own
 * verdict header fields removed, so that a sender cannot pre-forge a verdict such as
 * "X-SSG-Verdict: clean" (reliability-anchors §2.4 "Trust headers"; Haraka's
 * `clean_auth_results` is the same idea for Authentication-Results).
 *
 * Pure and byte-exact: everything that is not a removed field, an added field, or the inserted
 * prefix is copied unchanged, byte for byte (the body, the order and folding of other fields,
 * odd line endings). Added fields go at the top of the header section, where trace and filter
 * fields conventionally go (RFC 5322 §3.6: order of fields is not significant except trace).
 *
 * Security: untrusted bytes (the message). The tag itself comes from the rule file and is
 * validated at load with `checkTag`; values are cleaned and encoded again when written.
 */
import { formatHeaderField, HARD_LINE_LIMIT, isValidHeaderName } from "./header_field.ts";
import { encodeWords } from "./header_field.ts";
import { cleanText } from "./clean_text.ts";
import { fieldValue, findField, parseRawHeaders, type RawHeaders } from "./raw_headers.ts";
import type { Tag } from "./verdict_types.ts";

/** Prefix of the header fields SSG owns; inbound copies are always removed. */
export const VERDICT_HEADER_PREFIX = "X-SSG-";

/** Longest header value a tag may set, in characters. */
export const MAX_TAG_VALUE = 900;
/** Longest Subject prefix, in characters. */
export const MAX_SUBJECT_PREFIX = 100;

/** The default strip list: every `X-SSG-*` field. */
export const DEFAULT_STRIP: readonly string[] = Object.freeze([`${VERDICT_HEADER_PREFIX}*`]);

const encoder = new TextEncoder();

/**
 * Problems with a tag, for the rule-file loader (empty when valid): header names must be field
 * names, values printable (no CR, LF or other control characters) and at most `MAX_TAG_VALUE`
 * characters, the Subject prefix at most `MAX_SUBJECT_PREFIX` characters without controls.
 */
export function checkTag(tag: Tag): string[] {
  const problems: string[] = [];
  for (const h of tag.headers) {
    if (!isValidHeaderName(h.name)) {
      problems.push(`header name ${JSON.stringify(h.name)} is not a valid field name`);
    }
    // deno-lint-ignore no-control-regex
    if (/[\x00-\x1f\x7f-\x9f\u2028\u2029]/.test(h.value)) {
      problems.push(`header ${h.name}: the value must not contain control characters or CR/LF`);
    }
    if (h.value.length > MAX_TAG_VALUE) {
      problems.push(`header ${h.name}: the value is longer than ${MAX_TAG_VALUE} characters`);
    }
  }
  if (tag.subjectPrefix !== undefined) {
    // deno-lint-ignore no-control-regex
    if (/[\x00-\x1f\x7f-\x9f\u2028\u2029]/.test(tag.subjectPrefix)) {
      problems.push("subject_prefix must not contain control characters or CR/LF");
    }
    if (tag.subjectPrefix.length > MAX_SUBJECT_PREFIX) {
      problems.push(`subject_prefix is longer than ${MAX_SUBJECT_PREFIX} characters`);
    }
  }
  return problems;
}

/**
 * Builds a matcher for field names from patterns: an exact name ("X-Spam-Flag") or a prefix
 * ending in "*" ("X-SSG-*"); ASCII case-insensitive (RFC 5322 §1.2.2).
 */
export function headerMatcher(patterns: readonly string[]): (name: string) => boolean {
  const exact = new Set<string>();
  const prefixes: string[] = [];
  for (const p of patterns) {
    const l = p.toLowerCase();
    if (l.endsWith("*")) prefixes.push(l.slice(0, -1));
    else exact.add(l);
  }
  return (name) => {
    const l = name.toLowerCase();
    return exact.has(l) || prefixes.some((p) => l.startsWith(p));
  };
}

/** Options of `tagMessage`. */
export interface TagOptions {
  /**
   * Fields to remove from the inbound message (exact names or "Prefix-*"). Default
   * `DEFAULT_STRIP` (`X-SSG-*`). The names of the tag's own headers are always removed too:
   * the added field must be the only one of its name.
   */
  strip?: readonly string[];
}

/**
 * The message with inbound copies of SSG's fields removed, the tag's header fields added at the
 * top of the header section, and the first Subject field's raw value prefixed (a Subject field
 * is added when there is none; a Subject that already starts with the prefix is not prefixed
 * again). Returns `message` itself when nothing changes. Throws `HeaderFieldError` for a tag
 * header name that `checkTag` would have refused.
 */
export function tagMessage(message: Uint8Array, tag?: Tag, opts: TagOptions = {}): Uint8Array {
  const strip = headerMatcher([
    ...(opts.strip ?? DEFAULT_STRIP),
    ...(tag?.headers.map((h) => h.name) ?? []),
  ]);
  const headers = parseRawHeaders(message);
  const added = (tag?.headers ?? []).map((h) => formatHeaderField(h.name, h.value)).join("");
  const prefix = tag?.subjectPrefix ? subjectEdit(message, headers, tag.subjectPrefix) : undefined;
  const removed = headers.fields.filter((f) => f.name !== "" && strip(f.name));
  if (added === "" && prefix === undefined && removed.length === 0) return message;

  const parts: Uint8Array[] = [];
  if (added !== "") parts.push(encoder.encode(added));
  if (prefix?.kind === "add") parts.push(encoder.encode(prefix.field));
  let pos = 0;
  for (const f of removed) {
    if (prefix?.kind === "insert" && prefix.at >= pos && prefix.at < f.start) {
      parts.push(message.subarray(pos, prefix.at), encoder.encode(prefix.text));
      pos = prefix.at;
    }
    parts.push(message.subarray(pos, f.start));
    pos = f.end;
  }
  if (prefix?.kind === "insert" && prefix.at >= pos) {
    parts.push(message.subarray(pos, prefix.at), encoder.encode(prefix.text));
    pos = prefix.at;
  }
  parts.push(message.subarray(pos));
  return concat(parts);
}

type SubjectEdit =
  | { kind: "insert"; at: number; text: string }
  | { kind: "add"; field: string };

/**
 * Where and what to insert for the Subject prefix. The prefix goes right after "Subject:" and the
 * white space that follows it, into the raw value, so encoded words (RFC 2047) in the value stay
 * untouched. An encoded word must be separated from adjacent text by white space (§5), so a
 * space is added when the prefix does not end with one; a non-ASCII prefix is itself encoded.
 */
function subjectEdit(
  message: Uint8Array,
  headers: RawHeaders,
  prefix: string,
): SubjectEdit | undefined {
  const field = findField(headers, "Subject");
  if (!field) return { kind: "add", field: formatHeaderField("Subject", prefix.trimEnd()) };
  // Compare decoded text, so that an encoded prefix written earlier is recognised too.
  const shown = cleanText(fieldValue(message, field, 4096), 1000);
  const bare = cleanText(prefix, MAX_SUBJECT_PREFIX, { decodeWords: false });
  if (bare !== "" && shown.startsWith(bare)) return undefined; // already tagged
  let at = field.valueStart;
  while (at < field.end && (message[at] === 0x20 || message[at] === 0x09)) at++;
  const atLineEnd = message[at] === 0x0d || message[at] === 0x0a || at >= field.end;
  let text: string;
  if (/^[\x20-\x7e]*$/.test(prefix) && !prefix.includes("=?")) {
    text = prefix;
  } else {
    // Encode the visible part; the trailing space is kept outside so it survives decoding.
    const trailing = /\s$/.test(prefix);
    text = encodeWords(prefix.trimEnd()).join(" ") + (trailing ? " " : "");
  }
  if (atLineEnd) {
    // "Subject:" CRLF SP value (value starts on a continuation line), or an empty Subject.
    text = (at === field.valueStart ? " " : "") + text.trimEnd();
  } else if (!/\s$/.test(text)) {
    text += " ";
  }
  // RFC 5322 §2.1.1: never exceed 998 octets on the first line; fold after the prefix instead.
  const lineEnd = message.indexOf(0x0a, at);
  const firstLine = (lineEnd < 0 ? message.length : lineEnd) - field.start + text.length;
  if (firstLine > HARD_LINE_LIMIT && !atLineEnd) text = text.trimEnd() + "\r\n ";
  return { kind: "insert", at, text };
}

function concat(parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
