/**
 * `spf`, `dkim`, `dmarc` and `arc` through the policy engine with a real dnsmasq
 * (test/engines/dns_fixture.ts) serving SPF, DKIM key and DMARC records the test writes, and
 * messages the test signs: DMARC fail → the rule's reject, pass → forward with our
 * Authentication-Results on the verdict, DNS down → `auth.on_failure`, a policy that tests
 * nothing and adds no header never asks the DNS, and `ssg explain` shows the results.
 */
import assert from "node:assert/strict";
import { parseConfig } from "../../src/config/load_config.ts";
import { createResolver, type DnsResolver } from "../../src/engines/dns/resolver.ts";
import { MemoryLog } from "../../src/log/log.ts";
import { explainMessage, renderExplanation } from "../../src/policy/explain.ts";
import { PolicyEngine } from "../../src/policy/policy_engine.ts";
import type { Envelope } from "../../src/policy/verdict.ts";
import { startDnsmasq, type TestDns } from "../engines/dns_fixture.ts";
import {
  type AuthKeys,
  authZone,
  bytes,
  dkimSigned,
  makeKey,
  message,
} from "../engines/auth_fixture.ts";

const ENVELOPE: Envelope = {
  mailFrom: "alice@example.org",
  rcptTo: ["bob@corp.example"],
  client: { ip: "203.0.113.9", port: 40000 },
  server: { ip: "198.51.100.25", port: 25 },
  helo: "mx.example.org",
  tls: false,
  sessionId: "S1",
  transactionId: "S1.1",
};

const RULES = `rules:
  - name: dmarc-reject
    when: { dmarc: { result: fail, policy: reject } }
    action: reject
    reply: { code: 550, enhanced: "5.7.1", text: "DMARC policy of the From domain says reject" }
  - name: spf-soft
    when: { spf: [softfail, neutral] }
    action: tag
    tag: { header: "X-Spam-Flag: SPF" }
`;

function configFor(auth: string, rules = RULES) {
  return parseConfig(
    `gateway:\n  protect: [198.51.100.0/24]\n  hostname: gw.corp.example\n` +
      `dns:\n  servers: ["127.0.0.1:1"]\n${auth}${rules}`,
    "t.yaml",
  );
}

function resolverFor(server: string, timeoutMs = 2000): DnsResolver {
  return createResolver({
    servers: [server],
    timeoutMs,
    retries: 0,
    cacheMaxEntries: 1000,
    cacheMaxTtlSeconds: 60,
    negativeTtlSeconds: 60,
  });
}

async function withZone(
  fn: (dns: TestDns, resolver: DnsResolver, keys: AuthKeys) => Promise<void>,
): Promise<void> {
  const keys = { org: makeKey(), arc: makeKey() };
  const dns = await startDnsmasq(authZone(keys));
  const resolver = resolverFor(dns.server);
  try {
    await fn(dns, resolver, keys);
  } finally {
    resolver.close?.();
    await dns.stop();
  }
}

Deno.test("dmarc: { result: fail, policy: reject } rejects an unsigned message from an address SPF refuses", async () => {
  await withZone(async (_dns, resolver) => {
    const log = new MemoryLog();
    const engine = new PolicyEngine(configFor("auth:\n"), log, { resolver });
    try {
      const v = await engine.judge(bytes(message("alice@example.org")), ENVELOPE);
      assert.equal(v.action, "reject");
      assert.equal(v.rule, "dmarc-reject");
      assert.equal(v.evidence, 'dmarc is "fail policy=reject"');
      const [line] = log.named("policy.verdict");
      assert.equal(line.fields.auth, "spf=fail,dkim=none,dmarc=fail:reject,arc=none");
      assert.equal(typeof line.fields.auth_ms, "number");
    } finally {
      engine.close();
    }
  });
});

