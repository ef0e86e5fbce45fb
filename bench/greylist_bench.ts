/**
 * Cost per message of greylisting (issue 10): one RCPT-time check, as the session asks it
 * (`PolicyEngine.checkRecipient`: allowlist, blacklist and the envelope rules before the greylist
 * rule, then one state-store transaction), on a state FILE (WAL, synchronous=NORMAL, as `ssg
 * run` opens it) in a temp directory, filled first with `--fill N` other triplets (default
 * 10,000) so that index probes are not on an empty table:
 *
 * - a known triplet (the common case once correspondents passed: read + refresh, one commit);
 * - a new triplet every time (first sighting: insert, one commit);
 * - a client network auto-allowed (read the network row + refresh, one commit);
 * - `Greylist.check` alone on the known triplet (without the policy around it);
 * - the same known-triplet check on a `:memory:` store (what the commit costs on disk).
 *
 * Run: `deno run -A bench/greylist_bench.ts [ROUNDS] [--fill N]` (default 5000 rounds). Prints
 * median, p99 and mean in microseconds after 200 warm-up rounds.
 */
import { join } from "node:path";
import { GREYLIST_DEFAULTS } from "../src/config/defaults.ts";
import { parseConfig } from "../src/config/load_config.ts";
import type { EventLog } from "../src/log/log.ts";
import { Greylist } from "../src/policy/greylist.ts";
import { PolicyEngine } from "../src/policy/policy_engine.ts";
import type { Envelope } from "../src/policy/verdict.ts";
import { StateStore } from "../src/state/state_store.ts";
import { benchEnvelope, timeSync } from "./bench_inputs.ts";

const fillAt = Deno.args.indexOf("--fill");
const FILL = fillAt >= 0 ? Number(Deno.args[fillAt + 1]) : 10_000;
const ROUNDS = Number(Deno.args.find((a, i) => /^\d+$/.test(a) && i !== fillAt + 1) ?? 5000);

const log: EventLog = { event() {} } as unknown as EventLog;
const RULES = `gateway:\n  protect: [198.51.100.0/24]
allowlist: { clients: [203.0.113.0/28], senders: ["@partner.example"] }
rules:
  - name: postmaster
    when: { rcpt_to: { equals: postmaster@corp.example } }
    action: forward
  - name: grey
    when: { authenticated: false }
    action: greylist
`;
const envelope: Envelope = { ...benchEnvelope(), rcptTo: ["bob@corp.example"] };

const measure = (name: string, f: (i: number) => unknown) => timeSync(name, ROUNDS, f);

const dir = await Deno.makeTempDir({ prefix: "ssg-greylist-bench-" });
try {
  const store = StateStore.open(join(dir, "state.db"));
  let now = Date.UTC(2026, 10, 30, 8, 0, 0);
  const engine = new PolicyEngine(parseConfig(RULES, "bench.yaml"), log, {
    state: store,
    now: () => now,
  });
  const gl = new Greylist(store, GREYLIST_DEFAULTS, () => now);
  // Fill: FILL other triplets from other networks, half of them passed.
  for (let i = 0; i < FILL; i++) {
    const t = {
      clientIp: `10.${(i >> 8) & 255}.${i & 255}.1`,
      sender: `s${i}@example.org`,
      recipient: `r${i}@corp.example`,
    };
    gl.check(t, now);
    if (i % 2 === 0) gl.check(t, now + 301_000);
  }
  now += 400_000;
  // bob's triplet: known (first sighting, then a retry after the delay).
  engine.checkRecipient(envelope, now - 301_000);
  engine.checkRecipient(envelope, now);
  console.log(
    `greylist bench: ${ROUNDS} rounds, state file with ${store.rowCounts.greylist} triplets`,
  );
  measure("checkRecipient, known triplet (refresh)", () => {
    now += 1;
    if (engine.checkRecipient(envelope) !== undefined) throw new Error("known was deferred");
  });
  measure("checkRecipient, new triplet (first sighting)", (i) => {
    now += 1;
    const e = { ...envelope, rcptTo: [`new${i}@corp.example`] };
    if (engine.checkRecipient(e) === undefined) throw new Error("new was not deferred");
  });
  // A network of its own whose retries passed `autoAllowAfter` times: allowed outright.
  const auto = { ...envelope, client: { ip: "198.18.0.7", port: 1 } };
  for (let k = 0; k < GREYLIST_DEFAULTS.autoAllowAfter; k++) {
    const e = { ...auto, rcptTo: [`a${k}@corp.example`] };
    engine.checkRecipient(e, now - 301_000);
    engine.checkRecipient(e, now);
  }
  measure("checkRecipient, auto-allowed network", (i) => {
    now += 1;
    const e = { ...auto, rcptTo: [`x${i}@corp.example`] };
    if (engine.checkRecipient(e) !== undefined) throw new Error("auto-allowed was deferred");
  });
  const t = { clientIp: "192.0.2.10", sender: "alice@example.org", recipient: "bob@corp.example" };
  measure("Greylist.check alone, known triplet", () => {
    now += 1;
    gl.check(t, now);
  });
  engine.close();
  store.close();

  const mem = StateStore.open(":memory:");
  const glm = new Greylist(mem, GREYLIST_DEFAULTS, () => now);
  glm.check(t, now - 301_000);
  glm.check(t, now);
  measure("Greylist.check alone, known triplet, :memory: store", () => {
    now += 1;
    glm.check(t, now);
  });
  mem.close();
} finally {
  await Deno.remove(dir, { recursive: true });
}
