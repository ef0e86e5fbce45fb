/**
 * The `rspamd:` section: where Rspamd's normal worker listens, how long and how much a check may
 * take, and what happens to a message it could not score (issue 10). An empty section
 * (`rspamd:` alone) is all defaults (`RSPAMD_DEFAULTS`: 127.0.0.1:11333). Without the section no
 * rule may test `rspamd`.
 *
 * ```yaml
 * rspamd:
 *   address: 127.0.0.1:11333        # Rspamd's normal worker; or instead:
 *   # url: http://127.0.0.1:11333   # http only; a path is a prefix before /checkv2
 *   timeout: 15s                    # one whole check, connect to reply (1s to 90s)
 *   max_bytes: 25M                  # largest message sent (1K to 1G)
 *   password: secret                # optional, sent as the Password header
 *   on_failure: tempfail            # tempfail | quarantine | reject | ignore
 * ```
 *
 * `url` takes `http://` only: Rspamd's workers speak plain HTTP (or their own HTTPCrypt), and a
 * TLS front end would need a CA configuration this section does not have. `ignore` is for an
 * administrator who prefers mail to flow unscored while Rspamd is down; each such message is
 * logged (`policy.rspamd_ignored`).
 */
import { isScalar } from "yaml";
import type { RspamdConfig } from "./config.ts";
import { RSPAMD_DEFAULTS } from "./defaults.ts";
import { parseHostPort } from "./host_port.ts";
import { MAX_SCAN_TIMEOUT_SECONDS } from "./read_clamav.ts";
import type { YamlReader, YNode } from "./yaml_reader.ts";

const RSPAMD_KEYS = ["address", "url", "timeout", "max_bytes", "password", "on_failure"] as const;

/** Longest `rspamd.timeout`, in seconds: below the session's bound on the whole judge. */
export const MAX_RSPAMD_TIMEOUT_SECONDS = MAX_SCAN_TIMEOUT_SECONDS;

/**
 * Reads `rspamd:`; undefined when the section is absent or has errors (errors are reported to
 * `r`; `present` tells the two apart for the caller).
 */
export function readRspamd(
  node: YNode,
  present: boolean,
  r: YamlReader,
  keyNode: YNode,
): RspamdConfig | undefined {
  if (!present) return undefined;
  const c: RspamdConfig = { ...RSPAMD_DEFAULTS, address: { ...RSPAMD_DEFAULTS.address } };
  const empty = node === null || node === undefined || (isScalar(node) && node.value === null);
  if (empty) return c;
  const f = r.fields(node, `"rspamd"`, RSPAMD_KEYS, `in "rspamd"`, keyNode);
  if (!f) return undefined;
  const before = r.issues.length;
  if (f.has("address") && f.has("url")) {
    r.report(f.key("url"), `"rspamd" takes "address" (host:port) or "url" (http://...), not both`);
  } else if (f.has("address")) {
    const t = r.string(f.get("address"), `"rspamd.address"`, { max: 300 }, f.key("address"));
    if (t !== undefined) {
      const hp = /:\d+$/.test(t) ? parseHostPort(t) : `"${t}" needs a port, e.g. 127.0.0.1:11333`;
      if (typeof hp === "string") r.report(f.get("address"), `"rspamd.address": ${hp}`);
      else c.address = { hostname: hp.host, port: hp.port };
    }
  } else if (f.has("url")) {
    const t = r.string(f.get("url"), `"rspamd.url"`, { max: 300 }, f.key("url"));
    if (t !== undefined) {
      const u = parseRspamdUrl(t);
      if (typeof u === "string") r.report(f.get("url"), `"rspamd.url": ${u}`);
      else {
        c.address = u.address;
        c.pathPrefix = u.pathPrefix;
      }
    }
  }
  if (f.has("timeout")) {
    c.timeoutSeconds = r.duration(
      f.get("timeout"),
      `"rspamd.timeout"`,
      1,
      MAX_RSPAMD_TIMEOUT_SECONDS,
      f.key("timeout"),
    ) ?? c.timeoutSeconds;
  }
  if (f.has("max_bytes")) {
    c.maxBytes =
      r.size(f.get("max_bytes"), `"rspamd.max_bytes"`, 1024, 1 << 30, f.key("max_bytes")) ??
        c.maxBytes;
  }
  if (f.has("password")) {
    const p = r.string(f.get("password"), `"rspamd.password"`, {
      max: 256,
      pattern: /^[\x21-\x7e]+$/,
      patternText: "printable ASCII without spaces",
    }, f.key("password"));
    if (p !== undefined) c.password = p;
  }
  if (f.has("on_failure")) {
    c.onFailure = r.oneOf(
      f.get("on_failure"),
      `"rspamd.on_failure"`,
      ["tempfail", "quarantine", "reject", "ignore"] as const,
      f.key("on_failure"),
    ) ?? c.onFailure;
  }
  return r.issues.length === before ? c : undefined;
}

/** `http://host:port[/prefix]` → address and path prefix, or what is wrong. */
export function parseRspamdUrl(
  text: string,
): { address: { hostname: string; port: number }; pathPrefix: string } | string {
  const m = /^http:\/\/(\[[0-9A-Fa-f:.]+\]|[^/:?#]+)(?::(\d{1,5}))?(\/[^?#]*)?$/.exec(text.trim());
  if (!m) {
    return `"${text}" is not an http:// URL without query (e.g. http://127.0.0.1:11333)`;
  }
  const hp = parseHostPort(`${m[1]}:${m[2] ?? "80"}`);
  if (typeof hp === "string") return hp;
  let prefix = (m[3] ?? "").replace(/\/+$/, "");
  if (prefix.endsWith("/checkv2")) prefix = prefix.slice(0, -"/checkv2".length);
  if (!/^(\/[A-Za-z0-9._~%!$&'()*+,;=:@-]+)*$/.test(prefix)) {
    return `"${m[3]}" is not a plain URL path`;
  }
  return { address: { hostname: hp.host, port: hp.port }, pathPrefix: prefix };
}
