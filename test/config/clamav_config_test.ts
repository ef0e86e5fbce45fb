import assert from "node:assert/strict";
import { ConfigError } from "../../src/config/config_error.ts";
import { CLAMAV_DEFAULTS } from "../../src/config/defaults.ts";
import { loadConfig, parseConfig, summarizeConfig } from "../../src/config/load_config.ts";
import { RELOADABLE, reloadPlan } from "../../src/config/reload_plan.ts";
import { MAX_SCAN_TIMEOUT_SECONDS } from "../../src/config/read_clamav.ts";
import { DEFAULT_JUDGE_TIMEOUT_MS } from "../../src/smtp/outcome_phase.ts";

const GW = `gateway:\n  protect: [198.51.100.0/24]\n  hostname: gw.example\n`;
const VIRUS_RULE = `rules:\n  - name: no-viruses\n    when: { virus: true }\n    action: reject\n`;

function errorsOf(text: string): string[] {
  try {
    parseConfig(text, "rules/a.yaml");
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${e}`);
    return e.format().split("\n");
  }
  assert.fail("expected the rule file to be refused");
}

const clamav = (body: string) => parseConfig(GW + `clamav: { ${body} }\n`, "a.yaml").clamav;

Deno.test("clamav: absent is no scanner; empty is Debian's clamd socket, 30s, 25M and tempfail", () => {
  assert.equal(parseConfig(GW, "a.yaml").clamav, undefined);
  const cfg = parseConfig(GW + "clamav:\n", "a.yaml");
  assert.deepEqual(cfg.clamav, {
    address: { path: "/run/clamav/clamd.ctl" },
    timeoutSeconds: 30,
    maxBytes: 25 * 1024 * 1024,
    onFailure: "tempfail",
  });
  assert.deepEqual(cfg.clamav, { ...CLAMAV_DEFAULTS, address: { ...CLAMAV_DEFAULTS.address } });
});

Deno.test("clamav: every key is read, and ssg check describes the scanner", () => {
  const cfg = parseConfig(
    GW + `clamav:
  socket: /var/run/clamd.scan/clamd.sock
  timeout: 1m
  max_bytes: 10M
  on_failure: quarantine
` + VIRUS_RULE,
    "a.yaml",
  );
  assert.deepEqual(cfg.clamav, {
    address: { path: "/var/run/clamd.scan/clamd.sock" },
    timeoutSeconds: 60,
    maxBytes: 10 * 1024 * 1024,
    onFailure: "quarantine",
  });
  const summary = summarizeConfig(cfg);
  assert.match(
    summary,
    /^clamav: clamd at \/var\/run\/clamd\.scan\/clamd\.sock, 1m per scan, messages up to 10485760 bytes scanned; scan failed → quarantine; messages of 10485761 to 26214400 bytes \(smtp\.max_message_bytes\) are not scanned → quarantine$/m,
  );
  assert.match(summary, /^ {2}1\. no-viruses: virus → reject/m);
  assert.match(
    summarizeConfig(parseConfig(GW + "clamav:\n", "a.yaml")),
    /scan failed → tempfail \(no rule tests virus: nothing is scanned\)$/m,
  );
});

Deno.test("clamav.address takes host:port (IPv4, [IPv6], a name) and needs the port", () => {
  assert.deepEqual(clamav("address: 127.0.0.1:3310")?.address, {
    hostname: "127.0.0.1",
    port: 3310,
  });
  assert.deepEqual(clamav(`address: "[2001:db8::3]:3310"`)?.address, {
    hostname: "2001:db8::3",
    port: 3310,
  });
  assert.deepEqual(clamav("address: clamd.corp.example:1")?.address, {
    hostname: "clamd.corp.example",
    port: 1,
  });
  assert.deepEqual(clamav("address: clamd.corp.example:65535")?.address, {
    hostname: "clamd.corp.example",
    port: 65535,
  });
  assert.deepEqual(errorsOf(GW + "clamav: { address: clamd.corp.example:65536 }\n"), [
    `rules/a.yaml:4:20: "clamav.address": "65536" is not a port (1 to 65535)`,
  ]);
  assert.deepEqual(errorsOf(GW + "clamav: { address: 127.0.0.1 }\n"), [
    `rules/a.yaml:4:20: "clamav.address": "127.0.0.1" needs a port, e.g. 127.0.0.1:3310`,
  ]);
  assert.deepEqual(
    errorsOf(GW + "clamav: { socket: /run/clamav/clamd.ctl, address: 127.0.0.1:3310 }\n"),
    [
      `rules/a.yaml:4:42: "clamav" takes "socket" (a Unix socket path) or "address" (host:port), not both`,
    ],
  );
});

Deno.test("clamav.socket is an absolute path of at most 107 bytes (sun_path)", () => {
  const path = (n: number) => "/" + "s".repeat(n - 1);
  assert.equal((clamav(`socket: ${path(106)}`)?.address as { path: string }).path, path(106));
  assert.equal((clamav(`socket: ${path(107)}`)?.address as { path: string }).path, path(107));
  assert.match(
    errorsOf(GW + `clamav: { socket: ${path(108)} }\n`)[0],
    /^rules\/a\.yaml:4:19: "clamav\.socket" .*107/,
  );
  assert.match(
    errorsOf(GW + `clamav: { socket: run/clamd.ctl }\n`)[0],
    /^rules\/a\.yaml:4:19: "clamav\.socket" .*an absolute path without control characters/,
  );
});

Deno.test("clamav.timeout is 1s to 90s, inside the judge's 2-minute bound (limit-1 refused, limit and limit+1 accepted, and at the top)", () => {
  assert.ok(MAX_SCAN_TIMEOUT_SECONDS * 1000 < DEFAULT_JUDGE_TIMEOUT_MS);
  assert.match(
    errorsOf(GW + "clamav: { timeout: 0 }\n")[0],
    /^rules\/a\.yaml:4:20: "clamav\.timeout" must be/,
  );
  assert.equal(clamav("timeout: 1s")?.timeoutSeconds, 1);
  assert.equal(clamav("timeout: 2s")?.timeoutSeconds, 2);
  assert.equal(clamav("timeout: 89s")?.timeoutSeconds, 89);
  assert.equal(clamav("timeout: 90s")?.timeoutSeconds, 90);
  assert.match(
    errorsOf(GW + "clamav: { timeout: 91s }\n")[0],
    /"clamav\.timeout" must be from 1 to 90 seconds, got 91/,
  );
});

Deno.test("clamav.max_bytes is 1K to 1G (limit-1 refused, limit and limit+1 accepted, and at the top)", () => {
  assert.match(
    errorsOf(GW + "clamav: { max_bytes: 1023 }\n")[0],
    /^rules\/a\.yaml:4:22: "clamav\.max_bytes" must be from 1024 to 1073741824 bytes, got 1023/,
  );
  assert.equal(clamav("max_bytes: 1024")?.maxBytes, 1024);
  assert.equal(clamav("max_bytes: 1025")?.maxBytes, 1025);
  assert.equal(clamav("max_bytes: 1G")?.maxBytes, 1 << 30);
  assert.match(
    errorsOf(GW + `clamav: { max_bytes: ${(1 << 30) + 1} }\n`)[0],
    /"clamav\.max_bytes" must be from 1024 to 1073741824 bytes/,
  );
});

Deno.test("clamav.on_failure accepts exactly tempfail, quarantine, reject and forward", () => {
  for (const v of ["tempfail", "quarantine", "reject", "forward"]) {
    assert.equal(clamav(`on_failure: ${v}`)?.onFailure, v);
  }
  assert.deepEqual(errorsOf(GW + "clamav: { on_failure: discard }\n"), [
    `rules/a.yaml:4:23: "clamav.on_failure" must be one of tempfail, quarantine, reject, forward`,
  ]);
  assert.match(
    errorsOf(GW + "clamav: { onfailure: reject }\n")[0],
    /rules\/a\.yaml:4:11: unknown key "onfailure" in "clamav"/,
  );
});

Deno.test("a rule testing virus without a clamav: section is refused at the virus key's line and column", () => {
  assert.deepEqual(errorsOf(GW + VIRUS_RULE), [
    `rules/a.yaml:6:13: "virus" needs a "clamav" section saying where clamd listens (e.g. "clamav: { socket: /run/clamav/clamd.ctl }")`,
  ]);
  // Nested under not/any, every use is named.
  const nested = GW + `rules:
  - name: a
    when:
      any:
        - subject: { contains: [x] }
        - not: { virus: false }
    action: discard
  - name: b
    when: { virus: { contains: [Eicar] } }
    action: discard
`;
  assert.deepEqual(errorsOf(nested).map((l) => l.split(": ")[0]), [
    "rules/a.yaml:9:18",
    "rules/a.yaml:12:13",
  ]);
});

Deno.test("virus takes true, false or { contains: [...] } and nothing else", () => {
  const rules = (when: string) =>
    GW + `clamav:\nrules:\n  - name: v\n    when: { virus: ${when} }\n    action: discard\n`;
  assert.deepEqual(parseConfig(rules("true"), "a.yaml").rules[0].when, {
    kind: "virus",
    value: true,
    at: { line: 7, column: 13 },
  });
  assert.equal(
    (parseConfig(rules("false"), "a.yaml").rules[0].when as { value: boolean }).value,
    false,
  );
  assert.deepEqual(parseConfig(rules("{ contains: [eicar, Phish] }"), "a.yaml").rules[0].when, {
    kind: "virus",
    value: true,
    signatures: ["eicar", "Phish"],
    at: { line: 7, column: 13 },
  });
  assert.match(errorsOf(rules("yes"))[0], /^rules\/a\.yaml:7:20: "virus" must be true or false/);
  assert.match(errorsOf(rules("{ equals: [x] }"))[0], /unknown key "equals" in "virus"/);
  assert.match(
    errorsOf(rules("{ contains: [] }"))[0],
    /"virus\.contains" must list at least one string/,
  );
});

Deno.test("clamav: is applied by a reload (SIGHUP): the next engine's client goes to the new clamd", () => {
  const a = parseConfig(GW + "clamav:\n" + VIRUS_RULE, "a.yaml");
  const b = parseConfig(
    GW + "clamav: { address: 127.0.0.1:3310, on_failure: reject }\n" + VIRUS_RULE,
    "a.yaml",
  );
  const plan = reloadPlan(a, b);
  assert.deepEqual(plan.ignored, []);
  assert.deepEqual(plan.config.clamav, b.clamav);
  assert.ok(RELOADABLE.includes("clamav.*"));
});

Deno.test("the shipped rules/default.yaml loads without clamd and scans nothing", async () => {
  const cfg = await loadConfig(new URL("../../rules/default.yaml", import.meta.url).pathname);
  assert.equal(cfg.clamav, undefined);
});

Deno.test("ssg check says which accepted messages are too large to scan (max_bytes below smtp.max_message_bytes)", () => {
  const cfg = parseConfig(
    GW + "smtp: { max_message_bytes: 2M }\nclamav: { max_bytes: 1M }\n" + VIRUS_RULE,
    "a.yaml",
  );
  assert.match(
    summarizeConfig(cfg),
    /; messages of 1048577 to 2097152 bytes \(smtp\.max_message_bytes\) are not scanned → tempfail$/m,
  );
  const same = parseConfig(
    GW + "smtp: { max_message_bytes: 1M }\nclamav: { max_bytes: 1M }\n",
    "a.yaml",
  );
  assert.doesNotMatch(summarizeConfig(same), /are not scanned/);
});

Deno.test("the commented clamav: section and virus rule in rules/default.yaml load when uncommented", async () => {
  const path = new URL("../../rules/default.yaml", import.meta.url).pathname;
  let text = await Deno.readTextFile(path);
  const before = text;
  text = text.replace(/^# clamav:$/m, "clamav:")
    .replace(/^# {3}(socket|timeout|max_bytes|on_failure):/gm, "  $1:")
    .replace(/^# {3}# /gm, "  # ")
    .replace(
      /^ {2}# (- name: no-viruses| {2}when: \{ virus: true \}| {2}action: \[reject, alert\]| {2}reply: .*Virus found.*)$/gm,
      "  $1",
    );
  assert.notEqual(text, before);
  const cfg = parseConfig(text, path, {
    readTextFile: (p) => Deno.readTextFileSync(p),
  });
  assert.deepEqual(cfg.clamav, { ...CLAMAV_DEFAULTS, address: { ...CLAMAV_DEFAULTS.address } });
  assert.equal(cfg.rules[0].name, "no-viruses");
  assert.deepEqual(cfg.rules[0].when, { kind: "virus", value: true, at: cfg.rules[0].when.at });
});
