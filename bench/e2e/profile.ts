/**
 * Where SSG's CPU goes under load: runs SSG from the sources (`deno run --cpu-prof main.ts`) in
 * the gateway namespace of a throw-away topology, drives `smtp-source` load through it to
 * smtp-sink, stops SSG with SIGTERM (the V8 profile is written at exit) and prints the top
 * functions by self time, the top files/packages, and CPU per thread from /proc.
 * Not a test. Needs root.
 *
 *   deno run -A bench/e2e/profile.ts [--load 3000] [--size 10240] [--sessions 20]
 *     [--rules shipped|test] [--out DIR] [--top 40] [--relay-source client|gateway]
 *     [--server-xclient yes|no]
 *
 * `--relay-source` and `--server-xclient` as in latency.ts (smtp-sink `-C`: no XCLIENT).
 * @module
 */
import { createTopology } from "../../test/netns/topology.ts";
import { REPO_ROOT, tempDir } from "../../test/netns/helpers.ts";
import { benchRuleFile, relaySource, startSink } from "./bench_setup.ts";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { ProcessSampler, rssMiB } from "./proc_stats.ts";

const { values: opt } = parseArgs({
  args: Deno.args,
  options: {
    load: { type: "string", default: "3000" },
    size: { type: "string", default: "10240" },
    sessions: { type: "string", default: "20" },
    rules: { type: "string", default: "shipped" },
    out: { type: "string", default: "" },
    top: { type: "string", default: "40" },
    "relay-source": { type: "string", default: "client" },
    "server-xclient": { type: "string", default: "yes" },
  },
});
const LOAD = Math.min(Math.max(1, Number(opt.load)), 20_000);

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

function summarize(profile: { nodes: Node[]; samples: number[]; timeDeltas: number[] }): void {
  const self = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    const d = profile.timeDeltas[i + 1] ?? 0;
    self.set(profile.samples[i], (self.get(profile.samples[i]) ?? 0) + d);
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const byFn = new Map<string, number>();
  const byFile = new Map<string, number>();
  const short = (url: string) =>
    url.replace(/^file:\/\/.*?\/(src|ffi|main\.ts)/, "$1")
      .replace(/^.*\/node_modules\/\.deno\/([^/]+)\/.*$/, "npm:$1")
      .replace(/^.*registry\.npmjs\.org\/([^/]+)\/[^/]+\/.*$/, "npm:$1")
      .replace(/^ext:/, "ext:");
  for (const n of profile.nodes) {
    const us = self.get(n.id) ?? 0;
    if (!us) continue;
    const f = n.callFrame;
    const file = short(f.url) || "(native)";
    const key = `${f.functionName || "(anon)"} ${file}:${f.lineNumber + 1}`;
    byFn.set(key, (byFn.get(key) ?? 0) + us);
    byFile.set(file, (byFile.get(file) ?? 0) + us);
  }
  const top = Number(opt.top);
  const pct = (us: number) => `${(us / total * 100).toFixed(1).padStart(5)}%`;
  const perMsg = (us: number) => `${(us / 1000 / LOAD).toFixed(3)} ms/msg`;
  console.log(`\nmain isolate, ${(total / 1e6).toFixed(2)} s sampled; top functions by self time:`);
  for (const [k, us] of [...byFn].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(`${pct(us)} ${perMsg(us)}  ${k}`);
  }
  console.log(`\ntop files / packages by self time:`);
  for (const [k, us] of [...byFile].sort((a, b) => b[1] - a[1]).slice(0, 25)) {
    console.log(`${pct(us)} ${perMsg(us)}  ${k}`);
  }
}

async function main(): Promise<void> {
  await using t = await createTopology();
  await using tmp = await tempDir("ssg-prof-");
  const outDir = opt.out || join(tmp.path, "prof");
  await Deno.mkdir(outDir, { recursive: true });
  const sink = startSink(t, { xclient: opt["server-xclient"] !== "no" });
  await t.waitForPort(t.ns.server, t.addr.server4, 25);
  const logFile = join(tmp.path, "ssg.log");
  const rules = join(tmp.path, "rules.yaml");
  await Deno.writeTextFile(
    rules,
    benchRuleFile(logFile, opt.rules!, relaySource(opt["relay-source"])),
  );
  const ssg = t.spawn(t.ns.gateway, [
    Deno.execPath(),
    "run",
    "--allow-all",
    "--cached-only",
    `--config=${join(REPO_ROOT, "deno.json")}`,
    "--cpu-prof",
    `--cpu-prof-dir=${outDir}`,
    join(REPO_ROOT, "main.ts"),
    "run",
    rules,
  ], { stdout: "null", stderr: "null" });
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const log = await Deno.readTextFile(logFile).catch(() => "");
    if (/\bssg\.ready\b/.test(log)) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  // Warm up (JIT), then measure.
  const source = (n: number) =>
    t.exec(t.ns.client, [
      "/usr/sbin/smtp-source",
      "-s",
      opt.sessions!,
      "-m",
      String(n),
      "-l",
      opt.size!,
      "-f",
      "bench@example.org",
      "-t",
      "sink@example.net",
      "-M",
      "bench.example.org",
      `${t.addr.server4}:25`,
    ], { timeoutMs: 600_000 });
  await source(200);
  const idle = rssMiB(ssg.pid);
  const sampler = new ProcessSampler(ssg.pid);
  const t0 = performance.now();
  const r = await source(LOAD);
  const seconds = (performance.now() - t0) / 1000;
  const span = sampler.stop();
  console.log(
    `load ${LOAD} × ${opt.size} B over ${opt.sessions} sessions: ${seconds.toFixed(2)} s, ` +
      `${(LOAD / seconds).toFixed(0)} msg/s (smtp-source exit ${r.code}); CPU ${
        (span.totalMs / LOAD).toFixed(3)
      } ms/msg all threads (kernel ${(span.totalSysMs / LOAD).toFixed(3)}), main ${
        (span.mainMs / LOAD).toFixed(3)
      } (kernel ${(span.mainSysMs / LOAD).toFixed(3)}); ${
        span.others.slice(0, 5).map((o) => `${o.name} ${(o.ms / LOAD).toFixed(3)}`).join(", ")
      }; RSS idle ${idle.toFixed(0)} MiB, peak ${span.peakRssMiB.toFixed(0)} MiB`,
  );
  // Whatever SSG refused or limited during the run (a clean run has none).
  const refusals = (await Deno.readTextFile(logFile).catch(() => ""))
    .split("\n").filter((l) => /\bsmtp\.(?:limit|refused|shed)\b/.test(l));
  console.log(
    `refusals/limits logged: ${refusals.length}${
      refusals.length ? `, first: ${refusals[0]}` : ""
    }` +
      (r.stderr.trim() ? `; smtp-source: ${r.stderr.trim().slice(0, 300)}` : ""),
  );
  Deno.kill(ssg.pid, "SIGTERM");
  await ssg.status;
  sink.kill("SIGTERM");
  await sink.status;
  const files = [...Deno.readDirSync(outDir)].filter((e) => e.name.endsWith(".cpuprofile"));
  if (files.length === 0) {
    console.log("no .cpuprofile written");
    return;
  }
  for (const f of files) {
    console.log(`\nprofile ${join(outDir, f.name)}`);
    summarize(JSON.parse(await Deno.readTextFile(join(outDir, f.name))));
  }
}

if (import.meta.main) await main();
