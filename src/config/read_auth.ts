/**
 * The `auth:` section: sender authentication (SPF, DKIM, DMARC, ARC with npm mailauth, issue 10),
 * our Authentication-Results header, and the verdict when DNS fails. An empty section (`auth:`
 * alone) is all defaults (`AUTH_DEFAULTS`, authserv-id = gateway.hostname).
 *
 * ```yaml
 * auth:
 *   authserv_id: mx.corp.example   # RFC 8601 §2.5 (default gateway.hostname)
 *   checks: [spf, dkim, dmarc, arc] # default all four
 *   add_header: true               # prepend Authentication-Results to relayed mail (default true)
 *   timeout: 10s                   # each phase: SPF from MAIL FROM, the rest at end of data (1s-90s)
 *   on_failure: tempfail           # a tested check gave temperror: tempfail | quarantine | reject | forward
 * ```
 *
 * The authserv-id must be a plain token (a host name): it is compared with inbound
 * Authentication-Results fields to remove forged ones (RFC 8601 §5), and a quoted one would
 * only make that comparison fragile.
 */
import { isScalar } from "yaml";
import type { AuthConfig } from "./config.ts";
import { AUTH_DEFAULTS } from "./defaults.ts";
import { MAX_SCAN_TIMEOUT_SECONDS } from "./read_clamav.ts";
import type { YamlReader, YNode } from "./yaml_reader.ts";

const AUTH_KEYS = ["authserv_id", "checks", "add_header", "timeout", "on_failure"] as const;
const CHECKS = ["spf", "dkim", "dmarc", "arc"] as const;

/** A host-name-like token (RFC 8601 §2.5 allows any `value`; SSG asks for a host name). */
export const AUTHSERV_ID = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,252}[A-Za-z0-9])?$/;

/**
 * Reads `auth:`; undefined when the section is absent or has errors (errors are reported to `r`).
 * `hostname` is gateway.hostname, the default authserv-id.
 */
export function readAuth(
  node: YNode,
  present: boolean,
  r: YamlReader,
  keyNode: YNode,
  hostname: string,
): AuthConfig | undefined {
  if (!present) return undefined;
  const c: AuthConfig = { ...AUTH_DEFAULTS, checks: [...AUTH_DEFAULTS.checks], authservId: "" };
  c.authservId = AUTHSERV_ID.test(hostname) ? hostname : "localhost";
  const empty = node === null || node === undefined || (isScalar(node) && node.value === null);
  if (empty) return c;
  const f = r.fields(node, `"auth"`, AUTH_KEYS, `in "auth"`, keyNode);
  if (!f) return undefined;
  const before = r.issues.length;
  if (f.has("authserv_id")) {
    c.authservId = r.string(f.get("authserv_id"), `"auth.authserv_id"`, {
      max: 254,
      pattern: AUTHSERV_ID,
      patternText: "a host name (letters, digits, dots, hyphens)",
    }, f.key("authserv_id")) ?? c.authservId;
  }
  if (f.has("checks")) {
    const items = r.list(f.get("checks"), `"auth.checks"`, f.key("checks"), true);
    if (items) {
      const seen = new Set<AuthConfig["checks"][number]>();
      for (const item of items) {
        const v = r.oneOf(item, `"auth.checks" item`, CHECKS, f.key("checks"));
        if (v) seen.add(v);
      }
      if (items.length === 0) {
        r.report(f.get("checks"), `"auth.checks" must name at least one of ${CHECKS.join(", ")}`);
      }
      c.checks = CHECKS.filter((x) => seen.has(x));
    }
  }
  if (f.has("add_header")) {
    c.addHeader = r.bool(f.get("add_header"), `"auth.add_header"`, f.key("add_header")) ??
      c.addHeader;
  }
  if (f.has("timeout")) {
    c.timeoutSeconds = r.duration(
      f.get("timeout"),
      `"auth.timeout"`,
      1,
      MAX_SCAN_TIMEOUT_SECONDS,
      f.key("timeout"),
    ) ?? c.timeoutSeconds;
  }
  if (f.has("on_failure")) {
    c.onFailure = r.oneOf(
      f.get("on_failure"),
      `"auth.on_failure"`,
      ["tempfail", "quarantine", "reject", "forward"] as const,
      f.key("on_failure"),
    ) ?? c.onFailure;
  }
  return r.issues.length === before ? c : undefined;
}
