/**
 * The plain-message reading: what mailparser would say of a message that has nothing for
 * mailparser to do — one text/plain part, 7bit/8bit/binary, UTF-8 or ASCII, a header section of
 * printable ASCII with no encoded words — read straight from the bytes, without mailparser's
 * streams (issue 9: mailparser cost ~0.37 ms of the 0.42 ms that decoding a 10 KB message took,
 * and most mail a gateway sees is such a message or close to it).
 *
 * The reading is exact or absent: `readPlainMessage` returns undefined for anything outside that
 * narrow class (any doubt: a second Subject, From, To, Cc, Content-Type or
 * Content-Transfer-Encoding field, a Content-Disposition, "=?", "xn--", a control character or
 * 8-bit byte in the header section, a bare CR or LF there, a body that is not valid UTF-8, a
 * Content-Type parameter other than one charset), and the caller then runs mailparser as before.
 * What it returns equals mailparser's own subject, text and From/To/Cc for the same bytes (as
 * `message.ts` maps them); `test/policy/plain_message_test.ts` checks that on a fixed corpus and
 * on thousands of generated messages, so the verdict never depends on which reader ran. The
 * rules that mirror mailparser (mailparser 3.14 with libmime 5.6 and mailsplit 5.4):
 * - a field value is the text after the first colon, each line break with the spaces and tabs
 *   after it replaced by one space, trimmed (libmime `decodeHeader`); without "=?" decoding
 *   the words changes nothing;
 * - the text is the body decoded as UTF-8 with every CRLF (or LF) turned into LF, or "" when the
 *   body is empty (a message with no text part has no text);
 * - addresses are `addressparser`'s, display names trimmed, groups flattened.
 *
 * Trusts nothing: the bytes are untrusted; every test is a bounded scan of them. Limits: the
 * same `DecodeLimits` as mailparser's path (a header section past `maxHeaderBytes`, or with more
 * than `maxHeaders` fields, is left to that path, which records the problem).
 *
 * @module
 */
import addressparser from "nodemailer/lib/addressparser/index.js";
import type { Mailbox } from "./message.ts";

/** What mailparser's reading of a plain message gives (before SSG's caps and fix-ups). */
export interface PlainReading {
  /** The Subject field's value ("" when none). */
  subject: string;
  /** The body as text, line ends as LF ("" when empty). */
  text: string;
  /** Mailboxes of From, To and Cc (groups flattened, names trimmed). */
  from: Mailbox[];
  to: Mailbox[];
  cc: Mailbox[];
}

