/**
 * Cost per message of decoding (issue 8): `decodeMessage` and `PolicyEngine.judge` on a 10 KB
 * text/plain message (quoted-printable UTF-8, ordinary prose), with a 10-rule policy.
 *
 * Run: `deno run -A bench/decode_bench.ts [ROUNDS]` (default 2000). Prints median, p99 and mean
 * in microseconds, after 200 warm-up rounds.
 */
import type { EventLog } from "../src/log/log.ts";
import { decodeMessage } from "../src/policy/message.ts";
import { PolicyEngine } from "../src/policy/policy_engine.ts";
import type { Envelope } from "../src/policy/verdict.ts";
import { keywordRules, textMessage } from "./bench_inputs.ts";

const ROUNDS = Number(Deno.args.find((a) => /^\d+$/.test(a)) ?? 2000);

const raw = textMessage(10);

const rules = keywordRules(10);
const log: EventLog = { event() {} } as unknown as EventLog;
const engine = new PolicyEngine(rules, log);
const envelope: Envelope = {
  mailFrom: "alice@example.org",
  rcptTo: ["bob@example.net"],
  client: { ip: "192.0.2.10", port: 40000 },
  server: { ip: "198.51.100.25", port: 25 },
  helo: "mx.example.org",
  tls: false,
  sessionId: "b",
  transactionId: "b.1",
};

async function measure(name: string, f: () => Promise<unknown>) {
  for (let i = 0; i < 200; i++) await f();
  const s: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const t = performance.now();
    await f();
    s.push((performance.now() - t) * 1000);
  }
  s.sort((a, b) => a - b);
  const mean = s.reduce((a, b) => a + b, 0) / s.length;
  console.log(
    `${name}: median ${s[s.length >> 1].toFixed(0)} µs, p99 ${
      s[Math.floor(s.length * 0.99)].toFixed(0)
    } µs, mean ${mean.toFixed(0)} µs (${raw.length} bytes, ${ROUNDS} rounds)`,
  );
}

await measure("decodeMessage", () => decodeMessage(raw));
await measure("judge (decode + 10 rules)", () => engine.judge(raw, envelope));
engine.close();
