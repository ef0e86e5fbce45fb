/**
 * A raw message (the bytes received in DATA) → the facts rules look at: the decoded subject,
 * the body text (text/plain parts and every HTML part as text), decoded header fields,
 * addresses and attachments.
 *
 * MIME structure, transfer encodings (base64, quoted-printable) and charsets are decoded by npm
 * `mailparser` (`simpleParser`; charsets through iconv-lite, including EUC-KR). A plain message
 * (one text/plain part, 7bit/8bit, UTF-8, ASCII header without encoded words: nothing for
 * mailparser to do) is read straight from its bytes instead, to exactly the facts mailparser
 * gives (`plain_message.ts`, checked against mailparser by its tests; `decoder: "plain"`). ISO-2022-KR,
 * which neither iconv-lite nor WHATWG decoders know, is fixed up afterwards (`iso_2022_kr.ts`).
 * Header fields are decoded with our own RFC 2047 decoder (`encoded_words.ts`) so that every
 * field, not only the ones mailparser knows, is text.
 *
 * A second reader, SSG's own MIME walk (`mime_walk.ts`), adds what mailparser leaves unread or
 * reads one way only (issue 8): text inside attached messages and their subjects, text and HTML
 * attachments, uuencoded text, every reading of duplicate Subject/Content-Type/
 * Content-Transfer-Encoding fields, undeclared charsets and UTF-7, HTML with hidden text dropped
 * and kept. Its readings are in `subjects`, `texts`, `htmls` (and extra `from` mailboxes); the
 * fields `subject`, `body` and `html` judge every reading (`fields.ts`).
 *
 * Security: untrusted bytes, from anyone on the Internet. Bounds, all in `DecodeLimits`:
 * - only the first `maxBytes` are parsed (cut at a line end); the rest is not looked at;
 * - at most `maxParts` MIME parts (mailparser's `maxChildNodes`), nested `maxDepth` deep;
 * - header sections of at most `maxHeaderBytes` (mailparser's `maxHeadSize`), `maxHeaders` fields;
 * - each text at most `maxTextChars` characters (white space runs counted as one);
 * - parsing that takes longer than `timeoutMs` is abandoned.
 * Passing any bound is recorded in `problems`, and a message with problems was not fully read:
 * the policy gives it the `content.undecodable` verdict unless a rule already stopped it, so a
 * bound is never a way around a rule. Never throws: when mailparser fails or times out, the
 * message is judged on what a simple header/body split and the MIME walk can read
 * (`decoder: "fallback"`), and `problems` says why.
 */
import { Buffer } from "node:buffer";
import { Readable } from "node:stream";
import type { AddressObject, simpleParser } from "mailparser";
import { base64Bytes, quotedPrintableBytes } from "./encoded_words.ts";
import { decodeCharset } from "./charset_decode.ts";
import { fixIso2022KrText } from "./iso_2022_kr.ts";
import { htmlToText } from "./html_to_text.ts";
import { headerReadings, walkMessage } from "./mime_walk.ts";
import { type PlainReading, readPlainMessage } from "./plain_message.ts";
import addressparser from "nodemailer/lib/addressparser/index.js";

/** One header field, decoded. */
export interface HeaderField {
  /** Field name in lower case ("subject", "x-mailer"). */
  name: string;
  /** Unfolded value with encoded words decoded. */
  value: string;
}

/** A mailbox from an address header. */
export interface Mailbox {
  /** Display name ("" when none). */
  name: string;
  /** Address ("" for a group or an unparsable entry). */
  address: string;
}

/** An attachment's metadata (the content is not kept). */
export interface AttachmentFacts {
  /** File name ("" when none). */
  filename: string;
  /** MIME type (default "application/octet-stream"). */
  contentType: string;
  /** Size of the content in bytes (as the decoder reports it). */
  size: number;
}

