import assert from "node:assert/strict";
import { ConfigError } from "../../src/config/config_error.ts";
import { loadConfig, parseConfig, summarizeConfig } from "../../src/config/load_config.ts";

const GOOD_GATEWAY = `gateway:
  protect: [198.51.100.0/24]
`;

/** Parses `text` expecting a ConfigError; returns its formatted lines. */
function errorsOf(text: string, file = "rules/a.yaml"): string[] {
  try {
    parseConfig(text, file);
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${e}`);
    assert.equal(e.name, "ConfigError");
    assert.equal(e.file, file);
    assert.equal(e.message, e.format());
    return e.format().split("\n");
  }
  assert.fail("expected the rule file to be refused");
}

// Each case: a broken rule file and the exact `file:line:column: message` lines it must produce.
const BROKEN: { name: string; text: string; errors: string[] }[] = [
  {
    name: "an empty file",
    text: "",
    errors: [
      `rules/a.yaml:1:1: the rule file is empty; it needs at least "gateway" with "protect"`,
    ],
  },
  {
    name: "a file of only comments",
    text: "# nothing here\n",
    errors: [
      `rules/a.yaml:1:1: the rule file is empty; it needs at least "gateway" with "protect"`,
    ],
  },
  {
    name: "a YAML syntax error",
    text: "gateway:\n  protect: [198.51.100.0/24\nrules: []\n",
    errors: [
      "rules/a.yaml:3:1: YAML syntax: Flow sequence in block collection must be sufficiently indented and end with a ]",
    ],
  },
  {
    name: "a duplicate key (a YAML error)",
    text: "gateway:\n  protect: [198.51.100.0/24]\n  protect: [203.0.113.0/24]\n",
    errors: ["rules/a.yaml:3:3: YAML syntax: Map keys must be unique"],
  },
  {
    name: "an unknown YAML tag",
    text: "gateway:\n  protect: [!cidr 198.51.100.0/24]\n",
    errors: ["rules/a.yaml:2:13: YAML: Unresolved tag: !cidr"],
  },
  {
    name: "a top level that is a list",
    text: "- gateway\n",
    errors: [`rules/a.yaml:1:1: the rule file must be a mapping (key: value), got a list`],
  },
  {
    name: "an unknown key at top level",
    text: GOOD_GATEWAY + "rulez: []\n",
    errors: [
      `rules/a.yaml:3:1: unknown key "rulez" at top level; expected one of gateway, smtp, relay, log, state, lists, allowlist, blacklist, spamtraps, quarantine, alert, rules, thresholds, content, clamav, greylist, rspamd, dns, dnsbl, auth`,
    ],
  },
  {
    name: "a missing gateway",
    text: "rules: []\n",
    errors: [`rules/a.yaml:1:1: "gateway" is missing; it must say which networks to "protect"`],
  },
  {
    name: "an empty gateway",
    text: "gateway:\nrules: []\n",
    errors: [`rules/a.yaml:1:1: "gateway" is empty; it must say which networks to "protect"`],
  },
  {
    name: "a key that is not a name",
    text: GOOD_GATEWAY + "25: x\n",
    errors: [`rules/a.yaml:3:1: keys at top level must be plain names, got 25`],
  },
  {
    name: "a bad interface name and host name",
    text: GOOD_GATEWAY + `  interfaces: ["this-name-is-too-long", eth0]\n  hostname: "bad_host!"\n`,
    errors: [
      `rules/a.yaml:3:16: "gateway.interfaces" entry is longer than 16 characters`,
      `rules/a.yaml:4:13: "gateway.hostname" must be a host name (letters, digits, '-', dots), got "bad_host!"`,
    ],
  },
  {
    name: "a rule that is not a mapping and a bad rule name",
    text: GOOD_GATEWAY + `rules:
  - lottery
  - name: "bad name"
    when: { subject: { contains: x } }
    action: discard
`,
    errors: [
      `rules/a.yaml:4:5: rule #1 must be a mapping (key: value), got "lottery"`,
      `rules/a.yaml:5:11: "name" must be letters, digits, '_', '.', '-' (starting with a letter or digit), got "bad name"`,
    ],
  },
  {
    name: "a missing gateway.protect",
    text: "gateway:\n  ports: [25]\n",
    errors: [
      `rules/a.yaml:2:3: "gateway.protect" is missing; list the internal mail servers' networks`,
    ],
  },
  {
    name: "an empty gateway.protect",
    text: "gateway:\n  protect: []\n",
    errors: [`rules/a.yaml:2:12: "gateway.protect" must list at least one network`],
  },
  {
    name: "an unknown key in gateway",
    text: GOOD_GATEWAY + "  port: 25\n",
    errors: [
      `rules/a.yaml:3:3: unknown key "port" in "gateway"; expected one of protect, ports, interfaces, hostname, responder, queue, flows`,
    ],
  },
  {
    name: "bad CIDRs: host bits, prefix, not an address, IPv6 host bits, overlap",
    text: `gateway:
  protect:
    - 198.51.100.25/24
    - 10.0.0.0/33
    - mail.example.com
    - "2001:db8:25::1/64"
    - 203.0.113.0/24
    - 203.0.113.128/25
`,
    errors: [
      `rules/a.yaml:3:7: "gateway.protect" entry "198.51.100.25/24" has host bits set; did you mean "198.51.100.0/24"?`,
      `rules/a.yaml:4:7: "gateway.protect" entry "10.0.0.0/33" has a bad prefix length (IPv4: 0 to 32)`,
      `rules/a.yaml:5:7: "gateway.protect" entry "mail.example.com" is not an IPv4 or IPv6 address or network`,
      `rules/a.yaml:6:7: "gateway.protect" entry "2001:db8:25::1/64" has host bits set; did you mean "2001:db8:25::/64"?`,
      `rules/a.yaml:8:7: "gateway.protect" entry 203.0.113.128/25 overlaps 203.0.113.0/24`,
    ],
  },
  {
    name: "bad ports: 0, 65536, a word, a duplicate",
    text: GOOD_GATEWAY + `  ports: [0, 65536, smtp, 25, 25]\n`,
    errors: [
      `rules/a.yaml:3:11: "gateway.ports" entry must be an integer from 1 to 65535, got 0`,
      `rules/a.yaml:3:14: "gateway.ports" entry must be an integer from 1 to 65535, got 65536`,
      `rules/a.yaml:3:21: "gateway.ports" entry must be an integer from 1 to 65535, got "smtp"`,
      `rules/a.yaml:3:31: "gateway.ports" lists 25 twice`,
    ],
  },
  {
    name: "a bad responder port and address",
    text: GOOD_GATEWAY + `  responder: { ipv4: "::1", port: 70000 }\n`,
    errors: [
      `rules/a.yaml:3:22: "gateway.responder.ipv4" must be "auto" or an IPv4 address`,
      `rules/a.yaml:3:35: "gateway.responder.port" must be an integer from 1 to 65535, got 70000`,
    ],
  },
  {
    name: "wrong types in smtp",
    text: GOOD_GATEWAY + `smtp:
  max_message_bytes: lots
  pipelining: yes
  bare_line_endings: fix
  timeouts: 5m
`,
    errors: [
      `rules/a.yaml:4:22: "smtp.max_message_bytes" must be a size in bytes (e.g. 1048576, "512k", "25M"), got "lots"`,
      `rules/a.yaml:5:15: "smtp.pipelining" must be true or false, got "yes"`,
      `rules/a.yaml:6:22: "smtp.bare_line_endings" must be one of reject, normalize`,
      `rules/a.yaml:7:13: "smtp.timeouts" must be a mapping (key: value), got "5m"`,
    ],
  },
  {
    name: "limits below the RFC 5321 minimums",
    text: GOOD_GATEWAY + `smtp:
  max_recipients: 99
  max_command_line: 511
  max_text_line: 999
`,
    errors: [
      `rules/a.yaml:4:19: "smtp.max_recipients" must be an integer from 100 to 100000, got 99`,
      `rules/a.yaml:5:21: "smtp.max_command_line" must be an integer from 512 to 65536, got 511`,
      `rules/a.yaml:6:18: "smtp.max_text_line" must be an integer from 1000 to 1000000, got 999`,
    ],
  },
  {
    name: "bad durations",
    text: GOOD_GATEWAY + `smtp:
  timeouts: { command: 5x, session: 8d }
relay:
  data_timeout: -1
`,
    errors: [
      `rules/a.yaml:4:24: "smtp.timeouts.command" must be a duration (seconds, or e.g. "30s", "5m", "1h"), got "5x"`,
      `rules/a.yaml:4:37: "smtp.timeouts.session" must be from 0.001 to 604800 seconds, got 691200`,
      `rules/a.yaml:6:17: "relay.data_timeout" must be a duration (seconds, or e.g. "30s", "5m", "1h"), got -1`,
    ],
  },
  {
    name: "a flow idle time shorter than the smtp timeouts",
    text: GOOD_GATEWAY + `  flows: { idle_seconds: 4m }
smtp:
  timeouts: { command: 5m, data: 3m }
`,
    errors: [
      `rules/a.yaml:3:26: "gateway.flows.idle_seconds" (240) must be at least the longest smtp timeout (300)`,
    ],
  },
  {
    name: "an unknown key in a rule",
    text: GOOD_GATEWAY + `rules:
  - name: lottery
    when:
      subject: { contains: ["lottery"] }
    actoin: discard
`,
    errors: [
      `rules/a.yaml:4:5: rule "lottery" has no "action"`,
      `rules/a.yaml:7:5: unknown key "actoin" in rule "lottery"; expected one of name, when, action, reply, mode, tag, redirect, bcc, blacklist`,
    ],
  },
  {
    name: "an unknown key in a condition and an unknown operator",
    text: GOOD_GATEWAY + `rules:
  - name: a
    when:
      subjet: { contains: ["x"] }
    action: discard
  - name: b
    when: { body: { contain: "x" } }
    action: discard
`,
    errors: [
      `rules/a.yaml:6:7: unknown key "subjet" in condition of rule "a"; expected one of subject, header, body, html, from, to, cc, from_name, to_name, cc_name, from_address, to_address, cc_address, mail_from, rcpt_to, sender_domain, recipient_domain, helo, attachment_name, attachment_type, size, rcpt_count, client_ip, server, tls, spamtrap, bulk, listed, virus, authenticated, rspamd, dnsbl, spf, dkim, dmarc, arc, all, any, not`,
      `rules/a.yaml:9:21: unknown key "contain" in "body"; expected one of contains, equals, matches, in_list`,
    ],
  },
  {
    name: "a bad action",
    text: GOOD_GATEWAY + `rules:
  - name: a
    when: { subject: { contains: x } }
    action: quarantine-now
`,
    errors: [
      `rules/a.yaml:6:13: "action" must be one of forward, discard, reject, tempfail, quarantine, redirect, tag, alert, bcc, blacklist, greylist`,
    ],
  },
  {
    name: "two terminal actions",
    text: GOOD_GATEWAY + `rules:
  - name: a
    when: { subject: { contains: x } }
    action: [discard, reject]
`,
    errors: [
      `rules/a.yaml:6:13: "action" may name only one of forward, discard, reject, tempfail, quarantine, redirect, got discard, reject`,
    ],
  },
  {
    name: "a duplicate rule name",
    text: GOOD_GATEWAY + `rules:
  - name: a
    when: { subject: { contains: x } }
    action: discard
  - name: a
    when: { body: { contains: y } }
    action: reject
`,
    errors: [`rules/a.yaml:7:11: duplicate rule name "a" (first at line 4)`],
  },
  {
    name: "bad reply code, enhanced code class and text",
    text: GOOD_GATEWAY + `rules:
  - name: a
    when: { subject: { contains: x } }
    action: reject
    reply: { code: 250, text: "ok" }
  - name: b
    when: { subject: { contains: y } }
    action: reject
    reply: { code: 451, enhanced: "5.7.1" }
  - name: c
    when: { subject: { contains: z } }
    action: reject
    reply: { text: "two\\nlines" }
  - name: d
    when: { subject: { contains: w } }
    action: discard
    reply: { code: 550 }
`,
    errors: [
      `rules/a.yaml:7:20: "reply.code" must be an integer from 400 to 599, got 250`,
      `rules/a.yaml:11:35: "reply.enhanced" 5.7.1 must start with 4 to match code 451`,
      `rules/a.yaml:15:20: "reply.text" must be printable ASCII on one line, got "two\\xalines"`,
      `rules/a.yaml:19:5: "reply" applies only to action reject or tempfail`,
    ],
  },
  {
    name: "empty and wrongly typed condition values",
    text: GOOD_GATEWAY + `rules:
  - name: a
    when: { subject: { contains: [] } }
    action: discard
  - name: b
    when: { subject: { contains: ["", 42] } }
    action: discard
  - name: c
    when: { any: [] }
    action: discard
  - name: d
    when: {}
    action: discard
`,
    errors: [
      `rules/a.yaml:5:34: "contains" must list at least one string`,
      `rules/a.yaml:8:35: "contains" value must not be empty`,
      `rules/a.yaml:8:39: "contains" value must be a string, got 42`,
      `rules/a.yaml:11:18: "any" must list at least one condition`,
      `rules/a.yaml:14:11: condition of rule "d" is empty; expected one of subject, header, body, html, from, to, cc, from_name, to_name, cc_name, from_address, to_address, cc_address, mail_from, rcpt_to, sender_domain, recipient_domain, helo, attachment_name, attachment_type, size, rcpt_count, client_ip, server, tls, spamtrap, bulk, listed, virus, authenticated, rspamd, dnsbl, spf, dkim, dmarc, arc, all, any, not`,
    ],
  },
  {
    name: "a rule without name and when, and a bad mode",
    text: GOOD_GATEWAY + `rules:
  - action: discard
    mode: dry-run
`,
    errors: [
      `rules/a.yaml:4:5: rule #1 has no "name"`,
      `rules/a.yaml:4:5: rule #1 has no "when"`,
      `rules/a.yaml:5:11: "mode" must be one of enforce, observe`,
    ],
  },
  {
    name: "rules that is not a list",
    text: GOOD_GATEWAY + `rules:\n  lottery: discard\n`,
    errors: [`rules/a.yaml:4:3: "rules" must be a list, got a mapping`],
  },
  {
    name: "a bad log level and unknown log key",
    text: GOOD_GATEWAY + `log: { level: verbose, path: /tmp/x }\n`,
    errors: [
      `rules/a.yaml:3:15: "log.level" must be one of debug, info, warning, error`,
      `rules/a.yaml:3:24: unknown key "path" in "log"; expected one of file, level`,
    ],
  },
];

