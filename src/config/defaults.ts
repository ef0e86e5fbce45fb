/**
 * The default value of every setting the rule file may leave out, in one place, so that the
 * loader, `ssg check`'s summary, `rules/default.yaml` and the README agree.
 *
 * Where a number comes from a standard it says so; the rest follow Postfix's defaults or the
 * foundation issue.
 */
import type {
  AuthConfig,
  ClamavConfig,
  ContentConfig,
  DnsblConfig,
  DnsConfig,
  GatewayConfig,
  GreylistConfig,
  LogConfig,
  RelayConfig,
  RspamdConfig,
  SmtpConfig,
} from "./config.ts";

/** Defaults of `gateway:` (all but `protect`, which has none: the administrator must say). */
export const GATEWAY_DEFAULTS: Readonly<Omit<GatewayConfig, "protect" | "hostname">> = Object
  .freeze({
    ports: [25],
    interfaces: [],
    responder: { ipv4: "auto", ipv6: "auto", port: 10025 },
    // fail_open false: when the queue is full the kernel drops (TCP retransmits) rather than
    // letting packets of diverted flows past unrewritten.
    queue: { num: 25, maxlen: 4096, rcvbuf: 8 * 1024 * 1024, failOpen: false },
    // 600 s: longer than the SMTP command (300 s) and data (180 s) timeouts, so a flow is never
    // forgotten while its session may still legitimately be waiting.
    flows: { max: 65536, idleSeconds: 600 },
  });

/** Defaults of `smtp:` (RFC 5321 §4.5.3 minimums and timeouts). */
export const SMTP_DEFAULTS: Readonly<SmtpConfig> = Object.freeze({
  maxMessageBytes: 25 * 1024 * 1024,
  maxInflightBytes: 256 * 1024 * 1024,
  maxRecipients: 100, // §4.5.3.1.8: at least 100 recipients MUST be buffered
  recipientOvershootLimit: 1000, // Postfix's smtpd_recipient_overshoot_limit
  maxCommandLine: 512, // §4.5.3.1.4
  maxTextLine: 1000, // §4.5.3.1.6; enforced only under long_lines: reject
  // Postfix ≥ 3.9 defaults: bare LF normalised (end of data only on CRLF.CRLF), long lines kept.
  bareLineEndings: "normalize",
  longLines: "pass",
  maxErrors: 20,
  maxTransactions: 100,
  maxSessions: 500,
  maxSessionsPerClient: 20,
  maxSessionsPerNetwork: 50,
  networkPrefix: { ipv4: 24, ipv6: 64 },
  minDataRate: 500, // Postfix's smtpd_min_data_rate
  timeouts: { command: 300, data: 180, session: 3600 }, // §4.5.3.2.7, §4.5.3.2.5
  pipelining: true,
  bannerHostname: "server",
  serverProfileTtl: 3600,
  serverProfileMax: 4096,
});

/** Defaults of `relay:` (RFC 5321 §4.5.3.2 client timeouts). */
export const RELAY_DEFAULTS: Readonly<RelayConfig> = Object.freeze({
  connectTimeout: 30,
  replyTimeout: 300, // §4.5.3.2.1-4: 5 minutes for MAIL, RCPT, DATA initiation
  dataTimeout: 600, // §4.5.3.2.6: 10 minutes for the reply to end-of-data
  starttls: "opportunistic",
});

/** Defaults of `relay.reuse_idle`, `reuse_sessions`, `reuse_time` (s, sessions, s). */
export const RELAY_REUSE_DEFAULTS = Object.freeze({ idle: 2, sessions: 100, time: 300 });

/** The reuse limits a relay configuration sets, defaults applied (idle 0: no reuse). */
export function reuseLimits(config: RelayConfig): { idle: number; sessions: number; time: number } {
  return {
    idle: config.reuseIdle ?? RELAY_REUSE_DEFAULTS.idle,
    sessions: config.reuseSessions ?? RELAY_REUSE_DEFAULTS.sessions,
    time: config.reuseTime ?? RELAY_REUSE_DEFAULTS.time,
  };
}

/**
 * Defaults of `content:`. Quarantine, not forward: a message SSG could not read may carry what a
 * rule forbids, and forwarding it is the bypass issue 8 closes; not reject or tempfail either,
 * because the bounds may still catch a legitimate oddity, which quarantine keeps (on disk,
 * fsync'd) for an administrator to release, while a reject bounces it and a tempfail only makes
 * the sender retry the same message until it gives up. The bounds are far above what real mail
 * needs (README, "What SSG reads"): Postfix's own defaults are a 100 KiB header field, 100 MIME
 * nesting levels, and no part count.
 */
