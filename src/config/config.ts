/**
 * The validated configuration SSG runs on, as read from the rule file (see `load_config.ts`).
 *
 * The rule file is the single configuration file: the `gateway:` section says what to divert and
 * how the responder behaves, `smtp:`/`relay:`/`log:` tune bounds, and `rules:` is the policy.
 * Every field here has already been validated; stages never re-check it.
 */
import type { DnsblSite } from "../engines/dns/dnsbl_site.ts";
import type { Rule, Threshold } from "../policy/rule.ts";

/** An IPv4 or IPv6 network, e.g. 198.51.100.0/24 or 2001:db8:25::/64. */
export interface Cidr {
  /** 4 for IPv4, 6 for IPv6. */
  family: 4 | 6;
  /** Network address bytes (4 or 16), host bits zeroed. */
  bytes: Uint8Array;
  /** Prefix length. */
  prefix: number;
  /** The text as written, for logs and firewall rules (normalised, e.g. "198.51.100.0/24"). */
  text: string;
}

/** What is diverted and where diverted flows are answered. */
export interface GatewayConfig {
  /** Internal mail servers: only TCP to these networks (and `ports`) is diverted. */
  protect: Cidr[];
  /** Destination ports that are diverted (default [25]). */
  ports: number[];
  /** Only divert packets arriving on these interfaces (default: any). */
  interfaces: string[];
  /** Name SSG uses in its Received header and its own replies (default: the host name). */
  hostname: string;
  /** The local responder that diverted flows are rewritten to. */
  responder: {
    /** Local IPv4 address diverted IPv4 flows are rewritten to ("auto": first non-loopback). */
    ipv4: string | "auto";
    /** Local IPv6 address diverted IPv6 flows are rewritten to ("auto": first global). */
    ipv6: string | "auto";
    /** TCP port the responder listens on (default 10025). */
    port: number;
  };
  /** NFQUEUE settings. */
  queue: {
    /** Queue number (default 25). */
    num: number;
    /** Kernel queue length in packets (default 4096). */
    maxlen: number;
    /** Netlink socket receive buffer in bytes (default 8 MiB). */
    rcvbuf: number;
    /**
     * Let the kernel accept packets unrewritten when the queue is full (NFQA_CFG_F_FAIL_OPEN;
     * default false). Security trade-off: fail-open lets a burst bypass filtering and sends
     * half-translated packets of diverted flows; fail-closed drops them and TCP retransmits.
     */
    failOpen?: boolean;
  };
  /** Flow table bounds. */
  flows: {
    /** Most concurrent diverted flows (default 65536); new SYNs past it are not diverted... */
    max: number;
    /** Idle expiry in seconds (default 600: longer than the SMTP DATA timeouts). */
    idleSeconds: number;
  };
}