for (const c of BROKEN) {
  Deno.test(`parseConfig() refuses ${c.name} with file:line:column`, () => {
    assert.deepEqual(errorsOf(c.text), c.errors);
  });
}

Deno.test("parseConfig() reports every problem of a file at once, in file order", () => {
  const lines = errorsOf(`gateway:
  protect: [198.51.100.1/24]
  ports: [0]
smtp: { max_errors: 0 }
rules:
  - name: x
    when: { subject: { contains: a } }
    action: drop
`);
  assert.equal(lines.length, 4);
  assert.deepEqual(lines.map((l) => l.split(":")[1]), ["2", "3", "4", "8"]);
});

Deno.test("parseConfig() accepts the issue's example and fills every default", () => {
  const cfg = parseConfig(
    `gateway:
  protect: [198.51.100.0/24, "2001:db8:25::/64"]
  ports: [25]
rules:
  - name: lottery
    when:
      subject: { contains: ["lottery", "당첨"] }
    action: discard
  - name: pills
    when:
      body: { contains: ["cheap pills"] }
    action: reject
`,
    "x.yaml",
  );
  assert.equal(cfg.file, "x.yaml");
  assert.deepEqual(cfg.gateway.protect.map((c) => [c.family, c.prefix, c.text]), [
    [4, 24, "198.51.100.0/24"],
    [6, 64, "2001:db8:25::/64"],
  ]);
  assert.deepEqual(cfg.gateway.protect[0].bytes, new Uint8Array([198, 51, 100, 0]));
  assert.deepEqual(cfg.gateway.ports, [25]);
  assert.deepEqual(cfg.gateway.interfaces, []);
  assert.ok(cfg.gateway.hostname.length > 0);
  assert.deepEqual(cfg.gateway.responder, { ipv4: "auto", ipv6: "auto", port: 10025 });
  assert.deepEqual(cfg.gateway.queue, { num: 25, maxlen: 4096, rcvbuf: 8388608, failOpen: false });
  assert.deepEqual(cfg.gateway.flows, { max: 65536, idleSeconds: 600 });
  assert.deepEqual(cfg.smtp, {
    maxMessageBytes: 26214400,
    maxInflightBytes: 268435456,
    maxRecipients: 100,
    recipientOvershootLimit: 1000,
    maxCommandLine: 512,
    maxTextLine: 1000,
    bareLineEndings: "normalize",
    longLines: "pass",
    maxErrors: 20,
    maxTransactions: 100,
    maxSessions: 500,
    maxSessionsPerClient: 20,
    maxSessionsPerNetwork: 50,
    networkPrefix: { ipv4: 24, ipv6: 64 },
    minDataRate: 500,
    timeouts: { command: 300, data: 180, session: 3600 },
    pipelining: true,
    bannerHostname: "server",
    serverProfileTtl: 3600,
    serverProfileMax: 4096,
  });
  assert.deepEqual(cfg.relay, {
    connectTimeout: 30,
    replyTimeout: 300,
    dataTimeout: 600,
    starttls: "opportunistic",
  });
  assert.deepEqual(cfg.log, { level: "info" });
  assert.deepEqual(cfg.rules, [
    {
      name: "lottery",
      when: {
        kind: "field",
        field: "subject",
        operator: "contains",
        values: ["lottery", "당첨"],
        at: { line: 7, column: 18 },
      },
      actions: [{ type: "discard" }],
      mode: "enforce",
      at: { line: 5, column: 5 },
    },
    {
      name: "pills",
      when: {
        kind: "field",
        field: "body",
        operator: "contains",
        values: ["cheap pills"],
        at: { line: 11, column: 15 },
      },
      actions: [{
        type: "reject",
        reply: { code: 550, enhanced: "5.7.1", text: "Message rejected by policy" },
      }],
      mode: "enforce",
      at: { line: 9, column: 5 },
    },
  ]);
});

