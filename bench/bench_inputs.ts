/**
 * Inputs shared by the policy benches: the same clean text message and the same keyword rules,
 * so that figures from decode_bench.ts and clamav_bench.ts compare.
 */
import type { EventLog } from "../src/log/log.ts";
import type { Rule } from "../src/policy/rule.ts";
import type { Envelope } from "../src/policy/verdict.ts";

/** A clean text/plain message of about `kb` KB, lines folded at 76 characters, CRLF. */
export function textMessage(kb: number): Uint8Array {
  const sentence = "The quarterly report is attached; please review the figures before Friday. ";
  let body = "";
  while (body.length < kb * 1024) body += sentence + (body.length % 7 === 0 ? "\r\n" : "");
  return new TextEncoder().encode(
    "From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: Quarterly report\r\n" +
      "Date: Mon, 30 Nov 2026 05:00:00 +0000\r\nMessage-ID: <bench@example.org>\r\n" +
      "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n" +
      "Content-Transfer-Encoding: 8bit\r\n\r\n" + body.replace(/(.{1,76})(?: |$)/g, "$1\r\n"),
  );
}

/** `n` discard rules on subject/body keywords that the message above never contains. */
export function keywordRules(n: number): Rule[] {
  return Array.from({ length: n }, (_, i) => ({
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
}

/** An event log that drops everything (benches measure the work, not the logging). */
export const SILENT_LOG: EventLog = { event() {} };

/** The envelope the engine benches judge with (one sender, one recipient, documentation IPs). */
export function benchEnvelope(): Envelope {
  return {
    mailFrom: "alice@example.org",
    rcptTo: ["bob@example.net"],
    client: { ip: "192.0.2.10", port: 40000 },
    server: { ip: "198.51.100.25", port: 25 },
    helo: "mx.example.org",
    tls: false,
    sessionId: "b",
    transactionId: "b.1",
  };
}

/**
 * Runs `f` `warmup` times, then `rounds` times timed; prints median, p99 and mean in µs (with
 * `bytes`, the input size) and returns the median.
 */
export async function timeAsync(
  name: string,
  rounds: number,
  f: () => Promise<unknown>,
  opts: { warmup?: number; bytes?: number } = {},
): Promise<number> {
  for (let i = 0; i < (opts.warmup ?? 100); i++) await f();
  const s: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const t = performance.now();
    await f();
    s.push((performance.now() - t) * 1000);
  }
  s.sort((a, b) => a - b);
  const mean = s.reduce((a, b) => a + b, 0) / s.length;
  const median = s[s.length >> 1];
  const size = opts.bytes === undefined ? "" : `${opts.bytes} bytes, `;
  console.log(
    `${name}: median ${median.toFixed(0)} µs, p99 ${
      s[Math.floor(s.length * 0.99)].toFixed(0)
    } µs, mean ${mean.toFixed(0)} µs (${size}${rounds} rounds)`,
  );
  return median;
}

/**
 * The synchronous twin of `timeAsync` for calls that do not await (the state store, the
 * greylist): 200 warm-up calls `f(-1 - i)`, then `rounds` timed calls `f(i)`; prints median, p99
 * and mean in µs with one decimal.
 */
export function timeSync(name: string, rounds: number, f: (i: number) => unknown): void {
  for (let i = 0; i < 200; i++) f(-1 - i);
  const s: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const t = performance.now();
    f(i);
    s.push((performance.now() - t) * 1000);
  }
  s.sort((a, b) => a - b);
  const mean = s.reduce((a, b) => a + b, 0) / s.length;
  console.log(
    `${name}: median ${s[s.length >> 1].toFixed(1)} µs, p99 ${
      s[Math.floor(s.length * 0.99)].toFixed(1)
    } µs, mean ${mean.toFixed(1)} µs`,
  );
}
