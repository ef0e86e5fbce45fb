/**
 * The header section of a message as byte ranges: where each field starts and ends, so that the
 * action modules can remove, insert or edit single fields and copy everything else byte for byte.
 *
 * Why not mailparser: it decodes (and so re-encodes) what it parses; `tag` and quarantine must
 * keep the message exactly as received except for the fields they change.
 *
 * Trusts nothing: the message is the client's (Security: untrusted bytes). Line endings are
 * expected as CRLF (the DATA reader canonicalises), but a bare LF is tolerated as a line end so
 * that a malformed message can neither hide a field from the anti-forgery strip nor break the
 * parse. Bounded: at most `MAX_HEADER_FIELDS` fields are reported; the rest of the header
 * section is then treated as one opaque run (still copied unchanged).
 *
 * RFC 5322 §2.2: a field is a line starting with a name and ":"; lines that start with SP or
 * HTAB continue it (folding, §2.2.3). §4.5 (obsolete syntax) allows white space between the
 * name and the colon, which readers accept — so do we, when matching names. The header section
 * ends at the first empty line (§2.1).
 */

/** Most header fields parsed (Haraka's `headers.max_lines` is 1000; this is a safety bound). */
export const MAX_HEADER_FIELDS = 10_000;

const LF = 0x0a;
const CR = 0x0d;
const SP = 0x20;
const HT = 0x09;
const COLON = 0x3a;

/** One header field: `[start, end)` covers the name, the value and the final line end. */
export interface RawField {
  /** Offset of the first byte of the field. */
  start: number;
  /** Offset just after the field's last line end (or the header section's end). */
  end: number;
  /** The field name without trailing white space; "" when the line is not a field. */
  name: string;
  /** Offset of the first byte after the colon (== `end` when there is no colon). */
  valueStart: number;
}

/** The parsed header section. */
export interface RawHeaders {
  /** Fields in order. */
  fields: RawField[];
  /** Offset where the header section ends (the empty line, or the message end). */
  headerEnd: number;
  /** Whether an empty line separating a body exists. */
  hasBody: boolean;
}

/** Finds the header fields of `message` (see the module comment for the tolerated forms). */
export function parseRawHeaders(message: Uint8Array): RawHeaders {
  const fields: RawField[] = [];
  let pos = 0;
  while (pos < message.length) {
    // An empty line (CRLF or bare LF) ends the header section.
    if (message[pos] === LF || (message[pos] === CR && message[pos + 1] === LF)) {
      return { fields, headerEnd: pos, hasBody: true };
    }
    const isContinuation = message[pos] === SP || message[pos] === HT;
    const lineEnd = nextLineEnd(message, pos);
    if (isContinuation && fields.length > 0) {
      fields[fields.length - 1].end = lineEnd;
    } else if (fields.length >= MAX_HEADER_FIELDS) {
      fields[fields.length - 1].end = lineEnd;
    } else {
      const { name, valueStart } = fieldName(message, pos, lineEnd);
      fields.push({ start: pos, end: lineEnd, name, valueStart });
    }
    pos = lineEnd;
  }
  return { fields, headerEnd: message.length, hasBody: false };
}

/** The offset just after the LF ending the line at `pos` (or the message length). */
function nextLineEnd(message: Uint8Array, pos: number): number {
  const lf = message.indexOf(LF, pos);
  return lf < 0 ? message.length : lf + 1;
}

/** The name of the field starting at `pos`: printable ASCII except ":" (RFC 5322 §3.6.8). */
function fieldName(message: Uint8Array, pos: number, lineEnd: number): {
  name: string;
  valueStart: number;
} {
  let i = pos;
  while (i < lineEnd && message[i] >= 33 && message[i] <= 126 && message[i] !== COLON) i++;
  const nameEnd = i;
  while (i < lineEnd && (message[i] === SP || message[i] === HT)) i++; // §4.5 obs-optional
  if (nameEnd === pos || message[i] !== COLON) return { name: "", valueStart: lineEnd };
  let name = "";
  for (let k = pos; k < nameEnd; k++) name += String.fromCharCode(message[k]);
  return { name, valueStart: i + 1 };
}

const utf8 = new TextDecoder("utf-8", { fatal: false });

/**
 * The field's value as text: unfolded (CRLF before white space removed, RFC 5322 §2.2.3), the
 * final line end dropped, leading and trailing white space trimmed, UTF-8 decoded (RFC 6532;
 * invalid bytes become U+FFFD). At most `maxBytes` bytes of the value are read.
 * Security: untrusted text — encoded words are NOT decoded and control characters are kept;
 * callers that display or re-emit the value clean it (`cleanText`).
 */
export function fieldValue(message: Uint8Array, field: RawField, maxBytes = 64 * 1024): string {
  const end = Math.min(field.end, field.valueStart + maxBytes);
  const raw = utf8.decode(message.subarray(field.valueStart, end));
  return raw.replace(/\r?\n(?=[ \t])/g, "").replace(/\r?\n$/, "").trim();
}

/** The first field named `name` (ASCII case-insensitive), if any. */
export function findField(headers: RawHeaders, name: string): RawField | undefined {
  const want = name.toLowerCase();
  return headers.fields.find((f) => f.name.toLowerCase() === want);
}