Deno.test("parseConfig() reads snake_case keys, sizes and durations into camelCase numbers", () => {
  const cfg = parseConfig(
    GOOD_GATEWAY + `  interfaces: [wan0, "eth+"]
  hostname: gw.example.net
  responder: { ipv4: 192.0.2.1, ipv6: "2001:db8:1::1", port: 2525 }
  queue: { num: 0, maxlen: 1, rcvbuf: 512k, fail_open: true }
  flows: { max: 1, idle_seconds: 1h }
smtp:
  max_message_bytes: 10M
  bare_line_endings: normalize
  max_sessions: 10
  max_sessions_per_client: 10
  timeouts: { command: 90s, data: 250ms, session: 1h30m }
  pipelining: false
relay: { connect_timeout: 1.5, reply_timeout: "2m", data_timeout: 600, starttls: off }
log: { file: /var/log/ssg.log, level: debug }
`,
    "x.yaml",
  );
  assert.deepEqual(cfg.gateway.interfaces, ["wan0", "eth+"]);
  assert.equal(cfg.gateway.hostname, "gw.example.net");
  assert.deepEqual(cfg.gateway.responder, { ipv4: "192.0.2.1", ipv6: "2001:db8:1::1", port: 2525 });
  assert.deepEqual(cfg.gateway.queue, { num: 0, maxlen: 1, rcvbuf: 524288, failOpen: true });
  assert.deepEqual(cfg.gateway.flows, { max: 1, idleSeconds: 3600 });
  assert.equal(cfg.smtp.maxMessageBytes, 10 * 1024 * 1024);
  assert.equal(cfg.smtp.bareLineEndings, "normalize");
  assert.equal(cfg.smtp.maxSessionsPerClient, 10);
  assert.deepEqual(cfg.smtp.timeouts, { command: 90, data: 0.25, session: 5400 });
  assert.equal(cfg.smtp.pipelining, false);
  assert.deepEqual(cfg.relay, {
    connectTimeout: 1.5,
    replyTimeout: 120,
    dataTimeout: 600,
    starttls: "off",
  });
  assert.deepEqual(cfg.log, { file: "/var/log/ssg.log", level: "debug" });
});

