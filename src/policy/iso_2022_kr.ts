/**
 * ISO-2022-KR (RFC 1557), the 7-bit Korean mail encoding of the 1990s that Korean spam still
 * uses: `ESC $ ) C` once designates KS C 5601 as G1, then SO (0x0E) switches to it and SI (0x0F)
 * back to ASCII. Inside SO, each character is two bytes 0x21-0x7E; with the high bit set they
 * are exactly EUC-KR, which `TextDecoder("euc-kr")` decodes.
 *
 * Neither iconv-lite (mailparser's decoder) nor WHATWG `TextDecoder` decodes ISO-2022-KR, so a
 * part declared as such reaches us from mailparser as its raw 7-bit bytes (unknown charsets are
 * decoded as UTF-8, which keeps 7-bit bytes unchanged); `fixIso2022KrText` turns that into text.
 *
 * Security: untrusted bytes; linear time, never throws. RFC 1557 says lines start in ASCII, so
 * CR and LF end a shifted run even without SI (a missing SI does not swallow the rest).
 */

const ESC = 0x1b;
const SO = 0x0e;
const SI = 0x0f;
const DESIGNATOR = "\x1b$)C";
const eucKr = new TextDecoder("euc-kr");

/** Decodes ISO-2022-KR bytes into text. */
export function decodeIso2022KrBytes(bytes: Uint8Array): string {
  let out = "";
  let ascii = "";
  let run: number[] = [];
  let shifted = false;
  const flushRun = () => {
    if (run.length) out += eucKr.decode(Uint8Array.from(run));
    run = [];
  };
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (b === ESC && bytes[i + 1] === 0x24 && bytes[i + 2] === 0x29 && bytes[i + 3] === 0x43) {
      i += 3; // the designator itself carries no text
      continue;
    }
    if (b === SO) {
      out += ascii;
      ascii = "";
      shifted = true;
      continue;
    }
    if (b === SI || b === 0x0a || b === 0x0d) {
      if (shifted) flushRun();
      shifted = false;
      if (b !== SI) ascii += String.fromCharCode(b);
      continue;
    }
    if (shifted) {
      // 0x21-0x7E pairs map to EUC-KR by setting the high bit; a space stays a space.
      if (b >= 0x21 && b <= 0x7e) run.push(b | 0x80);
      else {
        flushRun();
        out += b < 0x80 ? String.fromCharCode(b) : "\ufffd";
      }
      continue;
    }
    ascii += b < 0x80 ? String.fromCharCode(b) : "\ufffd";
  }
  flushRun();
  return out + ascii;
}

/**
 * Decodes ISO-2022-KR sequences left in already-decoded text (each char below U+0080 one byte).
 * Text without the `ESC $ ) C` designator is returned unchanged.
 */
export function fixIso2022KrText(text: string): string {
  if (!text.includes(DESIGNATOR)) return text;
  let out = "";
  let start = 0;
  // Decode only the stretches made of 7-bit characters; anything else passes through as is.
  for (let i = 0; i <= text.length; i++) {
    if (i === text.length || text.charCodeAt(i) >= 0x80) {
      if (i > start) {
        const seg = text.slice(start, i);
        const bytes = new Uint8Array(seg.length);
        for (let k = 0; k < seg.length; k++) bytes[k] = seg.charCodeAt(k);
        out += decodeIso2022KrBytes(bytes);
      }
      if (i < text.length) out += text[i];
      start = i + 1;
    }
  }
  return out;
}
