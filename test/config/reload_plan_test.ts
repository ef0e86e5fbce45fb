import assert from "node:assert/strict";
import { parseConfig } from "../../src/config/load_config.ts";
import { summarizeConfig } from "../../src/config/summarize_config.ts";
import { changedKeys, reloadPlan } from "../../src/config/reload_plan.ts";

const BASE = `gateway:
  protect: [198.51.100.0/24]
  hostname: gw.example
  queue: { maxlen: 4096 }
smtp:
  bare_line_endings: reject
  max_sessions_per_client: 20
relay:
  connect_timeout: 30
log:
  file: /var/log/ssg.log
  level: info
state:
  file: /var/lib/ssg/state.db
quarantine:
  dir: /var/lib/ssg/quarantine
alert:
  to: [postmaster@example.net]
  relay: 198.51.100.25:25
  rate: 10/1h
rules:
  - name: lottery
    when: { subject: { contains: [lottery] } }
    action: discard
`;

const parse = (text: string) => parseConfig(text, "rules/r.yaml");

Deno.test("reloadPlan() applies a changed smtp setting and reports nothing as ignored", () => {
  const running = parse(BASE);
  const next = parse(BASE.replace("bare_line_endings: reject", "bare_line_endings: normalize"));
  const plan = reloadPlan(running, next);
  assert.deepEqual(plan.ignored, []);
  assert.equal(plan.config.smtp.bareLineEndings, "normalize");
});

Deno.test("reloadPlan() applies rules, smtp limits, relay timeouts and the log level together", () => {
  const running = parse(BASE);
  const next = parse(
    BASE.replace("max_sessions_per_client: 20", "max_sessions_per_client: 5")
      .replace("connect_timeout: 30", "connect_timeout: 7")
      .replace("level: info", "level: debug")
      .replace("contains: [lottery]", "contains: [lotto]"),
  );
  const plan = reloadPlan(running, next);
  assert.deepEqual(plan.ignored, []);
  assert.equal(plan.config.smtp.maxSessionsPerClient, 5);
  assert.equal(plan.config.relay.connectTimeout, 7);
  assert.equal(plan.config.log.level, "debug");
  assert.equal(plan.config.rules, next.rules);
});

// Each case: an edit of a restart-only setting, and the key a reload must name as ignored.
// (alert.from defaults to ssg@ + the host name, so a new host name changes it too.)
const RESTART_CASES: [string, string, string, string[]][] = [
  ["gateway.hostname", "hostname: gw.example", "hostname: other.example", [
    "gateway.hostname",
    "alert.from",
  ]],
  ["gateway.protect", "[198.51.100.0/24]", "[198.51.100.0/25]", ["gateway.protect"]],
  ["gateway.queue.maxlen", "maxlen: 4096", "maxlen: 8192", ["gateway.queue.maxlen"]],
  ["log.file", "file: /var/log/ssg.log", "file: /var/log/other.log", ["log.file"]],
  ["state.file", "file: /var/lib/ssg/state.db", "file: /tmp/s.db", ["state.file"]],
  ["quarantine.dir", "dir: /var/lib/ssg/quarantine", "dir: /tmp/q", ["quarantine.dir"]],
  ["alert.rate", "rate: 10/1h", "rate: 5/1h", ["alert.rate"]],
  ["alert.relay", "relay: 198.51.100.25:25", "relay: 198.51.100.26:25", ["alert.relay"]],
];
for (const [what, from, to, key] of RESTART_CASES) {
  Deno.test(`reloadPlan() keeps the running ${what} and names it as ignored`, () => {
    const running = parse(BASE);
    const edited = BASE.replace(from, to);
    assert.notEqual(edited, BASE, `the edit of ${what} applies to the base file`);
    const plan = reloadPlan(running, parse(edited));
    assert.deepEqual(plan.ignored, key);
    assert.deepEqual(plan.config.gateway, running.gateway);
    assert.equal(plan.config.log.file, running.log.file);
    assert.deepEqual(plan.config.state, running.state);
    assert.deepEqual(plan.config.quarantine, running.quarantine);
    assert.deepEqual(plan.config.alert, running.alert);
  });
}

Deno.test("reloadPlan() compared with what runs: a restart-only edit stays reported on every reload", () => {
  const start = parse(BASE);
  const edited = parse(BASE.replace("hostname: gw.example", "hostname: other.example"));
  const first = reloadPlan(start, edited);
  const second = reloadPlan(first.config, edited);
  assert.deepEqual(second.ignored, ["gateway.hostname", "alert.from"]);
  assert.equal(second.config.gateway.hostname, "gw.example");
});

Deno.test("changedKeys() names leaves in snake_case and treats arrays and bytes as whole values", () => {
  assert.deepEqual(
    changedKeys({ maxRows: 1, a: { idleSeconds: 2 } }, { maxRows: 2, a: { idleSeconds: 2 } }, "s"),
    ["s.max_rows"],
  );
  assert.deepEqual(changedKeys({ l: [1, 2] }, { l: [1, 2] }, "x"), []);
  assert.deepEqual(changedKeys({ l: [1, 2] }, { l: [2, 1] }, "x"), ["x.l"]);
  assert.deepEqual(
    changedKeys({ b: new Uint8Array([1]) }, { b: new Uint8Array([2]) }, "x"),
    ["x.b"],
  );
  assert.deepEqual(changedKeys(undefined, { a: 1 }, "alert"), ["alert"]);
  assert.deepEqual(changedKeys({ r: { h: 1 } }, { r: { h: 2 } }, "alert", 1), ["alert.r"]);
});

Deno.test("ssg check's summary says what SIGHUP applies and what needs a restart", () => {
  const text = summarizeConfig(parse(BASE));
  assert.match(
    text,
    /^reload \(SIGHUP\) applies: rules, .*smtp\.\*, relay\.\* except relay\.source\*, log\.level$/m,
  );
  assert.match(
    text,
    /^restart needed for: gateway\.\*, relay\.source\*, state\.\*, quarantine\.\*, alert\.\*, log\.file /m,
  );
});

Deno.test("reloadPlan() keeps the running relay.source and names it, while relay timeouts apply", () => {
  const running = parse(BASE);
  const next = parse(BASE.replace("connect_timeout: 30", "connect_timeout: 9\n  source: gateway"));
  const plan = reloadPlan(running, next);
  assert.deepEqual(plan.ignored, ["relay.source"]);
  assert.equal(plan.config.relay.source, running.relay.source);
  assert.equal(plan.config.relay.connectTimeout, 9);
});
