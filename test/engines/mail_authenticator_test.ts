import assert from "node:assert/strict";
import { createResolver, type DnsResolver } from "../../src/engines/dns/resolver.ts";
import {
  type AuthCheck,
  type AuthResults,
  MailAuthenticator,
} from "../../src/engines/auth/mail_authenticator.ts";
import { startDnsmasq, type TestDns } from "./dns_fixture.ts";
import {
  arcSealed,
  type AuthKeys,
  authZone,
  bytes,
  dkimSigned,
  makeKey,
  message,
} from "./auth_fixture.ts";

const ALL: AuthCheck[] = ["spf", "dkim", "dmarc", "arc"];

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

function authenticator(resolver: DnsResolver, timeoutMs = 5000, checks = ALL) {
  return new MailAuthenticator({ authservId: "gw.corp.example", checks, timeoutMs, dns: resolver });
}

/** One dnsmasq with the test zone for every case of `fn`. */
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

function summary(r: AuthResults) {
  return {
    spf: r.spf?.result,
    dkim: r.dkim?.map((d) => `${d.result}${d.domain ? `:${d.domain}` : ""}`).join(","),
    dmarc: r.dmarc ? `${r.dmarc.result}${r.dmarc.policy ? `:${r.dmarc.policy}` : ""}` : undefined,
    arc: r.arc?.result,
  };
}

const GOOD_IP = "192.0.2.25";
const BAD_IP = "203.0.113.9";

Deno.test("MailAuthenticator: pass, fail, softfail, neutral and none against a real dnsmasq, messages signed by the test", async () => {
  await withZone(async (_dns, resolver, keys) => {
    const a = authenticator(resolver);
    const signed = await dkimSigned(message("alice@example.org"), keys.org);
    const cases: [string, { ip: string; helo: string; mailFrom: string }, string, object][] = [
      [
        "signed, from an address SPF allows",
        { ip: GOOD_IP, helo: "mx.example.org", mailFrom: "alice@example.org" },
        signed,
        { spf: "pass", dkim: "pass:example.org", dmarc: "pass:reject", arc: "none" },
      ],
      [
        "signed, from an address SPF refuses: DKIM alone makes DMARC pass",
        { ip: BAD_IP, helo: "mx.example.org", mailFrom: "alice@example.org" },
        signed,
        { spf: "fail", dkim: "pass:example.org", dmarc: "pass:reject", arc: "none" },
      ],
      [
        "unsigned, from an address SPF refuses: DMARC fails with p=reject",
        { ip: BAD_IP, helo: "mx.evil.example", mailFrom: "alice@example.org" },
        message("alice@example.org"),
        { spf: "fail", dkim: "none", dmarc: "fail:reject", arc: "none" },
      ],
      [
        "SPF allows the envelope but the From domain is another's: DMARC fails",
        { ip: BAD_IP, helo: "mx.soft.example.net", mailFrom: "bob@soft.example.net" },
        message("alice@example.org"),
        { spf: "softfail", dkim: "none", dmarc: "fail:reject", arc: "none" },
      ],
      [
        "softfail (~all), DMARC p=quarantine",
        { ip: BAD_IP, helo: "mx.soft.example.net", mailFrom: "bob@soft.example.net" },
        message("bob@soft.example.net"),
        { spf: "softfail", dkim: "none", dmarc: "fail:quarantine", arc: "none" },
      ],
      [
        "neutral (?all), no DMARC record",
        { ip: BAD_IP, helo: "mx.neutral.example.net", mailFrom: "n@neutral.example.net" },
        message("n@neutral.example.net"),
        { spf: "neutral", dkim: "none", dmarc: "none", arc: "none" },
      ],
      [
        "no SPF, no signature, no DMARC: none everywhere",
        { ip: BAD_IP, helo: "mx.nospf.example.com", mailFrom: "x@nospf.example.com" },
        message("x@nospf.example.com"),
        { spf: "none", dkim: "none", dmarc: "none", arc: "none" },
      ],
    ];
    for (const [what, env, text, want] of cases) {
      const r = await a.verify(bytes(text), env);
      assert.deepEqual(summary(r), want, what);
      assert.match(r.header, /^gw\.corp\.example; /, what);
      assert.doesNotMatch(r.header, /[\r\n]/, what);
    }
  });
});

Deno.test("MailAuthenticator: a changed body or header fails the signature; DMARC then fails", async () => {
  await withZone(async (_dns, resolver, keys) => {
    const a = authenticator(resolver);
    const signed = await dkimSigned(message("alice@example.org"), keys.org);
    const env = { ip: BAD_IP, helo: "mx.evil.example", mailFrom: "alice@example.org" };
    const body = await a.verify(bytes(signed.replace("Hello.", "Hallo.")), env);
    const head = await a.verify(bytes(signed.replace("Quarterly report", "Invoice")), env);
    for (const r of [body, head]) {
      assert.equal(r.dkim?.[0].domain, "example.org");
      assert.notEqual(r.dkim?.[0].result, "pass");
      assert.ok(["fail", "neutral"].includes(r.dkim![0].result), r.dkim![0].result);
      assert.equal(r.dmarc?.result, "fail");
    }
    assert.equal(head.dkim?.[0].result, "fail");
  });
});

