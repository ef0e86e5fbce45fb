/**
 * Every text a mail client could display, read from the raw message by SSG's own MIME walk — the
 * second reader beside mailparser (`message.ts`), there to close what mailparser leaves unread or
 * reads only one way (issue 8):
 * - every text part, inline or attachment (text/plain, text/html — a client shows both), at any
 *   depth, and inside attached messages (message/rfc822, message/global, nested), whose Subject
 *   fields are collected too;
 * - attachments that a client opens as text by their name (.txt, .htm, .html, .eml) and
 *   uuencoded blocks (`begin 644 name` … `end`, in a text body or a part whose transfer encoding
 *   is x-uuencode);
 * - every reading of an ambiguous part: with two Content-Type or two Content-Transfer-Encoding
 *   fields, the part is read under each combination (at most `MAX_PART_READINGS`), since one
 *   client or server may use the first and another the last; every Subject field is a subject;
 * - text without a charset label, or with one that does not fit, in every plausible charset
 *   (`charset_detect.ts`), UTF-7 included; header fields with raw 8-bit bytes likewise;
 * - HTML twice: as shown (elements hidden by CSS removed) and with hidden text kept
 *   (`html_to_text.ts`), so that hidden text can neither split a keyword nor hide one.
 *
 * Limits (`WalkLimits`) bound the work; passing one is never silent: it adds a problem, and a
 * message with problems gets the `content.undecodable` verdict (`policy_engine.ts`), so a limit is
 * never a way around a rule.
 *
 * Security: untrusted bytes. Linear passes only; recursion depth bounded by `maxDepth`; the
 * number of parts visited (readings included) by `maxParts`; never throws.
 */
import { Buffer } from "node:buffer";
import { decodeCharset, decodeUtf7 } from "./charset_decode.ts";
import { undeclaredReadings } from "./charset_detect.ts";
import { base64Bytes, decodeEncodedWords, quotedPrintableBytes } from "./encoded_words.ts";
import { htmlToText } from "./html_to_text.ts";

/** Bounds of one walk. */
export interface WalkLimits {
  /** MIME parts visited (each reading of an ambiguous part counts), the root included. */
  maxParts: number;
  /** Nesting depth of multiparts and attached messages. */
  maxDepth: number;
  /** Bytes of one header section (the message's or a part's). */
  maxHeaderBytes: number;
  /** Header fields in one header section. */
  maxHeaders: number;
  /** Characters of one text (after white space runs are made one space). */
  maxTextChars: number;
}

/** What the walk read. */
export interface WalkResult {
  /** Every reading of every Subject field, of the message and of attached messages, in order. */
  subjects: string[];
  /** Every reading of every plain text (text/plain, text attachments, uuencoded text). */
  texts: string[];
  /** Every reading of every HTML part as text: as shown, and with hidden elements kept. */
  htmls: string[];
  /** Every reading of every top-level From field. */
  from: string[];
  /**
   * Every part that is not a multipart and not the text of a message, at any depth (inside
   * attached messages too), with its file name and type — each type of an ambiguous part.
   */
  attachments: { filename: string; contentType: string }[];
  /** Why the walk could not read everything (empty: it did). */
  problems: string[];
  /** Parts visited. */
  parts: number;
}

/** Most readings of one part (Content-Type values × Content-Transfer-Encoding values). */
export const MAX_PART_READINGS = 4;

/** Walks `bytes` (a whole message); never throws. */
export function walkMessage(bytes: Uint8Array, limits: WalkLimits): WalkResult {
  const w = new Walker(limits);
  try {
    w.entity(bytes, 0, "text/plain", true);
  } catch (e) {
    w.problem(`the MIME walk failed (${e instanceof Error ? e.message : String(e)})`);
  }
  return w.result;
}

interface Field {
  name: string;
  /** The raw value, unfolded, as latin1 (one character per byte). */
  raw: string;
}

class Walker {
  readonly result: WalkResult = {
    subjects: [],
    texts: [],
    htmls: [],
    from: [],
    attachments: [],
    problems: [],
    parts: 0,
  };
  readonly #lim: WalkLimits;
  #stopped = false;

  constructor(limits: WalkLimits) {
    this.#lim = limits;
  }

  problem(p: string): void {
    if (!this.result.problems.includes(p)) this.result.problems.push(p);
  }

