/**
 * Cost per message of the state-store work on the accept path (issue 9), on a state FILE (WAL,
 * synchronous=NORMAL, exclusive locking, as `ssg run` opens it) in a temp directory, with
 * fingerprints of ~10 KB messages (`textMessage(10)`, the e2e load's size):
 *
 * - `observeBulk`, the same content every time (one live cluster: the e2e load, a campaign);
 * - `observeBulk`, new content every time (a new cluster: insert + 16 band keys);
 * - `observeBulk`, the same content with `--fill N` other live clusters present (default 5000);
 * - `bulkReach` (the `bulk` condition's read);
 * - the dynamic blacklist probes of one message (3 × `getEntry`, all misses);
 * - `PolicyEngine.record` of a reject verdict with one threshold (addEvent + countEvents).
 *
 * Run: `deno run -A bench/state_bench.ts [ROUNDS] [--fill N] [--memory]` (default 3000 rounds;
 * `--memory`: a `:memory:` store instead, what the file costs). Prints median, p99 and mean in
 * µs after 200 warm-up rounds.
 */
import { join } from "node:path";
import { parseConfig } from "../src/config/load_config.ts";
import { PolicyEngine } from "../src/policy/policy_engine.ts";
import { fingerprint } from "../src/state/bulk_fingerprint.ts";
import type { Fingerprint } from "../src/state/bulk_fingerprint.ts";
import { StateStore } from "../src/state/state_store.ts";
import { benchEnvelope, SILENT_LOG, textMessage, timeSync } from "./bench_inputs.ts";

const fillAt = Deno.args.indexOf("--fill");
const FILL = fillAt >= 0 ? Number(Deno.args[fillAt + 1]) : 5000;
const ROUNDS = Number(Deno.args.find((a, i) => /^\d+$/.test(a) && i !== fillAt + 1) ?? 3000);
const MEMORY = Deno.args.includes("--memory");

const measure = (name: string, f: (i: number) => unknown) => timeSync(name, ROUNDS, f);

const text = new TextDecoder().decode(textMessage(10));
const same = fingerprint(text)!;
/** A distinct 10 KB text per index: the same sentences with words of its own. */
function distinct(i: number): Fingerprint {
  let t = "";
  let x = (i * 2654435761) >>> 0;
  while (t.length < 10 * 1024) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    t += `w${(x >>> 8).toString(36)} `;
  }
  return fingerprint(t)!;
}

const dir = await Deno.makeTempDir({ prefix: "ssg-state-bench-" });
try {
  const store = StateStore.open(MEMORY ? ":memory:" : join(dir, "state.db"));
  let now = Date.UTC(2026, 10, 30, 8, 0, 0);
  store.retain({ eventSeconds: 3600, bulkSeconds: 3600 });
  const fresh = Array.from({ length: ROUNDS + 200 }, (_, i) => distinct(1_000_000 + i));
  console.log(
    `state bench: ${ROUNDS} rounds, ${MEMORY ? ":memory:" : "file"} store, 10 KB fingerprints`,
  );
  const rcpts = Array.from({ length: 50 }, (_, i) => [`user${i}@corp.example`]);
  measure("observeBulk, same content (1 live cluster)", (i) => {
    now += 1;
    store.observeBulk(same, "198.51.100.25", rcpts[(i + 1000) % 50], now);
  });
  measure("observeBulk, new content each time", (i) => {
    now += 1;
    store.observeBulk(fresh[i + 200], "198.51.100.25", rcpts[(i + 1000) % 50], now);
  });
  for (let i = 0; i < FILL; i++) store.observeBulk(distinct(i), "198.51.100.26", ["x@c.e"], now);
  measure(`observeBulk, same content, ${store.rowCounts.bulk_clusters} live clusters`, (i) => {
    now += 1;
    store.observeBulk(same, "198.51.100.25", rcpts[(i + 1000) % 50], now);
  });
  const id = store.observeBulk(same, "198.51.100.25", rcpts[0], now);
  measure("bulkReach", () => store.bulkReach(id, 600, now));
  measure("3 × getEntry (blacklist misses)", () => {
    store.getEntry("blacklist", "client_ip", "192.0.2.10", now);
    store.getEntry("blacklist", "sender", "alice@example.org", now);
    store.getEntry("blacklist", "sender_domain", "example.org", now);
  });
  const engine = new PolicyEngine(
    parseConfig(
      `gateway:\n  protect: [198.51.100.0/24]
rules:
  - { name: r, when: { subject: { contains: never } }, action: reject }
thresholds:
  - { name: t, count: [reject], key: client_ip, at_least: 1000000, within: 1h, action: [alert] }
`,
      "bench.yaml",
    ),
    SILENT_LOG,
    { state: store, now: () => now },
  );
  const env = benchEnvelope();
  measure("record(reject) with one threshold", (i) => {
    now += 1;
    const e = { ...env, client: { ip: `192.0.2.${i & 127}`, port: 1 } };
    engine.record({ action: "reject", rule: "r" } as never, e, undefined, now);
  });
  engine.close();
  store.close();
} finally {
  await Deno.remove(dir, { recursive: true });
}
