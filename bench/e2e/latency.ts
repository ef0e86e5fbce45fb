/**
 * End-to-end latency and throughput: one message at a time directly client → server, then
 * through SSG, in the same namespace topology, plus concurrent load with Postfix's smtp-source.
 * Not a test: it measures and prints a table. Needs root and a built dist/ssg.
 *
 *   deno run --allow-all bench/e2e/latency.ts [--messages 200] [--size 2048] [--load 1000] [--sessions 10]
 *   (or ./scripts/bench.sh, which builds first)
 *
 * (a)/(b) Per-message latency: a small smtplib client inside the client namespace sends N messages
 *         one after another, each on its own connection (connect, EHLO, MAIL, RCPT, DATA, QUIT), and
 *         times each with a monotonic clock — so process start-up never pollutes the figures.
 * (c)     Load: `smtp-source -s SESSIONS -m LOAD -l SIZE` (concurrent sessions, one message each
 *         connection), timed as a whole → messages/s.
 * The internal server is smtp-sink without dumps (no disk in the path). Bounded: every run has a
 * timeout, N and LOAD are capped.
 *
 * @module
 */
import { createTopology, type Topology } from "../../test/netns/topology.ts";
import { ruleFileText, SsgProcess, startSsg, tempDir } from "../../test/netns/helpers.ts";
import { join } from "node:path";
import { parseArgs } from "node:util";

const { values: opt } = parseArgs({
  args: Deno.args,
  options: {
    messages: { type: "string", default: "200" },
    size: { type: "string", default: "2048" },
    load: { type: "string", default: "1000" },
    sessions: { type: "string", default: "10" },
  },
});
const N = Math.min(Math.max(1, Number(opt.messages)), 5_000);
const SIZE = Math.min(Math.max(100, Number(opt.size)), 10_000_000);
const LOAD = Math.min(Math.max(1, Number(opt.load)), 20_000);
const SESSIONS = Math.min(Math.max(1, Number(opt.sessions)), 100);

/** Runs in the client namespace; prints one duration in ms per line, and "FAIL ..." lines. */
const CLIENT = `
import smtplib, sys, time
server, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
body = ("x" * 70 + "\\r\\n") * max(1, size // 72)
msg = ("From: <bench@example.org>\\r\\nTo: <sink@example.net>\\r\\nSubject: bench\\r\\n\\r\\n" + body).encode()
deadline = time.monotonic() + 600
for i in range(n):
    if time.monotonic() > deadline:
        print("FAIL deadline"); break
    t0 = time.perf_counter()
    try:
        with smtplib.SMTP(server, 25, local_hostname="bench.example.org", timeout=30) as s:
            s.sendmail("bench@example.org", ["sink@example.net"], msg)
        print("%.3f" % ((time.perf_counter() - t0) * 1000), flush=True)
    except Exception as e:
        print("FAIL %r" % (e,), flush=True)
`;

interface Series {
  label: string;
  ok: number;
  failed: number;
  medianMs: number;
  p90Ms: number;
  msgsPerS: number;
  failures: string[];
}

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

async function sequential(t: Topology, label: string): Promise<Series> {
  const r = await t.exec(t.ns.client, [
    "/usr/bin/python3",
    "-c",
    CLIENT,
    t.addr.server4,
    String(N),
    String(SIZE),
  ], { timeoutMs: 660_000 });
  const times: number[] = [];
  const failures: string[] = [];
  for (const line of r.stdout.split("\n")) {
    if (line.startsWith("FAIL")) failures.push(line);
    else if (line.trim()) times.push(Number(line));
  }
  if (r.code !== 0) failures.push(`client exit ${r.code}: ${r.stderr.trim().slice(0, 300)}`);
  times.sort((a, b) => a - b);
  const sum = times.reduce((a, b) => a + b, 0);
  return {
    label,
    ok: times.length,
    failed: failures.length,
    medianMs: quantile(times, 0.5),
    p90Ms: quantile(times, 0.9),
    msgsPerS: times.length / (sum / 1000),
    failures: failures.slice(0, 3),
  };
}

