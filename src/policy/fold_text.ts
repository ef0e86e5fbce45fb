/**
 * The one normalisation every text comparison of the policy uses, so that a rule written as
 * "Lottery" matches "LOTTERY", "ｌｏｔｔｅｒｙ" (full-width) and "lottery" alike, and Hangul
 * written as conjoining jamo matches precomposed syllables.
 *
 * NFKC (Unicode UAX #15) folds compatibility forms (full-width Latin, ligatures such as "ﬁ",
 * circled letters) and composes Hangul jamo; the case fold is approximated by lower-, upper-, then
 * lower-casing (the first pass turns "ẞ" into "ß" so the second can make it "SS"), which gives the full (not simple) folding for the cases that matter to spam
 * keywords ("ß" → "ss", "ﬀ" → "ff", final sigma "ς" → "σ"), without locale rules (no Turkish
 * dotless-i special case, like Unicode's default case folding).
 *
 * Security: untrusted text. The cost is linear in the input; callers cap the input length.
 */

/**
 * Normalises `text` for comparison: NFKC, case fold, default-ignorable characters removed (zero
 * width spaces, soft hyphens, bidi controls: invisible, and a classic way to split a keyword), and
 * every run of white space (line breaks included: a phrase may wrap) made one space.
 */
export function foldText(text: string): string {
  // deno-lint-ignore no-control-regex
  if (/^[\x00-\x7f]*$/.test(text)) {
    // Fast path: ASCII needs only lowercasing and white space runs.
    return text.toLowerCase().replace(/\s+/g, " ");
  }
  return text.normalize("NFKC")
    .replace(/\p{Default_Ignorable_Code_Point}/gu, "")
    .toLowerCase().toUpperCase().toLowerCase()
    .replaceAll("ς", "σ") // toLowerCase() makes a final sigma; case folding (CaseFolding.txt) does not
    .normalize("NFKC")
    .replace(/\s+/g, " ");
}
