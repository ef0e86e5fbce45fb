import assert from "node:assert/strict";
import { ConfigError } from "../../src/config/config_error.ts";
import { loadConfig, parseConfig, summarizeConfig } from "../../src/config/load_config.ts";
import { MemoryLog } from "../../src/log/log.ts";
import { PolicyEngine } from "../../src/policy/policy_engine.ts";
import type { Envelope } from "../../src/policy/verdict.ts";

const GW = `gateway:\n  protect: [198.51.100.0/24]\n  hostname: gw.example\n`;

function errorsOf(text: string, readTextFile?: (p: string) => string): string[] {
  try {
    parseConfig(text, "rules/a.yaml", { readTextFile });
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${e}`);
    return e.format().split("\n");
  }
  assert.fail("expected the rule file to be refused");
}

Deno.test("parseConfig() reads every policy section into SsgConfig", () => {
  const cfg = parseConfig(
    GW + `state:
  file: /tmp/ssg-test/state.db
  max_rows: 5000
lists:
  bad_words: { file: lists/bad_words.txt }
  partners: [partner.example, 192.0.2.0/28]
allowlist:
  clients: [192.0.2.0/28]
  senders: [Boss@Partner.example, "@friends.example"]
  list: partners
blacklist:
  clients: [203.0.113.66]
  senders: ["@spam.example"]
spamtraps:
  addresses: [Trap@Corp.example, honeypot@corp.example]
  blacklist_for: 24h
quarantine:
  dir: /tmp/ssg-test/q
  max_bytes: 1G
alert:
  to: [postmaster@corp.example]
  relay: 198.51.100.25:25
  from: ssg@gateway.example
  rate: 10/1h
  webhook: { url: "http://192.0.2.200:8080/hook", timeout: 5s }
rules:
  - name: words
    when: { subject: { in_list: bad_words } }
    action: discard
thresholds:
  - name: repeat-offender
    count: [discard, reject, quarantine]
    key: client_ip
    at_least: 3
    within: 1h
    action: [blacklist, alert]
    blacklist: { for: 24h }
`,
    "/etc/ssg/rules.yaml",
    {
      readTextFile: (p) => {
        assert.equal(p, "/etc/ssg/lists/bad_words.txt", "relative to the rule file");
        return "# words\nlottery\n\n  jackpot  \n";
      },
    },
  );
  assert.deepEqual(cfg.state, { file: "/tmp/ssg-test/state.db", maxRows: 5000 });
  assert.deepEqual(cfg.lists, {
    bad_words: ["lottery", "jackpot"],
    partners: ["partner.example", "192.0.2.0/28"],
  });
  assert.deepEqual(cfg.allowlist?.clients.map((c) => c.text), ["192.0.2.0/28", "192.0.2.0/28"]);
  assert.deepEqual(cfg.allowlist?.senders, [
    "boss@partner.example",
    "@friends.example",
    "@partner.example",
  ]);
  assert.equal(cfg.allowlist?.list, "partners");
  assert.deepEqual(cfg.blacklist?.clients.map((c) => c.text), ["203.0.113.66/32"]);
  assert.deepEqual(cfg.spamtraps, {
    addresses: ["trap@corp.example", "honeypot@corp.example"],
    blacklistSeconds: 86400,
  });
  assert.deepEqual(cfg.quarantine, { dir: "/tmp/ssg-test/q", maxBytes: 1 << 30 });
  assert.deepEqual(cfg.alert, {
    to: ["postmaster@corp.example"],
    relay: { host: "198.51.100.25", port: 25 },
    from: "ssg@gateway.example",
    rate: { count: 10, seconds: 3600 },
    webhook: { url: "http://192.0.2.200:8080/hook", timeoutSeconds: 5 },
  });
  assert.equal(cfg.thresholds?.length, 1);
  assert.deepEqual({ ...cfg.thresholds![0], at: undefined }, {
    name: "repeat-offender",
    count: ["discard", "reject", "quarantine"],
    key: "client_ip",
    atLeast: 3,
    withinSeconds: 3600,
    actions: ["blacklist", "alert"],
    blacklistSeconds: 86400,
    at: undefined,
  });
  const summary = summarizeConfig(cfg);
  for (
    const s of [
      "state: /tmp/ssg-test/state.db",
      "lists: bad_words (2), partners (2)",
      "spamtraps: 2 addresses",
      "alert: to postmaster@corp.example",
      "1. repeat-offender: 3 × discard/reject/quarantine per client_ip within 1h → blacklist + alert (blacklist 1d)",
    ]
  ) {
    assert.ok(summary.includes(s), `summary has ${s}:\n${summary}`);
  }
});

Deno.test("parseConfig() gives the policy sections their defaults when absent", () => {
  const cfg = parseConfig(GW, "a.yaml");
  assert.deepEqual(cfg.state, { file: "/var/lib/ssg/state.db", maxRows: 100_000 });
  assert.deepEqual(cfg.quarantine, { dir: "/var/lib/ssg/quarantine" });
  assert.deepEqual(cfg.lists, {});
  assert.deepEqual(cfg.allowlist, { clients: [], senders: [] });
  assert.deepEqual(cfg.thresholds, []);
  assert.equal(cfg.spamtraps, undefined);
  assert.equal(cfg.alert, undefined);
  const a = parseConfig(
    GW + `alert:\n  to: [p@corp.example]\n  relay: "[2001:db8::25]:2525"\n`,
    "a.yaml",
  );
  assert.deepEqual(a.alert, {
    to: ["p@corp.example"],
    relay: { host: "2001:db8::25", port: 2525 },
    from: "ssg@gw.example",
    rate: { count: 10, seconds: 3600 },
  });
});

// Each broken file and the exact file:line:column lines it must produce.
const BROKEN: { name: string; text: string; errors: string[] }[] = [
  {
    name: "unknown keys in every section",
    text: GW + `state: { fil: x }
allowlist: { client: [192.0.2.1] }
spamtraps: { adresses: [a@b.example] }
quarantine: { directory: /x }
alert: { to: [a@b.example], relay: "192.0.2.1:25", rates: 1/1h }
`,
    errors: [
      'rules/a.yaml:4:10: unknown key "fil" in "state"; expected one of file, max_rows',
      'rules/a.yaml:5:14: unknown key "client" in "allowlist"; expected one of clients, senders, list',
      'rules/a.yaml:6:12: "spamtraps" needs "addresses"',
      'rules/a.yaml:6:14: unknown key "adresses" in "spamtraps"; expected one of addresses, blacklist_for',
      'rules/a.yaml:7:15: unknown key "directory" in "quarantine"; expected one of dir, max_bytes',
      'rules/a.yaml:8:52: unknown key "rates" in "alert"; expected one of to, relay, from, rate, webhook',
    ],
  },
  {
    name: "bad values in allowlist, blacklist and spamtraps",
    text: GW + `allowlist:
  clients: [192.0.2.1/24]
  senders: [not-an-address]
blacklist:
  senders: ["@"]
spamtraps:
  addresses: [trap]
  blacklist_for: forever
`,
    errors: [
      'rules/a.yaml:5:13: "192.0.2.1/24" has host bits set; did you mean "192.0.2.0/24"?',
      'rules/a.yaml:6:13: "allowlist.senders" entry must be an address or "@domain", got "not-an-address"',
      'rules/a.yaml:8:13: "blacklist.senders" entry must be an address or "@domain", got "@"',
      'rules/a.yaml:10:15: "spamtraps.addresses" entry must be a mail address like user@example.com, got "trap"',
      'rules/a.yaml:11:18: "spamtraps.blacklist_for" must be a duration (seconds, or e.g. "30s", "5m", "1h"), got "forever"',
    ],
  },
  {
    name: "bad alert values",
    text: GW + `alert:
  to: []
  relay: "mail:99999"
  rate: "ten per hour"
  webhook: { url: "ftp://192.0.2.1/x" }
`,
    errors: [
      'rules/a.yaml:5:7: "alert.to" must list at least one address',
      'rules/a.yaml:6:10: "alert.relay": "99999" is not a port (1 to 65535)',
      'rules/a.yaml:7:9: "alert.rate" must be COUNT/DURATION like "10/1h", got "ten per hour"',
      'rules/a.yaml:8:19: "alert.webhook.url" must be an http: or https: URL',
    ],
  },
  {
    name: "a list that is neither a list nor a file, and a bad list name",
    text: GW + `lists:
  ok: [a]
  "bad name": [b]
  weird: { path: x }
  scalar: 5
`,
    errors: [
      "rules/a.yaml:6:3: list names must be letters, digits, '_', '.', '-', got \"bad name\"",
      'rules/a.yaml:7:10: list "weird" needs "file" (or write the entries as a list)',
      'rules/a.yaml:7:12: unknown key "path" in list "weird"; expected one of file',
      'rules/a.yaml:8:11: list "scalar" entry must be a string, got 5',
    ],
  },
  {
    name: "an unknown list referenced by a rule, an ip test and the allowlist",
    text: GW + `lists:
  words: [x]
allowlist: { list: partners }
rules:
  - name: a
    when: { subject: { in_list: wrds }, client_ip: { in_list: nets } }
    action: discard
`,
    errors: [
      'rules/a.yaml:6:20: unknown list "partners"; defined lists: words',
      'rules/a.yaml:9:33: unknown list "wrds"; defined lists: words',
      'rules/a.yaml:9:63: unknown list "nets"; defined lists: words',
    ],
  },
  {
    name: "a regex that could backtrack catastrophically, and an invalid one",
    text: GW + `rules:
  - name: a
    when: { subject: { matches: ["ok", "(a+)+$"] } }
    action: discard
  - name: b
    when: { header: { name: X-Mailer, matches: "(" } }
    action: discard
`,
    errors: [
      'rules/a.yaml:6:40: "matches" pattern refused: a repeated group contains a quantifier ("(a+)+": nested repetition backtracks exponentially)',
      'rules/a.yaml:9:48: "matches" pattern refused: not a valid regular expression: Invalid regular expression: /(/iu: Unterminated group',
    ],
  },
  {
    name: "bad leaves: header without name, numbers, ips, flags, bulk, listed",
    text: GW + `rules:
  - name: a
    when:
      all:
        - header: { contains: x }
        - size: { over: lots }
        - rcpt_count: { more: 2 }
        - client_ip: { in: [not-ip] }
        - server: {}
        - tls: "yes"
        - bulk: { servers: 0, within: 10m }
        - bulk: { servers: 3 }
        - listed: greylist
    action: discard
`,
    errors: [
      'rules/a.yaml:8:19: "header" needs "name": the header field to test, e.g. X-Mailer',
      'rules/a.yaml:9:25: "size.over" must be a size in bytes (e.g. 1048576, "512k", "25M"), got "lots"',
      'rules/a.yaml:10:25: unknown key "more" in "rcpt_count"; expected one of over, under, at_least, at_most',
      'rules/a.yaml:11:29: "not-ip" is not an IPv4 or IPv6 address or network',
      'rules/a.yaml:12:19: "server" needs "in" (networks) or "in_list" (a list name)',
      'rules/a.yaml:13:16: "tls" must be true or false, got "yes"',
      'rules/a.yaml:14:28: "bulk.servers" must be an integer from 1 to 100000, got 0',
      'rules/a.yaml:15:17: "bulk" needs "within": the window, e.g. 10m',
      'rules/a.yaml:16:19: "listed" must be one of blacklist, allowlist',
    ],
  },
  {
    name: "action option blocks: missing, misplaced, wrong",
    text: GW + `rules:
  - name: a
    when: { tls: true }
    action: [redirect]
  - name: b
    when: { tls: true }
    action: discard
    tag: { header: "X: y" }
  - name: c
    when: { tls: true }
    action: [tag, bcc, blacklist]
    tag: { header: "Bad Name: y", subject_prefix: "a\\tb" }
    bcc: { to: [archive], server: "host:0" }
    blacklist: { key: ip, for: 24h }
  - name: d
    when: { tls: true }
    action: [tempfail, alert, alert]
  - name: e
    when: { tls: true }
    action: tempfail
    reply: { code: 550 }
`,
    errors: [
      'rules/a.yaml:7:13: action "redirect" needs a "redirect" block, e.g. redirect: { to: [quarantine@corp.example] }',
      'rules/a.yaml:11:5: "tag" applies only to action tag',
      'rules/a.yaml:15:20: "tag.header" must be "Name: value" with a header field name, got "Bad Name: y"',
      'rules/a.yaml:15:51: "tag.subject_prefix" must not hold control characters',
      'rules/a.yaml:16:17: "bcc.to" entry must be a mail address like user@example.com, got "archive"',
      'rules/a.yaml:16:35: "bcc.server": "0" is not a port (1 to 65535)',
      'rules/a.yaml:17:23: "blacklist.key" must be one of client_ip, sender, sender_domain',
      'rules/a.yaml:20:31: "action" names "alert" twice',
      'rules/a.yaml:24:20: "reply.code" must be an integer from 400 to 499, got 550',
    ],
  },
  {
    name: "thresholds: missing and wrong keys, duplicate names, a rule's name",
    text: GW + `rules:
  - name: r
    when: { tls: true }
    action: discard
thresholds:
  - name: r
    count: [discard]
    key: client_ip
    at_least: 3
    within: 1h
    action: [alert]
  - name: t
    count: [bounce]
    key: helo
    at_least: 0
    within: 1h
    action: [blacklist]
  - name: u
    action: [alert]
    blacklist: { for: 1h }
`,
    errors: [
      'rules/a.yaml:9:11: threshold name "r" is already used by a rule',
      'rules/a.yaml:16:13: "count" must be one of forward, discard, reject, tempfail, quarantine',
      'rules/a.yaml:17:10: "key" must be one of client_ip, sender, sender_domain',
      'rules/a.yaml:18:15: "at_least" must be an integer from 1 to 1000000, got 0',
      'rules/a.yaml:20:5: action "blacklist" needs a "blacklist" block, e.g. blacklist: { key: client_ip, for: 24h }',
      'rules/a.yaml:21:5: threshold #3 needs "count": the verdicts counted, e.g. [discard, reject]',
      'rules/a.yaml:21:5: threshold #3 needs "key": client_ip, sender or sender_domain',
      'rules/a.yaml:21:5: threshold #3 needs "at_least": how many verdicts fire it',
      'rules/a.yaml:21:5: threshold #3 needs "within": the sliding window, e.g. 1h',
      'rules/a.yaml:23:5: "blacklist" applies only to action blacklist',
    ],
  },
];
for (const c of BROKEN) {
  Deno.test(`parseConfig() refuses ${c.name} with file:line:column`, () => {
    assert.deepEqual(errorsOf(c.text), c.errors);
  });
}

Deno.test("parseConfig() reports an unreadable list file at the line of its reference", () => {
  const errors = errorsOf(GW + `lists:\n  words: { file: lists/missing.txt }\n`, () => {
    throw new Deno.errors.NotFound("No such file or directory (os error 2)");
  });
  assert.deepEqual(errors, [
    `rules/a.yaml:5:18: cannot read list file "lists/missing.txt" (${Deno.cwd()}/rules/lists/missing.txt): No such file or directory (os error 2)`,
  ]);
});

Deno.test("parseConfig() reports bad lines of a list file with the file's line number", () => {
  const errors = errorsOf(
    GW + `lists:\n  words: { file: w.txt }\n`,
    () => `ok\n${"x".repeat(1001)}\n`,
  );
  assert.deepEqual(errors, [
    `rules/a.yaml:5:18: list file "w.txt" line 2: entry longer than 1000 characters`,
  ]);
});

Deno.test("loadConfig() re-reads list files on every load (reload picks up edits)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ssg-lists-" });
  try {
    await Deno.mkdir(`${dir}/lists`);
    await Deno.writeTextFile(`${dir}/lists/words.txt`, "lottery\n");
    await Deno.writeTextFile(
      `${dir}/rules.yaml`,
      GW +
        `lists:\n  words: { file: lists/words.txt }\nrules:\n  - name: w\n    when: { subject: { in_list: words } }\n    action: discard\n`,
    );
    const env: Envelope = {
      mailFrom: "a@sender.example",
      rcptTo: ["b@corp.example"],
      client: { ip: "203.0.113.5", port: 1 },
      server: { ip: "198.51.100.25", port: 25 },
      helo: "h",
      tls: false,
      sessionId: "S",
      transactionId: "S.1",
    };
    const msg = new TextEncoder().encode("Subject: cheap watches\r\n\r\nbody\r\n");
    const first = new PolicyEngine(await loadConfig(`${dir}/rules.yaml`), new MemoryLog());
    assert.equal((await first.judge(msg, env)).action, "forward");
    await Deno.writeTextFile(`${dir}/lists/words.txt`, "lottery\n# new:\nwatches\n");
    const second = new PolicyEngine(await loadConfig(`${dir}/rules.yaml`), new MemoryLog());
    assert.equal((await second.judge(msg, env)).action, "discard");
    await Deno.chmod(`${dir}/lists/words.txt`, 0o000);
    if (Deno.uid() !== 0) {
      await assert.rejects(loadConfig(`${dir}/rules.yaml`), ConfigError);
    }
    await Deno.remove(`${dir}/lists/words.txt`);
    await assert.rejects(
      loadConfig(`${dir}/rules.yaml`),
      (e: unknown) =>
        e instanceof ConfigError &&
        /:5:18: cannot read list file "lists\/words.txt"/.test(e.message),
    );
    first.close();
    second.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("rules/default.yaml loads and shows the new sections", async () => {
  const cfg = await loadConfig(new URL("../../rules/default.yaml", import.meta.url).pathname);
  assert.equal(cfg.state?.file, "/var/lib/ssg/state.db");
  assert.equal(cfg.quarantine?.dir, "/var/lib/ssg/quarantine");
  assert.ok(cfg.rules.length >= 3);
});
