/**
 * The `greylist:` section and the rule-language parts of greylisting: defaults, bounds with
 * precise errors, `action: greylist` standing alone, `authenticated:` as a boolean, the summary
 * line of `ssg check`, and reload (SIGHUP applies `greylist.*`).
 */
import assert from "node:assert/strict";
import { ConfigError } from "../../src/config/config_error.ts";
import { GREYLIST_DEFAULTS } from "../../src/config/defaults.ts";
import { parseConfig, summarizeConfig } from "../../src/config/load_config.ts";
import { RELOADABLE, reloadPlan } from "../../src/config/reload_plan.ts";

const GW = `gateway:\n  protect: [198.51.100.0/24]\n  hostname: gw.example\n`;
const GREY_RULE =
  `rules:\n  - name: grey\n    when: { authenticated: false }\n    action: greylist\n`;

function errorsOf(text: string): string[] {
  try {
    parseConfig(text, "rules/a.yaml");
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${e}`);
    return e.format().split("\n");
  }
  assert.fail("expected the rule file to be refused");
}

Deno.test("greylist: absent or empty is the defaults (5m delay, 2d window, 36d lifetime, 5 passes, /24 and /64)", () => {
  assert.deepEqual(parseConfig(GW, "a.yaml").greylist, GREYLIST_DEFAULTS);
  assert.deepEqual(parseConfig(GW + "greylist:\n", "a.yaml").greylist, {
    delaySeconds: 300,
    retryWindowSeconds: 172800,
    passLifetimeSeconds: 36 * 86400,
    autoAllowAfter: 5,
    maxEntries: 100000,
    networkPrefix: { ipv4: 24, ipv6: 64 },
  });
});

Deno.test("greylist: every key read", () => {
  const g = parseConfig(
    GW +
      "greylist: { delay: 2s, retry_window: 4h, pass_lifetime: 30d, auto_allow_after: 0, max_entries: 5000, network_prefix: { ipv4: 32, ipv6: 56 } }\n",
    "a.yaml",
  ).greylist;
  assert.deepEqual(g, {
    delaySeconds: 2,
    retryWindowSeconds: 14400,
    passLifetimeSeconds: 30 * 86400,
    autoAllowAfter: 0,
    maxEntries: 5000,
    networkPrefix: { ipv4: 32, ipv6: 56 },
  });
});

Deno.test("greylist: bad values are refused with file:line:column and what was expected", () => {
  const cases: [string, RegExp][] = [
    [
      "greylist: { delay: 0s }",
      /^rules\/a\.yaml:4:20: "greylist\.delay" must be from 1 to 86400 seconds, got 0/,
    ],
    ["greylist: { delay: 2d }", /"greylist\.delay" must be from 1 to 86400 seconds/],
    [
      "greylist: { delay: 1h, retry_window: 30m }",
      /"greylist\.delay" \(3600s\) must be shorter than "greylist\.retry_window" \(1800s\)/,
    ],
    [
      "greylist: { pass_lifetime: 1d }",
      /"greylist\.pass_lifetime" \(86400s\) must be at least "greylist\.retry_window" \(172800s\)/,
    ],
    [
      "greylist: { max_entries: 999 }",
      /"greylist\.max_entries" must be an integer from 1000 to 10000000, got 999/,
    ],
    ["greylist: { network_prefix: { ipv4: 7 } }", /"greylist\.network_prefix\.ipv4"/],
    ["greylist: { delai: 5m }", /unknown key "delai" in "greylist"/],
  ];
  for (const [yaml, re] of cases) {
    const errors = errorsOf(GW + yaml + "\n");
    assert.ok(errors.some((e) => re.test(e)), `${yaml}\n${errors.join("\n")}`);
  }
});

Deno.test("action greylist stands alone; authenticated takes true or false", () => {
  const mixed = errorsOf(
    GW + "rules:\n  - name: g\n    when: { helo: { equals: x } }\n    action: [greylist, alert]\n",
  );
  assert.ok(
    mixed.some((e) => /"action" greylist stands alone .*got greylist, alert/.test(e)),
    mixed.join("\n"),
  );
  const auth = errorsOf(
    GW + "rules:\n  - name: g\n    when: { authenticated: maybe }\n    action: forward\n",
  );
  assert.ok(auth.some((e) => /"authenticated"/.test(e)), auth.join("\n"));
  const cfg = parseConfig(GW + GREY_RULE, "a.yaml");
  assert.deepEqual(cfg.rules[0].actions, [{ type: "greylist" }]);
  assert.deepEqual(cfg.rules[0].when, {
    kind: "flag",
    field: "authenticated",
    value: false,
    at: { line: 6, column: 13 },
  });
});

Deno.test("ssg check names the greylist parameters when a rule greylists, and SIGHUP applies greylist.*", () => {
  const summary = summarizeConfig(
    parseConfig(GW + "greylist: { delay: 2m }\n" + GREY_RULE, "a.yaml"),
  );
  assert.match(
    summary,
    /greylist: a new \(client \/24 or \/64, sender, recipient\) gets 451 4\.7\.1; a retry after 2m and within 2d passes/,
  );
  assert.match(summary, /grey: not authenticated → greylist/);
  assert.doesNotMatch(summarizeConfig(parseConfig(GW + "greylist:\n", "a.yaml")), /^greylist:/m);
  assert.ok(RELOADABLE.includes("greylist.*"));
  const a = parseConfig(GW + GREY_RULE, "a.yaml");
  const b = parseConfig(GW + "greylist: { delay: 1m }\n" + GREY_RULE, "a.yaml");
  const plan = reloadPlan(a, b);
  assert.deepEqual(plan.ignored, []);
  assert.equal(plan.config.greylist?.delaySeconds, 60);
});
