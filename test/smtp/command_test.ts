import assert from "node:assert/strict";
import {
  MAX_DOMAIN,
  MAX_LOCAL_PART,
  MAX_PATH,
  parseCommandLine,
  parseHeloArg,
  parseMailArg,
  parseRcptArg,
} from "../../src/smtp/command.ts";
import { bytes } from "./harness.ts";

Deno.test("parseCommandLine splits verb and argument, verbs case-insensitive", () => {
  const cases: [string, string, string][] = [
    ["EHLO client.example", "EHLO", "client.example"],
    ["ehlo client.example", "EHLO", "client.example"],
    ["MaIl FROM:<a@b.example>", "MAIL", "FROM:<a@b.example>"],
    ["NOOP", "NOOP", ""],
    ["QUIT  ", "QUIT", ""],
  ];
  for (const [line, verb, arg] of cases) {
    const r = parseCommandLine(bytes(line));
    assert.ok(r.ok, line);
    assert.deepEqual(r.value, { verb, arg });
  }
});

Deno.test("parseCommandLine refuses control characters, NUL, DEL and 8-bit bytes with 500 5.5.2", () => {
  for (
    const line of [
      "NO\x00OP",
      "RCPT TO:<a\rb@x.example>",
      "MAIL FROM:<a@b>\x7f",
      "HELO \x1b",
      "VRFY \xe4",
      "RCPT TO:<a\tb@x>",
    ]
  ) {
    const r = parseCommandLine(bytes(line));
    assert.equal(r.ok, false, JSON.stringify(line));
    if (!r.ok) assert.deepEqual([r.reply.code, r.reply.enhanced], [500, "5.5.2"]);
  }
});

Deno.test("parseCommandLine refuses a verb that is not letters", () => {
  for (const line of ["", " NOOP", "12 34", "MAIL:FROM"]) {
    const r = parseCommandLine(bytes(line));
    assert.equal(r.ok, false, JSON.stringify(line));
  }
});

Deno.test("parseMailArg accepts the usual forms", () => {
  const cases: [string, { address: string; size?: number; body?: string }][] = [
    ["FROM:<alice@example.org>", { address: "alice@example.org" }],
    ["from:<alice@example.org>", { address: "alice@example.org" }],
    ["FROM: <alice@example.org>", { address: "alice@example.org" }],
    ["FROM:<>", { address: "" }],
    ["FROM:<a@example.org> SIZE=1000", { address: "a@example.org", size: 1000 }],
    ["FROM:<a@example.org> BODY=8bitmime SIZE=5", {
      address: "a@example.org",
      size: 5,
      body: "8BITMIME",
    }],
    ["FROM:<a@example.org> BODY=7BIT", { address: "a@example.org", body: "7BIT" }],
    ["FROM:<@relay.example,@b.example:a@example.org>", { address: "a@example.org" }],
    ['FROM:<"john doe"@example.org>', { address: '"john doe"@example.org' }],
    ['FROM:<"a>b"@example.org>', { address: '"a>b"@example.org' }],
    ["FROM:<a@[192.0.2.1]>", { address: "a@[192.0.2.1]" }],
    ["FROM:<a@[IPv6:2001:db8::1]>", { address: "a@[IPv6:2001:db8::1]" }],
    ["FROM:<first.last+tag@sub.example.org>", { address: "first.last+tag@sub.example.org" }],
  ];
  for (const [arg, want] of cases) {
    const r = parseMailArg(arg);
    assert.ok(r.ok, `${arg}: ${!r.ok && r.reason}`);
    assert.deepEqual(r.value, want, arg);
  }
});

