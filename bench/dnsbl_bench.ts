/**
 * Cost per message of DNS-list checks (issue 10), against a real dnsmasq on loopback
 * (test/engines/dns_fixture.ts, the lists of the DNSBL tests), on the same 10 KB clean text
 * message as decode_bench.ts, with a listing of 2 client lists (block + allow), 1 sender-domain
 * list and 1 HELO list — 4 A queries per message:
 *
 * - `DnsResolver.query` alone, uncached: one UDP round trip to dnsmasq;
 * - `PolicyEngine.judge` with 10 keyword rules and no `dnsbl` rule (baseline);
 * - the same plus `dnsbl: { score_at_least: 3 }`, answers cached (the steady state when the
 *   look-ups started at connect/EHLO/MAIL are done by the end of DATA, or the client was seen
 *   within the TTL);
 * - the same with the cache off (`cache_entries: 0`): every message asks the 4 questions at the
 *   end of DATA, concurrently with decoding — the worst case, where no look-up started early.
 *
 * Run: `deno run -A bench/dnsbl_bench.ts [ROUNDS]` (default 1000 rounds). Prints median, p99 and
 * mean in microseconds, after 100 warm-up rounds. Needs dnsmasq (scripts/setup.sh). A real list
 * server is farther than loopback: add its round-trip time for the uncached case.
 */
import type { EventLog } from "../src/log/log.ts";
import type { DnsblConfig, DnsConfig } from "../src/config/config.ts";
import { parseDnsblSite } from "../src/engines/dns/dnsbl_site.ts";
import { createResolver } from "../src/engines/dns/resolver.ts";
import { PolicyEngine } from "../src/policy/policy_engine.ts";
import type { Rule } from "../src/policy/rule.ts";
import type { Envelope } from "../src/policy/verdict.ts";
import { DNSBL_RECORDS, startDnsmasq } from "../test/engines/dns_fixture.ts";
import { benchEnvelope, keywordRules, SILENT_LOG, textMessage, timeAsync } from "./bench_inputs.ts";

const ROUNDS = Number(Deno.args.find((a) => /^\d+$/.test(a)) ?? 1000);
const raw = textMessage(10);

const dnsblRule = {
  name: "dnsbl",
  mode: "enforce",
  when: { kind: "dnsbl", scoreAtLeast: 3 },
  actions: [{ type: "reject", reply: { code: 554, enhanced: "5.7.1", text: "Listed" } }],
} as unknown as Rule;
const log: EventLog = SILENT_LOG;
const envelope: Envelope = benchEnvelope();

function measure(name: string, f: () => Promise<unknown>): Promise<number> {
  return timeAsync(name, ROUNDS, f);
}

const dns = await startDnsmasq([...DNSBL_RECORDS, "local=/example.org/"]);
try {
  const dnsConfig = (cacheEntries: number): DnsConfig => ({
    servers: [dns.server],
    timeoutSeconds: 2,
    retries: 1,
    cacheEntries,
    cacheMaxTtlSeconds: 3600,
    negativeTtlSeconds: 300,
  });
  const dnsbl: DnsblConfig = {
    client: [parseDnsblSite("bl.test=127.0.0.[2..11]*3"), parseDnsblSite("wl.test*-5")],
    senderDomain: [parseDnsblSite("dbl.test=127.0.1.[2..99]*2")],
    helo: [parseDnsblSite("dbl.test")],
    timeoutSeconds: 5,
    onFailure: "ignore",
  };
  const bare = createResolver({
    servers: [dns.server],
    timeoutMs: 2000,
    retries: 1,
    cacheMaxEntries: 0,
    cacheMaxTtlSeconds: 3600,
    negativeTtlSeconds: 300,
  });
  const a0 = await bare.query("10.2.0.192.bl.test", "A");
  if (a0.status !== "nxdomain") throw new Error(`expected nxdomain, got ${JSON.stringify(a0)}`);
  await measure(
    "resolver.query, uncached (one UDP round trip)",
    () => bare.query("10.2.0.192.bl.test", "A"),
  );
  bare.close?.();

  const plain = new PolicyEngine({ rules: keywordRules(10) }, log);
  const cached = new PolicyEngine(
    { rules: [...keywordRules(10), dnsblRule], dns: dnsConfig(10000), dnsbl },
    log,
  );
  const uncached = new PolicyEngine(
    { rules: [...keywordRules(10), dnsblRule], dns: dnsConfig(0), dnsbl },
    log,
  );
  for (const e of [cached, uncached]) {
    const v = await e.judge(raw, envelope);
    if (v.action !== "forward") throw new Error(`expected forward, got ${JSON.stringify(v)}`);
  }
  const a = await measure("judge, 10 rules, no dnsbl rule", () => plain.judge(raw, envelope));
  const b = await measure(
    "judge, 10 rules + dnsbl (4 look-ups, cached)",
    () => cached.judge(raw, envelope),
  );
  const c = await measure(
    "judge, 10 rules + dnsbl (4 look-ups, uncached ∥ decode)",
    () => uncached.judge(raw, envelope),
  );
  console.log(
    `dnsbl cost per message in judge (median difference): cached ${(b - a).toFixed(0)} µs, ` +
      `uncached ${(c - a).toFixed(0)} µs; queries dnsmasq answered: ${await dns.queries()}`,
  );
  plain.close();
  cached.close();
  uncached.close();
} finally {
  await dns.stop();
}
