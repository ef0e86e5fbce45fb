/**
 * The admin alert as a mail message: built only from cleaned values, so that nothing the attacker
 * wrote can start a header line.
 *
 * Security: untrusted bytes. The Subject, From, HELO, envelope addresses, rule evidence and the
 * original header section are the client's. The defences (reliability-anchors §2.4; Haraka's
 * bounce_injection vectors):
 * - the generated header section has a fixed list of fields (`ALERT_HEADER_NAMES`); only the
 *   Subject carries attacker text, and it goes through `cleanText` (encoded words decoded FIRST,
 *   then every CR, LF, NUL and other control removed, then cut to a bound) and then
 *   `formatHeaderField` (cleaned again, RFC 2047-encoded when non-ASCII or containing "=?",
 *   folded to the line limits);
 * - evidence and the original header lines go in the BODY, each line prefixed ("> ", "| "), so
 *   even a perfect header line inside them is body text;
 * - the body is UTF-8 quoted-printable (RFC 2045 §6.7): the message on the wire is 7-bit ASCII,
 *   lines at most 76 characters, whatever the attacker's bytes were.
 *
 * RFC 3834 §5: `Auto-Submitted: auto-generated`; the envelope sender is null (`<>`, set by the
 * mailer), so no reply or bounce is ever sent back about an alert.
 */
import { rfc5322Date } from "../smtp/received_header.ts";
import { ALERT_MARK_HEADER, type AlertMark } from "./alert_mark.ts";
import { cleanLines, cleanText } from "./clean_text.ts";
import { formatHeaderField } from "./header_field.ts";
import { fieldValue, findField, parseRawHeaders } from "./raw_headers.ts";
import type { Envelope, Verdict } from "./verdict_types.ts";

/** Exactly the header fields an alert has, in order. */
export const ALERT_HEADER_NAMES: readonly string[] = Object.freeze([
  "From",
  "To",
  "Subject",
  "Date",
  "Message-ID",
  "Auto-Submitted",
  "X-Auto-Response-Suppress",
  ALERT_MARK_HEADER,
  "MIME-Version",
  "Content-Type",
  "Content-Transfer-Encoding",
]);

/** Most characters of the original Subject shown in the alert's Subject. */
export const MAX_SUBJECT_CHARS = 120;
/** Most lines of evidence in the body. */
export const MAX_EVIDENCE_LINES = 50;
/** Most characters per line of evidence. */
export const MAX_EVIDENCE_LINE_CHARS = 500;
/** Most lines of the original header section in the body. */
export const MAX_ORIGINAL_HEADER_LINES = 200;
/** Most characters per line of the original header section. */
export const MAX_ORIGINAL_HEADER_LINE_CHARS = 998;
/** Most bytes of the original header section read. */
export const MAX_ORIGINAL_HEADER_BYTES = 64 * 1024;

/** What an alert is about. */
export interface AlertContent {
  /** The rule (or threshold) that asked for the alert. */
  rule: string;
  /** The verdict on the message. */
  verdict: Verdict;
  /** The transaction. */
  envelope: Envelope;
  /** The message as received (only its header section is used). */
  message: Uint8Array;
  /** When. */
  time: Date;
  /** Alerts of this rule suppressed by the rate limit since the last one sent. */
  suppressed?: { count: number; since?: number };
  /** The quarantine entry, when the message was quarantined. */
  quarantineId?: string;
  /** The final reply the client got. */
  outcome?: { code: number };
  /** Why this alert, beyond the verdict's evidence (e.g. a threshold: "3 discards in 1h"). */
  reason?: string;
}

/** Who the alert is from and to. */
export interface AlertAddressing {
  /** Header From (the envelope sender is always null). */
  from: string;
  /** Admin mailboxes (header To and envelope recipients). */
  to: string[];
  /** Our host name, for the Message-ID. */
  hostname: string;
  /** Signs the Message-ID against loops. */
  mark: AlertMark;
}