  /** One entity: header section, then body by type. `isMessage`: a message's own header. */
  entity(bytes: Uint8Array, depth: number, defaultType: string, isMessage: boolean): void {
    if (this.#stopped) return;
    if (depth > this.#lim.maxDepth) {
      this.problem(`MIME nesting deeper than ${this.#lim.maxDepth} levels`);
      return;
    }
    const bodyStart = findBodyStart(bytes);
    const headEnd = bodyStart < 0 ? bytes.length : bodyStart;
    if (headEnd > this.#lim.maxHeaderBytes) {
      this.problem(`a header section is larger than ${this.#lim.maxHeaderBytes} bytes`);
      return;
    }
    const fields = this.#fields(latin1(bytes.subarray(0, headEnd)));
    const body = bodyStart < 0 ? new Uint8Array(0) : bytes.subarray(bodyStart);
    const values = (name: string) => fields.filter((f) => f.name === name).map((f) => f.raw);
    if (isMessage) {
      for (const s of values("subject")) this.result.subjects.push(...headerReadings(s));
      if (depth === 0) {
        for (const f of values("from")) this.result.from.push(...headerReadings(f));
      }
    }
    const types = unique(values("content-type").map((v) => v.trim()).filter((v) => v !== ""));
    const encodings = unique(
      values("content-transfer-encoding").map((v) => v.trim().toLowerCase()).filter((v) =>
        v !== ""
      ),
    );
    const dispositions = values("content-disposition");
    const readings: [string, string][] = [];
    for (const t of types.length ? types : [defaultType]) {
      for (const e of encodings.length ? encodings : ["7bit"]) {
        if (readings.length < MAX_PART_READINGS) readings.push([t, e]);
      }
    }
    if (types.length * Math.max(1, encodings.length) > MAX_PART_READINGS) {
      this.problem(`a part has more than ${MAX_PART_READINGS} readings of its type and encoding`);
    }
    for (const [type, encoding] of readings) {
      if (++this.result.parts > this.#lim.maxParts) {
        this.problem(`more than ${this.#lim.maxParts} MIME parts`);
        this.#stopped = true;
        return;
      }
      this.#body(body, depth, type, encoding, dispositions);
      if (this.#stopped) return;
    }
  }

  #body(
    body: Uint8Array,
    depth: number,
    typeField: string,
    encoding: string,
    dispositions: string[],
  ): void {
    const [mediaType, params] = parseParams(typeField);
    const type = /^[\w.+-]+\/[\w.+-]+$/.test(mediaType) ? mediaType : "text/plain";
    const name = params.get("name") ??
      dispositions.map((d) => parseParams(d)[1].get("filename")).find((f) => f) ?? "";
    const ext = /\.([a-z0-9]{1,5})$/i.exec(name.trim())?.[1]?.toLowerCase() ?? "";
    if (type.startsWith("multipart/")) {
      const boundary = params.get("boundary");
      if (boundary) {
        const child = type === "multipart/digest" ? "message/rfc822" : "text/plain";
        for (const part of splitMultipart(body, boundary)) {
          this.entity(part, depth + 1, child, false);
          if (this.#stopped) return;
        }
        return;
      }
      // No boundary: a client shows the body as text.
    }
    const isMessage = type === "message/rfc822" || type === "message/global" || ext === "eml";
    const isHtml = type === "text/html" || ext === "html" || ext === "htm";
    const isText = type.startsWith("text/") || type.startsWith("multipart/") || ext === "txt" ||
      /uu(?:e|encode)$/.test(encoding);
    const isAttachment = name !== "" ||
      dispositions.some((d) => /^\s*attachment\b/i.test(d)) ||
      !/^(?:text|message)\//.test(type);
    if (isAttachment && this.result.attachments.length < 1000) {
      this.result.attachments.push({ filename: name.trim(), contentType: type });
    }
    // Binary attachments are not decoded: no client shows them as text.
    if (!isMessage && !isHtml && !isText) return;
    const decoded = transferDecode(body, encoding);
    if (isMessage) {
      this.entity(decoded, depth + 1, "text/plain", true);
      return;
    }
    const charset = params.get("charset") ?? "";
    if (isHtml) {
      for (const t of textReadings(decoded, charset)) this.#html(t);
    } else {
      const flowed = params.get("format")?.toLowerCase() === "flowed";
      const delsp = params.get("delsp")?.toLowerCase() === "yes";
      for (const t of textReadings(decoded, charset)) {
        this.#text(t, this.result.texts);
        if (flowed) this.#text(unflow(t, delsp), this.result.texts);
        if (/(?:^|\n)begin [0-7]{3,4} /.test(t)) this.#uuencoded(t);
      }
    }
  }

  #html(html: string): void {
    const shown = htmlToText(html, Infinity, true);
    const all = htmlToText(html, Infinity, false);
    this.#text(shown, this.result.htmls);
    if (all !== shown) this.#text(all, this.result.htmls);
  }

  #text(t: string, into: string[]): void {
    if (t === "" || into.length >= 1000) return;
    // Line ends as mailparser gives them, so that the same text read by both is judged once.
    let s = t.includes("\r\n") ? t.replaceAll("\r\n", "\n") : t;
    if (s.length > this.#lim.maxTextChars) {
      // Padding is not content: runs of white space count as one character.
      s = s.replace(/\s+/g, " ").trim();
      if (s.length > this.#lim.maxTextChars) {
        this.problem(`a text is longer than ${this.#lim.maxTextChars} characters`);
        return;
      }
    }
    if (!into.includes(s)) into.push(s);
  }

