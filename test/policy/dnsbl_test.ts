/**
 * The `dnsbl` condition through the loader and the policy engine, with a real dnsmasq
 * (test/engines/dns_fixture.ts) holding the lists the test writes: a listed client is rejected by
 * score, a DNSWL-listed one passes, `listed_in` names the zone, failures follow
 * `dnsbl.on_failure`, and `ssg explain` shows every look-up.
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { ConfigError } from "../../src/config/config_error.ts";
import { parseConfig } from "../../src/config/load_config.ts";
import { summarizeConfig } from "../../src/config/summarize_config.ts";
import { MemoryLog } from "../../src/log/log.ts";
import { explainMessage, renderExplanation } from "../../src/policy/explain.ts";
import { PolicyEngine } from "../../src/policy/policy_engine.ts";
import type { Envelope } from "../../src/policy/verdict.ts";
import { DNSBL_RECORDS, startDnsmasq } from "../engines/dns_fixture.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const MESSAGE = enc(
  "From: <alice@example.com>\r\nTo: <bob@example.net>\r\nSubject: hi\r\n\r\nHello\r\n",
);

function envelope(
  clientIp: string,
  mailFrom = "alice@example.com",
  helo = "mail.example.com",
): Envelope {
  return {
    mailFrom,
    rcptTo: ["bob@example.net"],
    client: { ip: clientIp, port: 40000 },
    server: { ip: "198.51.100.25", port: 25 },
    helo,
    tls: false,
    sessionId: "S1",
    transactionId: "S1.1",
  };
}

const RULES = `rules:
  - name: dnsbl-reject
    when: { dnsbl: { score_at_least: 3 } }
    action: reject
    reply: { code: 554, enhanced: "5.7.1", text: "Listed in a DNS blocklist" }
  - name: bad-sender-domain
    when: { dnsbl: { listed_in: dbl.test } }
    action: quarantine
`;

function yaml(server: string, more = "", rules = RULES): string {
  return `gateway:\n  protect: [198.51.100.0/24]\n` +
    `dns: { servers: ["${server}"], timeout: 1s, retries: 0 }\n` +
    `dnsbl:\n  client: ["bl.test=127.0.0.[2..11]*3", "wl.test=127.0.[0..255].[1..3]*-5"]\n` +
    `  sender_domain: ["dbl.test=127.0.1.[2..99]*2"]\n${more}${rules}`;
}

function loadErrors(text: string): string[] {
  try {
    parseConfig(text, "t.yaml");
  } catch (e) {
    if (e instanceof ConfigError) return e.issues.map((i) => `${i.line}: ${i.message}`);
    throw e;
  }
  return [];
}

Deno.test("the loader refuses dnsbl without dns, a dnsbl test without lists, an unknown listed_in zone, bad entries", () => {
  const gw = `gateway:\n  protect: [198.51.100.0/24]\n`;
  const cases: [string, RegExp][] = [
    [gw + `dnsbl: { client: [zen.example.org] }\n`, /"dnsbl" needs a "dns" section/],
    [
      gw + `rules:\n  - name: r\n    when: { dnsbl: { score_at_least: 1 } }\n    action: reject\n`,
      /^5: "dnsbl" needs a "dnsbl" section listing the zones/,
    ],
    [
      yaml(
        "127.0.0.1",
        "",
        `rules:\n  - name: r\n    when: { dnsbl: { listed_in: nope.test } }\n    action: reject\n`,
      ),
      /"nope.test" is not a zone of the "dnsbl" section/,
    ],
    [yaml("127.0.0.1", "  bogus: 1\n"), /unknown key "bogus" in "dnsbl"/],
    [
      `${gw}dns: { servers: [dns.example] }\ndnsbl: { client: [zen.example.org] }\n`,
      /"dns.servers": "dns.example": expected an IP address/,
    ],
    [`${gw}dns: { timeout: 1s }\n`, /"dns" needs "servers"/],
    [
      `${gw}dns: { servers: [127.0.0.1] }\ndnsbl: { client: ["zen.example.org*0"] }\n`,
      /non-zero integer/,
    ],
    [`${gw}dns: { servers: [127.0.0.1] }\ndnsbl: { timeout: 1s }\n`, /needs at least one list/],
    [
      `${gw}dns: { servers: [127.0.0.1] }\ndnsbl: { client: [a.test], on_failure: reject }\n`,
      /must be one of ignore, tempfail/,
    ],
    [
      `${gw}dns: { servers: [127.0.0.1] }\ndnsbl: { client: [a.test] }\nrules:\n  - name: r\n    when: { dnsbl: {} }\n    action: reject\n`,
      /"dnsbl" needs "score_at_least", "score_at_most" or "listed_in"/,
    ],
  ];
  for (const [text, want] of cases) {
    const errors = loadErrors(text);
    assert.ok(errors.some((e) => want.test(e)), `${want}: got ${JSON.stringify(errors)}`);
  }
  const ok = parseConfig(yaml("[2001:db8::53]:5353"), "t.yaml");
  assert.deepEqual(ok.dns?.servers, ["[2001:db8::53]:5353"]);
  assert.equal(ok.dnsbl?.onFailure, "ignore");
  assert.equal(ok.dnsbl?.timeoutSeconds, 5);
  const summary = summarizeConfig(ok);
  assert.match(summary, /dns: ask \[2001:db8::53\]:5353/);
  assert.match(summary, /dnsbl: client IP in bl\.test=127\.0\.0\.\[2\.\.11\]\*3, wl\.test/);
  assert.match(summary, /dnsbl score ≥ 3 → reject/);
});

Deno.test("dnsbl rules against a real dnsmasq: listed → reject, allowlisted → forward, listed_in names the zone", async () => {
  const dns = await startDnsmasq(DNSBL_RECORDS);
  const log = new MemoryLog();
  const engine = new PolicyEngine(parseConfig(yaml(dns.server), "t.yaml"), log);
  try {
    assert.equal(engine.looksUp, true);
    const listed = await engine.judge(MESSAGE, envelope("192.0.2.66"));
    assert.equal(listed.action, "reject");
    assert.equal(listed.rule, "dnsbl-reject");
    assert.equal(listed.evidence, 'dnsbl score "3 (bl.test: client 192.0.2.66 → 127.0.0.2 (+3))"');
    const [line] = log.named("policy.verdict");
    assert.equal(line.fields.dnsbl_score, 3);
    assert.deepEqual(line.fields.dnsbl_listed, ["bl.test: client 192.0.2.66 → 127.0.0.2 (+3)"]);
    assert.equal(typeof line.fields.dnsbl_ms, "number");

    const v6 = await engine.judge(MESSAGE, envelope("2001:db8::66"));
    assert.equal(v6.action, "reject");

    // Listed in bl.test (+3) and in the allowlist wl.test (-5): score -2, forwarded.
    const allowed = await engine.judge(MESSAGE, envelope("192.0.2.88"));
    assert.equal(allowed.action, "forward");

    const clean = await engine.judge(MESSAGE, envelope("192.0.2.10"));
    assert.equal(clean.action, "forward");
    assert.equal(clean.evidence, undefined);

    const domain = await engine.judge(MESSAGE, envelope("192.0.2.10", "eve@spammer.example"));
    assert.equal(domain.action, "quarantine");
    assert.equal(domain.rule, "bad-sender-domain");
    assert.match(
      domain.evidence ?? "",
      /dbl\.test: sender domain spammer\.example → 127\.0\.1\.2 \(\+2\)/,
    );
    assert.equal(log.named("dnsbl.failed").length, 0);
  } finally {
    engine.close();
    await dns.stop();
  }
});

Deno.test("a failed look-up: on_failure ignore counts it as not listed (logged), tempfail answers 451 4.4.3", async () => {
  const s = dgram.createSocket("udp4");
  const port = await new Promise<number>((resolve) =>
    s.bind(0, "127.0.0.1", () => resolve(s.address().port))
  );
  try {
    const server = `127.0.0.1:${port}`;
    const ignoring = new MemoryLog();
    const e1 = new PolicyEngine(
      parseConfig(yaml(server, "  timeout: 200ms\n"), "t.yaml"),
      ignoring,
    );
    try {
      const v = await e1.judge(MESSAGE, envelope("192.0.2.66"));
      assert.equal(v.action, "forward");
      const failed = ignoring.named("dnsbl.failed");
      assert.equal(failed.length, 3);
      assert.equal(failed[0].fields.zone, "bl.test");
      assert.equal(failed[0].fields.on_failure, "ignore");
    } finally {
      e1.close();
    }
    const e2 = new PolicyEngine(
      parseConfig(yaml(server, "  timeout: 200ms\n  on_failure: tempfail\n"), "t.yaml"),
      new MemoryLog(),
    );
    try {
      const v = await e2.judge(MESSAGE, envelope("192.0.2.66"));
      assert.equal(v.action, "tempfail");
      assert.equal(v.rule, "dnsbl-failed");
      assert.deepEqual(v.action === "tempfail" ? v.reply : undefined, {
        code: 451,
        enhanced: "4.4.3",
        text: "DNS list lookup failed, try again later",
      });
      assert.match(
        v.evidence ?? "",
        /bl\.test: client 192\.0\.2\.66 FAILED: no answer within the dnsbl timeout/,
      );
    } finally {
      e2.close();
    }
  } finally {
    s.close();
  }
});

Deno.test("on_failure tempfail: a score test holds only if it would whatever the failed lists said", async () => {
  // bl.test answers; the allowlist zone is served by nobody (REFUSED by dnsmasq: no upstream).
  const dns = await startDnsmasq(DNSBL_RECORDS.filter((l) => !l.includes("wl.test")));
  const text = yaml(dns.server, "  on_failure: tempfail\n");
  const engine = new PolicyEngine(parseConfig(text, "t.yaml"), new MemoryLog());
  try {
    // +3 listed, the -5 allowlist unknown: the score is between -2 and 3, so "at least 3" is
    // undecided, the rule does not match, and the failure verdict applies.
    const v = await engine.judge(MESSAGE, envelope("192.0.2.66"));
    assert.equal(v.action, "tempfail");
    assert.equal(v.rule, "dnsbl-failed");
  } finally {
    engine.close();
    await dns.stop();
  }
});

Deno.test("a rule set without dnsbl looks nothing up, and the allowlist wins over a listing", async () => {
  const dns = await startDnsmasq(DNSBL_RECORDS);
  try {
    const none = new PolicyEngine(
      parseConfig(yaml(dns.server, "", "rules: []\n"), "t.yaml"),
      new MemoryLog(),
    );
    assert.equal(none.looksUp, false);
    assert.equal((await none.judge(MESSAGE, envelope("192.0.2.66"))).action, "forward");
    none.close();
    assert.equal(await dns.queries(), 0);
    const allow = new PolicyEngine(
      parseConfig(yaml(dns.server, "allowlist: { clients: [192.0.2.66] }\n"), "t.yaml"),
      new MemoryLog(),
    );
    const v = await allow.judge(MESSAGE, envelope("192.0.2.66"));
    assert.equal(v.action, "forward");
    assert.equal(v.rule, "allowlist");
    allow.close();
  } finally {
    await dns.stop();
  }
});

Deno.test("ssg explain looks the envelope up and shows every answer", async () => {
  const dns = await startDnsmasq(DNSBL_RECORDS);
  try {
    const e = await explainMessage(parseConfig(yaml(dns.server), "t.yaml"), MESSAGE, {
      client: "192.0.2.66",
      from: "eve@spammer.example",
    });
    assert.equal(e.dnsbl?.score, 5);
    assert.equal(e.verdict.action, "reject");
    const text = renderExplanation(e);
    assert.match(text, /^dns lists: score 5$/m);
    assert.match(
      text,
      /^ {2}bl\.test: client 192\.0\.2\.66 → 127\.0\.0\.2 \(\+3\) \[66\.2\.0\.192\.bl\.test\]$/m,
    );
    assert.match(
      text,
      /^ {2}wl\.test: client 192\.0\.2\.66 not listed \[66\.2\.0\.192\.wl\.test\]$/m,
    );
    assert.match(text, /dbl\.test: sender domain spammer\.example → 127\.0\.1\.2 \(\+2\)/);
    assert.match(text, /dnsbl score at least 3/);
  } finally {
    await dns.stop();
  }
});
