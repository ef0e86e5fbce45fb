/**
 * Cost per message of sender authentication (issue 10: SPF, DKIM, DMARC, ARC with npm mailauth),
 * against a real dnsmasq serving the test zone (test/engines/auth_fixture.ts: SPF, a 1024-bit
 * DKIM key, DMARC p=reject) over loopback, through SSG's resolver (src/engines/dns/resolver.ts),
 * on the same 10 KB text message as decode_bench.ts, DKIM-signed by the bench:
 *
 * - `MailAuthenticator.verify` alone, with the resolver's cache warm (what a gateway pays for a
 *   domain it has seen within the TTL: CPU only — RSA verification, header/body canonicalisation)
 *   and with the cache off (every message asks dnsmasq: 1 SPF TXT, 1 DKIM key TXT, 1-2 DMARC TXT);
 * - `PolicyEngine.judge` with 10 keyword rules, and the same plus `dmarc: { result: fail }` (the
 *   verification runs concurrently with decoding): the difference is what a message pays.
 *
 * Run: `deno run -A bench/auth_bench.ts [ROUNDS] [--kb N]` (default 500 rounds of 10 KB). Prints
 * median, p99 and mean in microseconds, after 50 warm-up rounds. Needs dnsmasq (scripts/setup.sh).
 */
import type { EventLog } from "../src/log/log.ts";
import { createResolver } from "../src/engines/dns/resolver.ts";
import { MailAuthenticator } from "../src/engines/auth/mail_authenticator.ts";
import { PolicyEngine } from "../src/policy/policy_engine.ts";
import type { Rule } from "../src/policy/rule.ts";
import type { Envelope } from "../src/policy/verdict.ts";
import { startDnsmasq } from "../test/engines/dns_fixture.ts";
import { authZone, bytes, dkimSigned, makeKey } from "../test/engines/auth_fixture.ts";
import { benchEnvelope, keywordRules, SILENT_LOG, textMessage, timeAsync } from "./bench_inputs.ts";

const kbAt = Deno.args.indexOf("--kb");
const KB = kbAt >= 0 ? Number(Deno.args[kbAt + 1]) : 10;
const ROUNDS = Number(
  Deno.args.find((a, i) => /^\d+$/.test(a) && !(kbAt >= 0 && i === kbAt + 1)) ?? 500,
);

const dmarcRule = {
  name: "dmarc",
  mode: "enforce",
  when: { kind: "auth", check: "dmarc", results: ["fail"] },
  actions: [{ type: "reject", reply: { code: 550, enhanced: "5.7.1", text: "DMARC" } }],
} as unknown as Rule;
const log: EventLog = SILENT_LOG;
const envelope: Envelope = benchEnvelope();

function measure(name: string, size: number, f: () => Promise<unknown>): Promise<number> {
  return timeAsync(name, ROUNDS, f, { warmup: 50, bytes: size });
}

const keys = { org: makeKey(), arc: makeKey() };
const dns = await startDnsmasq(authZone(keys), { localTtl: 3600 });
const resolverConfig = {
  servers: [dns.server],
  timeoutMs: 2000,
  retries: 1,
  cacheMaxEntries: 10_000,
  cacheMaxTtlSeconds: 3600,
  negativeTtlSeconds: 300,
};
const warm = createResolver(resolverConfig);
const cold = createResolver({ ...resolverConfig, cacheMaxEntries: 0 });
try {
  const raw = bytes(await dkimSigned(new TextDecoder().decode(textMessage(KB)), keys.org));
  const opts = { authservId: "gw.example", checks: ["spf", "dkim", "dmarc", "arc"] as const };
  const a = new MailAuthenticator({
    ...opts,
    checks: [...opts.checks],
    timeoutMs: 10_000,
    dns: warm,
  });
  const r = await a.verify(raw, {
    ip: "192.0.2.10",
    helo: "mx.example.org",
    mailFrom: "alice@example.org",
  });
  if (r.spf?.result !== "pass" || r.dkim?.[0].result !== "pass" || r.dmarc?.result !== "pass") {
    throw new Error(`expected pass, got ${r.header}`);
  }
  const env = { ip: "192.0.2.10", helo: "mx.example.org", mailFrom: "alice@example.org" };
  await measure(
    "verify, SPF+DKIM+DMARC+ARC, resolver cache warm",
    raw.length,
    () => a.verify(raw, env),
  );
  const c = new MailAuthenticator({
    ...opts,
    checks: [...opts.checks],
    timeoutMs: 10_000,
    dns: cold,
  });
  await measure(
    "verify, SPF+DKIM+DMARC+ARC, no cache (dnsmasq asked)",
    raw.length,
    () => c.verify(raw, env),
  );
  const plain = new PolicyEngine({ rules: keywordRules(10) }, log, { resolver: warm });
  const auth = new PolicyEngine(
    { rules: [...keywordRules(10), dmarcRule] },
    log,
    { resolver: warm },
  );
  const v = await auth.judge(raw, envelope);
  if (v.action !== "forward") throw new Error(`expected forward, got ${JSON.stringify(v)}`);
  const x = await measure(
    "judge, 10 rules (no verification)",
    raw.length,
    () => plain.judge(raw, envelope),
  );
  const y = await measure(
    "judge, 10 rules + dmarc: fail (verify ∥ decode, cache warm)",
    raw.length,
    () => auth.judge(raw, envelope),
  );
  console.log(
    `verification cost per message in judge (median difference): ${(y - x).toFixed(0)} µs`,
  );
  plain.close();
  auth.close();
} finally {
  warm.close?.();
  cold.close?.();
  await dns.stop();
}