// Limits at limit-1 / limit / limit+1.
const LIMITS: { key: string; yaml: (v: number) => string; ok: number[]; bad: number[] }[] = [
  { key: "port", yaml: (v) => GOOD_GATEWAY + `  ports: [${v}]\n`, ok: [1, 65535], bad: [0, 65536] },
  {
    key: "max_recipients",
    yaml: (v) => GOOD_GATEWAY + `smtp: { max_recipients: ${v} }\n`,
    ok: [100, 101],
    bad: [99],
  },
  {
    key: "max_command_line",
    yaml: (v) => GOOD_GATEWAY + `smtp: { max_command_line: ${v} }\n`,
    ok: [512, 513],
    bad: [511],
  },
  {
    key: "max_text_line",
    yaml: (v) => GOOD_GATEWAY + `smtp: { max_text_line: ${v} }\n`,
    ok: [1000, 1001],
    bad: [999],
  },
  {
    key: "max_sessions_per_client vs max_sessions 20",
    yaml: (v) => GOOD_GATEWAY + `smtp: { max_sessions: 20, max_sessions_per_client: ${v} }\n`,
    ok: [19, 20],
    bad: [21],
  },
  {
    key: "flows.idle_seconds vs the 300 s command timeout",
    yaml: (v) => GOOD_GATEWAY + `  flows: { idle_seconds: ${v} }\n`,
    ok: [300, 301],
    bad: [299],
  },
];
for (const l of LIMITS) {
  Deno.test(`parseConfig() checks ${l.key} at its limits (ok ${l.ok}, refused ${l.bad})`, () => {
    for (const v of l.ok) parseConfig(l.yaml(v), "x.yaml");
    for (const v of l.bad) assert.throws(() => parseConfig(l.yaml(v), "x.yaml"), ConfigError);
  });
}

