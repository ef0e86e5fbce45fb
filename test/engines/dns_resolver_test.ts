import assert from "node:assert/strict";
import dgram from "node:dgram";
import {
  createResolver,
  type DnsResolver,
  normalizeName,
  parseDnsServer,
  type ResolverConfig,
} from "../../src/engines/dns/resolver.ts";
import { startDnsmasq } from "./dns_fixture.ts";
import dnsPacket from "dns-packet";

const LONG = "x".repeat(200);
const RECORDS = [
  "local=/example.test/",
  "host-record=mail.example.test,192.0.2.10,2001:db8::10",
  "host-record=v4only.example.test,192.0.2.11",
  'txt-record=multi.example.test,"v=spf1 ","ip4:192.0.2.0/24 ","-all"',
  'txt-record=two.example.test,"first"',
  'txt-record=two.example.test,"second"',
  `txt-record=big.example.test,"${LONG}","${LONG}","${LONG}"`,
  "mx-host=example.test,mail.example.test,10",
  "ptr-record=10.2.0.192.in-addr.arpa,mail.example.test",
  "cname=alias.example.test,mail.example.test",
];

function resolver(server: string, more: Partial<ResolverConfig> = {}): DnsResolver {
  return createResolver({
    servers: [server],
    timeoutMs: 3000,
    retries: 1,
    cacheMaxEntries: 100,
    cacheMaxTtlSeconds: 3600,
    negativeTtlSeconds: 60,
    ...more,
  });
}

/** A UDP socket that reads questions and never answers (closed by the test). */
async function silentServer(): Promise<{ server: string; close(): void }> {
  const s = dgram.createSocket("udp4");
  const port = await new Promise<number>((resolve) =>
    s.bind(0, "127.0.0.1", () => resolve(s.address().port))
  );
  s.on("message", () => {});
  return { server: `127.0.0.1:${port}`, close: () => s.close() };
}

Deno.test("resolver answers A, AAAA, TXT, MX, PTR, CNAME, NXDOMAIN and NODATA from a real dnsmasq", async () => {
  const dns = await startDnsmasq(RECORDS);
  const r = resolver(dns.server);
  try {
    const cases: [string, Parameters<DnsResolver["query"]>[1], string, string[]][] = [
      ["mail.example.test", "A", "ok", ["192.0.2.10"]],
      ["MAIL.Example.Test.", "A", "ok", ["192.0.2.10"]],
      ["mail.example.test", "AAAA", "ok", ["2001:db8::10"]],
      ["multi.example.test", "TXT", "ok", ["v=spf1 ip4:192.0.2.0/24 -all"]],
      ["example.test", "MX", "ok", ["10 mail.example.test"]],
      ["10.2.0.192.in-addr.arpa", "PTR", "ok", ["mail.example.test"]],
      ["alias.example.test", "CNAME", "ok", ["mail.example.test"]],
      ["alias.example.test", "A", "ok", ["192.0.2.10"]],
      ["missing.example.test", "A", "nxdomain", []],
      ["v4only.example.test", "AAAA", "nodata", []],
    ];
    for (const [name, type, status, records] of cases) {
      const a = await r.query(name, type);
      assert.equal(a.status, status, `${type} ${name}: ${a.reason}`);
      assert.deepEqual(a.records, records, `${type} ${name}`);
      assert.ok(a.ttlSeconds > 0, `${type} ${name}: ttl ${a.ttlSeconds}`);
    }
    const multi = await r.query("multi.example.test", "TXT");
    assert.deepEqual(multi.txt, [["v=spf1 ", "ip4:192.0.2.0/24 ", "-all"]]);
    const two = await r.query("two.example.test", "TXT");
    assert.deepEqual([...two.records].sort(), ["first", "second"]);
    assert.equal(two.txt?.length, 2);
  } finally {
    r.close?.();
    await dns.stop();
  }
});

Deno.test("resolver retries a truncated UDP answer over TCP", async () => {
  const dns = await startDnsmasq(RECORDS);
  try {
    const r = resolver(dns.server);
    const a = await r.query("big.example.test", "TXT");
    assert.equal(a.status, "ok", a.reason ?? "");
    assert.deepEqual(a.txt, [[LONG, LONG, LONG]]);
    // Once over UDP (truncated), once over TCP.
    assert.equal(await dns.queries("big.example.test"), 2);
    r.close?.();
    const noTcp = resolver(dns.server, { tcpFallback: false });
    const b = await noTcp.query("big.example.test", "TXT");
    // Without TCP the truncated answer is taken as it came: whatever fitted, never more.
    assert.ok(b.status === "ok" || b.status === "nodata");
    noTcp.close?.();
  } finally {
    await dns.stop();
  }
});