  /** Text of uuencoded blocks inside a text. */
  #uuencoded(text: string): void {
    const re = /(?:^|\n)begin [0-7]{3,4} ([^\r\n]*)\r?\n([\s\S]*?)(?:\r?\n)end(?:\r?\n|$)/g;
    for (const m of text.matchAll(re)) {
      const bytes = uudecode(m[2]);
      const n = m[1].trim().toLowerCase();
      for (const t of textReadings(bytes, "")) {
        if (n.endsWith(".html") || n.endsWith(".htm")) this.#html(t);
        else this.#text(t, this.result.texts);
      }
    }
  }

  #fields(head: string): Field[] {
    const out: Field[] = [];
    let cur: { name: string; parts: string[] } | undefined;
    const flush = () => {
      if (!cur) return;
      if (out.length >= this.#lim.maxHeaders) {
        this.problem(`more than ${this.#lim.maxHeaders} header fields in one header section`);
      } else out.push({ name: cur.name, raw: cur.parts.join(" ").replace(/[ \t]+/g, " ").trim() });
      cur = undefined;
    };
    for (const line of head.split(/\r?\n/)) {
      if (line === "") break;
      if ((line[0] === " " || line[0] === "\t") && cur) {
        cur.parts.push(line.trim());
        continue;
      }
      flush();
      const colon = line.indexOf(":");
      if (colon <= 0 || !/^[\x21-\x39\x3b-\x7e]+$/.test(line.slice(0, colon).trimEnd())) continue;
      cur = { name: line.slice(0, colon).trimEnd().toLowerCase(), parts: [line.slice(colon + 1)] };
    }
    flush();
    return out;
  }
}

/** Every reading of a header value given as latin1 (raw bytes): encoded words decoded. */
export function headerReadings(raw: string): string[] {
  // deno-lint-ignore no-control-regex
  if (/^[\x00-\x7f]*$/.test(raw)) return [decodeEncodedWords(raw)]; // the common case
  const bytes = new Uint8Array(Buffer.from(raw, "latin1"));
  return unique(undeclaredReadings(bytes).map((t) => decodeEncodedWords(t)));
}

/** Every reading of a text body in its declared charset (or of every plausible one). */
function textReadings(bytes: Uint8Array, charset: string): string[] {
  const label = charset.trim().toLowerCase();
  if (/^(?:unicode-1-1-)?utf-?7$/.test(label)) return unique([decodeUtf7(latin1(bytes))]);
  if (label === "" || /^(?:us-?)?ascii$|^utf-?8$/.test(label)) {
    return undeclaredReadings(bytes, true);
  }
  const declared = decodeCharset(bytes, label);
  // A wrong label (e.g. EUC-KR bytes labelled ISO-8859-1) leaves the text to a client's guess.
  if (declared.includes("\ufffd") || bytes.includes(0x1b)) {
    return unique([declared, ...undeclaredReadings(bytes)]);
  }
  return [declared];
}

/** The body bytes after undoing a Content-Transfer-Encoding (unknown ones: as they are). */
function transferDecode(body: Uint8Array, encoding: string): Uint8Array {
  switch (encoding) {
    case "base64":
      return base64Bytes(latin1(body));
    case "quoted-printable":
      return quotedPrintableBytes(latin1(body));
    case "x-uuencode":
    case "uuencode":
    case "x-uue":
    case "uue": {
      const t = latin1(body);
      const m = /(?:^|\n)begin [0-7]{3,4} [^\r\n]*\r?\n([\s\S]*?)(?:\r?\n)end(?:\r?\n|$)/.exec(t);
      return m ? uudecode(m[1]) : body;
    }
    default:
      return body;
  }
}

/**
 * format=flowed (RFC 3676 §4.2): a line ending in a space continues on the next line; with
 * DelSp=yes that space is deleted ("chea \r\np" reads "cheap"); space-stuffing is removed.
 */
export function unflow(text: string, delsp: boolean): string {
  const lines = text.split(/\r?\n/);
  let out = "";
  for (const raw of lines) {
    const line = raw.startsWith(" ") ? raw.slice(1) : raw;
    if (line.endsWith(" ") && line !== "-- ") out += delsp ? line.slice(0, -1) : line;
    else out += line + "\n";
  }
  return out;
}