Deno.test("parseConfig() accepts a bare address as a host network and normalises IPv6", () => {
  const cfg = parseConfig(`gateway:\n  protect: [198.51.100.25, "2001:DB8:25:0::25"]\n`, "x.yaml");
  assert.deepEqual(cfg.gateway.protect.map((c) => c.text), [
    "198.51.100.25/32",
    "2001:db8:25::25/128",
  ]);
});

Deno.test("parseConfig() builds condition trees from all/any/not and implicit all", () => {
  const cfg = parseConfig(
    GOOD_GATEWAY + `rules:
  - name: t
    when:
      subject: { contains: a }
      any:
        - body: { equals: [b] }
        - not: { subject: { contains: [c, d] } }
    action: [reject]
    reply: { code: 451, text: "try later" }
    mode: observe
`,
    "x.yaml",
  );
  const r = cfg.rules[0];
  assert.equal(r.mode, "observe");
  assert.deepEqual(r.actions, [{
    type: "reject",
    reply: { code: 451, enhanced: "4.7.1", text: "try later" },
  }]);
  assert.equal(r.when.kind, "all");
  if (r.when.kind !== "all") return;
  assert.deepEqual(r.when.conditions.map((c) => c.kind), ["field", "any"]);
  const any = r.when.conditions[1];
  assert.ok(any.kind === "any");
  assert.deepEqual(any.conditions.map((c) => c.kind), ["field", "not"]);
});