/** What the policy knows about a message. */
export interface MessageFacts {
  /** Size of the raw message in bytes (all of it, not only what was parsed). */
  size: number;
  /** Decoded Subject ("" when none). */
  subject: string;
  /** Decoded text of the text/plain parts. */
  text: string;
  /** Text of the HTML parts (tags removed, entities decoded). */
  html: string;
  /** Top-level header fields in order, decoded. */
  headers: HeaderField[];
  /** Mailboxes of the From header. */
  from: Mailbox[];
  /** Mailboxes of the To header. */
  to: Mailbox[];
  /** Mailboxes of the Cc header. */
  cc: Mailbox[];
  /** Attachments, in order. */
  attachments: AttachmentFacts[];
  /**
   * Every reading of every Subject field, of the message and of attached messages (the MIME
   * walk); `subject` is mailparser's reading of the first one.
   */
  subjects: string[];
  /** Every reading of every plain text (text parts and attachments at any depth, uuencoded). */
  texts: string[];
  /** Every reading of every HTML part as text: as shown (hidden text dropped) and all of it. */
  htmls: string[];
  /**
   * Which decoder produced the facts: "plain" when the message had nothing for mailparser to
   * do and was read straight from its bytes (`plain_message.ts`, the same facts mailparser gives);
   * "headers" and "none" when the rules needed only the
   * top-level header fields or nothing at all (`decodeForNeeds`; the texts are then empty).
   */
  decoder: "plain" | "mailparser" | "fallback" | "headers" | "none";
  /**
   * Why the message was not fully read (a bound passed, a parser failure); empty if it was. A
   * message with problems gets the `content.undecodable` verdict (see `policy_engine.ts`).
   */
  problems: string[];
}

/**
 * Facts with nothing read: every text empty, no mailbox, no attachment. Each decoder starts
 * from this and fills in what it read.
 */
export function emptyFacts(
  size: number,
  decoder: MessageFacts["decoder"],
  headers: HeaderField[] = [],
  problems: string[] = [],
): MessageFacts {
  return {
    size,
    subject: "",
    text: "",
    html: "",
    headers,
    from: [],
    to: [],
    cc: [],
    attachments: [],
    subjects: [],
    texts: [],
    htmls: [],
    decoder,
    problems,
  };
}

/** Bounds on decoding one message. */
export interface DecodeLimits {
  /** Bytes of the message parsed (default 1 GiB: all that `smtp.max_message_bytes` admits). */
  maxBytes: number;
  /** MIME parts, the root included (default 1000; mailparser's `maxChildNodes`). */
  maxParts: number;
  /** Nesting depth of multiparts and attached messages (default 50). */
  maxDepth: number;
  /** Bytes of one header section (default 1 MiB; mailparser's `maxHeadSize`). */
  maxHeaderBytes: number;
  /** Header fields of one header section (default 1000). */
  maxHeaders: number;
  /** Characters per text, white space runs counted as one (default 4 Mi). */
  maxTextChars: number;
  /** Parser time budget in milliseconds (default 30000). */
  timeoutMs: number;
}

/** The default bounds. */
export const DEFAULT_DECODE_LIMITS: Readonly<DecodeLimits> = Object.freeze({
  maxBytes: 1024 * 1024 * 1024,
  maxParts: 1000,
  maxDepth: 50,
  maxHeaderBytes: 1024 * 1024,
  maxHeaders: 1000,
  maxTextChars: 4 * 1024 * 1024,
  timeoutMs: 30_000,
});

/** The MIME parser used (mailparser's `simpleParser`; tests substitute a slow or failing one). */
export type MimeParser = typeof simpleParser;

let mailparser: Promise<MimeParser> | undefined;

/**
 * mailparser, loaded at the first message that needs it: a gateway whose mail is plain, or
 * whose rules read only headers, never loads it (~8 MB of heap and ~30 MB of RSS, issue 9).
 */
function loadMailparser(): Promise<MimeParser> {
  return mailparser ??= import("mailparser").then((m) => m.simpleParser);
}

/**
 * Decodes only what `needs` asks for (`decode_needs.ts`): "full" is `decodeMessage`; "headers"
 * reads the top-level header fields; "none" nothing but the size. mailparser never runs for
 * these two. With `checkBounds` (when `content.undecodable` is not forward), SSG's own MIME walk
 * still reads the body for its bounds only (parts, depth, header sections, text lengths), so that
 * a message SSG could not have read whole still gets the undecodable verdict; its texts are not
 * kept. Header bounds are always problems. Never throws.
 */
export function decodeForNeeds(
  raw: Uint8Array,
  needs: "none" | "headers" | "full",
  limits: Partial<DecodeLimits> = {},
  checkBounds = true,
): Promise<MessageFacts> {
  if (needs === "full") return decodeMessage(raw, limits);
  const lim = { ...DEFAULT_DECODE_LIMITS, ...limits };
  const problems: string[] = [];
  let headers: HeaderField[] = [];
  if (checkBounds) {
    let bytes = raw;
    if (raw.length > lim.maxBytes) {
      bytes = raw.subarray(0, cutAtLineEnd(raw, lim.maxBytes));
      problems.push(`only the first ${bytes.length} of ${raw.length} bytes were decoded`);
    }
    for (const p of walkMessage(bytes, lim).problems) if (!problems.includes(p)) problems.push(p);
  }
  if (needs === "headers") {
    const bodyStart = findBodyStart(raw);
    const headEnd = bodyStart < 0 ? raw.length : bodyStart;
    const read = readHeaderFields(raw, lim);
    const headerProblems = [
      headEnd > lim.maxHeaderBytes && `a header section is larger than ${lim.maxHeaderBytes} bytes`,
      read.truncated && `more than ${lim.maxHeaders} header fields in one header section`,
    ];
    for (const p of headerProblems) if (p && !problems.includes(p)) problems.push(p);
    headers = read.fields;
  }
  return Promise.resolve(emptyFacts(raw.length, needs, headers, problems));
}

