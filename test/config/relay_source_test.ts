/** `relay.source*` keys: parsing, limits, defaults (src/config/relay_source.ts). */
import assert from "node:assert/strict";
import { ConfigError } from "../../src/config/config_error.ts";
import { parseConfig, summarizeConfig } from "../../src/config/load_config.ts";
import { RELAY_SOURCE_DEFAULTS, relaySourceSettings } from "../../src/config/relay_source.ts";
import { reuseLimits } from "../../src/config/defaults.ts";

const GATEWAY = `gateway:
  protect: [198.51.100.0/24]
`;

function errors(text: string): string {
  try {
    parseConfig(text, "r.yaml");
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    return e.format();
  }
  throw new Error("expected a ConfigError");
}

Deno.test("relaySourceSettings() defaults to client mode, ports 61000-61999, a 2 s probe and a 10 min fallback", () => {
  const cfg = parseConfig(GATEWAY, "r.yaml");
  assert.equal(cfg.relay.source, undefined, "absent keys stay absent");
  assert.deepEqual(relaySourceSettings(cfg.relay), {
    mode: "client",
    ports: { first: 61000, last: 61999 },
    probeTimeout: 2,
    fallbackTtl: 600,
  });
  assert.equal(RELAY_SOURCE_DEFAULTS.mode, "client");
});

Deno.test("parseConfig() reads relay.source, source_ports, source_probe_timeout and source_fallback_ttl", () => {
  const cfg = parseConfig(
    GATEWAY +
      `relay: { source: gateway, source_ports: "50000-50099", source_probe_timeout: 500ms, source_fallback_ttl: 1h }\n`,
    "r.yaml",
  );
  assert.deepEqual(relaySourceSettings(cfg.relay), {
    mode: "gateway",
    ports: { first: 50000, last: 50099 },
    probeTimeout: 0.5,
    fallbackTtl: 3600,
  });
});

const BAD: [string, string, RegExp][] = [
  ["an unknown mode", `source: server`, /"relay\.source" must be one of client, gateway/],
  ["a port range below 1024", `source_ports: "1023-2000"`, /within 1024-65535/],
  ["a port range above 65535", `source_ports: "65000-65536"`, /within 1024-65535/],
  ["a reversed range", `source_ports: "62000-61000"`, /within 1024-65535/],
  ["4097 ports (limit+1)", `source_ports: "10000-14096"`, /at most 4096/],
  ["a single number", `source_ports: 61000`, /must be a string/],
  ["a probe of 0", `source_probe_timeout: 0`, /source_probe_timeout/],
  ["a fallback over a week", `source_fallback_ttl: 8d`, /source_fallback_ttl/],
];
for (const [what, yaml, re] of BAD) {
  Deno.test(`parseConfig() refuses relay.source* with ${what}`, () => {
    assert.match(errors(GATEWAY + `relay:\n  ${yaml}\n`), re);
  });
}

Deno.test("parseConfig() accepts source_ports of 4096 ports (the limit) and of one port (1024)", () => {
  const a = parseConfig(GATEWAY + `relay: { source_ports: "10000-14095" }\n`, "r.yaml");
  assert.deepEqual(a.relay.sourcePorts, { first: 10000, last: 14095 });
  const b = parseConfig(GATEWAY + `relay: { source_ports: "1024-1024" }\n`, "r.yaml");
  assert.deepEqual(b.relay.sourcePorts, { first: 1024, last: 1024 });
});

Deno.test("summarizeConfig() names the relay source, its ports and its routing requirement", () => {
  const client = summarizeConfig(parseConfig(GATEWAY, "r.yaml"));
  assert.match(
    client,
    /^relay source: client \(servers see the client's address; ports 61000-61999, .*route to the clients through this gateway\)$/m,
  );
  const gw = summarizeConfig(parseConfig(GATEWAY + "relay: { source: gateway }\n", "r.yaml"));
  assert.match(gw, /^relay source: gateway \(servers see the gateway; .*XCLIENT/m);
});

Deno.test("parseConfig() bounds source_probe_timeout at 50 ms..60 s and source_fallback_ttl at 1 s..7 d (limit-1, limit, limit+1)", () => {
  const ok = (yaml: string) => parseConfig(GATEWAY + `relay: { ${yaml} }\n`, "r.yaml").relay;
  assert.equal(ok("source_probe_timeout: 50ms").sourceProbeTimeout, 0.05);
  assert.equal(ok("source_probe_timeout: 60s").sourceProbeTimeout, 60);
  assert.match(errors(GATEWAY + "relay: { source_probe_timeout: 49ms }\n"), /source_probe_timeout/);
  assert.match(errors(GATEWAY + "relay: { source_probe_timeout: 61s }\n"), /source_probe_timeout/);
  assert.equal(ok("source_fallback_ttl: 1s").sourceFallbackTtl, 1);
  assert.equal(ok("source_fallback_ttl: 7d").sourceFallbackTtl, 7 * 86400);
  assert.match(errors(GATEWAY + "relay: { source_fallback_ttl: 999ms }\n"), /source_fallback_ttl/);
  assert.match(
    errors(GATEWAY + `relay: { source_fallback_ttl: ${7 * 86400 + 1} }\n`),
    /source_fallback_ttl/,
  );
});

Deno.test("parseConfig() reads relay.reuse_idle (0..300 s, 0 = off), reuse_sessions (1..100000) and reuse_time (1 s..1 d); defaults 2 s, 100, 300 s", () => {
  const ok = (yaml: string) => parseConfig(GATEWAY + `relay: { ${yaml} }\n`, "r.yaml").relay;
  assert.deepEqual(reuseLimits(parseConfig(GATEWAY, "r.yaml").relay), {
    idle: 2,
    sessions: 100,
    time: 300,
  });
  assert.deepEqual(
    reuseLimits(ok("reuse_idle: 500ms, reuse_sessions: 7, reuse_time: 1h")),
    { idle: 0.5, sessions: 7, time: 3600 },
  );
  assert.equal(ok("reuse_idle: 0").reuseIdle, 0);
  assert.equal(ok("reuse_idle: 300").reuseIdle, 300);
  const bad = (yaml: string) => errors(GATEWAY + `relay:\n  ${yaml}\n`);
  assert.match(
    bad("reuse_idle: 301"),
    /r\.yaml:4:.*"relay\.reuse_idle" must be from 0 to 300 seconds/,
  );
  assert.match(bad("reuse_idle: soon"), /"relay\.reuse_idle" must be a duration/);
  assert.match(bad("reuse_sessions: 0"), /"relay\.reuse_sessions"/);
  assert.match(bad("reuse_time: 0"), /"relay\.reuse_time"/);
});

Deno.test("summarizeConfig() says whether relay connections are reused, and that only the gateway source reuses them", () => {
  const gw = summarizeConfig(parseConfig(GATEWAY + "relay: { source: gateway }\n", "r.yaml"));
  assert.match(
    gw,
    /^relay reuse: idle connections kept 2s for the next session, at most 100 sessions and 5m each$/m,
  );
  const client = summarizeConfig(parseConfig(GATEWAY, "r.yaml"));
  assert.match(client, /^relay reuse: .*applies with relay\.source: gateway only/m);
  const off = summarizeConfig(parseConfig(GATEWAY + "relay: { reuse_idle: 0 }\n", "r.yaml"));
  assert.match(off, /^relay reuse: off/m);
});
