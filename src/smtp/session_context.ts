/**
 * The types a session shares with its caller (the acceptor, tests) and with the phase modules:
 * what it is given (`SessionContext`), what carries out verdicts (`VerdictActions`), and what it
 * reports when it ends (`SessionEnd`, `SessionSummary`). Types only: no behaviour lives here.
 */
import type { RelayConfig, SmtpConfig } from "../config/config.ts";
import type { EventLog } from "../log/log.ts";
import type {
  Delivery,
  Envelope,
  Judge,
  RecipientCheck,
  Reply,
  StartChecks,
  Verdict,
} from "../policy/verdict.ts";
import type { MemoryBudget } from "./memory_budget.ts";
import type { RelayPool } from "./relay_pool.ts";
import type { ServerProfiles } from "./server_profiles.ts";
import type { SessionIo } from "./session_io.ts";

/**
 * What carries out a verdict beyond reject/discard/forward (quarantine, tag, bcc/redirect, alerts,
 * blacklists). Declared here, implemented by `src/action/` (`GatewayActions`), so that the SMTP
 * stage does not import the stages after it.
 */
export interface VerdictActions {
  /** The bytes to forward/quarantine/deliver: tag applied, forged `X-SSG-*` fields removed. */
  transform(message: Uint8Array, verdict: Verdict): Uint8Array;
  /** Stores in quarantine; resolves only once the message is fsync'd, rejects on any failure. */
  quarantine(message: Uint8Array, envelope: Envelope, verdict: Verdict): Promise<string>;
  /** The 4xx to give when `quarantine()` rejected (e.g. 452 4.3.1 when the store is full). */
  failureReply(error: unknown): Reply;
  /** Delivers a bcc copy or a redirected message; the target's final reply. */
  deliver(
    delivery: Delivery,
    message: Uint8Array,
    envelope: Envelope,
  ): Promise<{ code: number; text: string }>;
  /** After the client got its answer (alerts, blacklists, counters). Never throws. */
  after(verdict: Verdict, envelope: Envelope, outcome: { code: number }, message: Uint8Array): void;
}

/** Everything a session needs from main. */
export interface SessionContext {
  /** Session id for logs. */
  id: string;
  /** The connecting client. */
  client: { ip: string; port: number };
  /** The original destination (the protected server). */
  server: { ip: string; port: number };
  /** gateway.hostname, used in the greeting and the Received header. */
  hostname: string;
  /** Responder bounds and timeouts. */
  smtp: SmtpConfig;
  /** Relay timeouts. */
  relay: RelayConfig;
  /** The policy. */
  judge: Judge;
  /** The policy's RCPT-time check (greylisting); absent: every RCPT goes to the server. */
  checkRecipient?: RecipientCheck;
  /**
   * Told what the session learns as it learns it — the client at connect, the HELO name at
   * HELO/EHLO, the sender at MAIL FROM — so that slow look-ups (DNS lists) start long before
   * the judge needs them. Must return at once and never throw (it may ignore the call).
   */
  prefetch?: (known: EarlyFacts) => void;
  /** Starts the policy's checks that need only the envelope (SPF) when MAIL FROM is accepted;
   * what it returns travels to the judge in `Envelope.early`. */
  startChecks?: StartChecks;
  /** Where events go. */
  log: EventLog;
  /** Opens a connection to the server (main passes Deno.connect; tests pass fakes). */
  connectUpstream: (server: { ip: string; port: number }, timeoutMs: number) => Promise<SessionIo>;
  /** On abort: reply 421 4.3.2 at the next opportunity and close (SIGTERM). */
  shutdown: AbortSignal;
  /** Longest wait for the judge, in ms (default `DEFAULT_JUDGE_TIMEOUT_MS`); past it, 451 4.3.0. */
  judgeTimeoutMs?: number;
  /** How long to listen for an early talker before the greeting, in ms (default 0: only input
   * already received when the session starts is caught). */
  pregreetMs?: number;
  /**
   * Minimum DATA rate in bytes per second (Postfix's smtpd_min_data_rate; default: none). When
   * set, receiving a message has a deadline that starts at the data-block timeout and grows by
   * N / minDataRate seconds for every N bytes received, so a sender that trickles bytes just
   * inside the per-block timeout is still cut off (421 4.4.2). Unset: each block has the plain
   * data-block timeout and the session deadline bounds the rest.
   */
  minDataRate?: number;
  /** The clock for the Received header's date (default: the system clock; tests pin it). */
  clock?: () => Date;
  /** The shared bound on message bytes held by all sessions (`smtp.max_inflight_bytes`). */
  memory?: MemoryBudget;
  /** Carries out quarantine/tag/bcc/redirect/alert/blacklist verdicts. Without it a verdict that
   * needs one of those is answered 451 4.3.0 (nothing is lost; the client retries). */
  actions?: VerdictActions;
  /**
   * What SSG learnt about each protected server (shared by all sessions). When given, the
   * session mirrors the server: its greeting and host name (`smtp.bannerHostname`), and only
   * the extensions both it and SSG carry (see `hello_phase.ts`). Without it the session answers
   * with SSG's own name and fixed extension list (the behaviour before issue 7).
   */
  profiles?: ServerProfiles;
  /** Relay connections kept between sessions (`relay.reuse_*`, gateway source only); without
   * it every session opens and closes its own. */
  relayPool?: RelayPool;
  /** Called once when the session stops talking to the client (its last reply is being sent),
   * before SSG's own teardown (QUIT to the server): the acceptor gives the client's slot back. */
  clientDone?: () => void;
}

/** What a session knows before the message (`SessionContext.prefetch`): one of these per call. */
export interface EarlyFacts {
  /** The client's address (at connect). */
  clientIp?: string;
  /** The HELO/EHLO name (as given, validated by the session's syntax check). */
  helo?: string;
  /** The MAIL FROM address (without angle brackets; "" for the null sender). */
  sender?: string;
}

/** The abort reason of `SessionContext.shutdown` when a session is ended to make room for
 * another client (the session answers 421 4.7.0 and ends with "shed"; see `admission.ts`). */
export const SHED = "shed";

/** Why a session ended. */
export type SessionEnd =
  | "shed"
  | "quit"
  | "client-closed"
  | "timeout"
  | "deadline"
  | "shutdown"
  | "errors"
  | "early-talker"
  | "sync-error"
  | "limit"
  | "forbidden"
  | "flood"
  | "write-failed"
  | "relay-lost"
  | "tls-failed"
  | "protocol-error"
  | "internal-error";

/** Counts for main after a session ends. */
export interface SessionSummary {
  /** The session id. */
  id: string;
  /** Why the session ended. */
  end: SessionEnd;
  /** Transactions started (MAIL accepted by the server). */
  transactions: number;
  /** Messages the server accepted (250) after the judge said forward. */
  forwarded: number;
  /** Messages a rule discarded (250 to the client, nothing sent on). */
  discarded: number;
  /** Messages refused: by a rule, by our content checks, or by the server at end of data. */
  rejected: number;
  /** Messages answered with 4xx because something failed (judge, relay). */
  failed: number;
  /** Commands received. */
  commands: number;
  /** Client-caused error replies. */
  errors: number;
  /** Bytes received from the client. */
  bytesIn: number;
  /** Session length in ms. */
  durationMs: number;
}
