/**
 * HTML → the text a reader sees, for keyword rules on HTML mail.
 *
 * Why our own and not mailparser's html-to-text: mailparser converts HTML only when a message has
 * no text/plain alternative, but spam often puts the innocent text in text/plain and the pitch in
 * HTML, so every HTML part must be read. This converter is deliberately simple: one linear pass,
 * no DOM, no recursion, so its cost is bounded by the input length whatever the nesting.
 *
 * What it does: drops comments, `<script>`, `<style>`, `<head>` contents, and tags; block-level
 * tags become line breaks; inline tags become nothing, so that "lot<b></b>tery" reads "lottery"
 * (tag-splitting is a classic filter evasion); character references are decoded (numeric, and
 * the named ones mail actually uses).
 *
 * Security: untrusted text; `maxChars` caps the input.
 */

const BLOCK_TAGS = new Set([
  "address",
  "article",
  "aside",
  "blockquote",
  "br",
  "center",
  "dd",
  "div",
  "dl",
  "dt",
  "footer",
  "form",
  "h1",
  "h2",
  "h3",
  "h4",
  "h5",
  "h6",
  "header",
  "hr",
  "li",
  "main",
  "nav",
  "ol",
  "p",
  "pre",
  "section",
  "table",
  "tbody",
  "td",
  "tfoot",
  "th",
  "thead",
  "title",
  "tr",
  "ul",
]);

/** Elements whose content is not shown. */
const HIDDEN_TAGS = new Set(["script", "style", "head", "template", "noscript"]);

const NAMED: Record<string, string> = {
  amp: "&",
  lt: "<",
  gt: ">",
  quot: '"',
  apos: "'",
  nbsp: " ",
  shy: "",
  zwnj: "",
  zwj: "",
  copy: "©",
  reg: "®",
  trade: "™",
  hellip: "…",
  mdash: "—",
  ndash: "–",
  lsquo: "‘",
  rsquo: "’",
  ldquo: "“",
  rdquo: "”",
  laquo: "«",
  raquo: "»",
  bull: "•",
  middot: "·",
  euro: "€",
  pound: "£",
  yen: "¥",
  cent: "¢",
  won: "₩",
  times: "×",
  divide: "÷",
  deg: "°",
};

/** Default cap on the HTML read, in characters. */
export const MAX_HTML_CHARS = 2 * 1024 * 1024;

/** Converts HTML to plain text (see the module comment); never throws. */
export function htmlToText(html: string, maxChars = MAX_HTML_CHARS): string {
  const src = html.length > maxChars ? html.slice(0, maxChars) : html;
  const out: string[] = [];
  let i = 0;
  const n = src.length;
  let hiddenUntil = ""; // closing tag name we are skipping to, inside script/style/head
  while (i < n) {
    const lt = src.indexOf("<", i);
    const textEnd = lt < 0 ? n : lt;
    if (textEnd > i && hiddenUntil === "") out.push(decodeEntities(src.slice(i, textEnd)));
    if (lt < 0) break;
    if (src.startsWith("<!--", lt)) {
      const end = src.indexOf("-->", lt + 4);
      i = end < 0 ? n : end + 3;
      continue;
    }
    const gt = src.indexOf(">", lt + 1);
    if (gt < 0) {
      // "<" with no closing ">": text, as browsers show it.
      if (hiddenUntil === "") out.push(decodeEntities(src.slice(lt)));
      break;
    }
    const m = /^<\s*(\/?)\s*([A-Za-z][A-Za-z0-9-]*)/.exec(src.slice(lt, Math.min(gt + 1, lt + 64)));
    i = gt + 1;
    if (!m) {
      // "<!DOCTYPE>", "<?xml?>", "< 3": not a tag we know; a bare "<" followed by text is text.
      if (!/^<[!?/]/.test(src.slice(lt, lt + 2)) && hiddenUntil === "") {
        out.push(decodeEntities(src.slice(lt, gt + 1)));
      }
      continue;
    }
    const closing = m[1] === "/";
    const name = m[2].toLowerCase();
    if (hiddenUntil !== "") {
      if (closing && name === hiddenUntil) hiddenUntil = "";
      continue;
    }
    if (!closing && HIDDEN_TAGS.has(name) && !/\/\s*>$/.test(src.slice(lt, gt + 1))) {
      hiddenUntil = name;
      continue;
    }
    if (BLOCK_TAGS.has(name)) out.push(name === "td" || name === "th" ? " " : "\n");
    else if (name === "img") {
      // Alt text is what a reader without images sees.
      const alt = /\balt\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))/i.exec(src.slice(lt, gt + 1));
      if (alt) out.push(" " + decodeEntities(alt[1] ?? alt[2] ?? alt[3] ?? "") + " ");
    }
  }
  return out.join("")
    .replace(/[ \t\f\v\u00a0]+/g, " ")
    .replace(/ *\r?\n[ \r\n]*/g, "\n")
    .trim();
}

/** Decodes character references (`&amp;`, `&#233;`, `&#xE9;`); unknown ones stay as written. */
export function decodeEntities(text: string): string {
  if (!text.includes("&")) return text;
  return text.replace(/&(#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});?/g, (
    whole,
    ref: string,
  ) => {
    if (ref[0] === "#") {
      const cp = ref[1] === "x" || ref[1] === "X"
        ? parseInt(ref.slice(2), 16)
        : Number(ref.slice(1));
      if (cp === 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return "\ufffd";
      return String.fromCodePoint(cp);
    }
    const v = NAMED[ref.toLowerCase()];
    return v ?? whole;
  });
}