/** Bounds and timeouts of the responder side (RFC 5321 §4.5.3). */
export interface SmtpConfig {
  /** Largest message in bytes, advertised in SIZE (default 26214400). */
  maxMessageBytes: number;
  /**
   * Most message bytes held in memory by all sessions together (default 256 MiB; at least
   * `maxMessageBytes`). Past it a message is read but not stored, and gets 452 4.3.1.
   */
  maxInflightBytes: number;
  /** Most recipients per transaction before 452 (default 100, the RFC minimum). */
  maxRecipients: number;
  /**
   * Extra RCPTs past `maxRecipients` answered 452 without counting as errors (default 1000,
   * Postfix's smtpd_recipient_overshoot_limit); each one past it counts towards `maxErrors`.
   */
  recipientOvershootLimit: number;
  /** Command line limit in bytes including CRLF (default 512). */
  maxCommandLine: number;
  /** Text line limit in bytes including CRLF (default 1000). */
  maxTextLine: number;
  /**
   * Bare CR or LF inside DATA: "normalize" (default, as Postfix ≥ 3.9's
   * smtpd_forbid_bare_newline: such lines are accepted as if they ended in CRLF, and the end of
   * data is still only CRLF.CRLF) or "reject" (550 after the real end).
   */
  bareLineEndings: "reject" | "normalize";
  /**
   * Text lines longer than `maxTextLine` (`smtp.long_lines`): "pass" (default; kept and relayed
   * as they are, as Postfix accepts them — its line_length_limit only splits storage records)
   * or "reject" (552 5.6.0 after the real end). Absent means "reject" (the behaviour before
   * issue 7; the loader always sets it).
   */
  longLines?: "pass" | "reject";
  /** Errors (4xx/5xx replies caused by the client) before 421 and disconnect (default 20). */
  maxErrors: number;
  /** Most transactions per session (default 100). */
  maxTransactions: number;
  /** Most concurrent sessions (default 500) and per client IP (default 20). */
  maxSessions: number;
  /** Most concurrent sessions from one client IP (default 20). */
  maxSessionsPerClient: number;
  /** Most concurrent sessions from one client network (`networkPrefix`; default 50). */
  maxSessionsPerNetwork: number;
  /** What a client network is for `maxSessionsPerNetwork` (default /24 and /64). */
  networkPrefix: { ipv4: number; ipv6: number };
  /**
   * Minimum DATA rate in bytes per second (Postfix's smtpd_min_data_rate; default 500): receiving
   * a message has a deadline that starts at the data timeout and grows by N / rate seconds for
   * every N bytes received, so a sender that trickles bytes is cut off (421 4.4.2). 0: off.
   */
  minDataRate: number;
  /** Timeouts in seconds. */
  timeouts: {
    /** Waiting for the next command (default 300, §4.5.3.2.7). */
    command: number;
    /** Waiting for each data block (default 180, §4.5.3.2.5). */
    data: number;
    /** Whole session (default 3600). */
    session: number;
  };
  /** Offer PIPELINING (default true). */
  pipelining: boolean;
  /** The responder's TLS identity; when present EHLO advertises STARTTLS (RFC 3207). */
  tls?: TlsIdentity;
  /**
   * Whose host name the greeting, EHLO reply and SSG's own replies carry (`smtp.banner_hostname`):
   * "server" (default; the protected server's own greeting and EHLO name, learnt by the relay)
   * or "gateway" (`gateway.hostname`). Absent means "server".
   */
  bannerHostname?: "server" | "gateway";
  /** How long a learnt server profile stays fresh, in seconds (`smtp.server_profile_ttl`,
   * default 3600). Absent means the default. */
  serverProfileTtl?: number;
  /** Most servers whose profile is remembered (`smtp.server_profile_max`, default 4096). */
  serverProfileMax?: number;
}

/**
 * `smtp.tls:` — the certificate and key the responder presents after STARTTLS, read and checked
 * at load (PEM; the key must belong to the certificate). Security: the key is secret; it is kept
 * only in memory and never logged.
 */
export interface TlsIdentity {
  /** Certificate file as written in the rule file (relative to it). */
  certFile: string;
  /** Private key file as written in the rule file (relative to it). */
  keyFile: string;
  /** The certificate chain, PEM. */
  cert: string;
  /** The private key, PEM. */
  key: string;
  /** The certificate's subject and expiry, for the summary (e.g. "CN=mx.example"). */
  subject: string;
  /** The certificate's expiry date, for the summary. */
  validTo: string;
}

/** The relay client towards the original server. */
export interface RelayConfig {
  /** Connect timeout in seconds (default 30). */
  connectTimeout: number;
  /** Timeout for each reply except the final one, in seconds (default 300). */
  replyTimeout: number;
  /** Timeout for the reply to end-of-data, in seconds (default 600, §4.5.3.2.6). */
  dataTimeout: number;
  /**
   * STARTTLS towards the server (the loader always sets it; absent means "opportunistic"):
   * "opportunistic" encrypts whenever the server advertises STARTTLS, without verifying its
   * certificate (the server is an internal host, typically addressed by IP with a self-signed
   * certificate: encryption against passive eavesdropping, no authentication — RFC 7435);
   * "off" never uses it.
   */
  starttls?: "opportunistic" | "off";
  /**
   * Which address the relay leg leaves with: "client" (default) or "gateway"; see
   * relay_source.ts. The `source*` keys are absent unless the rule file sets them
   * (`relaySourceSettings` applies the defaults).
   */
  source?: "client" | "gateway";
  /** `relay.source_ports`: local port range of client-mode relay sockets (default 61000-61999). */
  sourcePorts?: { first: number; last: number };
  /** `relay.source_probe_timeout`: SYN-ACK wait before the gateway fallback, s (default 2). */
  sourceProbeTimeout?: number;
  /** `relay.source_fallback_ttl`: how long a server stays in the fallback, s (default 600). */
  sourceFallbackTtl?: number;
  /**
   * `relay.reuse_idle`: how long a connection to the server is kept open after a session for the
   * next session, s (default 2; 0: never reused). Only connections that left with the gateway's
   * address are kept (src/smtp/relay_pool.ts).
   */
  reuseIdle?: number;
  /** `relay.reuse_sessions`: most client sessions one connection serves (default 100). */
  reuseSessions?: number;
  /** `relay.reuse_time`: after this many seconds a connection is not kept again (default 300). */
  reuseTime?: number;
}