export const CONTENT_DEFAULTS: Readonly<ContentConfig> = Object.freeze({
  undecodable: "quarantine",
  maxParts: 1000,
  maxDepth: 50,
  maxHeaderBytes: 1024 * 1024,
  maxHeaders: 1000,
  maxTextChars: 4 * 1024 * 1024,
  timeoutSeconds: 30,
});

/**
 * Defaults of `clamav:`. Debian's clamd socket; 30 s per scan (clamd scans a 25 MB message in
 * well under that on a small machine); 25 MiB, the default `smtp.max_message_bytes` and Debian's
 * StreamMaxLength; tempfail on failure: the client retries later, nothing is lost and nothing
 * passes unscanned.
 */
export const CLAMAV_DEFAULTS: Readonly<ClamavConfig> = Object.freeze({
  address: Object.freeze({ path: "/run/clamav/clamd.ctl" }),
  timeoutSeconds: 30,
  maxBytes: 25 * 1024 * 1024,
  onFailure: "tempfail",
});

/**
 * Defaults of `greylist:`, those of postgrey and OpenBSD spamd's neighbourhood: a 5-minute delay
 * (postgrey's --delay 300), a 2-day retry window (postgrey's --retry-window), 36 days of memory
 * for a passed triplet (postgrey's --max-age 35, plus a day), a network allowed after 5 passed
 * triplets (postgrey's --auto-whitelist-clients), /24 and /64 networks (a sender's pool of
 * outbound relays usually shares one).
 */
export const GREYLIST_DEFAULTS: Readonly<GreylistConfig> = Object.freeze({
  delaySeconds: 300,
  retryWindowSeconds: 2 * 86400,
  passLifetimeSeconds: 36 * 86400,
  autoAllowAfter: 5,
  maxEntries: 100_000,
  networkPrefix: Object.freeze({ ipv4: 24, ipv6: 64 }),
});

/**
 * Defaults of `rspamd:`. Rspamd's own default for its normal worker (localhost:11333); 15 s per
 * message (Rspamd's task_timeout is 8 s, after which it answers with what it has); 25 MiB like
 * `clamav.max_bytes`; tempfail on failure: what was not scored never passes as clean.
 */
export const RSPAMD_DEFAULTS: Readonly<RspamdConfig> = Object.freeze({
  address: Object.freeze({ hostname: "127.0.0.1", port: 11333 }),
  pathPrefix: "",
  timeoutSeconds: 15,
  maxBytes: 25 * 1024 * 1024,
  onFailure: "tempfail",
});

/**
 * Defaults of `dns:` (servers have none: SSG does not guess a resolver). 2 s per try and one more
 * round (DNSBL zones answer in milliseconds from a nearby cache); answers cached up to an hour,
 * 10,000 of them (a few MB); a negative answer without SOA for 5 minutes.
 */
export const DNS_DEFAULTS: Readonly<Omit<DnsConfig, "servers">> = Object.freeze({
  timeoutSeconds: 2,
  retries: 1,
  cacheEntries: 10000,
  cacheMaxTtlSeconds: 3600,
  negativeTtlSeconds: 300,
});

/**
 * Defaults of `dnsbl:`. 5 s for the whole check at the end of DATA (look-ups started at
 * connect/EHLO/MAIL are usually done by then); a failed look-up counts as not listed, as in
 * Postfix, SpamAssassin and rspamd: a list that is down must not stop the mail.
 */
export const DNSBL_DEFAULTS: Readonly<Omit<DnsblConfig, "client" | "senderDomain" | "helo">> =
  Object.freeze({ timeoutSeconds: 5, onFailure: "ignore" });

/**
 * Defaults of `auth:` (the authserv-id defaults to gateway.hostname, set by the reader). 10 s per
 * phase: far above a working resolver's answers, far below the 2-minute judge bound; tempfail on
 * a DNS failure, as Postfix's policyd-spf does for temperror: the client retries later.
 */
export const AUTH_DEFAULTS: Readonly<Omit<AuthConfig, "authservId">> = Object.freeze({
  checks: Object.freeze(["spf", "dkim", "dmarc", "arc"]) as AuthConfig["checks"],
  addHeader: true,
  timeoutSeconds: 10,
  onFailure: "tempfail",
});

/** Defaults of `log:`. */
export const LOG_DEFAULTS: Readonly<LogConfig> = Object.freeze({ level: "info" });

/** The host name SSG names itself by when the rule file gives none. */
export function defaultHostname(): string {
  try {
    const h = Deno.hostname();
    if (h) return h;
  } catch {
    // No --allow-sys: fall back rather than refuse to start over a cosmetic name.
  }
  return "localhost";
}