/** Decodes `raw` into facts within `limits`; never throws, never rejects. */
export async function decodeMessage(
  raw: Uint8Array,
  limits: Partial<DecodeLimits> = {},
  parser?: MimeParser,
): Promise<MessageFacts> {
  const lim = { ...DEFAULT_DECODE_LIMITS, ...limits };
  const problems: string[] = [];
  let bytes = raw;
  if (raw.length > lim.maxBytes) {
    bytes = raw.subarray(0, cutAtLineEnd(raw, lim.maxBytes));
    problems.push(`only the first ${bytes.length} of ${raw.length} bytes were decoded`);
  }
  const headers = readHeaderFields(bytes, lim);
  if (headers.truncated) {
    problems.push(`more than ${lim.maxHeaders} header fields in one header section`);
  }
  const walk = walkMessage(bytes, lim);
  let facts: MessageFacts;
  // A parser given by the caller is always used (tests); the default reads plain mail itself.
  const plain = parser === undefined
    ? readPlainMessage(bytes, lim.maxHeaderBytes, lim.maxHeaders)
    : undefined;
  try {
    facts = plain
      ? plainFacts(plain, raw.length, lim, headers.fields, problems)
      : await parseWithMailparser(
        parser ?? await loadMailparser(),
        bytes,
        raw.length,
        lim,
        headers.fields,
        problems,
      );
  } catch (e) {
    problems.push(
      `mailparser could not decode the message (${
        errorText(e)
      }); judged on the headers, the raw body and SSG's own MIME walk`,
    );
    facts = fallbackFacts(bytes, raw.length, lim, headers.fields, problems);
  }
  for (const p of walk.problems) if (!problems.includes(p)) problems.push(p);
  // Attachments at any depth (inside attached messages too), each type of an ambiguous part.
  for (const a of walk.attachments) {
    if (facts.attachments.length >= 1000) break;
    const known = facts.attachments.some((b) =>
      b.filename === a.filename && String(b.contentType).toLowerCase() === a.contentType
    );
    if (!known) facts.attachments.push({ ...a, size: 0 });
  }
  facts.subjects = walk.subjects;
  facts.texts = walk.texts;
  facts.htmls = walk.htmls;
  // Every From field (a second one is a second reading of the sender): its mailboxes too.
  for (const value of walk.from) {
    for (const m of parseMailboxes(value)) {
      if (facts.from.length >= 1000) break;
      if (!facts.from.some((f) => f.address === m.address && f.name === m.name)) facts.from.push(m);
    }
  }
  return facts;
}

/** The mailboxes of one address field value (groups flattened); never throws. */
function parseMailboxes(value: string): Mailbox[] {
  try {
    const out: Mailbox[] = [];
    const walk = (list: { name?: string; address?: string; group?: unknown[] }[]) => {
      for (const m of list) {
        if (out.length >= 1000) return;
        if (Array.isArray(m.group)) walk(m.group as typeof list);
        else out.push({ name: m.name ?? "", address: m.address ?? "" });
      }
    };
    walk(addressparser(value) as { name?: string; address?: string; group?: unknown[] }[]);
    return out;
  } catch {
    return [];
  }
}