/** Where and how much to log. */
export interface LogConfig {
  /** Log file (append, re-opened on SIGHUP / SIGUSR1); none: stderr only. */
  file?: string;
  /** Lowest level written. */
  level: "debug" | "info" | "warning" | "error";
}

/** `state:` — where the memory across messages lives (node:sqlite). */
export interface StateConfig {
  /** Database file (default /var/lib/ssg/state.db; its directory is created 0700). */
  file: string;
  /** Most rows per table; the oldest are evicted past it (default 100000). */
  maxRows: number;
}

/**
 * `allowlist:` / `blacklist:` — static entries. `senders` are lower-case addresses
 * ("boss@partner.example") or domains written "@partner.example"; a named list's entries are
 * merged in at load (IPs/CIDRs into `clients`, the rest into `senders`).
 */
export interface AccessList {
  /** Client networks (IPs or CIDRs). */
  clients: Cidr[];
  /** Lower-case sender addresses, or domains written "@example.org". */
  senders: string[];
  /** The named list merged in, if any (for the summary). */
  list?: string;
}

/** `spamtraps:` — addresses nobody uses; mail to one marks its sender and client as spammers. */
export interface SpamtrapConfig {
  /** Lower-case addresses. */
  addresses: string[];
  /** How long the sender and client stay blacklisted, in seconds (default 24h). */
  blacklistSeconds: number;
}

/** `quarantine:` — where quarantined messages are kept. */
export interface QuarantineConfig {
  /** Directory (default /var/lib/ssg/quarantine; created 0700). */
  dir: string;
  /** Most bytes the directory may hold; unbounded when absent. */
  maxBytes?: number;
}

/** `alert:` — how the administrator is told. */
export interface AlertConfig {
  /** Admin mailboxes. */
  to: string[];
  /** SMTP server that delivers alerts (an internal server; SSG's own connections are never diverted). */
  relay: { host: string; port: number };
  /** Header From (the envelope sender is always <>). Default ssg@ + the gateway host name. */
  from: string;
  /** At most `count` alert mails per `seconds`, per rule (default 10 per hour). */
  rate: { count: number; seconds: number };
  /** Optional JSON POST. */
  webhook?: { url: string; timeoutSeconds: number };
}

/**
 * `content:` — how much of a message SSG reads, and what it does with one it cannot read fully
 * (issue 8). A message that passes any bound, or that the MIME parser cannot decode, is
 * "undecodable": unless a rule already stopped it, it gets `undecodable` instead of forward.
 */
export interface ContentConfig {
  /** Verdict for a message not fully read (default "quarantine"). */
  undecodable: "quarantine" | "tempfail" | "reject" | "forward";
  /** Most MIME parts, the root and each reading of an ambiguous part included (default 1000). */
  maxParts: number;
  /** Deepest nesting of multiparts and attached messages (default 50). */
  maxDepth: number;
  /** Largest header section of the message or of one part, in bytes (default 1 MiB). */
  maxHeaderBytes: number;
  /** Most header fields in one header section (default 1000). */
  maxHeaders: number;
  /** Longest text (one part, one reading), white space runs counted once (default 4 Mi). */
  maxTextChars: number;
  /** Longest the MIME parser may take for one message, in seconds (default 30). */
  timeoutSeconds: number;
}

