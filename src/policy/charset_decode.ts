/**
 * Bytes in a declared charset → text, for the parts of a message that SSG decodes itself
 * (encoded words in header fields, and the fallback path when mailparser gives up).
 *
 * Uses the WHATWG Encoding Standard decoders built into Deno (`TextDecoder`), which cover the
 * charsets mail actually uses (UTF-8, ISO-8859-x, windows-125x, EUC-KR/KS C 5601 — decoded as its
 * superset windows-949 —, GBK, Big5, Shift_JIS, EUC-JP, ISO-2022-JP, KOI8-R ...). Two exceptions:
 * - ISO-2022-KR (RFC 1557) is mapped by WHATWG to the "replacement" decoder (one U+FFFD for the
 *   whole input), so it is decoded here through EUC-KR (`iso_2022_kr.ts`);
 * - UTF-7 (RFC 2152) is decoded (`decodeUtf7`, here: a dozen lines, so that this module, which
 *   the action modules also load, needs no npm package). mailparser refuses it (reads it as
 *   UTF-8) because it smuggles markup past HTML filters ("+ADw-script+AD4-"); SSG renders
 *   nothing and forwards the message unchanged, but a client that decodes UTF-7 shows the words,
 *   so keyword rules must see them (issue 8: "+AGw-ottery" passed a `lottery` rule).
 * An unknown charset is decoded as UTF-8 with replacement characters: judged on what is readable.
 *
 * Security: untrusted bytes; never throws.
 */
import { decodeIso2022KrBytes } from "./iso_2022_kr.ts";
import { Buffer } from "node:buffer";

const utf8 = new TextDecoder("utf-8");

/** Names mailers use that WHATWG does not list, mapped to the WHATWG encoding that decodes them. */
const ALIASES: Record<string, string> = {
  "cp949": "euc-kr", // Microsoft's Unified Hangul Code, what WHATWG "euc-kr" really is
  "ms949": "euc-kr",
  "uhc": "euc-kr",
  "x-windows-949": "euc-kr",
  "ks_c_5601": "euc-kr",
  "x-euc-kr": "euc-kr",
};

/** Decodes `bytes` as `charset` (any label, case-insensitive); never throws. */
export function decodeCharset(bytes: Uint8Array, charset: string): string {
  const label = charset.trim().toLowerCase();
  if (label === "iso-2022-kr" || label === "csiso2022kr") return decodeIso2022KrBytes(bytes);
  if (/^utf-?7$|^unicode-1-1-utf-7$/.test(label)) {
    return decodeUtf7(
      Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("latin1"),
    );
  }
  if (label === "" || /^(?:us-?)?ascii$|^utf-?8$/.test(label)) {
    return utf8.decode(bytes);
  }
  try {
    const d = new TextDecoder(ALIASES[label] ?? label);
    if (d.encoding === "replacement") return utf8.decode(bytes);
    return d.decode(bytes);
  } catch {
    return utf8.decode(bytes);
  }
}

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/**
 * Decodes UTF-7 text (RFC 2152; one character per byte); never throws. A shift sequence is "+",
 * modified base64 of UTF-16BE code units, then an optional "-" (absorbed); "+-" is "+". Left-over
 * bits at the end of a shift sequence are dropped, as decoders do.
 */
export function decodeUtf7(text: string): string {
  return text.replace(/\+([A-Za-z0-9+/]*)(-?)/g, (whole, b64: string, dash: string) => {
    if (b64 === "") return dash ? "+" : whole;
    let bits = 0;
    let acc = 0;
    const bytes: number[] = [];
    for (const c of b64) {
      acc = ((acc << 6) | B64.indexOf(c)) & 0xffffff;
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        bytes.push((acc >> bits) & 0xff);
      }
    }
    let out = "";
    for (let i = 0; i + 1 < bytes.length; i += 2) {
      out += String.fromCharCode((bytes[i] << 8) | bytes[i + 1]);
    }
    return out;
  });
}
