/**
 * SMTP replies: the value type, the wire format, and the text hygiene applied to anything that
 * crosses from one peer to the other.
 *
 * Trusts: nothing. Reply text that came from the protected server is sanitised before the client
 * sees it (Security: untrusted bytes — a server's reply must never be able to inject a second reply
 * line or a control character into the client's stream).
 *
 * Limits: RFC 5321 §4.5.3.1.5 bounds a reply line at 512 octets including the code and CRLF; we
 * bound relayed text at `MAX_REPLY_TEXT` characters per line and `MAX_REPLY_LINES` lines.
 *
 * Enhanced status codes (RFC 2034 §3, RFC 3463) precede the text of every 2xx/4xx/5xx reply except
 * the greeting and the replies to HELO/EHLO, which RFC 2034 exempts; `formatReply` writes the code
 * on every line of a multi-line reply, as RFC 2034 §3 requires.
 */

/** One SMTP reply, possibly multi-line. */
export interface SmtpReply {
  /** Three-digit reply code (RFC 5321 §4.2). */
  code: number;
  /** Enhanced status code (RFC 3463), e.g. "2.1.5"; omitted on the greeting and EHLO/HELO. */
  enhanced?: string;
  /** Text lines (at least one; may be ""). Already sanitised. */
  lines: string[];
  /** The enhanced code is the server's own (relayed): kept even when SSG's replies carry none. */
  serverEnhanced?: boolean;
}

/** Most characters of text kept per relayed reply line. */
export const MAX_REPLY_TEXT = 400;
/** Most lines kept of a relayed multi-line reply. */
export const MAX_REPLY_LINES = 20;

const ENHANCED_RE = /^[245]\.\d{1,3}\.\d{1,3}$/;

/** Builds a single-line reply. */
export function reply(code: number, enhanced: string | undefined, text: string): SmtpReply {
  return { code, enhanced, lines: [sanitizeText(text)] };
}

/**
 * Removes what must never reach a peer from reply text: control characters (C0, DEL, C1) and
 * non-ASCII characters become "?" and the text is cut at `MAX_REPLY_TEXT` characters.
 * Security: untrusted bytes.
 */
export function sanitizeText(text: string): string {
  const clean = text.replace(/[^\x20-\x7e]/g, "?");
  return clean.length > MAX_REPLY_TEXT ? clean.slice(0, MAX_REPLY_TEXT) : clean;
}

/** Whether `s` is a well-formed enhanced status code (RFC 3463 §2). */
export function isEnhancedCode(s: string): boolean {
  return ENHANCED_RE.test(s);
}

/** Serialises a reply as wire bytes text: `250-a\r\n250 b\r\n`. */
export function formatReply(r: SmtpReply): string {
  const lines = r.lines.length > 0 ? r.lines : [""];
  let out = "";
  for (let i = 0; i < lines.length; i++) {
    const sep = i === lines.length - 1 ? " " : "-";
    const text = r.enhanced
      ? (lines[i] === "" ? r.enhanced : `${r.enhanced} ${lines[i]}`)
      : lines[i];
    out += `${r.code}${sep}${text}\r\n`;
  }
  return out;
}

/** The first line of a reply as one string for logs, e.g. "550 5.1.1 No such user". */
export function replySummary(r: SmtpReply): string {
  const first = r.lines[0] ?? "";
  return [String(r.code), r.enhanced, first].filter((s) => s !== undefined && s !== "").join(" ");
}

/** Whether a reply code is a temporary (4xx) or permanent (5xx) failure. */
export function isFailure(code: number): boolean {
  return code >= 400 && code <= 599;
}
