/**
 * RFC 2047 encoded words in header fields (`=?EUC-KR?B?tOfDtw==?=`), decoded to text.
 *
 * mailparser decodes the fields it knows (Subject, From ...); SSG decodes every header field
 * itself, with this, so that rules on any named header see text, and so that the fallback path
 * (mailparser gave up) still reads the Subject.
 *
 * Security: untrusted text. The pattern has no nested quantifiers (linear time); a word is at
 * most 75 characters by RFC 2047 §2 but we accept longer ones (real mailers exceed it) up to the
 * caller's cap on the field. White space between adjacent encoded words is dropped (§6.2).
 */
import { decodeCharset } from "./charset_decode.ts";

const WORD_RE = /=\?([^?\s]{1,64})\?([BbQq])\?([^?\s]*)\?=/g;
const BETWEEN_WORDS_RE = /(\?=)[ \t\r\n]+(?==\?[^?\s]{1,64}\?[BbQq]\?)/g;

/** Decodes the encoded words in one (unfolded) header field value. */
export function decodeEncodedWords(value: string): string {
  if (!value.includes("=?")) return value;
  const joined = value.replace(BETWEEN_WORDS_RE, "$1");
  return joined.replace(WORD_RE, (_m, charset: string, enc: string, data: string) => {
    const cs = charset.split("*")[0]; // RFC 2231 §5 language suffix: "UTF-8*ko"
    const bytes = enc === "B" || enc === "b" ? base64Bytes(data) : qBytes(data);
    return decodeCharset(bytes, cs);
  });
}

/** Lenient base64: ignores characters outside the alphabet and missing padding. */
export function base64Bytes(data: string): Uint8Array {
  const clean = data.replace(/[^A-Za-z0-9+/]/g, "");
  const out = new Uint8Array(Math.floor((clean.length * 3) / 4));
  let bits = 0;
  let acc = 0;
  let n = 0;
  for (let i = 0; i < clean.length; i++) {
    const c = clean.charCodeAt(i);
    const v = c >= 65 && c <= 90
      ? c - 65
      : c >= 97 && c <= 122
      ? c - 71
      : c >= 48 && c <= 57
      ? c + 4
      : c === 43
      ? 62
      : 63;
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[n++] = (acc >> bits) & 0xff;
    }
  }
  return out.subarray(0, n);
}

/** The "Q" encoding (RFC 2047 §4.2): "_" is a space, "=XX" a byte. */
function qBytes(data: string): Uint8Array {
  return quotedPrintableBytes(data.replaceAll("_", " "));
}

/** Quoted-printable (RFC 2045 §6.7), leniently: soft line breaks removed, bad escapes kept. */
export function quotedPrintableBytes(data: string): Uint8Array {
  const out = new Uint8Array(data.length);
  let n = 0;
  for (let i = 0; i < data.length; i++) {
    const c = data.charCodeAt(i);
    if (c === 0x3d) {
      const h = data.slice(i + 1, i + 3);
      if (/^[0-9A-Fa-f]{2}$/.test(h)) {
        out[n++] = parseInt(h, 16);
        i += 2;
        continue;
      }
      // Soft line break: "=" then optional white space then (CR)LF.
      const m = /^[ \t]*\r?\n/.exec(data.slice(i + 1, i + 80));
      if (m) {
        i += m[0].length;
        continue;
      }
    }
    out[n++] = c & 0xff;
  }
  return out.subarray(0, n);
}