Deno.test("MailAuthenticator: ARC pass for a message the test sealed, none for one not sealed", async () => {
  await withZone(async (_dns, resolver, keys) => {
    const a = authenticator(resolver);
    const env = { ip: GOOD_IP, helo: "mx.example.org", mailFrom: "alice@example.org" };
    const sealed = await arcSealed(message("alice@example.org"), keys.arc);
    assert.equal((await a.verify(bytes(sealed), env)).arc?.result, "pass");
    const broken = sealed.replace("Hello.", "Changed.");
    assert.equal((await a.verify(bytes(broken), env)).arc?.result, "fail");
  });
});

Deno.test("MailAuthenticator: SPF started at MAIL FROM is reused at end of data, not asked again", async () => {
  await withZone(async (dns, resolver, keys) => {
    const a = authenticator(resolver);
    const env = { ip: GOOD_IP, helo: "mx.example.org", mailFrom: "alice@example.org" };
    const early = a.startSpf(env)!;
    assert.equal((await early).result, "pass");
    const before = await dns.queries("example.org");
    const r = await a.verify(
      bytes(await dkimSigned(message("alice@example.org"), keys.org)),
      env,
      early,
    );
    assert.equal(r.spf?.result, "pass");
    assert.equal(r.dmarc?.result, "pass");
    assert.equal(await dns.queries("example.org"), before, "no new SPF query for example.org");
  });
});

Deno.test("MailAuthenticator: DNS down → temperror for SPF, DKIM and DMARC, never none or pass", async () => {
  const keys = { org: makeKey(), arc: makeKey() };
  const dns = await startDnsmasq(authZone(keys));
  const signed = await dkimSigned(message("alice@example.org"), keys.org);
  await dns.stop(); // nothing listens any more on its port
  const resolver = resolverFor(dns.server, 500);
  try {
    const a = authenticator(resolver, 5000);
    const r = await a.verify(bytes(signed), {
      ip: GOOD_IP,
      helo: "mx.example.org",
      mailFrom: "alice@example.org",
    });
    assert.equal(r.spf?.result, "temperror");
    assert.equal(r.dkim?.[0].result, "temperror");
    assert.equal(r.dmarc?.result, "temperror");
    assert.match(r.header, /spf=temperror/);
  } finally {
    resolver.close?.();
  }
});

Deno.test("MailAuthenticator: a resolver that never answers is cut off by the deadline (temperror)", async () => {
  const keys = { org: makeKey(), arc: makeKey() };
  const signed = await dkimSigned(message("alice@example.org"), keys.org);
  const pending: (() => void)[] = [];
  const silent: DnsResolver = {
    query: (_n, _t, signal) =>
      new Promise((resolve) => {
        const done = () =>
          resolve({ status: "error", records: [], ttlSeconds: 0, reason: "aborted" });
        signal?.addEventListener("abort", done);
        pending.push(done);
      }),
  };
  const a = authenticator(silent, 300);
  const t0 = performance.now();
  const r = await a.verify(bytes(signed), {
    ip: GOOD_IP,
    helo: "h.example.org",
    mailFrom: "a@example.org",
  });
  const ms = performance.now() - t0;
  for (const p of pending) p();
  assert.deepEqual(summary(r), {
    spf: "temperror",
    dkim: "temperror",
    dmarc: "temperror",
    arc: "temperror", // not reached before the deadline: unknown, not "none"
  });
  assert.ok(ms < 20_000, `bounded (${ms} ms)`);
});

Deno.test("MailAuthenticator: checks that are off are neither run nor reported", async () => {
  await withZone(async (_dns, resolver, keys) => {
    const a = authenticator(resolver, 5000, ["dkim"]);
    assert.equal(a.startSpf({ ip: GOOD_IP, helo: "x", mailFrom: "a@example.org" }), undefined);
    const r = await a.verify(bytes(await dkimSigned(message("alice@example.org"), keys.org)), {
      ip: GOOD_IP,
      helo: "mx.example.org",
      mailFrom: "alice@example.org",
    });
    assert.deepEqual(summary(r), {
      spf: undefined,
      dkim: "pass:example.org",
      dmarc: undefined,
      arc: undefined,
    });
    assert.doesNotMatch(r.header, /spf=|dmarc=|arc=/);
  });
});

Deno.test("MailAuthenticator: the null sender is checked by its HELO name; an address-literal HELO is accepted", async () => {
  await withZone(async (_dns, resolver) => {
    const a = authenticator(resolver, 5000, ["spf"]);
    const byHelo = await a.startSpf({ ip: GOOD_IP, helo: "example.org", mailFrom: "" })!;
    assert.deepEqual([byHelo.result, byHelo.domain], ["pass", "example.org"]);
    const refused = await a.startSpf({ ip: BAD_IP, helo: "example.org", mailFrom: "" })!;
    assert.equal(refused.result, "fail");
    for (const helo of ["[192.0.2.25]", "192.0.2.25", "[IPv6:2001:db8::25]", ""]) {
      const r = await a.startSpf({ ip: GOOD_IP, helo, mailFrom: "alice@example.org" })!;
      assert.equal(r.result, "pass", helo);
    }
  });
});