Deno.test("parseMailArg refuses bad syntax (501) and unknown parameters (555)", () => {
  const cases: [string, number, string][] = [
    ["FROM:alice@example.org", 501, "5.1.7"],
    ["TO:<a@example.org>", 501, "5.5.4"],
    ["FROM:<a@example.org", 501, "5.1.7"],
    ["FROM:<a@example.org>junk", 501, "5.1.7"],
    ["FROM:<a b@example.org>", 501, "5.1.7"],
    ["FROM:<a@exa mple.org>", 501, "5.1.7"],
    ["FROM:<a@-bad.example>", 501, "5.1.7"],
    ["FROM:<postmaster>", 501, "5.1.7"],
    ["FROM:<@:a@example.org>", 501, "5.1.7"],
    ["FROM:<a@example.org> SIZE=abc", 501, "5.5.4"],
    ["FROM:<a@example.org> SIZE", 501, "5.5.4"],
    ["FROM:<a@example.org> SIZE=1 SIZE=2", 501, "5.5.4"],
    ["FROM:<a@example.org> BODY=BINARYMIME", 501, "5.5.4"],
    ["FROM:<a@example.org> ENVID=ab+0D+0Acd", 555, "5.5.4"],
    ["FROM:<a@example.org> SMTPUTF8", 555, "5.5.4"],
    ["FROM:<a@example.org> AUTH=<>", 555, "5.5.4"],
    ["FROM:<a@example.org> X=a=b", 501, "5.5.4"],
  ];
  for (const [arg, code, enhanced] of cases) {
    const r = parseMailArg(arg);
    assert.equal(r.ok, false, arg);
    if (!r.ok) assert.deepEqual([r.reply.code, r.reply.enhanced], [code, enhanced], arg);
  }
});

Deno.test("Address limits: local-part 64, domain 255, path 256 pass; one more octet is refused", () => {
  const label63 = "d".repeat(63);
  // A domain of exactly `len` octets made of 63-octet labels.
  const domainOf = (len: number) => {
    const labels: string[] = [];
    let left = len;
    while (left > 0) {
      const n = Math.min(63, left === 64 ? 62 : left);
      labels.push("d".repeat(n));
      left -= n + 1;
    }
    const d = labels.join(".");
    return d.slice(0, len);
  };
  assert.equal(label63.length, 63);
  const rcpt = (addr: string) => parseRcptArg(`TO:<${addr}>`);
  for (
    const [n, ok] of [[MAX_LOCAL_PART - 1, true], [MAX_LOCAL_PART, true], [
      MAX_LOCAL_PART + 1,
      false,
    ]] as const
  ) {
    const r = rcpt("l".repeat(n) + "@example.org");
    assert.equal(r.ok, ok, `local-part ${n}`);
  }
  for (
    const [n, ok] of [[MAX_DOMAIN - 1, true], [MAX_DOMAIN, true], [MAX_DOMAIN + 1, false]] as const
  ) {
    const d = domainOf(n);
    assert.equal(d.length, n);
    const r = parseMailArg(`FROM:<a@${d}>`);
    // Paths longer than 256 are refused first; the domain limit is checked in isolation below.
    if (n + 4 <= MAX_PATH) assert.equal(r.ok, ok, `domain ${n}`);
  }
  // Path = "<" + local + "@" + domain + ">" (RFC 5321 §4.5.3.1.3 counts the punctuation).
  for (const [n, ok] of [[MAX_PATH - 1, true], [MAX_PATH, true], [MAX_PATH + 1, false]] as const) {
    const domain = domainOf(n - 2 - 1 - 10);
    const addr = "l".repeat(10) + "@" + domain;
    assert.equal(addr.length + 2, n);
    const r = rcpt(addr);
    assert.equal(r.ok, ok, `path ${n}: ${!r.ok && r.reason}`);
  }
  const longDomain = parseRcptArg(`TO:<a@${domainOf(256)}>`);
  assert.equal(longDomain.ok, false);
});

Deno.test("parseRcptArg accepts <postmaster> without a domain and refuses <> and parameters", () => {
  assert.ok(parseRcptArg("TO:<Postmaster>").ok);
  assert.ok(parseRcptArg("to:<postmaster>").ok);
  const bad: [string, number][] = [
    ["TO:<>", 501],
    ["TO:<bob>", 501],
    ["TO:<bob@example.net> NOTIFY=NEVER", 555],
    ["TO:<bob@example.net> ORCPT=rfc822;a+0D+0A@x", 555],
    ["FROM:<bob@example.net>", 501],
  ];
  for (const [arg, code] of bad) {
    const r = parseRcptArg(arg);
    assert.equal(r.ok, false, arg);
    if (!r.ok) assert.equal(r.reply.code, code, arg);
  }
});

Deno.test("parseHeloArg needs a word of at most 255 octets", () => {
  assert.deepEqual(parseHeloArg("client.example"), { ok: true, value: "client.example" });
  assert.deepEqual(parseHeloArg("[192.0.2.10] extra"), { ok: true, value: "[192.0.2.10]" });
  assert.equal(parseHeloArg("").ok, false);
  assert.equal(parseHeloArg("h".repeat(255)).ok, true);
  assert.equal(parseHeloArg("h".repeat(256)).ok, false);
});