Deno.test("parseConfig() refuses condition trees nested deeper than 32 levels", () => {
  let cond = "{ subject: { contains: x } }";
  for (let i = 0; i < 40; i++) cond = `{ not: ${cond} }`;
  const lines = errorsOf(
    GOOD_GATEWAY + `rules:\n  - name: deep\n    when: ${cond}\n    action: discard\n`,
  );
  assert.equal(lines.length, 1);
  assert.match(
    lines[0],
    /^rules\/a\.yaml:5:\d+: condition of rule "deep" is nested deeper than 32 levels$/,
  );
});

Deno.test("parseConfig() resolves aliases but stops an alias bomb with a message", () => {
  const ok = parseConfig(
    GOOD_GATEWAY + `rules:
  - name: a
    when: { subject: { contains: &words [x, y] } }
    action: discard
  - name: b
    when: { body: { contains: *words } }
    action: discard
`,
    "x.yaml",
  );
  assert.deepEqual(ok.rules[1].when, {
    kind: "field",
    field: "body",
    operator: "contains",
    values: ["x", "y"],
    at: { line: 8, column: 21 },
  });
  // Nine levels of ten aliases each: 10^8 conditions if expanded.
  let levels = `        - &c0 { subject: { contains: x } }\n`;
  for (let i = 1; i < 9; i++) {
    levels += `        - &c${i} { all: [${Array(10).fill(`*c${i - 1}`).join(", ")}] }\n`;
  }
  const t0 = performance.now();
  const lines = errorsOf(
    GOOD_GATEWAY + `rules:
  - name: bomb
    when:
      all:
${levels}    action: discard
`,
  );
  assert.deepEqual(lines, [
    "rules/a.yaml:7:15: the file expands to more than 200000 values (alias loop?)",
  ]);
  assert.ok(performance.now() - t0 < 15_000);
});

