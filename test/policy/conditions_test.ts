import assert from "node:assert/strict";
import { parseConfig } from "../../src/config/load_config.ts";
import { MemoryLog } from "../../src/log/log.ts";
import { PolicyEngine } from "../../src/policy/policy_engine.ts";
import type { Envelope } from "../../src/policy/verdict.ts";
import { StateStore } from "../../src/state/state_store.ts";

const enc = new TextEncoder();
const ENVELOPE: Envelope = {
  mailFrom: "alice@sender.example",
  rcptTo: ["bob@corp.example", "carol@sales.corp.example"],
  client: { ip: "203.0.113.5", port: 40000 },
  server: { ip: "198.51.100.25", port: 25 },
  helo: "mail.sender.example",
  tls: false,
  sessionId: "S1",
  transactionId: "S1.1",
};

const MESSAGE = [
  'From: "PayPal Security" <alert@phish.example>',
  "To: Bob <bob@corp.example>",
  "Cc: carol@sales.corp.example",
  "Subject: Your account is suspended - act now",
  "X-Mailer: BulkMailer 5.1",
  "X-Campaign: 2026-11",
  "MIME-Version: 1.0",
  'Content-Type: multipart/mixed; boundary="b1"',
  "",
  "--b1",
  'Content-Type: multipart/alternative; boundary="b2"',
  "",
  "--b2",
  "Content-Type: text/plain; charset=utf-8",
  "",
  "Please verify your password at the link. Order 12345.",
  "--b2",
  "Content-Type: text/html; charset=utf-8",
  "",
  "<p>Please <b>verify</b> your password <a href='http://phish.example/x'>here</a></p>",
  "--b2--",
  "--b1",
  'Content-Type: application/octet-stream; name="invoice.pdf.exe"',
  'Content-Disposition: attachment; filename="invoice.pdf.exe"',
  "Content-Transfer-Encoding: base64",
  "",
  "TVqQAAMAAAAEAAAA",
  "--b1--",
  "",
].join("\r\n");

const LISTS = `lists:
  bad_words: [suspended, "wire transfer"]
  partners: [partner.example, "@sender.example", 203.0.113.0/28]
  phishers: ["alert@phish.example"]
  helos: [mail.sender.example]
  nets: [198.51.100.0/24]
`;

async function holds(when: string, env: Partial<Envelope> = {}, message = MESSAGE) {
  const cfg = parseConfig(
    `gateway:\n  protect: [198.51.100.0/24]\n${LISTS}spamtraps:\n  addresses: [trap@corp.example]\nrules:\n  - name: r\n    when: ${when}\n    action: discard\n`,
    "t.yaml",
  );
  const engine = new PolicyEngine(cfg, new MemoryLog());
  try {
    // Spamtrap recipients short-circuit before the rules (precedence 3); test the condition in
    // explain mode, where every rule is evaluated and traced.
    const { decodeMessage } = await import("../../src/policy/message.ts");
    const facts = await decodeMessage(enc.encode(message));
    const e = engine.evaluate(facts, { ...ENVELOPE, ...env }, true);
    return e.results[0].matched;
  } finally {
    engine.close();
  }
}

