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
import type { Rule } from "../src/policy/rule.ts";
import type { Envelope } from "../src/policy/verdict.ts";

const ROUNDS = Number(Deno.args.find((a) => /^\d+$/.test(a)) ?? 2000);

const sentence = "The quarterly report is attached; please review the figures before Friday. ";
let body = "";
while (body.length < 10 * 1024) body += sentence + (body.length % 7 === 0 ? "\r\n" : "");
const raw = new TextEncoder().encode(
  "From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: Quarterly report\r\n" +
    "Date: Mon, 30 Nov 2026 05:00:00 +0000\r\nMessage-ID: <bench@example.org>\r\n" +
    "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n" +
    "Content-Transfer-Encoding: 8bit\r\n\r\n" + body.replace(/(.{1,76})(?: |$)/g, "$1\r\n"),
);

const rules = Array.from({ length: 10 }, (_, i) => ({
  name: `kw-${i}`,
  mode: "enforce",
  when: {
    kind: "field",
    field: i % 2 ? "subject" : "body",
    operator: "contains",
    values: [`keyword${i}`],
  },
  actions: [{ type: "discard" }],
})) as unknown as Rule[];
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
