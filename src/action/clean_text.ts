/**
 * Turning attacker-controlled text into text that is safe to put in a generated header field, a
 * generated message body, a webhook, a log or a terminal.
 *
 * Security: untrusted bytes. The inputs (Subject, From, HELO, rule evidence, original header
 * lines) come from the client. The vectors these functions close (reliability-anchors §2.4 and
 * Haraka's bounce_injection cases): raw CR or LF; bare LF; NUL and other C0/C1 controls; the
 * Unicode line and paragraph separators; RFC 2047 encoded words that decode to CRLF (they are
 * decoded FIRST, then cleaned, so the decoded CRLF is removed too); lone surrogates; and sheer
 * length (everything is truncated to a caller's bound).
 */
import { decodeEncodedWords } from "../policy/encoded_words.ts";

// C0 controls, DEL, C1 controls, U+2028/2029 (line/paragraph separators), and the bidi
// overrides/isolates that can make a displayed line read differently from its bytes.
// deno-lint-ignore no-control-regex
const CONTROL_RE = /[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
const LINE_BREAK_RE = /\r\n|\r|\n|\u2028|\u2029|\u0085/;

/** Options of `cleanText`. */
export interface CleanOptions {
  /** Decode RFC 2047 encoded words before cleaning (default true: header values). */
  decodeWords?: boolean;
}

/**
 * One line of clean text: encoded words decoded (unless disabled), every control character and
 * line break replaced by a space, runs of white space collapsed, trimmed, and cut to `maxChars`
 * code points (an ellipsis "..." marks the cut).
 */
export function cleanText(value: string, maxChars: number, opts: CleanOptions = {}): string {
  // Bound the work before decoding: a 10 MB header must not cost 10 MB of regex passes.
  let text = value.length > maxChars * 8 + 1024 ? value.slice(0, maxChars * 8 + 1024) : value;
  if (opts.decodeWords ?? true) text = safeDecodeWords(text);
  text = text.toWellFormed().replace(CONTROL_RE, " ").replace(/\s+/g, " ").trim();
  return truncate(text, maxChars);
}

/**
 * Lines of clean text for a message body: split at any line break, each line's control
 * characters replaced (TAB becomes a space), each line cut to `maxLineChars`, at most
 * `maxLines` lines (a last line "... (N more lines)" says what was left out).
 */
export function cleanLines(text: string, maxLines: number, maxLineChars: number): string[] {
  const bound = (maxLines + 1) * (maxLineChars + 2);
  const cut = text.length > bound ? text.slice(0, bound) : text;
  const lines = cut.toWellFormed().split(LINE_BREAK_RE);
  const out: string[] = [];
  for (const line of lines) {
    if (out.length === maxLines) {
      out.push(`... (${lines.length - maxLines}${cut === text ? "" : "+"} more lines)`);
      break;
    }
    out.push(truncate(line.replace(CONTROL_RE, " ").trimEnd(), maxLineChars));
  }
  while (out.length > 0 && out[out.length - 1] === "") out.pop();
  return out;
}

/** Cuts `text` to `maxChars` code points, marking the cut with "...". */
export function truncate(text: string, maxChars: number): string {
  if (text.length <= maxChars) return text;
  const points = Array.from(text);
  if (points.length <= maxChars) return text;
  return points.slice(0, Math.max(0, maxChars - 3)).join("") + "...";
}

function safeDecodeWords(text: string): string {
  try {
    return decodeEncodedWords(text);
  } catch {
    return text; // an undecodable word stays as written (and is then cleaned and re-encoded)
  }
}