/** Decodes uuencoded lines (each: a length character, then groups of four). */
export function uudecode(lines: string): Uint8Array {
  const out: number[] = [];
  for (const line of lines.split(/\r?\n/)) {
    if (line === "" || line === "`") continue;
    const n = (line.charCodeAt(0) - 32) & 63;
    const chars = line.slice(1);
    const bytes: number[] = [];
    for (let i = 0; i + 1 < chars.length && bytes.length < n; i += 4) {
      const c = [0, 1, 2, 3].map((k) => (chars.charCodeAt(i + k) - 32) & 63);
      bytes.push(((c[0] << 2) | (c[1] >> 4)) & 0xff);
      bytes.push(((c[1] << 4) | (c[2] >> 2)) & 0xff);
      bytes.push(((c[2] << 6) | c[3]) & 0xff);
    }
    for (let i = 0; i < Math.min(n, bytes.length); i++) out.push(bytes[i]);
  }
  return Uint8Array.from(out);
}

/** The body parts of a multipart, between its boundary lines (RFC 2046 §5.1.1). */
function splitMultipart(body: Uint8Array, boundary: string): Uint8Array[] {
  const delim = Buffer.from(`--${boundary}`, "latin1");
  const buf = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  const parts: Uint8Array[] = [];
  let partStart = -1;
  for (let at = buf.indexOf(delim); at >= 0; at = buf.indexOf(delim, at + 1)) {
    if (at > 0 && buf[at - 1] !== 0x0a) continue; // a delimiter starts a line
    let p = at + delim.length;
    const closing = buf[p] === 0x2d && buf[p + 1] === 0x2d;
    if (closing) p += 2;
    while (buf[p] === 0x20 || buf[p] === 0x09) p++; // transport padding
    if (p < buf.length && buf[p] !== 0x0d && buf[p] !== 0x0a) continue; // a longer boundary
    if (partStart >= 0) {
      let end = at - 1; // the CRLF before the delimiter belongs to it
      if (end > partStart && buf[end - 1] === 0x0d) end--;
      parts.push(body.subarray(partStart, Math.max(partStart, end)));
    }
    if (closing) return parts;
    if (buf[p] === 0x0d) p++;
    partStart = p + 1;
  }
  // No closing delimiter: the last part runs to the end, as clients read it.
  if (partStart >= 0 && partStart <= body.length) parts.push(body.subarray(partStart));
  return parts;
}

/** "type/subtype; a=b; c=\"d\"" → ["type/subtype", params]; RFC 2231 continuations joined. */
function parseParams(value: string): [string, Map<string, string>] {
  const decoded = decodeEncodedWords(value);
  const semi = decoded.indexOf(";");
  const type = (semi < 0 ? decoded : decoded.slice(0, semi)).trim().toLowerCase();
  const params = new Map<string, string>();
  const continued = new Map<string, string[]>();
  const re = /;\s*([^\s=;]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))/g;
  for (const m of decoded.slice(Math.max(0, semi)).matchAll(re)) {
    let key = m[1].toLowerCase();
    let v = m[2] !== undefined ? m[2].replace(/\\(.)/g, "$1") : (m[3] ?? "").trim();
    const cont = /^(.*?)\*(\d+)\*?$/.exec(key);
    if (key.endsWith("*")) v = rfc2231Value(v);
    if (cont) {
      const list = continued.get(cont[1]) ?? [];
      list[Number(cont[2])] = v;
      continued.set(cont[1], list);
      continue;
    }
    key = key.replace(/\*$/, "");
    if (!params.has(key)) params.set(key, v);
  }
  for (const [k, list] of continued) if (!params.has(k)) params.set(k, list.join(""));
  return [type, params];
}

/** RFC 2231 extended value: charset'language'percent-encoded. */
function rfc2231Value(v: string): string {
  const m = /^([^']*)'[^']*'(.*)$/.exec(v);
  const data = m ? m[2] : v;
  const bytes = Uint8Array.from(
    data.replace(/%([0-9a-f]{2})/gi, (_x, h: string) => String.fromCharCode(parseInt(h, 16))),
    (c) => c.charCodeAt(0) & 0xff,
  );
  return decodeCharset(bytes, m?.[1] || "utf-8");
}

/** Offset of the first body byte (after the first empty line), or -1 when there is none. */
export function findBodyStart(bytes: Uint8Array): number {
  if (bytes[0] === 0x0d && bytes[1] === 0x0a) return 2;
  if (bytes[0] === 0x0a) return 1;
  for (
    let i = bytes.indexOf(0x0a);
    i >= 0 && i + 1 < bytes.length;
    i = bytes.indexOf(0x0a, i + 1)
  ) {
    if (bytes[i + 1] === 0x0a) return i + 2;
    if (bytes[i + 1] === 0x0d && bytes[i + 2] === 0x0a) return i + 3;
  }
  return -1;
}

function latin1(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("latin1");
}

function unique(list: string[]): string[] {
  return [...new Set(list)];
}
