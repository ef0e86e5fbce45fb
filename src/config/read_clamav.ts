/**
 * The `clamav:` section: where clamd listens, how long and how much it may scan, and the verdict
 * for a message it could not scan (issue 10). An empty section (`clamav:` alone) is all defaults
 * (`CLAMAV_DEFAULTS`: Debian's clamd socket). Without the section no rule may test `virus`.
 *
 * ```yaml
 * clamav:
 *   socket: /run/clamav/clamd.ctl   # clamd's LocalSocket; or instead:
 *   # address: 127.0.0.1:3310       # clamd's TCPSocket (port required, no default guessing)
 *   timeout: 30s                    # one whole scan, connect to answer (1s to 90s)
 *   max_bytes: 25M                  # largest message scanned (1K to 1G); ≤ clamd's StreamMaxLength
 *   on_failure: tempfail            # tempfail | quarantine | reject | forward
 * ```
 *
 * `max_bytes` cannot be checked against clamd's StreamMaxLength here (that is clamd's file, and
 * clamd may run elsewhere): a larger value only means clamd refuses the stream once it passes its
 * own limit, which is a scan failure (`on_failure`) too — never "clean".
 */
import { isScalar } from "yaml";
import type { ClamavConfig } from "./config.ts";
import { CLAMAV_DEFAULTS } from "./defaults.ts";
import { parseHostPort } from "./host_port.ts";
import type { YamlReader, YNode } from "./yaml_reader.ts";

const CLAMAV_KEYS = ["socket", "address", "timeout", "max_bytes", "on_failure"] as const;

/**
 * Longest `clamav.timeout`, in seconds: below the session's 2-minute bound on the whole judge
 * (`DEFAULT_JUDGE_TIMEOUT_MS`, a 451 past it), so that a slow clamd ends in `on_failure` — the
 * verdict the administrator chose — and not in the session's generic 451.
 */
export const MAX_SCAN_TIMEOUT_SECONDS = 90;

/** Longest Unix socket path: sun_path is 108 bytes with its NUL. */
export const MAX_SOCKET_PATH = 107;

/**
 * Reads `clamav:`; undefined when the section is absent or has errors (errors are reported to
 * `r`; `present` tells the two apart for the caller).
 */
export function readClamav(
  node: YNode,
  present: boolean,
  r: YamlReader,
  keyNode: YNode,
): ClamavConfig | undefined {
  if (!present) return undefined;
  const c: ClamavConfig = { ...CLAMAV_DEFAULTS, address: { ...CLAMAV_DEFAULTS.address } };
  const empty = node === null || node === undefined || (isScalar(node) && node.value === null);
  if (empty) return c;
  const f = r.fields(node, `"clamav"`, CLAMAV_KEYS, `in "clamav"`, keyNode);
  if (!f) return undefined;
  const before = r.issues.length;
  if (f.has("socket") && f.has("address")) {
    r.report(
      f.key("address"),
      `"clamav" takes "socket" (a Unix socket path) or "address" (host:port), not both`,
    );
  } else if (f.has("socket")) {
    const path = r.string(f.get("socket"), `"clamav.socket"`, {
      max: MAX_SOCKET_PATH,
      // deno-lint-ignore no-control-regex
      pattern: /^\/[^\x00-\x1f\x7f]*$/,
      patternText: "an absolute path without control characters",
    }, f.key("socket"));
    if (path !== undefined) c.address = { path };
  } else if (f.has("address")) {
    const t = r.string(f.get("address"), `"clamav.address"`, { max: 300 }, f.key("address"));
    if (t !== undefined) {
      const hp = /:\d+$/.test(t) ? parseHostPort(t) : `"${t}" needs a port, e.g. 127.0.0.1:3310`;
      if (typeof hp === "string") r.report(f.get("address"), `"clamav.address": ${hp}`);
      else c.address = { hostname: hp.host, port: hp.port };
    }
  }
  if (f.has("timeout")) {
    c.timeoutSeconds = r.duration(
      f.get("timeout"),
      `"clamav.timeout"`,
      1,
      MAX_SCAN_TIMEOUT_SECONDS,
      f.key("timeout"),
    ) ??
      c.timeoutSeconds;
  }
  if (f.has("max_bytes")) {
    c.maxBytes =
      r.size(f.get("max_bytes"), `"clamav.max_bytes"`, 1024, 1 << 30, f.key("max_bytes")) ??
        c.maxBytes;
  }
  if (f.has("on_failure")) {
    c.onFailure = r.oneOf(
      f.get("on_failure"),
      `"clamav.on_failure"`,
      ["tempfail", "quarantine", "reject", "forward"] as const,
      f.key("on_failure"),
    ) ?? c.onFailure;
  }
  return r.issues.length === before ? c : undefined;
}