Deno.test("a signed message passes DMARC, is forwarded, and carries our Authentication-Results", async () => {
  await withZone(async (_dns, resolver, keys) => {
    const engine = new PolicyEngine(configFor("auth:\n"), new MemoryLog(), { resolver });
    try {
      const signed = await dkimSigned(message("alice@example.org"), keys.org);
      const v = await engine.judge(bytes(signed), ENVELOPE);
      assert.equal(v.action, "forward");
      assert.equal(v.authResults?.authservId, "gw.corp.example");
      assert.match(
        v.authResults?.value ?? "",
        /^gw\.corp\.example; dkim=pass header\.i=@example\.org /,
      );
      assert.match(v.authResults?.value ?? "", /; spf=fail .*; arc=none; dmarc=pass /);
    } finally {
      engine.close();
    }
  });
});

Deno.test("SPF started at MAIL FROM (startChecks) is what the judge uses", async () => {
  await withZone(async (dns, resolver) => {
    const engine = new PolicyEngine(configFor("auth:\n"), new MemoryLog(), { resolver });
    try {
      const early = engine.startChecks({
        mailFrom: "bob@soft.example.net",
        helo: "mx.soft.example.net",
        client: ENVELOPE.client,
        sessionId: "S1",
        transactionId: "S1.1",
      });
      assert.ok(early?.spf);
      assert.equal((await early.spf).result, "softfail");
      const asked = await dns.queries("soft.example.net");
      const v = await engine.judge(bytes(message("bob@soft.example.net")), {
        ...ENVELOPE,
        mailFrom: "bob@soft.example.net",
        early,
      });
      // DMARC p=quarantine fails, but the rule asks for reject: only the tag rule matches.
      assert.equal(v.action, "forward");
      assert.deepEqual(v.tag?.headers, [{ name: "X-Spam-Flag", value: "SPF" }]);
      assert.equal(await dns.queries("soft.example.net"), asked, "SPF not asked again");
    } finally {
      engine.close();
    }
  });
});

Deno.test("dkim: { result: pass, domain } holds only for a valid signature of that domain", async () => {
  await withZone(async (_dns, resolver, keys) => {
    const rules = `rules:
  - name: signed-by-org
    when: { dkim: { result: pass, domain: Example.ORG } }
    action: discard
  - name: signed-by-other
    when: { dkim: { result: pass, domain: example.net } }
    action: reject
`;
    const engine = new PolicyEngine(configFor("auth:\n", rules), new MemoryLog(), { resolver });
    try {
      const signed = await dkimSigned(message("alice@example.org"), keys.org);
      const v = await engine.judge(bytes(signed), ENVELOPE);
      assert.equal(v.action, "discard");
      assert.equal(v.evidence, 'dkim is "pass d=example.org"');
      const plain = await engine.judge(bytes(message("alice@example.org")), ENVELOPE);
      assert.equal(plain.action, "forward");
    } finally {
      engine.close();
    }
  });
});

Deno.test("DNS down: a message a rule tests gets auth.on_failure (tempfail 451 4.4.3 by default), each verdict", async () => {
  const keys = { org: makeKey(), arc: makeKey() };
  const dns = await startDnsmasq(authZone(keys));
  await dns.stop();
  const resolver = resolverFor(dns.server, 300);
  try {
    const cases: [string, string, number | undefined][] = [
      ["", "tempfail", 451],
      ["  on_failure: reject\n", "reject", 554],
      ["  on_failure: quarantine\n", "quarantine", undefined],
      ["  on_failure: forward\n", "forward", undefined],
    ];
    for (const [extra, action, code] of cases) {
      const engine = new PolicyEngine(
        configFor(`auth:\n  timeout: 2s\n${extra}`),
        new MemoryLog(),
        { resolver },
      );
      try {
        const v = await engine.judge(bytes(message("alice@example.org")), ENVELOPE);
        assert.equal(v.action, action, extra);
        if (action !== "forward") {
          assert.equal(v.rule, "auth-failed");
          assert.match(v.evidence ?? "", /sender authentication failed: .*spf: /);
        }
        if (v.action === "tempfail") {
          assert.deepEqual([v.reply.code, v.reply.enhanced], [451, "4.4.3"]);
        }
        if (v.action === "reject") assert.equal(v.reply.code, code);
        // The header still tells the server what happened.
        if (v.action === "forward") assert.match(v.authResults?.value ?? "", /spf=temperror/);
      } finally {
        engine.close();
      }
    }
  } finally {
    resolver.close?.();
  }
});

