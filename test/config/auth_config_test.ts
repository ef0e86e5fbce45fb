import assert from "node:assert/strict";
import { ConfigError } from "../../src/config/config_error.ts";
import { parseConfig, summarizeConfig } from "../../src/config/load_config.ts";
import { RELOADABLE, reloadPlan } from "../../src/config/reload_plan.ts";

const GW0 = `gateway:\n  protect: [198.51.100.0/24]\n  hostname: gw.example\n`;
const GW = GW0 + `dns:\n  servers: [127.0.0.1]\n`;
const DMARC_RULE =
  `rules:\n  - name: dmarc\n    when: { dmarc: { result: fail, policy: reject } }\n    action: reject\n`;

function errorsOf(text: string): string[] {
  try {
    parseConfig(text, "rules/a.yaml");
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${e}`);
    return e.format().split("\n");
  }
  assert.fail("expected the rule file to be refused");
}

Deno.test("auth: absent is no verification; empty is all four checks as gateway.hostname, a header, 10s, tempfail", () => {
  assert.equal(parseConfig(GW, "a.yaml").auth, undefined);
  assert.deepEqual(parseConfig(GW + "auth:\n", "a.yaml").auth, {
    authservId: "gw.example",
    checks: ["spf", "dkim", "dmarc", "arc"],
    addHeader: true,
    timeoutSeconds: 10,
    onFailure: "tempfail",
  });
  // A rule that tests a result needs no section: the defaults apply.
  assert.equal(parseConfig(GW + DMARC_RULE, "a.yaml").auth?.authservId, "gw.example");
});

Deno.test("auth: every key is read, and ssg check describes it", () => {
  const cfg = parseConfig(
    GW + `auth:
  authserv_id: mx.corp.example
  checks: [dmarc, spf, dkim]
  add_header: false
  timeout: 30s
  on_failure: quarantine
` + DMARC_RULE,
    "a.yaml",
  );
  assert.deepEqual(cfg.auth, {
    authservId: "mx.corp.example",
    checks: ["spf", "dkim", "dmarc"],
    addHeader: false,
    timeoutSeconds: 30,
    onFailure: "quarantine",
  });
  const summary = summarizeConfig(cfg);
  assert.match(
    summary,
    /^auth: spf, dkim, dmarc as mx\.corp\.example, 30s per phase \(SPF from MAIL FROM, the rest at end of data\); Authentication-Results not added \(forged ones with our id still removed\); a tested check's temperror → quarantine$/m,
  );
  assert.match(summary, /^ {2}1\. dmarc: dmarc: fail policy reject → reject/m);
});

Deno.test("auth keys are checked: authserv_id a host name, checks known, timeout 1s to 90s, on_failure a verdict", () => {
  const bad: [string, RegExp][] = [
    ["authserv_id: 'gw example'", /"auth\.authserv_id" must be a host name/],
    ["authserv_id: 'gw;x'", /"auth\.authserv_id" must be a host name/],
    ["checks: [spf, bimi]", /"auth\.checks" item must be one of spf, dkim, dmarc, arc/],
    ["checks: []", /"auth\.checks" must name at least one of spf, dkim, dmarc, arc/],
    ["timeout: 0s", /"auth\.timeout" must be from 1 to 90 seconds/],
    ["timeout: 91s", /"auth\.timeout" must be from 1 to 90 seconds/],
    [
      "on_failure: ignore",
      /"auth\.on_failure" must be one of tempfail, quarantine, reject, forward/,
    ],
    ["add_header: yes", /"auth\.add_header" must be true or false/],
    ["authserv: x", /unknown key "authserv" in "auth"; expected one of authserv_id, checks/],
  ];
  for (const [line, want] of bad) {
    const errors = errorsOf(GW + `auth:\n  ${line}\n`);
    assert.match(errors[0], /^rules\/a\.yaml:7:\d+: /, line);
    assert.match(errors[0], want, line);
  }
  assert.equal(parseConfig(GW + "auth: { timeout: 1s }\n", "a.yaml").auth?.timeoutSeconds, 1);
  assert.equal(parseConfig(GW + "auth: { timeout: 90s }\n", "a.yaml").auth?.timeoutSeconds, 90);
});

Deno.test("spf, dkim, dmarc and arc conditions: values, lists, domain and policy; errors at their line", () => {
  const rules = (when: string) =>
    GW + `rules:\n  - name: a\n    when: ${when}\n    action: discard\n`;
  const when = (w: string) => parseConfig(rules(w), "a.yaml").rules[0].when;
  assert.deepEqual(when("{ spf: fail }"), {
    kind: "auth",
    check: "spf",
    results: ["fail"],
    at: { line: 8, column: 13 },
  });
  assert.deepEqual(when("{ spf: [fail, softfail, fail] }"), {
    kind: "auth",
    check: "spf",
    results: ["fail", "softfail"],
    at: { line: 8, column: 13 },
  });
  assert.deepEqual(when("{ dkim: { result: pass, domain: Example.ORG } }"), {
    kind: "auth",
    check: "dkim",
    results: ["pass"],
    domain: "example.org",
    at: { line: 8, column: 13 },
  });
  assert.deepEqual(when("{ dmarc: { result: fail, policy: [reject, quarantine] } }"), {
    kind: "auth",
    check: "dmarc",
    results: ["fail"],
    policies: ["reject", "quarantine"],
    at: { line: 8, column: 13 },
  });
  assert.equal((when("{ arc: none }") as { check: string }).check, "arc");
  const bad: [string, RegExp][] = [
    [
      "{ spf: failed }",
      /"spf" must be one of pass, fail, softfail, neutral, none, temperror, permerror/,
    ],
    [
      "{ dkim: softfail }",
      /"dkim" must be one of pass, fail, neutral, none, policy, temperror, permerror/,
    ],
    ["{ dmarc: { policy: reject } }", /"dmarc" needs "result"/],
    [
      "{ dmarc: { result: fail, policy: strict } }",
      /"dmarc\.policy" must be one of none, quarantine, reject/,
    ],
    [
      "{ spf: { result: fail, domain: x.example } }",
      /unknown key "domain" in "spf"; expected one of result/,
    ],
    ["{ dkim: { result: pass, domain: 'a b' } }", /"dkim\.domain" must be a domain name/],
    ["{ arc: [] }", /"arc" must name at least one of pass, fail, none, temperror, permerror/],
  ];
  for (const [w, want] of bad) {
    const errors = errorsOf(rules(w));
    assert.match(errors[0], /^rules\/a\.yaml:8:\d+: /, w);
    assert.match(errors[0], want, w);
  }
});

Deno.test("auth: is applied by a reload (SIGHUP)", () => {
  const a = parseConfig(GW + "auth:\n" + DMARC_RULE, "a.yaml");
  const b = parseConfig(
    GW + "auth: { on_failure: reject, checks: [dmarc] }\n" + DMARC_RULE,
    "a.yaml",
  );
  const plan = reloadPlan(a, b);
  assert.deepEqual(plan.ignored, []);
  assert.deepEqual(plan.config.auth, b.auth);
  assert.ok(RELOADABLE.includes("auth.*"));
});

Deno.test("the commented auth: section and dmarc-reject rule in rules/default.yaml load when uncommented", async () => {
  const path = new URL("../../rules/default.yaml", import.meta.url).pathname;
  let text = await Deno.readTextFile(path);
  const before = text;
  text = text.replace(/^# auth:$/m, "dns: { servers: [127.0.0.1] }\nauth:")
    .replace(/^# {4}(authserv_id|checks|add_header|timeout|on_failure):/gm, "  $1:")
    .replace(/^# {4}# /gm, "  # ")
    .replace(
      /^ {2}# (- name: dmarc-reject| {2}when: \{ dmarc: .*\}| {2}action: reject| {2}reply: .*DMARC policy.*)$/gm,
      "  $1",
    );
  assert.notEqual(text, before);
  const cfg = parseConfig(text, path, { readTextFile: (p) => Deno.readTextFileSync(p) });
  assert.equal(cfg.auth?.authservId, "mx.corp.example");
  const rule = cfg.rules.find((r) => r.name === "dmarc-reject");
  assert.deepEqual(rule?.when, {
    kind: "auth",
    check: "dmarc",
    results: ["fail"],
    policies: ["reject"],
    at: rule?.when.at,
  });
});

Deno.test("sender authentication without a dns: section is refused where it is asked for", () => {
  assert.deepEqual(errorsOf(GW0 + "auth:\n"), [
    `rules/a.yaml:4:1: "auth": sender authentication needs a "dns" section saying which resolver to ask (e.g. "dns: { servers: [127.0.0.1] }")`,
  ]);
  assert.deepEqual(errorsOf(GW0 + DMARC_RULE), [
    `rules/a.yaml:6:13: "dmarc": sender authentication needs a "dns" section saying which resolver to ask (e.g. "dns: { servers: [127.0.0.1] }")`,
  ]);
});
