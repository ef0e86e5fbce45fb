/**
 * What the policy decided about one message, and the facts it decided on.
 *
 * The SMTP session builds an `Envelope` and hands it with the raw message to a `Judge`; the
 * judge returns a `Verdict`. The session then acts: forward (relay to the server — or, for a
 * redirect, to the redirect target instead — and reply with that server's own answer), discard
 * (250, message dropped, logged), reject and tempfail (the rule's code and text, in-session),
 * quarantine (stored on disk and fsync'd, then 250). Whatever the action, the verdict may carry
 * extras (`VerdictExtras`): a tag to apply, deliveries (bcc copies, a redirect), effects to run
 * after the client got its answer (alerts, blacklist entries), and the observe-mode rules that
 * matched (logged only).
 *
 * `action` is the discriminant and stays so: code written against the issue-2 shape (forward,
 * discard, reject) still compiles; code that switches over `action` must now also handle
 * tempfail and quarantine.
 */
import type { SpfOutcome } from "../engines/auth/mail_authenticator.ts";

/** What a policy may start when a transaction begins (MAIL FROM accepted), before the message. */
export interface TransactionStart {
  /** Reverse-path without angle brackets; "" for the null sender. */
  mailFrom: string;
  /** HELO/EHLO argument. */
  helo: string;
  /** The connecting client's address and port. */
  client: { ip: string; port: number };
  /** Session id, for logs. */
  sessionId: string;
  /** Transaction id, for logs. */
  transactionId: string;
}

/**
 * Checks a policy started at MAIL FROM (SPF), carried by the session to the judge in the
 * envelope. Each promise never rejects and is bounded in time by the policy itself.
 */
export interface EarlyChecks {
  /** SPF of the envelope (client IP, HELO, MAIL FROM). */
  spf?: Promise<SpfOutcome>;
}

/** Starts a policy's early checks for a transaction (undefined: the policy needs none). */
export type StartChecks = (start: TransactionStart) => EarlyChecks | undefined;

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
  /** The user the server authenticated (SMTP AUTH relayed), when any; a name, never a secret. */
  authUser?: string;
  /** Whether the session was under TLS. */
  tls: boolean;
  /** Whether the server accepted the client's AUTH in this session (absent: it did not). */
  authenticated?: boolean;
  /** Session id and transaction id, for logs. */
  sessionId: string;
  /** Transaction id (MAIL to end of DATA), for logs. */
  transactionId: string;
  /** What the policy started at MAIL FROM (`StartChecks`), if anything. */
  early?: EarlyChecks;
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

/** Header fields to add and a Subject prefix (the `tag` action). Validated at load. */
export interface Tag {
  /** Header fields added to the message, in order (name without colon; value on one line). */
  headers: { name: string; value: string }[];
  /** Text put in front of the Subject, e.g. "[SPAM] ". */
  subjectPrefix?: string;
}

/**
 * A delivery over SMTP besides (or instead of) the normal relay: `bcc` delivers a copy AS WELL,
 * `redirect` delivers the message INSTEAD (the original server then gets nothing).
 */
export interface Delivery {
  /** `bcc`: a copy as well; `redirect`: instead of the normal relay. */
  kind: "bcc" | "redirect";
  /** Envelope recipients of the delivery. */
  to: string[];
  /** Server to deliver to; absent: the transaction's original server. */
  server?: { host: string; port: number };
}

/** The keys a dynamic blacklist entry may have. */
export type BlacklistKey = "client_ip" | "sender" | "sender_domain";

/**
 * Something to do after the client got its answer. `rule` names the rule, threshold or built-in
 * step ("spamtrap") that asked for it; `evidence` (optional) says why, for the alert text.
 */
export type Effect =
  | { type: "alert"; rule: string; evidence?: string }
  | {
    type: "blacklist";
    key: BlacklistKey;
    /** The client IP, sender address or sender domain to blacklist (lower case). */
    value: string;
    /** How long, in seconds. */
    seconds: number;
    rule: string;
    evidence?: string;
  };

/** What may accompany any verdict. */
export interface VerdictExtras {
  /** Tag to apply to the forwarded or quarantined message (only on forward and quarantine). */
  tag?: Tag;
  /** bcc copies and/or a redirect (only on forward verdicts). */
  deliveries?: Delivery[];
  /** Alerts and blacklist entries to carry out after the reply. */
  effects?: Effect[];
  /** Names of observe-mode rules that matched (logged, not enforced). */
  observed?: string[];
  /**
   * Sender authentication (`auth:`): inbound Authentication-Results fields carrying our
   * authserv-id are removed (RFC 8601 §5) and, when `value` is set, ours is prepended.
   */
  authResults?: { authservId: string; value?: string };
}

/**
 * The outcome of judging one message. A redirect is `action: "forward"` with a `deliveries`
 * entry of kind "redirect" (the original server gets nothing).
 */
export type Verdict =
  & (
    | { action: "forward"; rule?: string; evidence?: string }
    | { action: "discard"; rule: string; evidence?: string }
    | { action: "reject"; rule: string; reply: Reply; evidence?: string }
    | { action: "tempfail"; rule: string; reply: Reply; evidence?: string }
    | { action: "quarantine"; rule: string; evidence?: string }
  )
  & VerdictExtras;

/**
 * Asked at each RCPT, before the server is (greylisting at RCPT time): `envelope.rcptTo` holds
 * the one recipient asked about. A reply refuses that recipient (the client keeps the others);
 * undefined lets the RCPT go on to the server. Synchronous and short (index probes); never throws.
 */
export type RecipientCheck = (envelope: Envelope) => Reply | undefined;

/** Decides about one complete message. Must not throw for bad input; may reject the Promise on
 * internal failure (the session then answers 451 and keeps nothing). */
export type Judge = (message: Uint8Array, envelope: Envelope) => Promise<Verdict>;
