/**
 * End-to-end latency and throughput, side by side in one run and one namespace topology:
 * (a) directly client → server, (b) through SSG (transparent: the client connects to the server's
 * own address), and (p) through peer gateways running in the gateway namespace as ordinary
 * application relays to the same server (the client connects to the gateway's 192.0.2.1:25):
 * (p1) Haraka with queue/smtp_forward (before-queue forwarding, peers/haraka.ts) and (p2) Postfix
 * as a store-and-forward relay (peers/postfix.ts). Peers are installed/configured at run time and
 * removed afterwards; a peer that cannot be installed is reported as such and the other arms run.
 * Not a test: it measures and prints a table. Needs root and a built dist/ssg.
 *
 *   deno run --allow-all bench/e2e/latency.ts [--messages 200] [--size 2048] [--load 1000]
 *     [--sessions 10] [--peers haraka,postfix|none] [--ssg-cpus 0]
 *     [--rules shipped|test] [--ssg-before PATH] [--ssg-rounds N] [--relay-source client|gateway]
 *   (or ./scripts/bench.sh, which builds first)
 *
 * (a)/(b) Per-message latency: a small smtplib client inside the client namespace sends N messages
 *         one after another, each on its own connection (connect, EHLO, MAIL, RCPT, DATA, QUIT), and
 *         times each with a monotonic clock — so process start-up never pollutes the figures.
 * (c)     Load: `smtp-source -s SESSIONS -m LOAD -l SIZE` (concurrent sessions, one message each
 *         connection), timed from its start until the sink has counted all LOAD messages (for a
 *         store-and-forward peer that includes draining its queue) → messages/s.
 * The internal server is smtp-sink without dumps (no disk in the path) and with its running
 * counter (`-c`), so every arm is checked for what actually reached the server. Arms run one
 * after another (not interleaved): compare within one run, repeat runs to see the spread.
 * For SSG the load phase also reads /proc: CPU milliseconds per message over all threads (and of
 * the main thread alone), RSS idle (after start-up and the sequential run) and its peak under load.
 * `--rules shipped` (default) judges with the rules, lists and thresholds of rules/default.yaml;
 * `--ssg-before PATH` adds an arm with another build of SSG (e.g. a copy of dist/ssg made before
 * a change), run right before the current one, for before/after figures from one run.
 * `--ssg-rounds N` (≤ 4) measures the SSG arms N times in alternating order (before, now; now,
 * before; ...), one row each. `--relay-source gateway` runs SSG with `relay.source: gateway`
 * (the server sees the gateway, as behind the Postfix and Haraka relays; relay connections are
 * then kept between sessions when the server does not take XCLIENT) instead of the default
 * client. `--server-xclient no` runs smtp-sink without XCLIENT (`-C`), as a server that does
 * not offer it (Exchange, Exim, a Postfix that does not authorise the gateway). `--rules test` with the two rules of the namespace tests. `--ssg-cpus LIST` pins every SSG thread to those CPUs (taskset -a), e.g. 0 for one core.
 * Bounded: every run has a timeout, N and LOAD are capped.
 *
 * @module
 */
import { createTopology, type Topology } from "../../test/netns/topology.ts";
import { SsgProcess, startSsg, tempDir } from "../../test/netns/helpers.ts";
import { benchRuleFile, relaySource, startSink } from "./bench_setup.ts";
import { join } from "node:path";
import { parseArgs } from "node:util";
import type { PeerStarter, RunningPeer } from "./peers/peer.ts";
import { startHaraka } from "./peers/haraka.ts";
import { startPostfix } from "./peers/postfix.ts";
import { type CpuSpan, ProcessSampler, rssMiB } from "./proc_stats.ts";

const { values: opt } = parseArgs({
  args: Deno.args,
  options: {
    messages: { type: "string", default: "200" },
    size: { type: "string", default: "2048" },
    load: { type: "string", default: "1000" },
    sessions: { type: "string", default: "10" },
    peers: { type: "string", default: "haraka,postfix" },
    "ssg-cpus": { type: "string", default: "" },
    rules: { type: "string", default: "shipped" },
    "ssg-before": { type: "string", default: "" },
    "ssg-rounds": { type: "string", default: "1" },
    "relay-source": { type: "string", default: "client" },
    "server-xclient": { type: "string", default: "yes" },
  },
});
const PEERS: Record<string, PeerStarter> = { haraka: startHaraka, postfix: startPostfix };
const peerNames = opt.peers === "none" ? [] : opt.peers!.split(",").map((p) => p.trim());
for (const p of peerNames) {
  if (!(p in PEERS)) {
    console.error(`--peers: unknown peer "${p}" (known: ${Object.keys(PEERS).join(", ")}, none)`);
    Deno.exit(2);
  }
}
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
  ok: number;
  failed: number;
  medianMs: number;
  p90Ms: number;
  maxMs: number;
  failures: string[];
}

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