Deno.test("resolver over IPv6 loopback", async () => {
  const dns = await startDnsmasq(RECORDS, { address: "::1" });
  const r = resolver(dns.server);
  try {
    const a = await r.query("mail.example.test", "A");
    assert.equal(a.status, "ok", a.reason ?? "");
    assert.deepEqual(a.records, ["192.0.2.10"]);
  } finally {
    r.close?.();
    await dns.stop();
  }
});

Deno.test("resolver gives status error (never throws) for a silent server, REFUSED, bad names and aborts", async () => {
  const silent = await silentServer();
  const dns = await startDnsmasq(RECORDS);
  try {
    const r = resolver(silent.server, { timeoutMs: 150, retries: 1 });
    const a = await r.query("mail.example.test", "A");
    assert.equal(a.status, "error");
    assert.match(a.reason ?? "", /no answer within 150 ms/);
    r.close?.();

    // A silent first server, a real second one: the answer still comes.
    const both = createResolver({
      servers: [silent.server, dns.server],
      timeoutMs: 150,
      retries: 0,
      cacheMaxEntries: 10,
      cacheMaxTtlSeconds: 60,
      negativeTtlSeconds: 60,
    });
    assert.equal((await both.query("mail.example.test", "A")).status, "ok");
    both.close?.();

    // dnsmasq has no upstream: a name outside its local data is refused.
    const real = resolver(dns.server, { retries: 0 });
    const refused = await real.query("www.elsewhere.invalid", "A");
    assert.equal(refused.status, "error");
    assert.match(refused.reason ?? "", /REFUSED|SERVFAIL/);
    const bad = await real.query("a..b", "A");
    assert.equal(bad.status, "error");
    assert.equal((await real.query("x".repeat(64) + ".test", "A")).status, "error");
    real.close?.();

    // At most two questions under way: a third distinct one fails at once.
    const few = resolver(silent.server, { timeoutMs: 300, retries: 0, maxInFlight: 2 });
    const pending = [few.query("a.example.test", "A"), few.query("b.example.test", "A")];
    const third = await few.query("c.example.test", "A");
    assert.equal(third.status, "error");
    assert.match(third.reason ?? "", /over 2 questions under way/);
    assert.ok((await Promise.all(pending)).every((a) => a.status === "error"));
    few.close?.();

    const slow = resolver(silent.server, { timeoutMs: 5000, retries: 0 });
    const ac = new AbortController();
    const p = slow.query("mail.example.test", "A", ac.signal);
    ac.abort();
    const aborted = await p;
    assert.equal(aborted.status, "error");
    assert.equal(aborted.reason, "aborted");
    slow.close?.();
  } finally {
    silent.close();
    await dns.stop();
  }
});

Deno.test("resolver caches answers for their TTL, shares identical questions in flight, and bounds the cache", async () => {
  const dns = await startDnsmasq(RECORDS);
  try {
    const r = resolver(dns.server);
    const first = await r.query("mail.example.test", "A");
    assert.equal(first.cached, undefined);
    assert.equal(first.ttlSeconds, 300);
    const again = await r.query("mail.example.test", "A");
    assert.equal(again.cached, true);
    assert.ok(again.ttlSeconds > 0 && again.ttlSeconds <= 300);
    assert.equal(await dns.queries("mail.example.test"), 1);

    // Negative answers are cached too (dnsmasq's NXDOMAIN for a local= domain has no SOA: the
    // configured negative TTL applies).
    assert.equal((await r.query("missing.example.test", "A")).status, "nxdomain");
    const neg = await r.query("missing.example.test", "A");
    assert.equal(neg.cached, true);
    assert.ok(neg.ttlSeconds <= 60);
    assert.equal(await dns.queries("missing.example.test"), 1);

    // Five identical questions at once: one query reaches the server.
    const all = await Promise.all(
      Array.from({ length: 5 }, () => r.query("v4only.example.test", "A")),
    );
    assert.ok(all.every((a) => a.status === "ok"));
    assert.equal(await dns.queries("v4only.example.test"), 1);
    r.close?.();

    // At most two entries: the oldest goes first.
    const small = resolver(dns.server, { cacheMaxEntries: 2 });
    for (const n of ["multi.example.test", "two.example.test", "alias.example.test"]) {
      await small.query(n, "TXT");
    }
    assert.equal((await small.query("alias.example.test", "TXT")).cached, true);
    assert.equal((await small.query("multi.example.test", "TXT")).cached, undefined);
    small.close?.();

    // The TTL cap: a 300 s answer is kept at most 1 s.
    const capped = resolver(dns.server, { cacheMaxTtlSeconds: 1 });
    await capped.query("example.test", "MX");
    assert.equal((await capped.query("example.test", "MX")).cached, true);
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal((await capped.query("example.test", "MX")).cached, undefined);
    capped.close?.();

    // No cache at all.
    const none = resolver(dns.server, { cacheMaxEntries: 0 });
    await none.query("mail.example.test", "AAAA");
    assert.equal((await none.query("mail.example.test", "AAAA")).cached, undefined);
    none.close?.();
  } finally {
    await dns.stop();
  }
});

