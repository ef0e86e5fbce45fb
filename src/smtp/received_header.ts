/**
 * The trace header SSG prepends to every message it relays (RFC 5321 §4.4, RFC 5322 §3.6.7):
 *
 * ```
 * Received: from <helo> ([client-ip])
 * 	by <hostname> (SSG) with ESMTP id <txid>
 * 	for <rcpt>; <date>
 * ```
 *
 * The client address is the real peer's (the gateway is a hop, §2.3.10 and RFC 2979, so it must
 * leave a trace like any relay). `for` appears only with exactly one recipient, so a Bcc list is
 * never disclosed. The protocol word follows RFC 3848: "ESMTP" after EHLO, "ESMTPS" after EHLO
 * under STARTTLS, "SMTP" after HELO (RFC 3848 registers no TLS variant of plain SMTP); a
 * transaction that declared SMTPUTF8 says "UTF8SMTP", or "UTF8SMTPS" under TLS (RFC 6531
 * §3.7.3, registered in the RFC 3848 "with" protocol types).
 *
 * Security: untrusted bytes. The HELO name is the client's free text; it is written only when it is
 * a plain domain or address literal and replaced by "unknown" otherwise, so a client cannot end the
 * header, open a comment, or forge trace fields. The header is folded so that no line exceeds the
 * 998-octet limit of RFC 5322 §2.1.1.
 */

/** Facts the Received header records. */
export interface ReceivedInfo {
  /** The client's HELO/EHLO argument (untrusted). */
  helo: string;
  /** The client's IP address as text (IPv4 or IPv6). */
  clientIp: string;
  /** This gateway's host name. */
  hostname: string;
  /** "ESMTP" after EHLO, "ESMTPS" after EHLO under TLS, "SMTP" after HELO; "UTF8SMTP" /
   * "UTF8SMTPS" for a transaction that declared SMTPUTF8 (RFC 6531 §3.7.3). */
  protocol: "ESMTP" | "ESMTPS" | "SMTP" | "UTF8SMTP" | "UTF8SMTPS";
  /** The transaction id. */
  id: string;
  /** The recipients the server accepted. */
  recipients: readonly string[];
  /** When the message was received. */
  date: Date;
}

const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** Formats a date as RFC 5322 §3.3 date-time in UTC, e.g. "Fri, 27 Nov 2026 22:57:01 +0000". */
export function rfc5322Date(d: Date): string {
  const p2 = (n: number) => String(n).padStart(2, "0");
  return `${DAYS[d.getUTCDay()]}, ${d.getUTCDate()} ${
    MONTHS[d.getUTCMonth()]
  } ${d.getUTCFullYear()} ` +
    `${p2(d.getUTCHours())}:${p2(d.getUTCMinutes())}:${p2(d.getUTCSeconds())} +0000`;
}

/** Formats an IP address as an RFC 5321 §4.1.3 address literal: `[192.0.2.1]`, `[IPv6:2001:db8::1]`. */
export function addressLiteral(ip: string): string {
  return ip.includes(":") ? `[IPv6:${ip}]` : `[${ip}]`;
}

/** A word safe to write as a domain in a trace field, or "unknown". */
function safeDomain(s: string): string {
  if (s.length === 0 || s.length > 255) return "unknown";
  return /^(?:[A-Za-z0-9._-]+|\[[A-Za-z0-9.:-]+\])$/.test(s) ? s : "unknown";
}

/** Builds the header, CRLF-terminated, ready to prepend to the message. */
export function receivedHeader(info: ReceivedInfo): string {
  const from = `from ${safeDomain(info.helo)} (${addressLiteral(info.clientIp)})`;
  const by = `by ${safeDomain(info.hostname)} (SSG) with ${info.protocol} id ${safeId(info.id)}`;
  const date = rfc5322Date(info.date);
  // RFC 5322 §3.6.7: received = "Received:" *received-token ";" date-time.
  const tail = info.recipients.length === 1
    ? `\r\n\tfor <${info.recipients[0]}>; ${date}\r\n`
    : `;\r\n\t${date}\r\n`;
  return `Received: ${from}\r\n\t${by}${tail}`;
}

function safeId(id: string): string {
  const clean = id.replace(/[^A-Za-z0-9._-]/g, "_").slice(0, 64);
  return clean === "" ? "unknown" : clean;
}