/** Header fields read for the facts, each allowed at most once in a plain message. */
const ONCE = new Set([
  "subject",
  "from",
  "to",
  "cc",
  "content-type",
  "content-transfer-encoding",
]);
const PLAIN_TYPE = /^text\/plain(?:\s*;\s*charset\s*=\s*("?)(?:us-ascii|utf-8)\1)?$/i;
const PLAIN_ENCODING = /^(?:7bit|8bit|binary)$/i;
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * mailparser's reading of `bytes` when the message is plain (see the module header), else
 * undefined. Never throws.
 */
export function readPlainMessage(
  bytes: Uint8Array,
  maxHeaderBytes: number,
  maxHeaders: number,
): PlainReading | undefined {
  const head = readPlainHeader(bytes, maxHeaderBytes, maxHeaders);
  if (!head) return undefined;
  let text: string;
  try {
    text = utf8.decode(bytes.subarray(head.bodyStart));
  } catch {
    return undefined; // not UTF-8: mailparser's replacement characters are its own business
  }
  const fields = head.fields;
  return {
    subject: fields.get("subject") ?? "",
    text: text.replace(/\r?\n/g, "\n"),
    from: mailboxes(fields.get("from")),
    to: mailboxes(fields.get("to")),
    cc: mailboxes(fields.get("cc")),
  };
}

/**
 * Whether the header section of `bytes` is a plain message's (everything `readPlainMessage`
 * checks but the body's UTF-8): a cheap test of where a message is best decoded.
 */
export function hasPlainHeader(
  bytes: Uint8Array,
  maxHeaderBytes: number,
  maxHeaders: number,
): boolean {
  return readPlainHeader(bytes, maxHeaderBytes, maxHeaders) !== undefined;
}

/** The fields a plain message's reading needs and where its body starts; undefined if not plain. */
function readPlainHeader(
  bytes: Uint8Array,
  maxHeaderBytes: number,
  maxHeaders: number,
): { fields: Map<string, string>; bodyStart: number } | undefined {
  const fields = new Map<string, string>();
  let count = 0;
  let name = "";
  let value = "";
  let i = 0;
  const n = bytes.length;
  const end = (): boolean => {
    // Ends the current field; false when the message is not plain.
    if (name === "") return true;
    count++;
    if (count > maxHeaders) return false;
    if (ONCE.has(name)) {
      if (fields.has(name)) return false;
      fields.set(name, value.trim());
    } else if (name === "content-disposition") {
      return false;
    }
    name = "";
    return true;
  };
  for (;;) {
    if (i > maxHeaderBytes) return undefined;
    // One line: printable ASCII and tabs, ended by CRLF.
    const start = i;
    while (i < n) {
      const b = bytes[i];
      if (b === 0x0d) break;
      if ((b < 0x20 && b !== 0x09) || b > 0x7e) return undefined;
      if (b === 0x3d && bytes[i + 1] === 0x3f) return undefined; // "=?": an encoded word
      i++;
    }
    if (i + 1 >= n || bytes[i + 1] !== 0x0a) return undefined; // bare CR, or no line end
    const lineEnd = i;
    i += 2;
    if (lineEnd === start) break; // the empty line: the body follows
    const first = bytes[start];
    if (first === 0x20 || first === 0x09) {
      if (name === "") return undefined; // a continuation with nothing to continue
      // libmime: the line break and the white space after it become one space.
      let s = start;
      while (s < lineEnd && (bytes[s] === 0x20 || bytes[s] === 0x09)) s++;
      value += " " + ascii(bytes, s, lineEnd);
      continue;
    }
    if (!end()) return undefined;
    let colon = start;
    while (colon < lineEnd && bytes[colon] !== 0x3a) {
      if (bytes[colon] <= 0x20) return undefined; // a field name has no space or tab
      colon++;
    }
    if (colon === start || colon === lineEnd) return undefined;
    name = ascii(bytes, start, colon).toLowerCase();
    value = ascii(bytes, colon + 1, lineEnd);
  }
  if (i - 2 > maxHeaderBytes) return undefined;
  if (!end()) return undefined;
  const type = fields.get("content-type");
  if (type !== undefined && !PLAIN_TYPE.test(type)) return undefined;
  const encoding = fields.get("content-transfer-encoding");
  if (encoding !== undefined && !PLAIN_ENCODING.test(encoding)) return undefined;
  for (const f of ["from", "to", "cc"]) {
    if (/xn--/i.test(fields.get(f) ?? "")) return undefined; // mailparser would decode punycode
  }
  return { fields, bodyStart: i };
}

function ascii(bytes: Uint8Array, from: number, to: number): string {
  let s = "";
  for (let k = from; k < to; k += 4096) {
    s += String.fromCharCode(...bytes.subarray(k, Math.min(to, k + 4096)));
  }
  return s;
}

type Parsed = { name?: string; address?: string; group?: Parsed[] };

function mailboxes(value: string | undefined): Mailbox[] {
  if (value === undefined) return [];
  const out: Mailbox[] = [];
  const walk = (list: Parsed[]) => {
    for (const m of list) {
      if (out.length >= 1000) return;
      if (Array.isArray(m.group)) walk(m.group);
      else out.push({ name: (m.name ?? "").toString().trim(), address: m.address ?? "" });
    }
  };
  walk(addressparser(value) as Parsed[]);
  return out;
}
