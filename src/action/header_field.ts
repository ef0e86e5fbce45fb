/**
 * Writing header fields that SSG generates (tags, alert headers): validated names, values with no
 * control characters, non-ASCII text as RFC 2047 encoded words, folded to the line limits of
 * RFC 5322 §2.1.1 (78 characters SHOULD, 998 MUST) and RFC 2047 §2 (encoded words at most 75
 * characters, lines containing them at most 76).
 *
 * Security: values passed here may derive from untrusted text. `formatHeaderField` cleans the
 * value again (no CR, LF or other control character can survive), and encodes any value that
 * contains "=?" so that no encoded word written by an attacker is passed through to be decoded
 * by the reader's mail client.
 */
import { cleanText } from "./clean_text.ts";

/** RFC 5322 §2.1.1: lines SHOULD be at most 78 characters, excluding CRLF. */
export const SOFT_LINE_LIMIT = 78;
/** RFC 5322 §2.1.1: lines MUST be at most 998 characters, excluding CRLF. */
export const HARD_LINE_LIMIT = 998;
/** RFC 2047 §2: an encoded word is at most 75 characters. */
export const MAX_ENCODED_WORD = 75;
/** Longest value `formatHeaderField` writes, in code points (longer ones are cut). */
export const MAX_FIELD_VALUE = 4000;

const NAME_RE = /^[\x21-\x39\x3b-\x7e]{1,76}$/;

/** The header field is not writable (bad name). */
export class HeaderFieldError extends Error {
  /** `message` names the bad field; `cause` keeps the underlying error. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "HeaderFieldError";
  }
}

/** Whether `name` is a field name (RFC 5322 §3.6.8: printable ASCII except ":"), 1–76 chars. */
export function isValidHeaderName(name: string): boolean {
  return NAME_RE.test(name);
}

/**
 * Whether `value` can be written as is (after folding): printable ASCII, no "=?" (which a reader
 * might decode), and no word too long to fold under the soft limit.
 */
export function isPlainValue(value: string): boolean {
  if (!/^[\x20-\x7e]*$/.test(value) || value.includes("=?")) return false;
  return value.split(" ").every((w) => w.length <= SOFT_LINE_LIMIT - 2);
}

/**
 * Formats `name: value` CRLF, folded. The value is cleaned (`cleanText` without decoding encoded
 * words: the caller's text is taken literally) and cut to `MAX_FIELD_VALUE`; a value that is not
 * plain (`isPlainValue`) is written as UTF-8 "B" encoded words. Throws `HeaderFieldError` for an
 * invalid name.
 */
export function formatHeaderField(name: string, value: string): string {
  if (!isValidHeaderName(name)) {
    throw new HeaderFieldError(`Invalid header field name ${JSON.stringify(name.slice(0, 80))}`);
  }
  const clean = cleanText(value, MAX_FIELD_VALUE, { decodeWords: false });
  const head = `${name}:`;
  if (isPlainValue(clean)) return foldPlain(head, clean) + "\r\n";
  // "Name: " + first word must fit 76 (RFC 2047 §2); if the name is long, start on a new line.
  const firstRoom = 76 - head.length - 1;
  const words = encodeWords(clean, firstRoom >= 16 ? firstRoom : MAX_ENCODED_WORD);
  const sep = firstRoom >= 16 ? " " : "\r\n ";
  return head + sep + words.join("\r\n ") + "\r\n";
}

/** Folds plain text after `head` at spaces so lines stay within the soft limit where possible. */
function foldPlain(head: string, value: string): string {
  if (value === "") return head;
  const tokens = value.split(" ");
  let out = "";
  let line = head;
  for (const token of tokens) {
    if (token !== "" && line.length + 1 + token.length > SOFT_LINE_LIMIT && line.trim() !== "") {
      out += line + "\r\n";
      line = "";
    }
    line += " " + token;
  }
  return out + line;
}

const encoder = new TextEncoder();

/**
 * Encodes `text` as UTF-8 "B" encoded words (RFC 2047 §4.1), the first at most `firstMax`
 * characters long, the others at most 75. Words end on character boundaries (§5: an encoded
 * word must not split a multi-byte character), so white space between them, which readers
 * drop (§6.2), loses nothing. Returns at least one word.
 */
export function encodeWords(text: string, firstMax = MAX_ENCODED_WORD): string[] {
  const words: string[] = [];
  let chunk: number[] = [];
  let max = firstMax;
  const room = () => Math.floor((max - 12) / 4) * 3; // "=?UTF-8?B?" + "?=" is 12 characters
  for (const ch of text) {
    const bytes = encoder.encode(ch);
    if (chunk.length + bytes.length > room() && chunk.length > 0) {
      words.push(word(chunk));
      chunk = [];
      max = MAX_ENCODED_WORD;
    }
    chunk.push(...bytes);
  }
  if (chunk.length > 0 || words.length === 0) words.push(word(chunk));
  return words;
}

function word(bytes: number[]): string {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return `=?UTF-8?B?${btoa(bin)}?=`;
}