async function sequential(t: Topology, target: string): Promise<Series> {
  const r = await t.exec(t.ns.client, [
    "/usr/bin/python3",
    "-c",
    CLIENT,
    target,
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
  return {
    ok: times.length,
    failed: failures.length,
    medianMs: quantile(times, 0.5),
    p90Ms: quantile(times, 0.9),
    maxMs: times.length ? times[times.length - 1] : NaN,
    failures: failures.slice(0, 3),
  };
}

/**
 * smtp-sink with its running counter (`-c`: "sess=N quit=N mesg=N" after each event, flushed at
 * once), read in the background so each arm can be checked and timed against what arrived.
 */
class Sink {
  #mesg = 0;
  readonly child: Deno.ChildProcess;
  constructor(t: Topology) {
    this.child = startSink(t, { counter: true, xclient: opt["server-xclient"] !== "no" });
    this.#pump(this.child.stdout);
  }
  async #pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    const dec = new TextDecoder();
    let carry = "";
    try {
      for await (const chunk of stream) {
        carry += dec.decode(chunk, { stream: true });
        const all = [...carry.matchAll(/mesg=(\d+)/g)];
        if (all.length) this.#mesg = Number(all[all.length - 1][1]);
        carry = carry.slice(-64);
      }
    } catch { /* killed at the end */ }
  }
  /** Messages the sink has received so far. */
  get count(): number {
    return this.#mesg;
  }
  /** Waits (bounded) until the count reaches `n`; true when it did. */
  async waitFor(n: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.#mesg < n && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    return this.#mesg >= n;
  }
}

interface Load {
  seconds: number;
  msgsPerS: number;
  note: string;
}

async function load(t: Topology, sink: Sink, target: string): Promise<Load> {
  const goal = sink.count + LOAD;
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
    `${target}:25`,
  ], { timeoutMs: 600_000 });
  const clientSeconds = (performance.now() - started) / 1000;
  // A store-and-forward peer answered 250 once the message was queued: the run ends when the
  // last message reached the server (bounded; a shortfall is reported, not hidden).
  const all = await sink.waitFor(goal, 120_000);
  const seconds = (performance.now() - started) / 1000;
  const notes: string[] = [];
  if (r.code !== 0) {
    notes.push(`smtp-source exit ${r.code}: ${(r.stdout + r.stderr).trim().slice(0, 300)}`);
  }
  if (!all) notes.push(`sink got ${LOAD - (goal - sink.count)} of ${LOAD}`);
  if (seconds - clientSeconds > 0.05) {
    notes.push(`client done at ${clientSeconds.toFixed(2)} s, sink at ${seconds.toFixed(2)} s`);
  }
  return {
    seconds,
    msgsPerS: (LOAD - Math.max(0, goal - sink.count)) / seconds,
    note: notes.join("; "),
  };
}

interface Arm {
  label: string;
  target: string;
  seq?: Series;
  load?: Load;
  /** Messages the sink received during this arm (sequential + load). */
  atSink?: number;
  /** The process measured from /proc (SSG only). */
  pid?: number;
  /** RSS before the load, MiB. */
  idleRssMiB?: number;
  /** CPU and memory during the load. */
  cpu?: CpuSpan;
  note: string;
}

/** Runs the sequential and the load workload against `target`, counting at the sink. */
async function measure(t: Topology, sink: Sink, arm: Arm): Promise<void> {
  const before = sink.count;
  arm.seq = await sequential(t, arm.target);
  await sink.waitFor(before + arm.seq.ok, 30_000);
  const sampler = arm.pid === undefined ? undefined : new ProcessSampler(arm.pid);
  if (arm.pid !== undefined) arm.idleRssMiB = rssMiB(arm.pid);
  arm.load = await load(t, sink, arm.target);
  arm.cpu = sampler?.stop();
  arm.atSink = sink.count - before;
}