/** The facts of an alert as clean strings (for the body and the webhook). */
export interface AlertFacts {
  /** The rule or threshold that asked for the alert. */
  rule: string;
  /** The verdict's action. */
  action: string;
  /** The rule's reply (reject/tempfail): "550 5.7.1 text". */
  reply?: string;
  /** The reply code the client finally got. */
  outcome?: number;
  /** When the alert was built (ISO 8601). */
  time: string;
  /** "IP port N" of the client. */
  client: string;
  /** The HELO/EHLO name. */
  helo: string;
  /** "IP port N" of the original server. */
  server: string;
  /** Envelope sender ("<>" for the null sender). */
  mailFrom: string;
  /** Envelope recipients (at most 50, then a count). */
  rcptTo: string[];
  /** Whether the session used TLS. */
  tls: boolean;
  /** Session id. */
  session: string;
  /** Transaction id. */
  transaction: string;
  /** The decoded Subject. */
  subject: string;
  /** The decoded From header. */
  from: string;
  /** The verdict's evidence, one entry per line. */
  evidence: string[];
  /** Why this alert beyond the evidence (e.g. a threshold), one entry per line. */
  reason: string[];
  /** The quarantine entry, when there is one. */
  quarantineId?: string;
  /** Alerts of this rule suppressed since the last one sent. */
  suppressed: number;
  /** When the first of those was suppressed (ISO 8601). */
  suppressedSince?: string;
}

/** The cleaned facts of an alert. */
export function alertFacts(c: AlertContent): AlertFacts {
  const headers = parseRawHeaders(c.message);
  const subject = findField(headers, "Subject");
  const from = findField(headers, "From");
  const v = c.verdict;
  const facts: AlertFacts = {
    rule: cleanText(c.rule, 200, { decodeWords: false }),
    action: v.action,
    time: c.time.toISOString(),
    client: `${cleanText(c.envelope.client.ip, 64)} port ${c.envelope.client.port}`,
    helo: cleanText(c.envelope.helo, 255),
    server: `${cleanText(c.envelope.server.ip, 64)} port ${c.envelope.server.port}`,
    mailFrom: cleanText(c.envelope.mailFrom, 300, { decodeWords: false }) || "<>",
    rcptTo: c.envelope.rcptTo.slice(0, 50).map((r) => cleanText(r, 300, { decodeWords: false })),
    tls: c.envelope.tls,
    session: cleanText(c.envelope.sessionId, 100),
    transaction: cleanText(c.envelope.transactionId, 100),
    subject: subject ? cleanText(fieldValue(c.message, subject, 16384), 1000) : "",
    from: from ? cleanText(fieldValue(c.message, from, 16384), 1000) : "",
    evidence: v.evidence ? cleanLines(v.evidence, MAX_EVIDENCE_LINES, MAX_EVIDENCE_LINE_CHARS) : [],
    reason: c.reason ? cleanLines(c.reason, MAX_EVIDENCE_LINES, MAX_EVIDENCE_LINE_CHARS) : [],
    suppressed: c.suppressed?.count ?? 0,
  };
  if (c.envelope.rcptTo.length > 50) facts.rcptTo.push(`... (${c.envelope.rcptTo.length} in all)`);
  if ("reply" in v) {
    facts.reply = cleanText(`${v.reply.code} ${v.reply.enhanced} ${v.reply.text}`, 300);
  }
  if (c.outcome) facts.outcome = c.outcome.code;
  if (c.quarantineId) facts.quarantineId = cleanText(c.quarantineId, 100);
  if (c.suppressed?.since !== undefined) {
    facts.suppressedSince = new Date(c.suppressed.since).toISOString();
  }
  return facts;
}

/** The alert mail: its bytes (CRLF, 7-bit) and Message-ID. */
export interface AlertMessage {
  /** The whole message, CRLF line ends, 7-bit. */
  bytes: Uint8Array;
  /** Its Message-ID, with angle brackets. */
  messageId: string;
  /** The cleaned facts it was built from (also the webhook payload). */
  facts: AlertFacts;
}