async function parseWithMailparser(
  parser: MimeParser,
  bytes: Uint8Array,
  size: number,
  lim: DecodeLimits,
  headers: HeaderField[],
  problems: string[],
): Promise<MessageFacts> {
  // A stream we own, so that a parse over its time budget can be stopped, fed in small chunks
  // with a macrotask between them, so that parsing a large message does not stall the event
  // loop that serves every other session (a single 8 MiB chunk stalled it ~100 ms).
  // A message that the chunked stream would hand over without a single yield goes in as one
  // Buffer (no async generator and Readable plumbing per message: issue 9).
  const input = bytes.length <= CHUNK_BYTES * CHUNKS_PER_YIELD
    ? Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length)
    : Readable.from(chunks(bytes), { objectMode: false });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      if (input instanceof Readable) input.destroy();
      reject(new Error(`took longer than ${lim.timeoutMs} ms`));
    }, lim.timeoutMs);
  });
  try {
    const parsed = await Promise.race([
      parser(input, {
        maxChildNodes: lim.maxParts,
        maxHeadSize: lim.maxHeaderBytes,
        // We convert HTML ourselves, for every HTML part (see html_to_text.ts).
        skipHtmlToText: true,
        skipTextToHtml: true,
        skipTextLinks: true,
        skipImageLinks: true,
        checksumAlgo: false,
      }),
      timeout,
    ]);
    const cap = (s: string) => capText(s, lim.maxTextChars, problems);
    const html = typeof parsed.html === "string" ? htmlToText(fixIso2022KrText(parsed.html)) : "";
    return {
      ...emptyFacts(size, "mailparser", headers, problems),
      subject: cap(fixIso2022KrText(parsed.subject ?? "")),
      text: cap(fixIso2022KrText(parsed.text ?? "")),
      html: cap(html),
      from: mailboxes(parsed.from),
      to: mailboxes(parsed.to),
      cc: mailboxes(parsed.cc),
      attachments: parsed.attachments.map((a) => ({
        // mailparser gives `false` for an empty type ("Content-Type: ; name=x.jpg"): strings only.
        filename: fixIso2022KrText(typeof a.filename === "string" ? a.filename : ""),
        contentType: typeof a.contentType === "string" && a.contentType !== ""
          ? a.contentType
          : "application/octet-stream",
        size: typeof a.size === "number" ? a.size : a.content?.length ?? 0,
      })),
    };
  } finally {
    clearTimeout(timer);
  }
}

/** The facts of a plain message (`plain_message.ts`), mapped as mailparser's are. */
function plainFacts(
  plain: PlainReading,
  size: number,
  lim: DecodeLimits,
  headers: HeaderField[],
  problems: string[],
): MessageFacts {
  const cap = (s: string) => capText(s, lim.maxTextChars, problems);
  const fix = (list: Mailbox[]) =>
    list.map((m) => ({ name: fixIso2022KrText(m.name), address: m.address }));
  return {
    ...emptyFacts(size, "plain", headers, problems),
    subject: cap(fixIso2022KrText(plain.subject)),
    text: cap(fixIso2022KrText(plain.text)),
    from: fix(plain.from),
    to: fix(plain.to),
    cc: fix(plain.cc),
  };
}

/** Size of the pieces the parser is fed, and how many pieces go between yields. */
const CHUNK_BYTES = 64 * 1024;
const CHUNKS_PER_YIELD = 4;

async function* chunks(bytes: Uint8Array): AsyncGenerator<Buffer> {
  for (let off = 0, n = 0; off < bytes.length; off += CHUNK_BYTES, n++) {
    if (n > 0 && n % CHUNKS_PER_YIELD === 0) await new Promise((r) => setTimeout(r, 0));
    const end = Math.min(bytes.length, off + CHUNK_BYTES);
    yield Buffer.from(bytes.buffer, bytes.byteOffset + off, end - off);
  }
}

function mailboxes(a: AddressObject | AddressObject[] | undefined): Mailbox[] {
  if (!a) return [];
  const out: Mailbox[] = [];
  const walk = (list: { name?: string; address?: string; group?: unknown[] }[]) => {
    for (const m of list) {
      if (out.length >= 1000) return;
      if (Array.isArray(m.group)) walk(m.group as typeof list);
      else out.push({ name: fixIso2022KrText(m.name ?? ""), address: m.address ?? "" });
    }
  };
  for (const obj of Array.isArray(a) ? a : [a]) walk(obj.value);
  return out;
}

/**
 * The facts a plain header/body split gives when mailparser failed: decoded header fields, the
 * Subject, and the body — decoded by the top-level Content-Transfer-Encoding and charset when
 * the message is a single text part, else the raw body as text (keywords in 8bit or 7bit parts
 * of a broken multipart are still found).
 */