/**
 * `clamav:` — virus scanning with ClamAV's daemon (clamd, INSTREAM). Only messages judged by a
 * policy whose rules test `virus` are scanned.
 */
export interface ClamavConfig {
  /** clamd's Unix socket (default /run/clamav/clamd.ctl, Debian's) or its TCP address. */
  address: { path: string } | { hostname: string; port: number };
  /** Longest one scan may take, connection included, in seconds (default 30). */
  timeoutSeconds: number;
  /**
   * Largest message sent to clamd, in bytes (default 25 MiB); a larger one is not scanned and
   * gets `onFailure`. Keep it at most clamd's StreamMaxLength (Debian: 25M), or clamd refuses
   * the stream mid-way (also `onFailure`, after the bytes were sent).
   */
  maxBytes: number;
  /**
   * Verdict for a message that could not be scanned (clamd down, slow, over `maxBytes` or its
   * own limits) when it would otherwise be forwarded (default "tempfail": the client retries).
   */
  onFailure: "tempfail" | "quarantine" | "reject" | "forward";
}

/**
 * `greylist:` — the triplet memory of `action: greylist` (issue 10): how long a new triplet
 * (client network, sender, recipient) is deferred, how long its retry is awaited, how long a
 * passed one is remembered, and when a client network is allowed outright.
 */
export interface GreylistConfig {
  /** Least time between the first sighting and an accepted retry, in seconds (default 300). */
  delaySeconds: number;
  /** Time after the first sighting during which a retry is awaited, in seconds (default 2 days). */
  retryWindowSeconds: number;
  /** How long a passed triplet is remembered after its last use, in seconds (default 36 days). */
  passLifetimeSeconds: number;
  /** Passed triplets after which a client network is allowed outright (default 5; 0: never). */
  autoAllowAfter: number;
  /** Most triplets remembered; past it the soonest expiring are forgotten (default 100000). */
  maxEntries: number;
  /** Prefix lengths that make a client address its network (default /24 and /64). */
  networkPrefix: { ipv4: number; ipv6: number };
}

/**
 * `rspamd:` — spam scoring with Rspamd's `/checkv2` (its normal worker). Only messages judged by
 * a policy whose rules test `rspamd` are sent.
 */
export interface RspamdConfig {
  /** Host and port of Rspamd's normal worker (default 127.0.0.1:11333). */
  address: { hostname: string; port: number };
  /** Path prefix before `/checkv2` ("" unless `url` gave one, e.g. behind a reverse proxy). */
  pathPrefix: string;
  /** Longest one request may take, connection included, in seconds (default 15). */
  timeoutSeconds: number;
  /** Largest message sent, in bytes (default 25 MiB); a larger one is not scored (`onFailure`). */
  maxBytes: number;
  /** Sent as the `Password` header (a controller or proxy worker may require it). */
  password?: string;
  /**
   * What happens to a message that could not be scored (Rspamd down, slow, over `maxBytes`,
   * a malformed reply) when it would otherwise be forwarded: "tempfail" (default: the client
   * retries), "quarantine", "reject", or "ignore" (judged without Rspamd — its conditions hold
   * for nothing — and logged `policy.rspamd_ignored`).
   */
  onFailure: "tempfail" | "quarantine" | "reject" | "ignore";
}

/**
 * `dns:` — the resolver SSG's own look-ups use (DNSBL/RHSBL now; SPF/DKIM/DMARC through the same
 * resolver): recursive servers SSG asks, how long it waits, how much it caches.
 */
export interface DnsConfig {
  /** Recursive servers, `ip`, `ip:port` or `[ipv6]:port`, asked in order. */
  servers: string[];
  /** Wait for one server's answer, in seconds (default 2). */
  timeoutSeconds: number;
  /** Further rounds over the servers after the first (default 1). */
  retries: number;
  /** Most answers cached (default 10000; 0: no cache). */
  cacheEntries: number;
  /** Longest an answer is cached whatever its TTL, in seconds (default 3600). */
  cacheMaxTtlSeconds: number;
  /** TTL of a negative answer without SOA, in seconds (default 300). */
  negativeTtlSeconds: number;
}

