/**
 * A fingerprint of a message's content that survives what bulk senders vary per copy — the
 * recipient's name, order numbers, amounts, dates, white space — so that the same campaign sent
 * to several protected servers is recognised as one (the paper's headline claim).
 *
 * How:
 * 1. Normalise: NFKC + case fold (`fold_text.ts`), every run of digits becomes "0" (a digit
 *    class: "Order 12345" and "Order 987" are the same), every run of other non-letter,
 *    non-digit characters is a token boundary (white space and punctuation do not matter).
 * 2. Shingle: every run of `SHINGLE_WORDS` consecutive tokens is one shingle (w-shingling,
 *    Broder 1997). A changed word (a name) changes only the shingles that contain it: with
 *    3-word shingles, one changed name in 40 words changes 3 of 38 shingles.
 * 3. MinHash: `SIGNATURE_SIZE` independent hashes, each keeping its minimum over the shingles.
 *    The fraction of equal positions of two signatures estimates the Jaccard similarity of their
 *    shingle sets; two copies are "the same content" at `SAME_CONTENT` (0.5) or more.
 * 4. LSH bands: the signature is cut into `BANDS` bands of `SIGNATURE_SIZE / BANDS` values; each
 *    band is hashed to one key. Copies with similarity 0.7 share at least one band key with
 *    probability 1 − (1 − 0.7⁴)¹⁶ ≈ 0.99; unrelated texts (≤ 0.1) almost never (≈ 0.002). The
 *    state store looks candidates up by band key (an index probe, not a scan) and confirms each
 *    with the full signature.
 *
 * Why MinHash and not SimHash: SimHash compares by Hamming distance, and finding all stored
 * fingerprints within distance k needs either a scan or k+1 permuted tables; its distance for a
 * short message with one changed name is erratic (each shingle moves many bits). MinHash's
 * estimate is a plain fraction, its LSH lookup is an equality probe on indexed keys, and the
 * threshold has a meaning (Jaccard similarity) that an administrator can reason about.
 * Why not a hash of the whole normalised text (DCC-style exact checksums): one changed name
 * breaks it.
 *
 * Security: untrusted text; linear in its length, which is capped at `MAX_FINGERPRINT_CHARS`.
 */
import { foldText } from "../policy/fold_text.ts";

/** Words per shingle. */
export const SHINGLE_WORDS = 3;
/** MinHash values per signature. */
export const SIGNATURE_SIZE = 64;
/** LSH bands (SIGNATURE_SIZE must be a multiple). */
export const BANDS = 16;
/** Estimated Jaccard similarity at which two messages are the same content. */
export const SAME_CONTENT = 0.5;
/** Characters of text fingerprinted (the rest is not looked at). */
export const MAX_FINGERPRINT_CHARS = 256 * 1024;

/** A content fingerprint. */
export interface Fingerprint {
  /** MinHash signature. */
  signature: Uint32Array;
  /** One key per band (safe integers: band index × 2³² + band hash). */
  bands: number[];
  /** Number of distinct shingles the signature was computed from. */
  shingles: number;
}

// 64 fixed seeds (from a simple LCG): fixed so that fingerprints persist across restarts.
const SEEDS = (() => {
  const out = new Uint32Array(SIGNATURE_SIZE);
  let x = 0x9e3779b9;
  for (let i = 0; i < SIGNATURE_SIZE; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    out[i] = x;
  }
  return out;
})();

/**
 * The normalised tokens of `text` (digit runs → "0", punctuation and white space dropped): the
 * definition the fingerprint's own tokenizer follows (and its tests compare against).
 */
export function fingerprintTokens(text: string): string[] {
  const t = foldText(
    text.length > MAX_FINGERPRINT_CHARS ? text.slice(0, MAX_FINGERPRINT_CHARS) : text,
  );
  return t.replace(/\p{Nd}+/gu, "0").split(/[^\p{L}\p{N}\p{M}]+/u).filter((w) => w !== "");
}

/** The fingerprint of `text`, or undefined when it has no words at all. */
export function fingerprint(text: string): Fingerprint | undefined {
  const hashes = shingleHashes(text);
  if (hashes.length === 0) return undefined;
  const signature = new Uint32Array(SIGNATURE_SIZE).fill(0xffffffff);
  for (let j = 0; j < hashes.length; j++) {
    const h = hashes[j];
    for (let i = 0; i < SIGNATURE_SIZE; i++) {
      const v = fmix32(h ^ SEEDS[i]);
      if (v < signature[i]) signature[i] = v;
    }
  }
  const rows = SIGNATURE_SIZE / BANDS;
  const bands: number[] = [];
  for (let b = 0; b < BANDS; b++) {
    let h = 0x811c9dc5 ^ b;
    for (let r = 0; r < rows; r++) {
      h = Math.imul(h ^ signature[b * rows + r], 0x01000193) >>> 0;
    }
    bands.push(b * 0x1_0000_0000 + fmix32(h));
  }
  return { signature, bands, shingles: hashes.length };
}

