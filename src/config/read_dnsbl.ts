/**
 * The `dnsbl:` section: DNS block- and allowlists in Postfix's `postscreen_dnsbl_sites` syntax
 * (`zone[=reply pattern][*weight]`, see `dnsbl_site.ts`), one list per thing looked up.
 *
 * ```yaml
 * dnsbl:
 *   client:                                   # the client IP (DNSBL; a negative weight: DNSWL)
 *     - zen.example.org=127.0.0.[2..11]*3
 *     - list.dnswl.example=127.0.[0..255].[1..3]*-5
 *   sender_domain: [dbl.example.org=127.0.1.[2..99]*2]   # the MAIL FROM domain (RHSBL)
 *   helo: [dbl.example.org=127.0.1.[2..99]]               # the HELO/EHLO name (RHSBL)
 *   timeout: 5s          # the whole check at the end of DATA (100ms to 60s)
 *   on_failure: ignore   # ignore (not listed, logged) | tempfail (451 4.4.3)
 * ```
 *
 * Needs a `dns:` section (the resolver); rules test it with `dnsbl: { score_at_least: N }`,
 * `score_at_most`, `listed_in: zone`.
 */
import type { DnsblConfig } from "./config.ts";
import { DNSBL_DEFAULTS } from "./defaults.ts";
import { type DnsblSite, parseDnsblSite } from "../engines/dns/dnsbl_site.ts";
import type { YamlReader, YNode } from "./yaml_reader.ts";

const DNSBL_KEYS = ["client", "sender_domain", "helo", "timeout", "on_failure"] as const;

/** Most entries in one list (each is one DNS query per message). */
export const MAX_DNSBL_SITES = 32;

/**
 * Reads `dnsbl:`; undefined when the section is absent or has errors (errors are reported to
 * `r`; `present` tells the two apart for the caller).
 */
export function readDnsbl(
  node: YNode,
  present: boolean,
  r: YamlReader,
  keyNode: YNode,
): DnsblConfig | undefined {
  if (!present) return undefined;
  const f = r.fields(node, `"dnsbl"`, DNSBL_KEYS, `in "dnsbl"`, keyNode);
  if (!f) return undefined;
  const before = r.issues.length;
  const c: DnsblConfig = { client: [], senderDomain: [], helo: [], ...DNSBL_DEFAULTS };
  const sites = (key: "client" | "sender_domain" | "helo"): DnsblSite[] => {
    if (!f.has(key)) return [];
    const items = r.list(f.get(key), `"dnsbl.${key}"`, f.key(key), true);
    if (items && items.length > MAX_DNSBL_SITES) {
      r.report(f.get(key), `"dnsbl.${key}" may list at most ${MAX_DNSBL_SITES} entries`);
    }
    const out: DnsblSite[] = [];
    for (const item of items ?? []) {
      const t = r.string(item, `a "dnsbl.${key}" entry`, { max: 300 }, f.key(key));
      if (t === undefined) continue;
      try {
        out.push(parseDnsblSite(t));
      } catch (e) {
        r.report(item, `"dnsbl.${key}": ${(e as Error).message}`);
      }
    }
    return out;
  };
  c.client = sites("client");
  c.senderDomain = sites("sender_domain");
  c.helo = sites("helo");
  if (
    r.issues.length === before && c.client.length + c.senderDomain.length + c.helo.length === 0
  ) {
    r.report(
      f.node,
      `"dnsbl" needs at least one list under "client", "sender_domain" or "helo" (e.g. client: [zen.example.org*3])`,
      keyNode,
    );
  }
  if (f.has("timeout")) {
    c.timeoutSeconds = r.duration(f.get("timeout"), `"dnsbl.timeout"`, 0.1, 60, f.key("timeout")) ??
      c.timeoutSeconds;
  }
  if (f.has("on_failure")) {
    c.onFailure = r.oneOf(
      f.get("on_failure"),
      `"dnsbl.on_failure"`,
      ["ignore", "tempfail"] as const,
      f.key("on_failure"),
    ) ?? c.onFailure;
  }
  return r.issues.length === before ? c : undefined;
}