// Every condition and operator, holding and not holding.
const CASES: { when: string; env?: Partial<Envelope>; holds: boolean }[] = [
  // text fields × operators
  { when: `{ subject: { contains: "SUSPENDED" } }`, holds: true },
  { when: `{ subject: { equals: "your account is suspended - act now" } }`, holds: true },
  { when: `{ subject: { equals: "suspended" } }`, holds: false },
  { when: `{ subject: { matches: "account.*suspend" } }`, holds: true },
  { when: `{ subject: { matches: "^suspend" } }`, holds: false },
  { when: `{ subject: { in_list: bad_words } }`, holds: true },
  { when: `{ header: { name: X-Mailer, matches: "^bulkmailer [0-9]" } }`, holds: true },
  { when: `{ header: { name: x-mailer, contains: outlook } }`, holds: false },
  { when: `{ header: { name: X-Campaign, equals: "2026-11" } }`, holds: true },
  { when: `{ header: { name: X-Absent, contains: x } }`, holds: false },
  { when: `{ body: { contains: "verify your password" } }`, holds: true },
  { when: `{ html: { contains: "verify your password" } }`, holds: true },
  { when: `{ html: { contains: "order 12345" } }`, holds: false },
  { when: `{ from: { contains: paypal } }`, holds: true },
  { when: `{ from_name: { equals: "paypal security" } }`, holds: true },
  { when: `{ from_name: { contains: phish } }`, holds: false },
  { when: `{ from_address: { equals: alert@phish.example } }`, holds: true },
  { when: `{ from_address: { in_list: phishers } }`, holds: true },
  { when: `{ to: { contains: bob } }`, holds: true },
  { when: `{ to_address: { equals: bob@corp.example } }`, holds: true },
  { when: `{ to_name: { equals: bob } }`, holds: true },
  { when: `{ cc: { equals: carol@sales.corp.example } }`, holds: true },
  { when: `{ cc_address: { contains: "@corp.example" } }`, holds: false },
  { when: `{ cc_name: { contains: carol } }`, holds: false },
  { when: `{ mail_from: { equals: ALICE@SENDER.EXAMPLE } }`, holds: true },
  { when: `{ mail_from: { in_list: partners } }`, holds: true },
  {
    when: `{ mail_from: { in_list: partners } }`,
    env: { mailFrom: "x@other.example" },
    holds: false,
  },
  { when: `{ rcpt_to: { contains: carol } }`, holds: true },
  { when: `{ sender_domain: { equals: sender.example } }`, holds: true },
  { when: `{ sender_domain: { in_list: partners } }`, holds: true },
  { when: `{ sender_domain: { equals: sender.example } }`, env: { mailFrom: "" }, holds: false },
  { when: `{ recipient_domain: { equals: sales.corp.example } }`, holds: true },
  { when: `{ recipient_domain: { matches: "^corp\\\\.example$" } }`, holds: true },
  { when: `{ helo: { in_list: helos } }`, holds: true },
  { when: `{ helo: { matches: "^mail\\\\." } }`, holds: true },
  { when: `{ attachment_name: { matches: "\\\\.(?:exe|scr)$" } }`, holds: true },
  { when: `{ attachment_type: { equals: application/octet-stream } }`, holds: true },
  // numbers at limit − 1, limit, limit + 1
  { when: `{ size: { over: 100 } }`, holds: true },
  { when: `{ size: { under: 100 } }`, holds: false },
  { when: `{ size: { over: 10M } }`, holds: false },
  { when: `{ rcpt_count: { at_least: 1 } }`, holds: true },
  { when: `{ rcpt_count: { at_least: 2 } }`, holds: true },
  { when: `{ rcpt_count: { at_least: 3 } }`, holds: false },
  { when: `{ rcpt_count: { at_most: 1 } }`, holds: false },
  { when: `{ rcpt_count: { at_most: 2 } }`, holds: true },
  { when: `{ rcpt_count: { over: 1, under: 3 } }`, holds: true },
  { when: `{ rcpt_count: { over: 2 } }`, holds: false },
  // addresses
  { when: `{ client_ip: { in: [203.0.113.0/24] } }`, holds: true },
  { when: `{ client_ip: { in: [203.0.113.0/30] } }`, holds: false },
  {
    when: `{ client_ip: { in: [203.0.113.0/24] } }`,
    env: { client: { ip: "::ffff:203.0.113.9", port: 1 } },
    holds: true,
  },
  {
    when: `{ client_ip: { in: ["2001:db8::/32"] } }`,
    env: { client: { ip: "2001:db8::5", port: 1 } },
    holds: true,
  },
  { when: `{ client_ip: { in_list: partners } }`, holds: true },
  {
    when: `{ client_ip: { in_list: partners } }`,
    env: { client: { ip: "203.0.113.16", port: 1 } },
    holds: false,
  },
  { when: `{ server: { in: [198.51.100.25] } }`, holds: true },
  { when: `{ server: { in: [198.51.100.26] } }`, holds: false },
  { when: `{ server: { in_list: nets } }`, holds: true },
  // flags
  { when: `{ tls: true }`, holds: false },
  { when: `{ tls: true }`, env: { tls: true }, holds: true },
  { when: `{ tls: false }`, holds: true },
  { when: `{ spamtrap: true }`, holds: false },
  {
    when: `{ spamtrap: true }`,
    env: { rcptTo: ["bob@corp.example", "TRAP@corp.example"] },
    holds: true,
  },
  // memory
  { when: `{ listed: blacklist }`, holds: false },
  { when: `{ listed: allowlist }`, holds: false },
  { when: `{ bulk: { servers: 1, within: 10m } }`, holds: true }, // this message reached 1 server
  { when: `{ bulk: { servers: 2, within: 10m } }`, holds: false },
  { when: `{ bulk: { recipients: 2, within: 10m } }`, holds: true },
  { when: `{ bulk: { recipients: 3, within: 10m } }`, holds: false },
  // combinators
  { when: `{ all: [{ tls: false }, { subject: { contains: act } }] }`, holds: true },
  { when: `{ all: [{ tls: true }, { subject: { contains: act } }] }`, holds: false },
  { when: `{ any: [{ tls: true }, { subject: { contains: act } }] }`, holds: true },
  { when: `{ any: [{ tls: true }, { size: { over: 1G } }] }`, holds: false },
  { when: `{ not: { tls: true } }`, holds: true },
  { when: `{ not: { any: [{ tls: false }, { tls: true }] } }`, holds: false },
];
for (const c of CASES) {
  const envText = c.env ? ` with ${JSON.stringify(c.env)}` : "";
  Deno.test(`condition ${c.when}${envText} ${c.holds ? "holds" : "does not hold"}`, async () => {
    assert.equal(await holds(c.when, c.env), c.holds);
  });
}

