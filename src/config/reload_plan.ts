/**
 * What SIGHUP can change in a running SSG, and what needs a restart.
 *
 * Applied at once by a reload: the policy (`rules`, `lists` — list files are re-read —,
 * `allowlist`, `blacklist` — the static client blacklist is re-applied at the packet level —,
 * `spamtraps`, `thresholds`, `content.*` — the next message is read and judged under them —,
 * `clamav.*` — the new policy engine holds a new clamd client: it keeps no connection, so the
 * next scan goes to the new address with the new limits), `greylist.*` (the new engine's
 * greylist reads the same triplets in the state store under the new times), `rspamd.*` (a new
 * Rspamd client, one connection per message), `dns.*` and `dnsbl.*` — the new
 * engine holds a new resolver (its cache starts empty) and the new lists —, `auth.*` (the
 * new engine verifies with the new checks, authserv-id and timeout), every `smtp.*` setting (new sessions get the new limits, timeouts,
 * line-ending policy and TLS identity; the session-count limits and `max_inflight_bytes` bind at
 * once; a session already running finishes under the settings it started with), `relay.*` but
 * `relay.source*` (new sessions, bcc and redirect deliveries) and `log.level`.
 *
 * Need a restart (a reload keeps the running value and names each changed key in a
 * `config.reload.partial` warning): `gateway.*` (firewall rules, the packet queue, the responder's
 * listening sockets and the flow table are built from it at start), `state.*` (the open database),
 * `quarantine.*` (the open store), `alert.*` (the alert mailer and its rate limits),
 * `relay.source*` (the relay's address: packet path, port registry, firewall rules) and
 * `log.file` (SIGHUP re-opens the same path, which is how rotation works).
 *
 * Rejected: re-building the packet path and the listeners on SIGHUP — a half-applied firewall
 * change could stop diverting (mail would pass unfiltered) or drop live flows; a restart is the
 * honest and atomic way, and it costs the clients nothing (sessions get 421 and retry).
 */
import type { SsgConfig } from "./config.ts";

/** Settings that only a restart applies, as written in the rule file. */
export const RESTART_ONLY: readonly string[] = [
  "gateway.*",
  "relay.source*",
  "state.*",
  "quarantine.*",
  "alert.*",
  "log.file",
];

/** Settings a SIGHUP applies, as written in the rule file. */
export const RELOADABLE: readonly string[] = [
  "rules",
  "lists",
  "allowlist",
  "blacklist",
  "spamtraps",
  "thresholds",
  "content.*",
  "clamav.*",
  "greylist.*",
  "rspamd.*",
  "dns.*",
  "dnsbl.*",
  "auth.*",
  "smtp.*",
  "relay.* except relay.source*",
  "log.level",
];

/** `relay.*` keys that only a restart applies. */
const RELAY_SOURCE_KEYS = [
  "source",
  "sourcePorts",
  "sourceProbeTimeout",
  "sourceFallbackTtl",
] as const;

/** The outcome of comparing the running configuration with a newly loaded one. */
export interface ReloadPlan {
  /** What the running SSG uses from now on: `next`, with the restart-only parts kept as running. */
  config: SsgConfig;
  /** Rule-file keys (snake_case, dotted) that changed but stay as running until a restart. */
  ignored: string[];
}

/** Compares `running` with `next` and says what a reload applies and what it must leave. */
export function reloadPlan(running: SsgConfig, next: SsgConfig): ReloadPlan {
  const ignored = [
    ...changedKeys(running.gateway, next.gateway, "gateway"),
    ...changedKeys(running.state, next.state, "state"),
    ...changedKeys(running.quarantine, next.quarantine, "quarantine"),
    // One level only: in the file alert.relay and alert.rate are single values ("host:port",
    // "10/1h") that the loader turns into objects.
    ...changedKeys(running.alert, next.alert, "alert", 1),
    ...changedKeys(running.log.file, next.log.file, "log.file"),
    // The relay source (packet path, port registry, firewall rules) is built at start.
    ...RELAY_SOURCE_KEYS.flatMap((k) =>
      changedKeys(running.relay[k], next.relay[k], `relay.${snakeCase(k)}`)
    ),
  ];
  return {
    config: {
      ...next,
      gateway: running.gateway,
      state: running.state,
      quarantine: running.quarantine,
      alert: running.alert,
      log: { ...next.log, file: running.log.file },
      relay: {
        ...next.relay,
        ...Object.fromEntries(RELAY_SOURCE_KEYS.map((k) => [k, running.relay[k]])),
      },
    },
    ignored,
  };
}

/**
 * The dotted snake_case paths of the leaves that differ between `a` and `b`. Arrays and byte
 * arrays are leaves (compared whole); a section present on one side only is one changed key;
 * objects deeper than `depth` levels below `path` are compared whole.
 */
export function changedKeys(a: unknown, b: unknown, path: string, depth = Infinity): string[] {
  if (depth > 0 && isPlainObject(a) && isPlainObject(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    return keys.flatMap((k) => changedKeys(a[k], b[k], `${path}.${snakeCase(k)}`, depth - 1));
  }
  return sameValue(a, b) ? [] : [path];
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !ArrayBuffer.isView(v);
}

function sameValue(a: unknown, b: unknown): boolean {
  return JSON.stringify(a, bytesAsArrays) === JSON.stringify(b, bytesAsArrays);
}

function bytesAsArrays(_key: string, v: unknown): unknown {
  return v instanceof Uint8Array ? [...v] : v;
}

/** `maxSessionsPerClient` → `max_sessions_per_client` (the rule file's spelling). */
function snakeCase(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}