/** Builds the alert mail for `c` (see the module comment for what makes it injection-proof). */
export function buildAlertMessage(c: AlertContent, a: AlertAddressing): AlertMessage {
  const facts = alertFacts(c);
  const rnd = Array.from(
    crypto.getRandomValues(new Uint8Array(8)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
  const host = /^[A-Za-z0-9.-]{1,253}$/.test(a.hostname) ? a.hostname : "ssg.invalid";
  const messageId = `<${c.time.getTime().toString(36)}.${rnd}.alert@${host}>`;
  let subject = `[SSG alert] ${facts.rule}: ${facts.action}`;
  if (facts.subject !== "") {
    subject += ` - "${cleanText(facts.subject, MAX_SUBJECT_CHARS, { decodeWords: false })}"`;
  }
  const head = [
    formatHeaderField("From", a.from),
    formatHeaderField("To", a.to.join(", ")),
    formatHeaderField("Subject", subject),
    formatHeaderField("Date", rfc5322Date(c.time)),
    formatHeaderField("Message-ID", messageId),
    formatHeaderField("Auto-Submitted", "auto-generated"),
    formatHeaderField("X-Auto-Response-Suppress", "All"),
    formatHeaderField(ALERT_MARK_HEADER, a.mark.mark(messageId)),
    formatHeaderField("MIME-Version", "1.0"),
    formatHeaderField("Content-Type", "text/plain; charset=utf-8"),
    formatHeaderField("Content-Transfer-Encoding", "quoted-printable"),
  ].join("");
  const body = encodeQuotedPrintable(alertBody(facts, c.message).join("\n"));
  return {
    bytes: new TextEncoder().encode(head + "\r\n" + body),
    messageId,
    facts,
  };
}

/** The body lines (plain text; encoded by the caller). */
function alertBody(f: AlertFacts, message: Uint8Array): string[] {
  const lines = [
    `SSG: rule "${f.rule}" matched a message; verdict: ${f.action}.`,
    "",
    `Rule:           ${f.rule}`,
    `Verdict:        ${f.action}`,
  ];
  if (f.reply) lines.push(`Reply:          ${f.reply}`);
  if (f.outcome !== undefined) lines.push(`Client got:     ${f.outcome}`);
  if (f.quarantineId) lines.push(`Quarantine id:  ${f.quarantineId}`);
  lines.push(
    `Time:           ${f.time}`,
    `Client:         ${f.client}`,
    `HELO:           ${f.helo}`,
    `Server:         ${f.server}`,
    `TLS:            ${f.tls ? "yes" : "no"}`,
    `Envelope from:  ${f.mailFrom}`,
    `Recipients:     ${f.rcptTo.join(", ")}`,
    `Subject:        ${f.subject}`,
    `From:           ${f.from}`,
    `Session:        ${f.session} transaction ${f.transaction}`,
  );
  if (f.suppressed > 0) {
    lines.push(
      "",
      `Rate limit: ${f.suppressed} earlier alert(s) for this rule were not sent` +
        (f.suppressedSince ? ` (since ${f.suppressedSince}).` : "."),
    );
  }
  if (f.reason.length > 0) {
    lines.push("", "Why:");
    for (const l of f.reason) lines.push(`> ${l}`);
  }
  if (f.evidence.length > 0) {
    lines.push("", "Evidence:");
    for (const l of f.evidence) lines.push(`> ${l}`);
  }
  const headers = parseRawHeaders(message);
  const end = Math.min(headers.headerEnd, MAX_ORIGINAL_HEADER_BYTES);
  const original = new TextDecoder("utf-8", { fatal: false }).decode(message.subarray(0, end));
  lines.push("", "Original header section (as received, untrusted):");
  for (const l of cleanLines(original, MAX_ORIGINAL_HEADER_LINES, MAX_ORIGINAL_HEADER_LINE_CHARS)) {
    lines.push(`| ${l}`);
  }
  if (headers.headerEnd > end) lines.push(`| ... (cut at ${MAX_ORIGINAL_HEADER_BYTES} bytes)`);
  return lines;
}

const HEX = "0123456789ABCDEF";

/**
 * Quoted-printable (RFC 2045 §6.7) of UTF-8 text whose lines are separated by "\n": CRLF line
 * ends, "=" and non-printable bytes as =XX, trailing white space encoded (rule 3), soft line
 * breaks keeping every line at most 76 characters (rule 5). The result is 7-bit ASCII.
 */
export function encodeQuotedPrintable(text: string): string {
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const bytes = new TextEncoder().encode(line);
    let cur = "";
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i];
      const last = i === bytes.length - 1;
      const literal = (b >= 33 && b <= 126 && b !== 61) || ((b === 32 || b === 9) && !last);
      const piece = literal ? String.fromCharCode(b) : "=" + HEX[b >> 4] + HEX[b & 15];
      if (cur.length + piece.length > 75) {
        out.push(cur + "=");
        cur = "";
      }
      cur += piece;
    }
    out.push(cur);
  }
  return out.join("\r\n") + "\r\n";
}

/** The RFC 5322 date the alert carries (the same formatter as the Received header). */
export { rfc5322Date };
