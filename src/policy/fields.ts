/**
 * The field extractor table: for each field name a condition may test, how to read it from a
 * message and its envelope. Adding a field (a header, an address, the client IP ...) is one entry
 * here and its name in `FIELD_NAMES` (rule.ts); the compiler and the engine do not change.
 *
 * A field yields a list of texts (e.g. `body` = the text/plain text and the HTML-as-text), and a
 * test holds when it holds for any of them.
 */
import type { Envelope } from "./verdict.ts";
import type { Mailbox, MessageFacts } from "./message.ts";
import type { FieldName } from "./rule.ts";

/** What an extractor reads from. */
export interface FieldInput {
  facts: MessageFacts;
  envelope: Envelope;
}

/** Reads one field as a list of texts. */
export type FieldExtractor = (input: FieldInput) => string[];

/** One extractor per field name (the `Record` type makes a missing entry a compile error). */
export const FIELD_EXTRACTORS: Readonly<Record<FieldName, FieldExtractor>> = Object.freeze({
  subject: ({ facts }) => [facts.subject],
  body: ({ facts }) => [facts.text, facts.html].filter((t) => t !== ""),
  from: ({ facts }) => mailboxTexts(facts.from),
  to: ({ facts }) => mailboxTexts(facts.to),
  cc: ({ facts }) => mailboxTexts(facts.cc),
  mail_from: ({ envelope }) => [envelope.mailFrom],
  rcpt_to: ({ envelope }) => envelope.rcptTo,
  helo: ({ envelope }) => [envelope.helo],
  attachment_name: ({ facts }) => facts.attachments.map((a) => a.filename).filter((n) => n !== ""),
  attachment_type: ({ facts }) => facts.attachments.map((a) => a.contentType),
});

/** Each mailbox as its address and, when it has one, its display name (a spoofed name is a signal). */
function mailboxTexts(list: Mailbox[]): string[] {
  const out: string[] = [];
  for (const m of list) {
    if (m.address) out.push(m.address);
    if (m.name) out.push(m.name);
  }
  return out;
}
