/**
 * The `greylist:` section: the parameters of `action: greylist` (issue 10). The section is
 * optional — a rule may greylist without it, under `GREYLIST_DEFAULTS` — and an empty section
 * (`greylist:` alone) is all defaults.
 *
 * ```yaml
 * greylist:
 *   delay: 5m                 # a retry is accepted this long after the first sighting (1s to 1d)
 *   retry_window: 2d          # ... and until this long after it (more than delay, at most 30d)
 *   pass_lifetime: 36d        # a passed triplet is remembered this long after its last use
 *   auto_allow_after: 5       # passed triplets that allow their client network outright (0: never)
 *   max_entries: 100000       # triplets remembered (1000 to 10 000 000)
 *   network_prefix: { ipv4: 24, ipv6: 64 }   # the client part of the triplet
 * ```
 *
 * Bounds: `delay` below `retry_window` (otherwise no retry could ever pass); `pass_lifetime` at
 * least `retry_window` (a triplet must not be forgotten sooner once passed than while waiting).
 */
import { isScalar } from "yaml";
import type { GreylistConfig } from "./config.ts";
import { GREYLIST_DEFAULTS } from "./defaults.ts";
import type { YamlReader, YNode } from "./yaml_reader.ts";

const GREYLIST_KEYS = [
  "delay",
  "retry_window",
  "pass_lifetime",
  "auto_allow_after",
  "max_entries",
  "network_prefix",
] as const;
const PREFIX_KEYS = ["ipv4", "ipv6"] as const;

/** Longest `greylist.delay`: one day. */
export const MAX_GREYLIST_DELAY = 86400;
/** Longest `greylist.retry_window`: 30 days. */
export const MAX_RETRY_WINDOW = 30 * 86400;
/** Longest `greylist.pass_lifetime`: 365 days. */
export const MAX_PASS_LIFETIME = 365 * 86400;

/**
 * Reads `greylist:`; the defaults when the section is absent or empty, undefined when it has
 * errors (reported to `r`).
 */
export function readGreylist(
  node: YNode,
  present: boolean,
  r: YamlReader,
  keyNode: YNode,
): GreylistConfig | undefined {
  const c: GreylistConfig = {
    ...GREYLIST_DEFAULTS,
    networkPrefix: { ...GREYLIST_DEFAULTS.networkPrefix },
  };
  const empty = node === null || node === undefined || (isScalar(node) && node.value === null);
  if (!present || empty) return c;
  const f = r.fields(node, `"greylist"`, GREYLIST_KEYS, `in "greylist"`, keyNode);
  if (!f) return undefined;
  const before = r.issues.length;
  if (f.has("delay")) {
    c.delaySeconds = r.duration(
      f.get("delay"),
      `"greylist.delay"`,
      1,
      MAX_GREYLIST_DELAY,
      f.key("delay"),
    ) ?? c.delaySeconds;
  }
  if (f.has("retry_window")) {
    c.retryWindowSeconds = r.duration(
      f.get("retry_window"),
      `"greylist.retry_window"`,
      2,
      MAX_RETRY_WINDOW,
      f.key("retry_window"),
    ) ?? c.retryWindowSeconds;
  }
  if (f.has("pass_lifetime")) {
    c.passLifetimeSeconds = r.duration(
      f.get("pass_lifetime"),
      `"greylist.pass_lifetime"`,
      60,
      MAX_PASS_LIFETIME,
      f.key("pass_lifetime"),
    ) ?? c.passLifetimeSeconds;
  }
  if (f.has("auto_allow_after")) {
    c.autoAllowAfter = r.int(
      f.get("auto_allow_after"),
      `"greylist.auto_allow_after"`,
      0,
      1000,
      f.key("auto_allow_after"),
    ) ?? c.autoAllowAfter;
  }
  if (f.has("max_entries")) {
    c.maxEntries = r.int(
      f.get("max_entries"),
      `"greylist.max_entries"`,
      1000,
      10_000_000,
      f.key("max_entries"),
    ) ?? c.maxEntries;
  }
  if (f.has("network_prefix")) {
    const pf = r.fields(
      f.get("network_prefix"),
      `"greylist.network_prefix"`,
      PREFIX_KEYS,
      `in "greylist.network_prefix"`,
      f.key("network_prefix"),
    );
    if (pf?.has("ipv4")) {
      c.networkPrefix.ipv4 = r.int(
        pf.get("ipv4"),
        `"greylist.network_prefix.ipv4"`,
        8,
        32,
        pf.key("ipv4"),
      ) ?? c.networkPrefix.ipv4;
    }
    if (pf?.has("ipv6")) {
      c.networkPrefix.ipv6 = r.int(
        pf.get("ipv6"),
        `"greylist.network_prefix.ipv6"`,
        16,
        128,
        pf.key("ipv6"),
      ) ?? c.networkPrefix.ipv6;
    }
  }
  if (r.issues.length !== before) return undefined;
  if (c.delaySeconds >= c.retryWindowSeconds) {
    r.report(
      f.key("delay") ?? f.key("retry_window") ?? keyNode,
      `"greylist.delay" (${c.delaySeconds}s) must be shorter than "greylist.retry_window" (${c.retryWindowSeconds}s), or no retry could pass`,
    );
  }
  if (c.passLifetimeSeconds < c.retryWindowSeconds) {
    r.report(
      f.key("pass_lifetime") ?? f.key("retry_window") ?? keyNode,
      `"greylist.pass_lifetime" (${c.passLifetimeSeconds}s) must be at least "greylist.retry_window" (${c.retryWindowSeconds}s)`,
    );
  }
  return r.issues.length === before ? c : undefined;
}