Deno.test("condition `bulk` counts distinct servers across messages within the window", async () => {
  const cfg = parseConfig(
    `gateway:\n  protect: [198.51.100.0/24]\nrules:\n  - name: campaign\n    when: { bulk: { servers: 3, within: 10m } }\n    action: discard\n`,
    "t.yaml",
  );
  const state = StateStore.open(":memory:");
  let now = Date.UTC(2026, 10, 27);
  const engine = new PolicyEngine(cfg, new MemoryLog(), { state, now: () => now });
  const copy = (name: string) =>
    enc.encode(
      `Subject: Exclusive offer for ${name}\r\n\r\nDear ${name}, claim your exclusive reward of 500 USD ` +
        `now at our secure site. This personal offer expires on Friday. Regards, Rewards Team\r\n`,
    );
  const verdicts: string[] = [];
  for (
    const [i, server] of [
      "198.51.100.25",
      "198.51.100.25",
      "198.51.100.26",
      "198.51.100.27",
      "198.51.100.28",
    ].entries()
  ) {
    now += 1000;
    const v = await engine.judge(copy(["John", "Mary", "Kim", "Lee", "Ann"][i]), {
      ...ENVELOPE,
      server: { ip: server, port: 25 },
    });
    verdicts.push(v.action);
  }
  // Copies 1-2 reached one server, copy 3 two servers, copy 4 the third → discarded from then on.
  assert.deepEqual(verdicts, ["forward", "forward", "forward", "discard", "discard"]);
  // Eleven minutes later the earlier copies have left the 10-minute window.
  now += 11 * 60_000;
  assert.equal((await engine.judge(copy("Zed"), ENVELOPE)).action, "forward");
  engine.close();
  state.close();
});

Deno.test("condition `listed` sees static and dynamic entries", async () => {
  const cfg = parseConfig(
    `gateway:\n  protect: [198.51.100.0/24]\nrules:\n  - name: r\n    when: { listed: allowlist }\n    action: [tag]\n    tag: { header: "X-Known: yes" }\n`,
    "t.yaml",
  );
  const state = StateStore.open(":memory:");
  const engine = new PolicyEngine(cfg, new MemoryLog(), { state });
  state.addEntry("allowlist", "sender_domain", "sender.example", Date.now() + 60_000, "admin");
  const v = await engine.judge(enc.encode("Subject: hi\r\n\r\nhello\r\n"), ENVELOPE);
  assert.deepEqual(v.tag, { headers: [{ name: "X-Known", value: "yes" }] });
  engine.close();
  state.close();
});