Deno.test("resolver respects a record's own short TTL", async () => {
  const dns = await startDnsmasq(RECORDS, { localTtl: 1 });
  const r = resolver(dns.server);
  try {
    const a = await r.query("mail.example.test", "A");
    assert.equal(a.ttlSeconds, 1);
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal((await r.query("mail.example.test", "A")).cached, undefined);
    assert.equal(await dns.queries("mail.example.test"), 2);
  } finally {
    r.close?.();
    await dns.stop();
  }
});

Deno.test("parseDnsServer and normalizeName", () => {
  assert.deepEqual(parseDnsServer("192.0.2.1"), { hostname: "192.0.2.1", port: 53, family: 4 });
  assert.deepEqual(parseDnsServer("192.0.2.1:5353"), {
    hostname: "192.0.2.1",
    port: 5353,
    family: 4,
  });
  assert.deepEqual(parseDnsServer("[2001:db8::1]:53"), {
    hostname: "2001:db8::1",
    port: 53,
    family: 6,
  });
  assert.deepEqual(parseDnsServer("2001:DB8::1"), { hostname: "2001:db8::1", port: 53, family: 6 });
  for (const bad of ["dns.example", "192.0.2.1:0", "192.0.2.1:65536", "300.1.1.1", "[x]:53", ""]) {
    assert.throws(() => parseDnsServer(bad), RangeError, bad);
  }
  assert.equal(normalizeName("A.Example.ORG."), "a.example.org");
  assert.equal(normalizeName("_dmarc.example.org"), "_dmarc.example.org");
  assert.equal(normalizeName("a..b"), undefined);
  assert.equal(normalizeName("bad name.org"), undefined);
  assert.equal(normalizeName("é.org"), undefined);
});

Deno.test("resolver ignores garbage, a wrong id and a wrong question, and takes the real answer", async () => {
  const s = dgram.createSocket("udp4");
  const port = await new Promise<number>((resolve) =>
    s.bind(0, "127.0.0.1", () => resolve(s.address().port))
  );
  s.on("message", (msg: Uint8Array, from: { address: string; port: number }) => {
    const q = dnsPacket.decode(msg);
    const reply = (id: number, name: string) =>
      dnsPacket.encode({
        type: "response",
        id,
        flags: dnsPacket.RECURSION_DESIRED,
        questions: [{ type: "A", name, class: "IN" }],
        answers: [{ type: "A", name, ttl: 60, class: "IN", data: "192.0.2.99" }],
      });
    s.send(new Uint8Array([1, 2, 3]), from.port, from.address);
    s.send(reply((q.id! + 1) & 0xffff, q.questions![0].name), from.port, from.address);
    s.send(reply(q.id!, "other.example.test"), from.port, from.address);
    s.send(reply(q.id!, q.questions![0].name), from.port, from.address);
  });
  const r = resolver(`127.0.0.1:${port}`, { retries: 0 });
  try {
    const a = await r.query("spoof.example.test", "A");
    assert.equal(a.status, "ok", a.reason ?? "");
    assert.deepEqual(a.records, ["192.0.2.99"]);
  } finally {
    r.close?.();
    s.close();
  }
});
