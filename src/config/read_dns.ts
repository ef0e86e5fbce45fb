/**
 * The `dns:` section: the recursive servers SSG's own look-ups go to (DNSBL/RHSBL, and SPF/DKIM/
 * DMARC through the same resolver), how long it waits and how much it caches.
 *
 * ```yaml
 * dns:
 *   servers: [127.0.0.1, "[2001:db8::53]:53"]   # required: ip, ip:port or [ipv6]:port, in order
 *   timeout: 2s            # one try at one server (100ms to 30s)
 *   retries: 1             # further rounds over the servers (0 to 5)
 *   cache_entries: 10000   # answers cached (0 to 1,000,000; 0 = none)
 *   cache_max_ttl: 1h      # longest an answer is kept, whatever its TTL (0 to 1d)
 *   negative_ttl: 5m       # a negative answer without SOA (0 to 1d)
 * ```
 *
 * No default server: a public resolver is refused by most DNS lists, and /etc/resolv.conf may
 * name one; the administrator says which resolver (usually a local caching one) to use.
 */
import type { DnsConfig } from "./config.ts";
import { DNS_DEFAULTS } from "./defaults.ts";
import { parseDnsServer } from "../engines/dns/resolver.ts";
import type { YamlReader, YNode } from "./yaml_reader.ts";

const DNS_KEYS = [
  "servers",
  "timeout",
  "retries",
  "cache_entries",
  "cache_max_ttl",
  "negative_ttl",
] as const;

/** Most servers listed. */
export const MAX_DNS_SERVERS = 8;

/**
 * Reads `dns:`; undefined when the section is absent or has errors (errors are reported to
 * `r`; `present` tells the two apart for the caller).
 */
export function readDns(
  node: YNode,
  present: boolean,
  r: YamlReader,
  keyNode: YNode,
): DnsConfig | undefined {
  if (!present) return undefined;
  const f = r.fields(node, `"dns"`, DNS_KEYS, `in "dns"`, keyNode);
  if (!f) return undefined;
  const before = r.issues.length;
  const c: DnsConfig = { servers: [], ...DNS_DEFAULTS };
  if (!f.has("servers")) {
    r.report(
      f.node,
      `"dns" needs "servers": the recursive resolvers to ask, e.g. [127.0.0.1]`,
      keyNode,
    );
  } else {
    const items = r.list(f.get("servers"), `"dns.servers"`, f.key("servers"), true);
    if (items && items.length === 0) r.report(f.get("servers"), `"dns.servers" must not be empty`);
    if (items && items.length > MAX_DNS_SERVERS) {
      r.report(f.get("servers"), `"dns.servers" may list at most ${MAX_DNS_SERVERS} servers`);
    }
    for (const item of items ?? []) {
      const t = r.string(item, `a "dns.servers" entry`, { max: 60 }, f.key("servers"));
      if (t === undefined) continue;
      try {
        const s = parseDnsServer(t);
        c.servers.push(s.family === 6 ? `[${s.hostname}]:${s.port}` : `${s.hostname}:${s.port}`);
      } catch (e) {
        r.report(item, `"dns.servers": ${(e as Error).message}`);
      }
    }
  }
  if (f.has("timeout")) {
    c.timeoutSeconds = r.duration(f.get("timeout"), `"dns.timeout"`, 0.1, 30, f.key("timeout")) ??
      c.timeoutSeconds;
  }
  if (f.has("retries")) {
    c.retries = r.int(f.get("retries"), `"dns.retries"`, 0, 5, f.key("retries")) ?? c.retries;
  }
  if (f.has("cache_entries")) {
    c.cacheEntries = r.int(
      f.get("cache_entries"),
      `"dns.cache_entries"`,
      0,
      1_000_000,
      f.key("cache_entries"),
    ) ?? c.cacheEntries;
  }
  if (f.has("cache_max_ttl")) {
    c.cacheMaxTtlSeconds = r.duration(
      f.get("cache_max_ttl"),
      `"dns.cache_max_ttl"`,
      0,
      86400,
      f.key("cache_max_ttl"),
    ) ?? c.cacheMaxTtlSeconds;
  }
  if (f.has("negative_ttl")) {
    c.negativeTtlSeconds = r.duration(
      f.get("negative_ttl"),
      `"dns.negative_ttl"`,
      0,
      86400,
      f.key("negative_ttl"),
    ) ?? c.negativeTtlSeconds;
  }
  return r.issues.length === before ? c : undefined;
}
