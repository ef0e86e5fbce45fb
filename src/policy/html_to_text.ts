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
 * Hidden text: with `dropHidden`, elements a client does not show are left out — those whose
 * `style` hides them (`display:none`, `visibility:hidden|collapse`, `font-size:0`, `opacity:0`,
 * `height:0`/`max-height:0`, `mso-hide:all`), that carry the `hidden` attribute, or whose class a
 * `<style>` rule hides the same way — so that "lot<span style=display:none>x</span>tery" reads
 * "lottery". The message walk (`mime_walk.ts`) judges both readings, hidden text dropped and
 * kept, so hidden text can neither split a keyword nor carry one unseen.
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

/** Elements that have no content and no closing tag. */
const VOID_TAGS = new Set([
  "area",
  "base",
  "br",
  "col",
  "embed",
  "hr",
  "img",
  "input",
  "link",
  "meta",
  "source",
  "track",
  "wbr",
]);

/** CSS declarations that hide an element's text. */
const HIDING_CSS =
  /(?:^|[;{\s])(?:display\s*:\s*none|visibility\s*:\s*(?:hidden|collapse)|font-size\s*:\s*[0.]+(?:[a-z%]+)?\s*(?:!important\s*)?(?:;|}|$)|opacity\s*:\s*[0.]+\s*(?:!important\s*)?(?:;|}|$)|(?:max-)?height\s*:\s*[0.]+(?:[a-z%]+)?\s*(?:!important\s*)?(?:;|}|$)|mso-hide\s*:\s*all)/i;

/** Class names that a `<style>` rule hides (see `HIDING_CSS`). */
function hiddenClasses(src: string): Set<string> {
  const out = new Set<string>();
  for (const m of src.matchAll(/<style\b[^>]*>([\s\S]*?)<\/style\s*>/gi)) {
    for (const r of m[1].matchAll(/([^{}]*)\{([^}]*)\}/g)) {
      if (!HIDING_CSS.test(r[2])) continue;
      for (const c of r[1].matchAll(/\.(-?[A-Za-z_][\w-]*)/g)) out.add(c[1].toLowerCase());
    }
  }
  return out;
}

/** Whether a start tag's attributes hide the element. */
function tagHides(tag: string, classes: Set<string>): boolean {
  if (/\shidden(?:\s|=|\/?>)/i.test(tag)) return true;
  const style = /\sstyle\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))/i.exec(tag);
  if (style && HIDING_CSS.test(decodeEntities(style[1] ?? style[2] ?? style[3] ?? ""))) {
    return true;
  }
  if (classes.size === 0) return false;
  const cls = /\sclass\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))/i.exec(tag);
  if (!cls) return false;
  return (cls[1] ?? cls[2] ?? cls[3] ?? "").toLowerCase().split(/\s+/).some((c) => classes.has(c));
}

/**
 * Converts HTML to plain text (see the module comment); never throws. With `dropHidden`, the
 * text of elements hidden by CSS or the `hidden` attribute is left out.
 */
export function htmlToText(html: string, maxChars = MAX_HTML_CHARS, dropHidden = false): string {
  const src = html.length > maxChars ? html.slice(0, maxChars) : html;
  const out: string[] = [];
  let i = 0;
  const n = src.length;
  let hiddenUntil = ""; // closing tag name we are skipping to, inside script/style/head
  const classes = dropHidden ? hiddenClasses(src) : new Set<string>();
  let cssHidden = ""; // the hidden element's name, while inside it
  let cssDepth = 0; // nesting of elements of that name inside it
  while (i < n) {
    const lt = src.indexOf("<", i);
    const textEnd = lt < 0 ? n : lt;
    if (textEnd > i && hiddenUntil === "" && cssHidden === "") {
      out.push(decodeEntities(src.slice(i, textEnd)));
    }
    if (lt < 0) break;
    if (src.startsWith("<!--", lt)) {
      const end = src.indexOf("-->", lt + 4);
      i = end < 0 ? n : end + 3;
      continue;
    }
    const gt = src.indexOf(">", lt + 1);
    if (gt < 0) {
      // "<" with no closing ">": text, as browsers show it.
      if (hiddenUntil === "" && cssHidden === "") out.push(decodeEntities(src.slice(lt)));
      break;
    }
    const m = /^<\s*(\/?)\s*([A-Za-z][A-Za-z0-9-]*)/.exec(src.slice(lt, Math.min(gt + 1, lt + 64)));
    i = gt + 1;
    if (!m) {
      // "<!DOCTYPE>", "<?xml?>", "< 3": not a tag we know; a bare "<" followed by text is text.
      if (!/^<[!?/]/.test(src.slice(lt, lt + 2)) && hiddenUntil === "" && cssHidden === "") {
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
    if (cssHidden !== "") {
      if (name === cssHidden && !VOID_TAGS.has(name)) {
        if (closing) cssDepth--;
        else if (!/\/\s*>$/.test(src.slice(lt, gt + 1))) cssDepth++;
        if (cssDepth === 0) cssHidden = "";
      }
      continue;
    }
    if (
      dropHidden && !closing && !VOID_TAGS.has(name) && !/\/\s*>$/.test(src.slice(lt, gt + 1)) &&
      tagHides(src.slice(lt, gt + 1), classes)
    ) {
      cssHidden = name;
      cssDepth = 1;
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