/**
 * `dnsbl:` — DNS block- and allowlists (Postfix `postscreen_dnsbl_sites` syntax, weights summed
 * into a score). Looked up only when a rule tests `dnsbl`.
 */
export interface DnsblConfig {
  /** Lists for the client IP (DNSBL; negative weights: DNSWL). */
  client: DnsblSite[];
  /** Lists for the MAIL FROM domain (RHSBL). */
  senderDomain: DnsblSite[];
  /** Lists for the HELO/EHLO name (RHSBL). */
  helo: DnsblSite[];
  /** Longest the whole check may take at the end of DATA, in seconds (default 5). */
  timeoutSeconds: number;
  /**
   * A failed look-up (timeout, SERVFAIL, a list's refusal code): "ignore" counts it as not listed
   * (logged `dnsbl.failed`); "tempfail" answers 451 4.4.3 instead of forwarding (default ignore).
   */
  onFailure: "ignore" | "tempfail";
}

/**
 * `auth:` — SPF, DKIM, DMARC and ARC verification (npm mailauth) through the `dns:` resolver.
 * Verification runs only when a rule tests `spf`/`dkim`/`dmarc`/`arc` or `addHeader` is on.
 */
export interface AuthConfig {
  /** Our authserv-id (RFC 8601 §2.5) in Authentication-Results (default gateway.hostname). */
  authservId: string;
  /** Which checks run (default all four). DMARC without SPF uses DKIM alone. */
  checks: ("spf" | "dkim" | "dmarc" | "arc")[];
  /** Prepend our Authentication-Results to relayed messages (default true). */
  addHeader: boolean;
  /** Longest each phase may take (SPF from MAIL FROM; the rest at end of data), seconds (10). */
  timeoutSeconds: number;
  /**
   * Verdict for a message a rule tests with `spf`/`dkim`/`dmarc`/`arc` whose tested check gave
   * temperror (DNS down or slow) when it would otherwise be forwarded (default "tempfail").
   */
  onFailure: "tempfail" | "quarantine" | "reject" | "forward";
}

/** Everything a running SSG needs, validated. */
export interface SsgConfig {
  /** Path of the rule file this came from. */
  file: string;
  /** What is diverted and where diverted flows are answered. */
  gateway: GatewayConfig;
  /** Bounds and timeouts of the responder side. */
  smtp: SmtpConfig;
  /** The relay client towards the original server. */
  relay: RelayConfig;
  /** Where and how much to log. */
  log: LogConfig;
  /** The policy, evaluated in order. */
  rules: Rule[];
  /** Memory across messages (always set by the loader; defaults when the section is absent). */
  state?: StateConfig;
  /** Named lists: name → entries (always set by the loader; empty when absent). */
  lists?: Record<string, string[]>;
  /** Static allowlist (always set by the loader). */
  allowlist?: AccessList;
  /** Static blacklist (always set by the loader). */
  blacklist?: AccessList;
  /** Spamtrap addresses (absent when the section is). */
  spamtraps?: SpamtrapConfig;
  /** Quarantine store (always set by the loader; defaults when absent). */
  quarantine?: QuarantineConfig;
  /** Admin alerts (absent when the section is: alerts are then logged only). */
  alert?: AlertConfig;
  /** Thresholds over the recorded verdicts, in order (always set by the loader). */
  thresholds?: Threshold[];
  /** Decoding bounds and the undecodable verdict (always set by the loader; defaults when absent). */
  content?: ContentConfig;
  /** Virus scanning (absent when the section is: no rule may then test `virus`). */
  clamav?: ClamavConfig;
  /** Greylisting parameters (absent when the section is: `GREYLIST_DEFAULTS` apply). */
  greylist?: GreylistConfig;
  /** Spam scoring (absent when the section is: no rule may then test `rspamd`). */
  rspamd?: RspamdConfig;
  /** SSG's DNS resolver (absent when the section is: nothing may then look up DNS). */
  dns?: DnsConfig;
  /** DNS lists (absent when the section is: no rule may then test `dnsbl`). */
  dnsbl?: DnsblConfig;
  /** Sender authentication (set when the section is present or a rule tests spf/dkim/dmarc/arc). */
  auth?: AuthConfig;
}
