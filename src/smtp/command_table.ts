/**
 * The one table that maps an SMTP verb to what the responder does with it.
 *
 * Dispatch is a lookup in a fixed `Map` whose values call a typed method of `CommandHandlers`;
 * a verb is never turned into a method name (Haraka's `hook_${verb}` style was rejected: it lets
 * client text choose code). The table also carries each verb's RFC 2920 §3.1 role: replies to
 * EHLO, HELO, DATA, VRFY, EXPN, QUIT, NOOP, STARTTLS (RFC 3207 §4.1: it ends a group) and unknown
 * or unimplemented commands are flushed at once; replies to RSET, MAIL, RCPT and BDAT may wait in the output buffer while pipelined input remains.
 */

/** What the session offers the table; one method per implemented verb. */
export interface CommandHandlers {
  /** EHLO (RFC 5321 §4.1.1.1): greet and list the extensions. */
  ehlo(arg: string): Promise<void>;
  /** HELO (RFC 5321 §4.1.1.1): greet without extensions. */
  helo(arg: string): Promise<void>;
  /** MAIL FROM (RFC 5321 §4.1.1.2): start a transaction. */
  mail(arg: string): Promise<void>;
  /** RCPT TO (RFC 5321 §4.1.1.3): add a recipient. */
  rcpt(arg: string): Promise<void>;
  /** DATA (RFC 5321 §4.1.1.4): read the message, judge it, answer. */
  data(arg: string): Promise<void>;
  /** BDAT (RFC 3030): read one chunk as bytes; after LAST judge the message and answer. */
  bdat(arg: string): Promise<void>;
  /** RSET (RFC 5321 §4.1.1.5): abort the transaction. */
  rset(arg: string): Promise<void>;
  /** NOOP (RFC 5321 §4.1.1.9): 250. */
  noop(arg: string): Promise<void>;
  /** QUIT (RFC 5321 §4.1.1.10): 221 and close. */
  quit(arg: string): Promise<void>;
  /** VRFY (RFC 5321 §4.1.1.6): the server's answer when mirroring; else 252 (not verified,
   * §3.5.3), 501 without an argument. */
  vrfy(arg: string): Promise<void>;
  /** HELP (RFC 5321 §4.1.1.8): the server's answer when mirroring; else 214 with our commands. */
  help(arg: string): Promise<void>;
  /** EXPN (RFC 5321 §4.1.1.7) or ETRN (RFC 1985): the server's answer when mirroring, else 502. */
  query(verb: "EXPN" | "ETRN", arg: string): Promise<void>;
  /** AUTH (RFC 4954): relayed to the server when it offers AUTH; else 503. */
  auth(arg: string): Promise<void>;
  /** STARTTLS (RFC 3207); 502 when the responder has no certificate. */
  starttls(arg: string): Promise<void>;
  /** A verb SMTP knows that this responder does not implement (502). */
  notImplemented(verb: string): Promise<void>;
  /** A verb that marks the peer as not an SMTP client at all (HTTP, proxies): refuse and close. */
  forbidden(verb: string): Promise<void>;
}

/** One row of the table. */
export interface CommandEntry {
  /** Runs the command. */
  run(h: CommandHandlers, arg: string, verb: string): Promise<void>;
  /** Flush the reply at once (RFC 2920 §3.1: the command must be last in a group). */
  flush: boolean;
}

const notImplemented: CommandEntry = {
  run: (h, _arg, verb) => h.notImplemented(verb),
  flush: true,
};
const forbidden: CommandEntry = { run: (h, _arg, verb) => h.forbidden(verb), flush: true };

/**
 * The dispatch table. Verbs not in it get 500 5.5.1. TURN and the rest are known but not
 * offered: 502 5.5.1. AUTH is relayed to the server when it offers AUTH (503 otherwise). EXPN and ETRN go to the server when SSG mirrors it. BDAT is always dispatched to the session (its chunk must be read
 * as bytes even when CHUNKING was not offered: see `content_phase.ts`); like MAIL/RCPT its
 * reply may wait while pipelined chunks follow (RFC 3030 §4.2). CONNECT/GET/POST/PUT/HEAD/USER come from HTTP
 * or proxy probes and end the session, as Postfix's `smtpd_forbidden_commands` does.
 */
export const COMMAND_TABLE: ReadonlyMap<string, CommandEntry> = new Map<string, CommandEntry>([
  ["EHLO", { run: (h, a) => h.ehlo(a), flush: true }],
  ["HELO", { run: (h, a) => h.helo(a), flush: true }],
  ["MAIL", { run: (h, a) => h.mail(a), flush: false }],
  ["RCPT", { run: (h, a) => h.rcpt(a), flush: false }],
  ["DATA", { run: (h, a) => h.data(a), flush: true }],
  ["RSET", { run: (h, a) => h.rset(a), flush: false }],
  ["NOOP", { run: (h, a) => h.noop(a), flush: true }],
  ["QUIT", { run: (h, a) => h.quit(a), flush: true }],
  ["VRFY", { run: (h, a) => h.vrfy(a), flush: true }],
  ["HELP", { run: (h, a) => h.help(a), flush: true }],
  ["EXPN", { run: (h, a) => h.query("EXPN", a), flush: true }],
  ["STARTTLS", { run: (h, a) => h.starttls(a), flush: true }],
  ["AUTH", { run: (h, a) => h.auth(a), flush: true }],
  ["BDAT", { run: (h, a) => h.bdat(a), flush: false }],
  ["ETRN", { run: (h, a) => h.query("ETRN", a), flush: true }],
  ["TURN", notImplemented],
  ["ATRN", notImplemented],
  ["SEND", notImplemented],
  ["SOML", notImplemented],
  ["SAML", notImplemented],
  ["VERB", notImplemented],
  ["XCLIENT", notImplemented],
  ["XFORWARD", notImplemented],
  ["CONNECT", forbidden],
  ["GET", forbidden],
  ["POST", forbidden],
  ["PUT", forbidden],
  ["HEAD", forbidden],
  ["USER", forbidden],
]);
