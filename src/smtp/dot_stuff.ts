/**
 * Dot-stuffing for the way out (RFC 5321 §4.5.2): before sending a line that starts with ".",
 * the client adds one more ".", so that no content line can read as the end of data.
 *
 * The input must be canonical content: CRLF line endings only (the DATA decoder guarantees it:
 * bare CR/LF were refused or normalised), so every line start is at offset 0 or right after LF.
 */

const LF = 0x0a;
const CR = 0x0d;
const DOT = 0x2e;

/**
 * Returns the concatenation of `parts` dot-stuffed and terminated: every line starting with "."
 * gets another ".", a final CRLF is added if the content does not end with one, and "." CRLF ends
 * the data. Taking parts (e.g. our Received header and the message) saves copying a large message
 * once more.
 */
export function dotStuff(...parts: Uint8Array[]): Uint8Array {
  // Line starts: offset 0 and every offset after an LF (found with indexOf, which is native).
  let length = 0;
  let extra = 0;
  let atLineStart = true;
  let last2 = [0, 0];
  for (const p of parts) {
    length += p.length;
    if (p.length === 0) continue;
    let i = 0;
    if (!atLineStart) {
      const lf = p.indexOf(LF);
      i = lf < 0 ? p.length : lf + 1;
    }
    while (i < p.length) {
      if (p[i] === DOT) extra++;
      const lf = p.indexOf(LF, i);
      if (lf < 0) break;
      i = lf + 1;
    }
    atLineStart = p[p.length - 1] === LF;
    last2 = p.length >= 2 ? [p[p.length - 2], p[p.length - 1]] : [last2[1], p[0]];
  }
  const needCrlf = length > 0 && !(last2[0] === CR && last2[1] === LF);
  const out = new Uint8Array(length + extra + (needCrlf ? 2 : 0) + 3);
  let o = 0;
  atLineStart = true;
  for (const p of parts) {
    let runStart = 0;
    let i = 0;
    if (!atLineStart && p.length > 0) {
      const lf = p.indexOf(LF);
      i = lf < 0 ? p.length : lf + 1;
    }
    while (i < p.length) {
      if (p[i] === DOT) {
        out.set(p.subarray(runStart, i), o);
        o += i - runStart;
        out[o++] = DOT;
        runStart = i; // the original "." is copied with the next run
      }
      const lf = p.indexOf(LF, i);
      if (lf < 0) break;
      i = lf + 1;
    }
    out.set(p.subarray(runStart), o);
    o += p.length - runStart;
    if (p.length > 0) atLineStart = p[p.length - 1] === LF;
  }
  if (needCrlf) {
    out[o++] = CR;
    out[o++] = LF;
  }
  out[o++] = DOT;
  out[o++] = CR;
  out[o++] = LF;
  return out;
}