Deno.test("loadConfig() reads a file and reports an unreadable one as a ConfigError", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/r.yaml`;
    await Deno.writeTextFile(path, GOOD_GATEWAY);
    const cfg = await loadConfig(path);
    assert.equal(cfg.file, path);
    await assert.rejects(() => loadConfig(`${dir}/missing.yaml`), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.match(e.format(), /^.*missing\.yaml: cannot read: /);
      assert.ok(e.cause);
      return true;
    });
    await Deno.writeFile(`${dir}/bad.yaml`, new Uint8Array([0x67, 0xff, 0xfe, 0x0a]));
    await assert.rejects(() => loadConfig(`${dir}/bad.yaml`), /cannot read: not valid UTF-8/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the shipped rules/default.yaml loads, protects the demo networks and summarises", async () => {
  const path = new URL("../../rules/default.yaml", import.meta.url).pathname;
  const cfg = await loadConfig(path);
  assert.deepEqual(cfg.gateway.protect.map((c) => c.text), ["198.51.100.0/24", "2001:db8:25::/64"]);
  assert.deepEqual(cfg.gateway.ports, [25]);
  assert.deepEqual(cfg.rules.map((r) => [r.name, r.actions.map((a) => a.type).join(), r.mode]), [
    ["lottery", "discard", "enforce"],
    ["pills", "reject", "enforce"],
    ["crypto-pitch", "reject", "observe"],
    ["bulk-campaign", "discard,alert", "enforce"],
    ["scam-phrases", "tag", "enforce"],
    ["disguised-executable", "quarantine,alert", "enforce"],
  ]);
  const text = summarizeConfig(cfg);
  assert.match(text, /^protect: 198\.51\.100\.0\/24, 2001:db8:25::\/64 \(TCP ports 25\)$/m);
  assert.match(text, /^responder: ipv4 auto, ipv6 auto, port 10025; hostname /m);
  assert.match(
    text,
    /^smtp: message 25M \(256M in memory in all\), 100 recipients, command line 512, text line 1000/m,
  );
  assert.match(text, /^rules: 6$/m);
  assert.match(
    text,
    /^ {2}1\. lottery: subject contains "lottery", "jackpot", "당첨", "복권" → discard$/m,
  );
  assert.match(
    text,
    /^ {2}2\. pills: body contains .* → reject 550 5\.7\.1 Message rejected: content not accepted here$/m,
  );
  assert.match(
    text,
    /^ {2}3\. crypto-pitch: subject contains .* or body contains .* → reject 550 5\.7\.1 Message rejected by policy \(observe only\)$/m,
  );
});

/** A test-only self-signed certificate and key (openssl), and a second key that fits neither. */
async function tlsFiles(dir: string): Promise<void> {
  for (const name of ["a", "b"]) {
    const out = await new Deno.Command("openssl", {
      args: ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=mx.example"]
        .concat(["-days", "1", "-keyout", `${dir}/${name}.key`, "-out", `${dir}/${name}.crt`]),
      stdout: "null",
      stderr: "null",
    }).output();
    assert.ok(out.success, "openssl req");
  }
}

Deno.test("smtp.tls reads the PEM certificate and key relative to the rule file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await tlsFiles(dir);
    await Deno.mkdir(`${dir}/rules`);
    const path = `${dir}/rules/r.yaml`;
    await Deno.writeTextFile(
      path,
      GOOD_GATEWAY + `smtp:\n  tls: { cert: ../a.crt, key: ${dir}/a.key }\n`,
    );
    const cfg = await loadConfig(path);
    assert.equal(cfg.smtp.tls?.certFile, "../a.crt");
    assert.equal(cfg.smtp.tls?.cert, await Deno.readTextFile(`${dir}/a.crt`));
    assert.equal(cfg.smtp.tls?.key, await Deno.readTextFile(`${dir}/a.key`));
    assert.equal(cfg.smtp.tls?.subject, "CN=mx.example");
    const text = summarizeConfig(cfg);
    assert.match(
      text,
      /^smtp tls: STARTTLS offered; cert \.\.\/a\.crt \(CN=mx\.example, valid to /m,
    );
    assert.match(text, /starttls opportunistic \(server certificate not verified\)$/m);
    assert.doesNotMatch(text, /PRIVATE KEY/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("smtp.tls problems are refused with file:line:column", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await tlsFiles(dir);
    await Deno.writeTextFile(`${dir}/junk.pem`, "not a certificate\n");
    const cases: [string, RegExp][] = [
      [
        `tls: { cert: missing.crt, key: a.key }`,
        /r\.yaml:4:16: cannot read "smtp\.tls\.cert" file "missing\.crt" \(.*missing\.crt\): /,
      ],
      [
        `tls: { cert: junk.pem, key: a.key }`,
        /r\.yaml:4:16: "smtp\.tls\.cert" file "junk\.pem" is not a PEM certificate/,
      ],
      [
        `tls: { cert: a.crt, key: junk.pem }`,
        /r\.yaml:4:28: "smtp\.tls\.key" file "junk\.pem" is not a PEM private key/,
      ],
      [
        `tls: { cert: a.crt, key: b.key }`,
        /r\.yaml:4:28: "smtp\.tls\.key" file "b\.key" does not belong to the certificate "a\.crt"/,
      ],
      [`tls: { cert: a.crt }`, /r\.yaml:4:8: "smtp\.tls\.key" is missing/],
      [
        `tls: { cert: a.crt, key: a.key, ca: x }`,
        /r\.yaml:4:35: unknown key "ca" in "smtp\.tls"; expected one of cert, key/,
      ],
      [`tls:`, /r\.yaml:4:3: "smtp\.tls" is empty/],
    ];
    for (const [line, re] of cases) {
      const path = `${dir}/r.yaml`;
      await Deno.writeTextFile(path, GOOD_GATEWAY + `smtp:\n  ${line}\n`);
      await assert.rejects(() => loadConfig(path), (e: unknown) => {
        assert.ok(e instanceof ConfigError, String(e));
        assert.match(e.format(), re);
        return true;
      }, line);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("relay.starttls must be opportunistic or off", () => {
  const lines = errorsOf(GOOD_GATEWAY + "relay:\n  starttls: required\n");
  assert.equal(lines.length, 1);
  assert.match(
    lines[0],
    /^rules\/a\.yaml:4:13: "relay\.starttls" must be one of opportunistic, off/,
  );
});

Deno.test("smtp.max_inflight_bytes below smtp.max_message_bytes is refused with its line", () => {
  const text = [
    "gateway:",
    "  protect: [198.51.100.0/24]",
    "smtp:",
    "  max_message_bytes: 25M",
    "  max_inflight_bytes: 10M",
    "rules: []",
    "",
  ].join("\n");
  assert.throws(
    () => parseConfig(text, "r.yaml"),
    (e: unknown) =>
      e instanceof ConfigError &&
      /^r\.yaml:5:23: "smtp\.max_inflight_bytes" \(10485760\) must be at least/.test(e.format()),
  );
  const ok = parseConfig(text.replace("10M", "25M"), "r.yaml");
  assert.equal(ok.smtp.maxInflightBytes, 25 * 1024 * 1024);
});