const fmt = (x: number | undefined, d = 1) =>
  x !== undefined && Number.isFinite(x) ? x.toFixed(d) : "-";

async function versions(): Promise<string> {
  const one = async (cmd: string[]) => {
    try {
      const r = await new Deno.Command(cmd[0], { args: cmd.slice(1), stderr: "null" }).output();
      return new TextDecoder().decode(r.stdout).trim().split("\n")[0];
    } catch {
      return "?";
    }
  };
  const cpu = (await Deno.readTextFile("/proc/cpuinfo").catch(() => ""))
    .match(/^model name\s*:\s*(.*)$/m)?.[1] ?? "?";
  return `kernel ${Deno.osRelease()}; ${navigator.hardwareConcurrency} CPUs (${cpu}); ` +
    `deno ${Deno.version.deno}; node ${await one(["node", "--version"])}; ` +
    `postfix ${await one(["postconf", "-d", "-h", "mail_version"])}`;
}

async function main(): Promise<void> {
  console.log(
    `SSG end-to-end bench: ${N} sequential messages of ~${SIZE} bytes; load: ${LOAD} messages ` +
      `over ${SESSIONS} sessions; peers: ${peerNames.join(", ") || "none"}; rules: ${opt.rules}; ` +
      `relay.source: ${opt["relay-source"]}; server XCLIENT: ${opt["server-xclient"]}`,
  );
  console.log(await versions());
  await using t = await createTopology();
  await using tmp = await tempDir("ssg-bench-");
  const sink = new Sink(t);
  await t.waitForPort(t.ns.server, t.addr.server4, 25);

  const arms: Arm[] = [];
  const direct: Arm = {
    label: "(a) direct, client → server",
    target: t.addr.server4,
    note: "kernel forwarding only",
  };
  arms.push(direct);
  await measure(t, sink, direct);

  const logFile = join(tmp.path, "ssg.log");
  const ruleFile = join(tmp.path, "rules.yaml");
  await Deno.writeTextFile(
    ruleFile,
    benchRuleFile(logFile, opt.rules!, relaySource(opt["relay-source"])),
  );
  const ssgBuilds: [string, string][] = [["(b) through SSG (transparent)", ""]];
  if (opt["ssg-before"]) ssgBuilds.unshift(["(b0) SSG, build before", opt["ssg-before"]]);
  // More rounds alternate the order (AB BA AB ...): the arm measured right after another's load
  // runs on a machine that has just worked hard, so one order alone favours the first.
  const rounds = Math.min(Math.max(1, Number(opt["ssg-rounds"]) || 1), 4);
  if (rounds > 1) {
    const once = [...ssgBuilds];
    ssgBuilds.length = 0;
    for (let r = 1; r <= rounds; r++) {
      const order = r % 2 === 1 ? once : [...once].reverse();
      for (const [label, bin] of order) ssgBuilds.push([`${label}, round ${r}`, bin]);
    }
  }
  for (const [label, bin] of ssgBuilds) {
    const viaSsg: Arm = { label, target: t.addr.server4, note: "250 after the server's 250" };
    arms.push(viaSsg);
    let ssg: SsgProcess | undefined;
    try {
      ssg = await startSsg(t, ruleFile, logFile, undefined, bin || undefined);
      viaSsg.pid = ssg.child.pid;
      if (opt["ssg-cpus"]) {
        const r = await new Deno.Command("taskset", {
          args: ["-a", "-c", "-p", opt["ssg-cpus"], String(ssg.child.pid)],
          stdout: "null",
        }).output();
        if (!r.success) throw new Error(`taskset -a -c -p ${opt["ssg-cpus"]} failed`);
        viaSsg.note += `; pinned to CPUs ${opt["ssg-cpus"]}`;
      }
      await measure(t, sink, viaSsg);
    } catch (e) {
      viaSsg.note = `FAILED: ${e instanceof Error ? e.message.split("\n")[0] : e}`;
      console.error(`through-SSG runs failed: ${e instanceof Error ? e.message : e}`);
      if (ssg) console.error(ssg.transcript().slice(-4000));
    } finally {
      if (ssg && !ssg.status) await ssg.stop("SIGTERM").catch(() => {});
      // Each build starts with empty memory (bulk fingerprints, counters): same conditions.
      for (const f of ["state.db", "state.db-wal", "state.db-shm"]) {
        await Deno.remove(join(tmp.path, f)).catch(() => {});
      }
    }
  }

  for (const name of peerNames) {
    const work = join(tmp.path, name);
    await Deno.mkdir(work, { recursive: true });
    let peer: RunningPeer | undefined;
    try {
      const got = await PEERS[name](t, work);
      if ("unavailable" in got) {
        console.error(`peer ${name} is NOT measured: ${got.unavailable}`);
        arms.push({
          label: got.label,
          target: "-",
          note: `NOT MEASURED: ${got.unavailable.split("\n")[0]}`,
        });
        continue;
      }
      peer = got;
      const arm: Arm = { label: peer.label, target: peer.target, note: peer.note };
      arms.push(arm);
      await measure(t, sink, arm);
      const failed = (arm.seq?.failed ?? 0) > 0 || (arm.load?.note ?? "").includes("exit");
      if (failed) console.error(`--- ${name} log (tail) ---\n${await peer.diagnostics()}`);
    } catch (e) {
      console.error(`peer ${name} failed: ${e instanceof Error ? e.message : e}`);
      if (peer) console.error(`--- ${name} log (tail) ---\n${await peer.diagnostics()}`);
    } finally {
      await peer?.stop().catch((e) => console.error(`stopping ${name}: ${e}`));
    }
  }

  console.log(
    `\nSequential: ${N} messages one after another, one connection each (client-side timing). ` +
      `Load: smtp-source -s ${SESSIONS} -m ${LOAD} -l ${SIZE}, timed until the sink counted all.`,
  );
  console.log(
    "| path | connects to | seq ok/failed | median ms | p90 ms | max ms | load msgs/s | load s | at sink | note |",
  );
  console.log("|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
  for (const a of arms) {
    const s = a.seq;
    const notes = [a.note, a.load?.note].filter(Boolean).join("; ");
    console.log(
      `| ${a.label} | ${a.target} | ${s ? `${s.ok}/${s.failed}` : "-"} | ${fmt(s?.medianMs, 2)} | ${
        fmt(s?.p90Ms, 2)
      } | ${fmt(s?.maxMs, 2)} | ${fmt(a.load?.msgsPerS)} | ${fmt(a.load?.seconds, 2)} | ${
        a.atSink ?? "-"
      }/${a.seq ? N + LOAD : "-"} | ${notes} |`,
    );
  }
  for (const a of arms) for (const f of a.seq?.failures ?? []) console.log(`  ${a.label}: ${f}`);
  for (const a of arms) {
    if (!a.cpu) continue;
    const n = LOAD;
    console.log(
      `\n${a.label}, load phase from /proc: CPU ${fmt(a.cpu.totalMs / n, 3)} ms/message all ` +
        `threads, ${fmt(a.cpu.totalSysMs / n, 3)} of it in the kernel (main thread ${
          fmt(a.cpu.mainMs / n, 3)
        }, kernel ${fmt(a.cpu.mainSysMs / n, 3)}; ${
          a.cpu.others.slice(0, 4).map((o) => `${o.name} ${fmt(o.ms / n, 3)}`).join(", ")
        }); total ${fmt(a.cpu.totalMs / 1000, 2)} s CPU in ${fmt(a.load?.seconds, 2)} s ` +
        `(${fmt(a.cpu.totalMs / 10 / (a.load?.seconds ?? NaN), 0)}% of one core); ` +
        `RSS idle ${fmt(a.idleRssMiB)} MiB, peak under load ${fmt(a.cpu.peakRssMiB)} MiB`,
    );
  }
  const base = direct.seq?.medianMs;
  if (base !== undefined && Number.isFinite(base)) {
    console.log("");
    for (const a of arms.slice(1)) {
      if (!a.seq || !Number.isFinite(a.seq.medianMs)) continue;
      const ratio = direct.load && a.load ? a.load.msgsPerS / direct.load.msgsPerS : NaN;
      console.log(
        `${a.label}: +${fmt(a.seq.medianMs - base, 2)} ms median over direct; load ${
          fmt(ratio * 100, 0)
        }% of direct msgs/s`,
      );
    }
  }
}

if (import.meta.main) await main();
