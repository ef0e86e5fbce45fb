/**
 * The words of sender authentication, shared by the rule parser and the authenticator: which
 * checks exist and which results each can have (RFC 8601 §2.7, the values mailauth reports).
 * Plain data, no I/O, so the rule loader need not load mailauth to validate a rule.
 */

/** The checks SSG can run. */
export const AUTH_CHECKS = ["spf", "dkim", "dmarc", "arc"] as const;
/** One check. */
export type AuthCheck = typeof AUTH_CHECKS[number];

/** SPF results (RFC 7208 §2.6). */
export const SPF_RESULTS = [
  "pass",
  "fail",
  "softfail",
  "neutral",
  "none",
  "temperror",
  "permerror",
] as const;
/** DKIM results (RFC 8601 §2.7.1). */
export const DKIM_RESULTS = [
  "pass",
  "fail",
  "neutral",
  "none",
  "policy",
  "temperror",
  "permerror",
] as const;
/** DMARC results (RFC 7489 §11.2). */
export const DMARC_RESULTS = ["pass", "fail", "none", "temperror", "permerror"] as const;
/** DMARC policies a domain publishes (p=, sp=, np=). */
export const DMARC_POLICIES = ["none", "quarantine", "reject"] as const;
/** ARC results (RFC 8617 §4.4). */
export const ARC_RESULTS = ["pass", "fail", "none", "temperror", "permerror"] as const;
