import assert from "node:assert/strict";
import { ConfigError } from "../../src/config/config_error.ts";
import { CONTENT_DEFAULTS } from "../../src/config/defaults.ts";
import { loadConfig, parseConfig, summarizeConfig } from "../../src/config/load_config.ts";
import { RELOADABLE, reloadPlan } from "../../src/config/reload_plan.ts";

const GW = `gateway:\n  protect: [198.51.100.0/24]\n  hostname: gw.example\n`;

function errorsOf(text: string): string[] {
  try {
    parseConfig(text, "rules/a.yaml");
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${e}`);
    return e.format().split("\n");
  }
  assert.fail("expected the rule file to be refused");
}

Deno.test("content: absent or empty is all defaults, and the default verdict is quarantine, not forward", () => {
  for (const extra of ["", "content:\n"]) {
    const cfg = parseConfig(GW + extra, "a.yaml");
    assert.deepEqual(cfg.content, CONTENT_DEFAULTS);
  }
  assert.equal(CONTENT_DEFAULTS.undecodable, "quarantine");
});

Deno.test("content: every key is read, sizes and durations in their usual spellings", () => {
  const cfg = parseConfig(
    GW + `content:
  undecodable: tempfail
  max_parts: 500
  max_depth: 20
  max_header_bytes: 256k
  max_headers: 300
  max_text_chars: 2097152
  timeout: 1m
`,
    "a.yaml",
  );
  assert.deepEqual(cfg.content, {
    undecodable: "tempfail",
    maxParts: 500,
    maxDepth: 20,
    maxHeaderBytes: 256 * 1024,
    maxHeaders: 300,
    maxTextChars: 2097152,
    timeoutSeconds: 60,
  });
  assert.match(
    summarizeConfig(cfg),
    /^content: a message not fully read → tempfail; at most 500 MIME parts, 20 levels, 262144-byte header sections of 300 fields, 2097152 characters per text, 1m to parse$/m,
  );
});

Deno.test("content.undecodable accepts exactly quarantine, tempfail, reject and forward", () => {
  for (const v of ["quarantine", "tempfail", "reject", "forward"]) {
    assert.equal(
      parseConfig(GW + `content: { undecodable: ${v} }\n`, "a.yaml").content?.undecodable,
      v,
    );
  }
  assert.deepEqual(errorsOf(GW + "content: { undecodable: discard }\n"), [
    `rules/a.yaml:4:25: "content.undecodable" must be one of quarantine, tempfail, reject, forward`,
  ]);
});

Deno.test("content: bounds are refused outside their range (limit-1 refused, limit and limit+1 accepted at the floor)", () => {
  const ok = (k: string, v: string | number) =>
    parseConfig(GW + `content: { ${k}: ${v} }\n`, "a.yaml");
  assert.equal(ok("max_parts", 2).content?.maxParts, 2);
  assert.equal(ok("max_parts", 3).content?.maxParts, 3);
  assert.match(errorsOf(GW + "content: { max_parts: 1 }\n")[0], /"content.max_parts" must be/);
  assert.equal(ok("max_parts", 100000).content?.maxParts, 100000);
  assert.match(errorsOf(GW + "content: { max_parts: 100001 }\n")[0], /"content.max_parts" must be/);
  assert.match(errorsOf(GW + "content: { max_depth: 0 }\n")[0], /"content.max_depth" must be/);
  assert.equal(ok("max_header_bytes", 1024).content?.maxHeaderBytes, 1024);
  assert.match(
    errorsOf(GW + "content: { max_header_bytes: 1023 }\n")[0],
    /"content.max_header_bytes" must be from 1024 to 67108864 bytes, got 1023/,
  );
  assert.match(errorsOf(GW + "content: { max_text_chars: 1023 }\n")[0], /max_text_chars/);
  assert.match(errorsOf(GW + "content: { timeout: 0 }\n")[0], /"content.timeout" must be/);
  assert.match(
    errorsOf(GW + "content: { maxparts: 5 }\n")[0],
    /unknown key "maxparts" in "content"/,
  );
});

Deno.test("content: is applied by a reload (SIGHUP), not left for a restart", () => {
  const a = parseConfig(GW, "a.yaml");
  const b = parseConfig(GW + "content: { undecodable: reject }\n", "a.yaml");
  const plan = reloadPlan(a, b);
  assert.deepEqual(plan.ignored, []);
  assert.equal(plan.config.content?.undecodable, "reject");
  assert.ok(RELOADABLE.includes("content.*"));
});

Deno.test("the shipped rules/default.yaml documents content: with the defaults", async () => {
  const cfg = await loadConfig(new URL("../../rules/default.yaml", import.meta.url).pathname);
  assert.deepEqual(cfg.content, CONTENT_DEFAULTS);
});