Deno.test("a temperror never overrides a rule that stopped the message, nor the allowlist", async () => {
  const dead: DnsResolver = {
    query: () => Promise.resolve({ status: "error", records: [], ttlSeconds: 0, reason: "down" }),
  };
  const rules = `allowlist: { clients: [192.0.2.0/24] }
rules:
  - name: lottery
    when: { subject: { contains: lottery } }
    action: discard
  - name: spf
    when: { spf: fail }
    action: reject
`;
  const engine = new PolicyEngine(configFor("", rules), new MemoryLog(), { resolver: dead });
  try {
    const stopped = await engine.judge(bytes(message("a@example.org", "lottery win")), ENVELOPE);
    assert.equal(stopped.action, "discard");
    const allowed = await engine.judge(bytes(message("a@example.org")), {
      ...ENVELOPE,
      client: { ip: "192.0.2.7", port: 1 },
    });
    assert.equal(allowed.action, "forward");
    assert.equal(allowed.rule, "allowlist");
    const other = await engine.judge(bytes(message("a@example.org")), ENVELOPE);
    assert.equal(other.action, "tempfail");
  } finally {
    engine.close();
  }
});

Deno.test("a policy that tests no auth result and adds no header never asks the DNS; add_header alone verifies", async () => {
  let asked = 0;
  const counting: DnsResolver = {
    query: () => {
      asked++;
      return Promise.resolve({ status: "nxdomain", records: [], ttlSeconds: 0 });
    },
  };
  const none = new PolicyEngine(
    configFor("auth:\n  add_header: false\n", "rules: []\n"),
    new MemoryLog(),
    { resolver: counting },
  );
  try {
    assert.equal(none.authenticates, false);
    const v = await none.judge(bytes(message("a@example.org")), ENVELOPE);
    assert.equal(v.action, "forward");
    assert.equal(asked, 0);
    // Forged fields with our id are still removed: the id travels on the verdict.
    assert.deepEqual(v.authResults, { authservId: "gw.corp.example" });
  } finally {
    none.close();
  }
  const header = new PolicyEngine(configFor("auth:\n", "rules: []\n"), new MemoryLog(), {
    resolver: counting,
  });
  try {
    const v = await header.judge(bytes(message("a@example.org")), ENVELOPE);
    assert.ok(asked > 0);
    assert.match(v.authResults?.value ?? "", /^gw\.corp\.example; dkim=none/);
  } finally {
    header.close();
  }
  const absent = new PolicyEngine(configFor("", "rules: []\n"), new MemoryLog(), {
    resolver: counting,
  });
  try {
    assert.equal(absent.authenticates, false);
    assert.equal(
      (await absent.judge(bytes(message("a@example.org")), ENVELOPE)).authResults,
      undefined,
    );
  } finally {
    absent.close();
  }
});

Deno.test("ssg explain verifies the sender and shows each result and the header added", async () => {
  await withZone(async (_dns, resolver, keys) => {
    const config = configFor("auth:\n");
    const signed = await dkimSigned(message("alice@example.org"), keys.org);
    const e = await explainMessage(config, bytes(signed), {
      client: "192.0.2.25",
      from: "alice@example.org",
      helo: "mx.example.org",
    }, { resolver });
    assert.equal(e.auth?.spf?.result, "pass");
    const text = renderExplanation(e);
    assert.match(text, /sender authentication .*\n {2}spf: pass for "example\.org"/);
    assert.match(text, / {2}dkim: pass d="example\.org" s="sel" \(aligned\)/);
    assert.match(text, / {2}dmarc: pass for "example\.org", policy reject/);
    assert.match(text, / {2}arc: none/);
    assert.match(
      text,
      /1\. dmarc-reject \(reject\): no match\n {7}✗ dmarc: fail policy reject — dmarc=pass for example\.org policy=reject/,
    );
    assert.match(text, /header added: Authentication-Results: gw\.corp\.example;/);
    const bad = renderExplanation(
      await explainMessage(config, bytes(message("alice@example.org")), {
        client: "203.0.113.9",
      }, { resolver }),
    );
    assert.match(bad, /verdict: reject by dmarc-reject/);
  });
});
