/**
 * The field extractor table: for each text field a condition may test, how to read it from a
 * message and its envelope. Adding a field is one entry here and its name in `FIELD_NAMES`
 * (rule.ts); the compiler and the engine do not change.
 *
 * A field yields a list of texts (e.g. `body` = the text/plain text and the HTML-as-text), and a
 * test holds when it holds for any of them. `header` is read by name (`headerTexts`).
 *
 * What a mail client could show is read, every reading of it (issue 8; `mime_walk.ts`):
 * `subject` is every Subject field of the message (duplicates included) and of attached
 * messages, in every plausible charset; `body` and `html` include text and HTML attachments,
 * attached messages, uuencoded text, both readings of an ambiguous part, and HTML with hidden
 * text dropped as well as kept.
 */
import type { Envelope } from "./verdict.ts";
import type { Mailbox, MessageFacts } from "./message.ts";
import type { FieldName } from "./rule.ts";

/** What an extractor reads from. */
export interface FieldInput {
  /** The decoded message. */
  facts: MessageFacts;
  /** The transaction's SMTP facts. */
  envelope: Envelope;
}

/** Reads one field as a list of texts. */
export type FieldExtractor = (input: FieldInput) => string[];

/** One extractor per field name (the `Record` type makes a missing entry a compile error). */
export const FIELD_EXTRACTORS: Readonly<Record<FieldName, FieldExtractor>> = Object.freeze({
  subject: ({ facts }) => distinct([facts.subject, ...facts.subjects]),
  // Without a name, `header` reads every header field as "name: value".
  header: ({ facts }) => facts.headers.map((h) => `${h.name}: ${h.value}`),
  body: ({ facts }) =>
    distinct([facts.text, facts.html, ...facts.texts, ...facts.htmls]).filter((t) => t !== ""),
  html: ({ facts }) => distinct([facts.html, ...facts.htmls]).filter((t) => t !== ""),
  from: ({ facts }) => mailboxTexts(facts.from),
  to: ({ facts }) => mailboxTexts(facts.to),
  cc: ({ facts }) => mailboxTexts(facts.cc),
  from_name: ({ facts }) => names(facts.from),
  to_name: ({ facts }) => names(facts.to),
  cc_name: ({ facts }) => names(facts.cc),
  from_address: ({ facts }) => addresses(facts.from),
  to_address: ({ facts }) => addresses(facts.to),
  cc_address: ({ facts }) => addresses(facts.cc),
  mail_from: ({ envelope }) => [envelope.mailFrom],
  rcpt_to: ({ envelope }) => envelope.rcptTo,
  sender_domain: ({ envelope }) => {
    const d = domainOf(envelope.mailFrom);
    return d === "" ? [] : [d];
  },
  recipient_domain: ({ envelope }) => [
    ...new Set(envelope.rcptTo.map(domainOf).filter((d) => d !== "")),
  ],
  helo: ({ envelope }) => [envelope.helo],
  attachment_name: ({ facts }) => facts.attachments.map((a) => a.filename).filter((n) => n !== ""),
  attachment_type: ({ facts }) => facts.attachments.map((a) => a.contentType),
});

/**
 * The texts without repeats. The first reading stays first (evidence quotes it); a reading that
 * differs only in surrounding white space is a repeat (mailparser and the MIME walk often read the
 * same part).
 */
function distinct(texts: string[]): string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const t of texts) {
    const k = t.trim();
    if (seen.has(k)) continue;
    seen.add(k);
    out.push(t);
  }
  return out;
}

/** The values of every header field named `name` (lower case). */
export function headerTexts(facts: MessageFacts, name: string): string[] {
  return facts.headers.filter((h) => h.name === name).map((h) => h.value);
}

/** The domain of an address, lower case, without a trailing dot ("" when none). */
export function domainOf(address: string): string {
  const at = address.lastIndexOf("@");
  return at < 0 ? "" : address.slice(at + 1).trim().toLowerCase().replace(/\.$/, "");
}

/** Each mailbox as its address and, when it has one, its display name (a spoofed name is a signal). */
function mailboxTexts(list: Mailbox[]): string[] {
  const out: string[] = [];
  for (const m of list) {
    if (m.address) out.push(m.address);
    if (m.name) out.push(m.name);
  }
  return out;
}

function names(list: Mailbox[]): string[] {
  return list.map((m) => m.name).filter((n) => n !== "");
}

function addresses(list: Mailbox[]): string[] {
  return list.map((m) => m.address).filter((a) => a !== "");
}
