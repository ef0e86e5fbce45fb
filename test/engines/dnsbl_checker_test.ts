/**
 * DnsblChecker against a real dnsmasq (test/engines/dns_fixture.ts) holding a block list, an
 * allow list and a domain list the test writes.
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import type { DnsblConfig } from "../../src/config/config.ts";
import {
  describeLookup,
  DnsblChecker,
  lookupDomain,
  reversedIp,
} from "../../src/engines/dns/dnsbl_checker.ts";
import { parseDnsblSite } from "../../src/engines/dns/dnsbl_site.ts";
import { createResolver } from "../../src/engines/dns/resolver.ts";
import { DNSBL_RECORDS, startDnsmasq } from "./dns_fixture.ts";

function config(more: Partial<DnsblConfig> = {}): DnsblConfig {
  return {
    client: [
      parseDnsblSite("bl.test=127.0.0.[2..11]*3"),
      parseDnsblSite("wl.test=127.0.[0..255].[1..3]*-5"),
    ],
    senderDomain: [parseDnsblSite("dbl.test=127.0.1.[2..99]*2")],
    helo: [parseDnsblSite("dbl.test*1")],
    timeoutSeconds: 5,
    onFailure: "ignore",
    ...more,
  };
}

Deno.test("reversedIp: IPv4 octets, IPv6 nibbles, IPv4-mapped IPv6 as IPv4", () => {
  assert.equal(reversedIp("192.0.2.66"), "66.2.0.192");
  assert.equal(
    reversedIp("2001:db8::66"),
    "6.6.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2",
  );
  assert.equal(reversedIp("::ffff:192.0.2.66"), "66.2.0.192");
  assert.equal(reversedIp("not-an-ip"), undefined);
  assert.equal(lookupDomain("Mail.Example.ORG."), "mail.example.org");
  assert.equal(lookupDomain("[192.0.2.1]"), undefined);
  assert.equal(lookupDomain("192.0.2.1"), undefined);
  assert.equal(lookupDomain("bücher.example"), "xn--bcher-kva.example");
  assert.equal(lookupDomain("bad name"), undefined);
  assert.equal(lookupDomain(""), undefined);
});

Deno.test("DnsblChecker scores client IPs, sender domains and HELO names against a real dnsmasq", async () => {
  const dns = await startDnsmasq(DNSBL_RECORDS);
  const resolver = createResolver({
    servers: [dns.server],
    timeoutMs: 2000,
    retries: 1,
    cacheMaxEntries: 1000,
    cacheMaxTtlSeconds: 3600,
    negativeTtlSeconds: 60,
  });
  try {
    const c = new DnsblChecker(config(), resolver);
    const cases: [
      string,
      { clientIp?: string; sender?: string; helo?: string },
      number,
      string[],
    ][] = [
      ["an unlisted client", { clientIp: "192.0.2.10" }, 0, []],
      ["a listed client", { clientIp: "192.0.2.66" }, 3, ["bl.test"]],
      ["a listed IPv6 client", { clientIp: "2001:db8::66" }, 3, ["bl.test"]],
      ["a reply outside the filter", { clientIp: "192.0.2.77" }, 0, []],
      ["listed and allowlisted", { clientIp: "192.0.2.88" }, -2, ["bl.test", "wl.test"]],
      ["a listed sender domain", { sender: "eve@Spammer.Example" }, 2, ["dbl.test"]],
      ["a listed HELO name", { helo: "bad-helo.example" }, 1, ["dbl.test"]],
      ["a HELO address literal is not looked up", { helo: "[192.0.2.66]" }, 0, []],
      [
        "everything at once",
        { clientIp: "192.0.2.66", sender: "x@spammer.example", helo: "bad-helo.example" },
        6,
        ["bl.test", "dbl.test", "dbl.test"],
      ],
    ];
    for (const [what, subjects, score, zones] of cases) {
      const r = await c.check(subjects);
      assert.equal(r.score, score, what);
      assert.deepEqual(r.hits.map((h) => h.zone), zones, what);
      assert.equal(r.failures.length, 0, what);
    }
    const one = await c.check({ clientIp: "192.0.2.66" });
    assert.equal(
      describeLookup(one.hits[0]),
      "bl.test: client 192.0.2.66 → 127.0.0.2 (+3)",
    );
    // A list's refusal code is a failure, not a listing.
    const refused = await c.check({ clientIp: "192.0.2.99" });
    assert.equal(refused.score, 0);
    assert.equal(refused.failures.length, 1);
    assert.match(refused.failures[0].reason ?? "", /refused the query \(127\.255\.255\.254\)/);
  } finally {
    resolver.close?.();
    await dns.stop();
  }
});

Deno.test("prefetch starts the look-ups early: check() then asks the server nothing more", async () => {
  const dns = await startDnsmasq(DNSBL_RECORDS);
  const resolver = createResolver({
    servers: [dns.server],
    timeoutMs: 2000,
    retries: 1,
    cacheMaxEntries: 1000,
    cacheMaxTtlSeconds: 3600,
    negativeTtlSeconds: 60,
  });
  try {
    const c = new DnsblChecker(config(), resolver);
    c.prefetch({ clientIp: "192.0.2.66" });
    c.prefetch({ helo: "bad-helo.example" });
    c.prefetch({ sender: "x@spammer.example" });
    const r = await c.check({
      clientIp: "192.0.2.66",
      sender: "x@spammer.example",
      helo: "bad-helo.example",
    });
    assert.equal(r.score, 6);
    assert.equal(await dns.queries("66.2.0.192.bl.test"), 1);
    assert.equal(await dns.queries("66.2.0.192.wl.test"), 1);
    // The same name serves sender_domain and helo lists alike: still one query each.
    assert.equal(await dns.queries("spammer.example.dbl.test"), 1);
    assert.equal(await dns.queries("bad-helo.example.dbl.test"), 1);
  } finally {
    resolver.close?.();
    await dns.stop();
  }
});

Deno.test("a silent resolver: every look-up fails within dnsbl.timeout, none counts as listed", async () => {
  const s = dgram.createSocket("udp4");
  const port = await new Promise<number>((resolve) =>
    s.bind(0, "127.0.0.1", () => resolve(s.address().port))
  );
  const resolver = createResolver({
    servers: [`127.0.0.1:${port}`],
    timeoutMs: 5000,
    retries: 0,
    cacheMaxEntries: 10,
    cacheMaxTtlSeconds: 60,
    negativeTtlSeconds: 60,
  });
  try {
    const c = new DnsblChecker(config({ timeoutSeconds: 0.2 }), resolver);
    const r = await c.check({ clientIp: "192.0.2.66", sender: "a@spammer.example" });
    assert.equal(r.score, 0);
    assert.equal(r.hits.length, 0);
    assert.equal(r.failures.length, 3);
    assert.match(r.failures[0].reason ?? "", /no answer within the dnsbl timeout of 0.2 s/);
  } finally {
    resolver.close?.();
    s.close();
  }
});
