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
 * Look-alike letters of other scripts (Cyrillic "о", Greek "ο", mathematical and other TR39
 * confusables) are replaced by their prototype (`confusables.ts`)
 * (on the upper-case form, so that a word and its capitals fold alike), so that "lоttеry" reads "lottery".
 *
 * Security: untrusted text. The cost is linear in the input; callers cap the input length.
 */
import { foldConfusables } from "./confusables.ts";

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
  const bare = text.normalize("NFKC").replace(/\p{Default_Ignorable_Code_Point}/gu, "");
  // Look-alikes are folded on the upper-case form (TR39 maps "Σ" and "σ" differently; mapping
  // the upper case makes "ΣΟΦΟΣ" and "σοφος" fold alike), then everything is lower-cased.
  return foldConfusables(bare.toLowerCase().toUpperCase()).toLowerCase()
    .normalize("NFKC")
    .replace(/\s+/g, " ");
}
