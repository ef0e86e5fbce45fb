/**
 * Text whose charset is not declared, or declared wrongly: every plausible reading.
 *
 * Spam sends raw 8-bit header fields and bodies without a charset label (a Korean subject in
 * EUC-KR read as UTF-8 is only replacement characters), and UTF-7, which hides every letter
 * behind base64 runs ("+AGw-ottery"). A mail client guesses the charset and shows the text, so
 * SSG must read what the client could show. Rather than trust one guess, `readings` returns every
 * decoding that is plausible, and the rules judge each (a keyword in any reading matches):
 * - bytes that are valid UTF-8 (ASCII included) → that text;
 * - otherwise, the guesses of npm `chardet` (ICU's detectors: EUC-KR/CP949, ISO-2022-KR/JP/CN,
 *   Shift_JIS, EUC-JP, GB18030/GB2312, Big5, KOI8-R, windows-125x, ISO-8859-x), best first, and
 *   — for short texts (a Subject), where statistics say little — every legacy charset of
 *   `FALLBACK_CHARSETS` that decodes the bytes without an error;
 * - a body (not a header field: "+0000" in a Date is not UTF-7) with UTF-7 shifts (`+…-`) also
 *   gets its UTF-7 decoding (npm `iconv-lite`), since some clients sniff undeclared UTF-7.
 *
 * Security: untrusted bytes; never throws. Cost: detection runs only on bytes that are not valid
 * UTF-8, on at most `MAX_DETECT_BYTES` of them; at most `MAX_READINGS` readings per text.
 */
import chardet from "chardet";
import { decodeCharset, decodeUtf7 } from "./charset_decode.ts";

/** Bytes chardet looks at (its statistics settle well before this). */
const MAX_DETECT_BYTES = 64 * 1024;
/** Most readings of one text. */
export const MAX_READINGS = 8;
/** Above this many bytes, a text gets at most two readings. */
const LARGE_TEXT_BYTES = 1024 * 1024;
/** Below this many bytes, every legacy charset that decodes cleanly is a reading. */
const SHORT_TEXT_BYTES = 512;

/** Legacy charsets tried on short undeclared 8-bit text, most common in spam first. */
const FALLBACK_CHARSETS = ["euc-kr", "gb18030", "shift_jis", "big5", "euc-jp", "koi8-r"];

/** chardet's names → labels `decodeCharset` knows. */
const CHARDET_LABELS: Record<string, string> = {
  "ISO-2022-KR": "iso-2022-kr",
  "ISO-2022-JP": "iso-2022-jp",
  "ISO-2022-CN": "gb18030", // not decodable by WHATWG; GB18030 is the nearest reading
  "EUC-KR": "euc-kr",
  "GB18030": "gb18030",
  "Big5": "big5",
  "Shift_JIS": "shift_jis",
  "EUC-JP": "euc-jp",
  "KOI8-R": "koi8-r",
};

const fatalUtf8 = new TextDecoder("utf-8", { fatal: true });

/** True when `bytes` are valid UTF-8 (ASCII is). */
export function isUtf8(bytes: Uint8Array): boolean {
  return utf8Text(bytes) !== undefined;
}

/** The text of `bytes` when they are valid UTF-8, else undefined (one pass). */
function utf8Text(bytes: Uint8Array): string | undefined {
  try {
    return fatalUtf8.decode(bytes);
  } catch {
    return undefined;
  }
}

/** True when `bytes` hold an ISO-2022 escape (ESC $ or ESC ( ): 7-bit but not ASCII text. */
function hasIso2022Escape(bytes: Uint8Array): boolean {
  for (
    let i = bytes.indexOf(0x1b);
    i >= 0 && i + 1 < bytes.length;
    i = bytes.indexOf(0x1b, i + 1)
  ) {
    if (bytes[i + 1] === 0x24 || bytes[i + 1] === 0x28) return true;
  }
  return false;
}

/**
 * Every plausible reading of `bytes` whose charset is unknown (or whose declared charset did not
 * fit), best first, without duplicates; at least one.
 */
export function undeclaredReadings(bytes: Uint8Array, sniffUtf7 = false): string[] {
  const out: string[] = [];
  // A large text gets at most two readings (the best guess and UTF-8), bounding memory.
  const most = bytes.length > LARGE_TEXT_BYTES ? 2 : MAX_READINGS;
  const add = (t: string) => {
    if (out.length < most && !out.includes(t)) out.push(t);
  };
  const t = hasIso2022Escape(bytes) ? undefined : utf8Text(bytes);
  if (t !== undefined) {
    add(t);
    const u7 = sniffUtf7 ? utf7Reading(t) : undefined;
    if (u7 !== undefined) add(u7);
    return out;
  }
  const sample = bytes.length > MAX_DETECT_BYTES ? bytes.subarray(0, MAX_DETECT_BYTES) : bytes;
  let guesses: { name: string; confidence: number }[] = [];
  try {
    guesses = chardet.analyse(sample);
  } catch {
    guesses = [];
  }
  for (const [i, g] of guesses.entries()) {
    if (out.length >= most - 1) break;
    const label = CHARDET_LABELS[g.name];
    // The best guess; any confident one; on a short text, every legacy multi-byte guess.
    if (i === 0 || g.confidence >= 30 || (label !== undefined && bytes.length < SHORT_TEXT_BYTES)) {
      add(decodeCharset(bytes, label ?? g.name.toLowerCase()));
    }
  }
  if (bytes.length < SHORT_TEXT_BYTES) {
    for (const cs of FALLBACK_CHARSETS) {
      try {
        add(new TextDecoder(cs, { fatal: true }).decode(bytes));
      } catch {
        // Not this charset.
      }
    }
  }
  add(new TextDecoder().decode(bytes)); // what a UTF-8 reader shows, replacement characters and all
  return out;
}

/** UTF-7 shift sequences: "+", base64 (at least 3 characters: one UTF-16 unit), "-". */
const UTF7_SHIFT = /\+[A-Za-z0-9+/]{3,}-/;

/**
 * The UTF-7 (RFC 2152) decoding of `text` when it contains a shift sequence that decodes to
 * something else, else undefined.
 */
export function utf7Reading(text: string): string | undefined {
  if (!UTF7_SHIFT.test(text)) return undefined;
  // deno-lint-ignore no-control-regex
  if (!/^[\x00-\x7f]*$/.test(text)) return undefined; // UTF-7 is 7-bit
  const decoded = decodeUtf7(text);
  return decoded === text ? undefined : decoded;
}