function fallbackFacts(
  bytes: Uint8Array,
  size: number,
  lim: DecodeLimits,
  headers: HeaderField[],
  problems: string[],
): MessageFacts {
  const bodyStart = findBodyStart(bytes);
  let body = bodyStart < 0 ? new Uint8Array(0) : bytes.subarray(bodyStart);
  const header = (name: string) => headers.find((h) => h.name === name)?.value ?? "";
  const ctype = header("content-type").toLowerCase();
  const cte = header("content-transfer-encoding").trim().toLowerCase();
  const charset = /charset\s*=\s*"?([^";\s]+)/.exec(ctype)?.[1] ?? "utf-8";
  const single = ctype === "" || ctype.startsWith("text/");
  if (single) {
    if (cte === "base64") body = base64Bytes(latin1Text(body, lim.maxTextChars * 2));
    else if (cte === "quoted-printable") {
      body = quotedPrintableBytes(latin1Text(body, lim.maxTextChars * 2));
    }
  }
  let text = decodeCharset(body.subarray(0, lim.maxTextChars * 4), single ? charset : "utf-8");
  text = fixIso2022KrText(text);
  const isHtml = ctype.startsWith("text/html");
  const cap = (s: string) => capText(s, lim.maxTextChars, problems);
  return {
    ...emptyFacts(size, "fallback", headers, problems),
    subject: cap(header("subject")),
    text: isHtml ? "" : cap(text),
    html: isHtml ? cap(htmlToText(text)) : "",
  };
}

/** The top-level header fields, unfolded and decoded, read straight from the bytes. */
function readHeaderFields(
  bytes: Uint8Array,
  lim: DecodeLimits,
): { fields: HeaderField[]; truncated: boolean } {
  const end = findBodyStart(bytes);
  // Read as latin1 (a character per byte); a value with 8-bit bytes (UTF-8 by RFC 6532, or a
  // legacy charset sent raw) is decoded in every plausible charset (`headerReadings`). Past
  // `maxHeaderBytes` the MIME walk records the problem.
  const cap = lim.maxHeaderBytes;
  const headText = Buffer.from(
    bytes.buffer,
    bytes.byteOffset,
    end < 0 ? Math.min(bytes.length, cap) : Math.min(end, cap),
  ).toString("latin1");
  const fields: HeaderField[] = [];
  let truncated = false;
  let current: { name: string; parts: string[] } | undefined;
  const flush = () => {
    if (!current) return;
    if (fields.length >= lim.maxHeaders) {
      truncated = true;
    } else {
      const value = current.parts.join(" ").replace(/[ \t]+/g, " ").trim();
      // A value with several readings (raw 8-bit bytes) is listed once per reading.
      for (const reading of headerReadings(value.slice(0, lim.maxTextChars))) {
        if (fields.length >= lim.maxHeaders) break;
        fields.push({ name: current.name, value: fixIso2022KrText(reading) });
      }
    }
    current = undefined;
  };
  for (const line of headText.split(/\r?\n/)) {
    if (line === "") break;
    if ((line[0] === " " || line[0] === "\t") && current) {
      current.parts.push(line.trim()); // RFC 5322 §2.2.3 unfolding
      continue;
    }
    flush();
    const colon = line.indexOf(":");
    if (colon <= 0 || !/^[\x21-\x39\x3b-\x7e]+$/.test(line.slice(0, colon).trimEnd())) continue;
    current = {
      name: line.slice(0, colon).trimEnd().toLowerCase(),
      parts: [line.slice(colon + 1)],
    };
  }
  flush();
  return { fields, truncated };
}

/** Offset of the first body byte (after the first empty line), or -1 when there is none. */
function findBodyStart(bytes: Uint8Array): number {
  for (let i = 0; i + 1 < bytes.length; i++) {
    if (bytes[i] !== 0x0a) continue;
    if (bytes[i + 1] === 0x0a) return i + 2;
    if (bytes[i + 1] === 0x0d && bytes[i + 2] === 0x0a) return i + 3;
  }
  if (bytes[0] === 0x0d && bytes[1] === 0x0a) return 2;
  if (bytes[0] === 0x0a) return 1;
  return -1;
}

/** The largest prefix length ≤ max that ends after a LF (or max when there is none). */
function cutAtLineEnd(bytes: Uint8Array, max: number): number {
  const lf = bytes.lastIndexOf(0x0a, max - 1);
  return lf > 0 ? lf + 1 : max;
}

function latin1Text(bytes: Uint8Array, max: number): string {
  let s = "";
  const n = Math.min(bytes.length, max);
  for (let i = 0; i < n; i += 8192) {
    s += String.fromCharCode(...bytes.subarray(i, Math.min(n, i + 8192)));
  }
  return s;
}

function capText(s: string, max: number, problems: string[]): string {
  if (s.length <= max) return s;
  // Padding is not content: runs of white space count as one character.
  const collapsed = s.replace(/\s+/g, " ").trim();
  if (collapsed.length <= max) return collapsed;
  const note = `a text is longer than ${max} characters`;
  if (!problems.includes(note)) problems.push(note);
  return s.slice(0, max);
}

function errorText(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  // deno-lint-ignore no-control-regex
  return msg.replace(/[\x00-\x1f\x7f]+/g, " ").slice(0, 200);
}