interface Load {
  label: string;
  seconds: number;
  msgsPerS: number;
  code: number;
  note: string;
}

async function load(t: Topology, label: string): Promise<Load> {
  const started = performance.now();
  const r = await t.exec(t.ns.client, [
    "/usr/sbin/smtp-source",
    "-s",
    String(SESSIONS),
    "-m",
    String(LOAD),
    "-l",
    String(SIZE),
    "-f",
    "bench@example.org",
    "-t",
    "sink@example.net",
    "-M",
    "bench.example.org",
    `${t.addr.server4}:25`,
  ], { timeoutMs: 600_000 });
  const seconds = (performance.now() - started) / 1000;
  return {
    label,
    seconds,
    msgsPerS: LOAD / seconds,
    code: r.code,
    note: r.code === 0
      ? ""
      : `smtp-source exit ${r.code}: ${(r.stdout + r.stderr).trim().slice(0, 300)}`,
  };
}

const fmt = (x: number, d = 1) => Number.isFinite(x) ? x.toFixed(d) : "-";

async function main(): Promise<void> {
  console.log(
    `SSG end-to-end bench: ${N} sequential messages of ~${SIZE} bytes; load: ${LOAD} messages over ${SESSIONS} sessions`,
  );
  await using t = await createTopology();
  await using tmp = await tempDir("ssg-bench-");
  t.spawn(t.ns.server, [
    "/usr/sbin/smtp-sink",
    "-u",
    "root",
    "-m",
    "512",
    `${t.addr.server4}:25`,
    "512",
  ], {
    stdout: "null",
    stderr: "null",
  });
  await t.waitForPort(t.ns.server, t.addr.server4, 25);

  const seq: Series[] = [];
  const loads: Load[] = [];
  seq.push(await sequential(t, "(a) direct, client → server"));
  loads.push(await load(t, "(c) direct, smtp-source"));

  const logFile = join(tmp.path, "ssg.log");
  const ruleFile = join(tmp.path, "rules.yaml");
  await Deno.writeTextFile(ruleFile, ruleFileText({ logFile, level: "info" }));
  let ssg: SsgProcess | undefined;
  try {
    ssg = await startSsg(t, ruleFile, logFile);
    seq.push(await sequential(t, "(b) through SSG"));
    loads.push(await load(t, "(c) through SSG, smtp-source"));
  } catch (e) {
    console.error(`through-SSG runs failed: ${e instanceof Error ? e.message : e}`);
    if (ssg) console.error(ssg.transcript().slice(-4000));
  } finally {
    if (ssg && !ssg.status) await ssg.stop("SIGTERM").catch(() => {});
  }

  console.log("\nOne message per connection, sent one after another (client-side timing):");
  console.log("| path | ok | failed | median ms | p90 ms | msgs/s |");
  console.log("|---|---:|---:|---:|---:|---:|");
  for (const s of seq) {
    console.log(
      `| ${s.label} | ${s.ok} | ${s.failed} | ${fmt(s.medianMs, 2)} | ${fmt(s.p90Ms, 2)} | ${
        fmt(s.msgsPerS)
      } |`,
    );
  }
  for (const s of seq) for (const f of s.failures) console.log(`  ${s.label}: ${f}`);
  console.log(`\nConcurrent load: smtp-source -s ${SESSIONS} -m ${LOAD} -l ${SIZE}:`);
  console.log("| path | seconds | msgs/s | note |");
  console.log("|---|---:|---:|---|");
  for (const l of loads) {
    console.log(`| ${l.label} | ${fmt(l.seconds, 2)} | ${fmt(l.msgsPerS)} | ${l.note} |`);
  }
  if (seq.length === 2 && Number.isFinite(seq[1].medianMs)) {
    console.log(
      `\nThrough SSG, a message takes ${fmt(seq[1].medianMs, 2)} ms (median) versus ${
        fmt(seq[0].medianMs, 2)
      } ms directly: ${fmt(seq[1].medianMs - seq[0].medianMs, 2)} ms added.`,
    );
  }
}

if (import.meta.main) await main();