/**
 * The distinct FNV-1a hashes of the shingles of `text`, ascending: each run of `SHINGLE_WORDS`
 * tokens of `fingerprintTokens(text)` joined with single spaces (all of them joined when there
 * are fewer). Empty when `text` has no token.
 */
export function shingleHashes(text: string): Uint32Array {
  const t = foldText(
    text.length > MAX_FINGERPRINT_CHARS ? text.slice(0, MAX_FINGERPRINT_CHARS) : text,
  );
  // The tokens of `fingerprintTokens`, without a string per token or per shingle (issue 9: the
  // regex replace, the split and the strings were most of the ~0.3 ms and ~280 KB of garbage a
  // 10 KB message cost): their UTF-16 units laid end to end, each token's end offset kept.
  const units = new Uint16Array(t.length);
  const ends: number[] = [];
  let n = 0;
  let inWord = false;
  let inDigits = false;
  for (let i = 0; i < t.length; i++) {
    const c = t.charCodeAt(i);
    let k: number;
    let width = 1;
    if (c < 0x80) k = ASCII_CLASS[c];
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < t.length) {
      const d = t.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        k = classify(((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000);
        width = 2;
      } else k = classify(c);
    } else k = bmpClass(c);
    if (k === OTHER) {
      if (inWord) ends.push(n);
      inWord = inDigits = false;
      continue;
    }
    inWord = true;
    if (k === DIGIT) {
      // A run of decimal digits is one "0".
      if (!inDigits) units[n++] = 0x30;
      inDigits = true;
      i += width - 1;
      continue;
    }
    inDigits = false;
    units[n++] = c;
    if (width === 2) units[n++] = t.charCodeAt(++i);
  }
  if (inWord) ends.push(n);
  if (ends.length === 0) return new Uint32Array(0);
  // In a typed array, sorted and made distinct in place (no Set of boxed numbers).
  const count = Math.max(1, ends.length - SHINGLE_WORDS + 1);
  const hashes = new Uint32Array(count);
  if (ends.length < SHINGLE_WORDS) hashes[0] = fnv1aTokens(units, ends, 0, ends.length);
  for (let i = 0; i + SHINGLE_WORDS <= ends.length; i++) {
    hashes[i] = fnv1aTokens(units, ends, i, i + SHINGLE_WORDS);
  }
  hashes.sort();
  let distinct = 1;
  for (let i = 1; i < count; i++) {
    if (hashes[i] !== hashes[distinct - 1]) hashes[distinct++] = hashes[i];
  }
  return hashes.subarray(0, distinct);
}

/** Character classes of the tokenizer: not part of a token, part of one, a decimal digit. */
const OTHER = 0;
const WORD = 1;
const DIGIT = 2;
const WORD_CHAR = /^[\p{L}\p{N}\p{M}]$/u;
const DECIMAL_DIGIT = /^\p{Nd}$/u;

/** The class of a code point, by the same Unicode properties `fingerprintTokens` uses. */
function classify(cp: number): number {
  const ch = String.fromCodePoint(cp);
  return DECIMAL_DIGIT.test(ch) ? DIGIT : WORD_CHAR.test(ch) ? WORD : OTHER;
}

const ASCII_CLASS = Uint8Array.from({ length: 128 }, (_, c) => classify(c));
/** BMP classes, computed once per code unit value (0: not yet known, else class + 1). */
const BMP_CLASS = new Uint8Array(0x10000);

function bmpClass(c: number): number {
  let k = BMP_CLASS[c];
  if (k === 0) BMP_CLASS[c] = k = classify(c) + 1;
  return k - 1;
}

/** Estimated Jaccard similarity of two signatures (fraction of equal positions). */
export function similarity(a: Uint32Array, b: Uint32Array): number {
  let same = 0;
  for (let i = 0; i < SIGNATURE_SIZE; i++) if (a[i] === b[i]) same++;
  return same / SIGNATURE_SIZE;
}

/**
 * FNV-1a (32-bit, over UTF-16 code units) of tokens `from..to` (their units in `units`, token
 * `w` ending at `ends[w]`) joined with single spaces — the same value as hashing the joined
 * token strings, without building them.
 */
function fnv1aTokens(units: Uint16Array, ends: number[], from: number, to: number): number {
  let h = 0x811c9dc5;
  for (let w = from; w < to; w++) {
    if (w > from) h = Math.imul(h ^ 0x20, 0x01000193);
    for (let i = w === 0 ? 0 : ends[w - 1], e = ends[w]; i < e; i++) {
      h = Math.imul(h ^ units[i], 0x01000193);
    }
  }
  return h >>> 0;
}

/** MurmurHash3's 32-bit finaliser: a cheap, well-mixing permutation. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
