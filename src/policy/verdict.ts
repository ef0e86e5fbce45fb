/**
 * What the policy decided about one message, and the facts it decided on.
 *
 * The SMTP session builds an `Envelope` and hands it with the raw message to a `Judge`; the
 * judge returns a `Verdict`. The session then acts: forward (relay to the server, reply with the
 * server's own answer), discard (250, message dropped, logged), reject (the rule's code and text).
 */

/** The SMTP facts of one transaction (all strings as received; untrusted). */
export interface Envelope {
  /** Reverse-path without angle brackets; "" for the null sender. */
  mailFrom: string;
  /** Forward-paths the server accepted, without angle brackets. */
  rcptTo: string[];
  /** The connecting client's address and port. */
  client: { ip: string; port: number };
  /** The original destination (the protected server) the client connected to. */
  server: { ip: string; port: number };
  /** HELO/EHLO argument. */
  helo: string;
  /** Whether the session was under TLS. */
  tls: boolean;
  /** Session id and transaction id, for logs. */
  sessionId: string;
  transactionId: string;
}

/** An SMTP reply the gateway gives on a rule's behalf. */
export interface Reply {
  /** Three-digit code, e.g. 550. */
  code: number;
  /** Enhanced status code (RFC 3463), e.g. "5.7.1". */
  enhanced: string;
  /** Human-readable text (single line; already sanitised). */
  text: string;
}

/** The outcome of judging one message. */
export type Verdict =
  | { action: "forward"; rule?: string; evidence?: string }
  | { action: "discard"; rule: string; evidence?: string }
  | { action: "reject"; rule: string; reply: Reply; evidence?: string };

/** Decides about one complete message. Must not throw for bad input; may reject the Promise on
 * internal failure (the session then answers 451 and keeps nothing). */
export type Judge = (message: Uint8Array, envelope: Envelope) => Promise<Verdict>;
