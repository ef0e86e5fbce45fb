/**
 * The packet path against the C NFQUEUE reference, side by side in one run (issue 9: SSG's queue
 * ≥ 0.7 × the C consumer in packets/s). Root; throw-away namespaces (test/netns/topology.ts).
 *
 *   deno run -A bench/packet_path_bench.ts [--rounds 3] [--seconds 2] [--probe PATH] [--base DIR]
 *                                          [--arms cAccept,ssgNoGso,...]
 *
 * Arms, alternated per round so the noise of other work on the machine is shared out; each is
 * one bulk TCP stream (Deno peers, test/ffi/netns_peer.ts) from the client to the server
 * namespace through the gateway, and the figures are queued packets per second of the stream,
 * MB/s, and the consumer's CPU (user + system of its process, from /proc; includes the kernel
 * work done in its system calls, and for SSG its main thread, which discards the data) per MB:
 * - `C accept`: the reference consumer of ../shared/research/probe (nfq_accept.c, libnetfilter_queue,
 *   one verdict per packet, no payload, GSO flag off) on FORWARD, both directions (port 80);
 * - `C mangle+csum`: the same consumer returning every packet as a payload verdict after a full
 *   userspace TCP checksum (the kind of work a rewriting path does);
 * - `SSG`: the real packet path (DivertService → queue Worker → Diverter, Firewall rules) of
 *   test/ffi/netns_gateway.ts on port 25: every packet rewritten (client → responder and back);
 *   `ssgNoGso` with the NFQUEUE GSO flag off (SSG_NFQ_GSO=0: one queue trip per segment, as the
 *   C arms), `ssgGso` with it on (the default: a GSO/GRO packet crosses whole, so packets/s
 *   falls while MB/s rises). MB/s is printed too;
 * - `cGsoCsum`: the C consumer with the GSO flag on, returning every packet with a full userspace
 *   TCP checksum (the work `ssgGso` does);
 * - `ssgBase` (with `--base DIR`, another checkout of SSG, e.g. `git worktree add DIR main`): the
 *   same as `ssgNoGso` with that checkout's code, for a before/after in one run.
 * The C probe is compiled from its source with gcc (needs libnetfilter-queue-dev) unless --probe
 * gives a binary. Prints one table; asserts nothing (not a test).
 */
import { createTopology, type Topology } from "../test/netns/topology.ts";

const args = Deno.args;
const opt = (name: string, dflt: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const ROUNDS = Math.max(1, Math.min(10, Number(opt("--rounds", "3"))));
const SECONDS = Math.max(1, Math.min(10, Number(opt("--seconds", "2"))));
const DENO = Deno.execPath();
const PEER = new URL("../test/ffi/netns_peer.ts", import.meta.url).pathname;
const GATEWAY = new URL("../test/ffi/netns_gateway.ts", import.meta.url).pathname;
const PROBE_SRC = opt("--probe-src", "/work/shared/research/probe/nfq_accept.c");
const SSG_QUEUE = 1000 + Math.floor(Math.random() * 1000);
const PROBE_QUEUE = SSG_QUEUE + 1;
const BASE = opt("--base", "");
/** `--arms a,b`: only these arms (default: all). */
const ARMS = opt("--arms", "").split(",").filter((a) => a !== "");

async function probeBinary(): Promise<string> {
  const given = opt("--probe", "");
  if (given) return given;
  const out = await Deno.makeTempFile({ prefix: "ssg-nfq-accept-" });
  const r = await new Deno.Command("gcc", {
    args: ["-O2", "-o", out, PROBE_SRC, "-lnetfilter_queue"],
    stderr: "piped",
  }).output();
  if (r.code !== 0) {
    throw new Error(
      `cannot compile ${PROBE_SRC} (apt-get install libnetfilter-queue-dev): ${
        new TextDecoder().decode(r.stderr)
      }`,
    );
  }
  return out;
}

// deno-lint-ignore no-explicit-any
type Json = Record<string, any>;

async function bulk(t: Topology, port: string): Promise<Json> {
  const r = await t.exec(
    t.ns.client,
    [DENO, "run", "--allow-all", PEER, "bulk", t.addr.server4, port, String(SECONDS)],
    { timeoutMs: (SECONDS + 20) * 1000 },
  );
  if (r.code !== 0) throw new Error(`bulk to :${port} failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").pop()!);
}

/** Lines of the gateway's JSON stdout, read as they come. */
class Gateway {
  lines: Json[] = [];
  #child: Deno.ChildProcess;
  get pid(): number {
    return this.#child.pid;
  }
  constructor(child: Deno.ChildProcess) {
    this.#child = child;
    (async () => {
      let buf = "";
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
        buf += chunk;
        let i;
        while ((i = buf.indexOf("\n")) >= 0) {
          try {
            this.lines.push(JSON.parse(buf.slice(0, i)));
          } catch { /* not JSON */ }
          buf = buf.slice(i + 1);
        }
      }
    })();
  }
  async until(event: string, from: number, ms = 20_000): Promise<Json> {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      const hit = this.lines.slice(from).find((l) => l.event === event);
      if (hit) return hit;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`gateway: no ${event} within ${ms} ms`);
  }
  async stats(): Promise<Json> {
    const from = this.lines.length;
    Deno.kill(this.#child.pid, "SIGUSR2");
    return (await this.until("stats", from, 5_000)).stats;
  }
  async stop(): Promise<void> {
    this.#child.kill("SIGTERM");
    await this.#child.status;
  }
}

async function cArm(
  t: Topology,
  probe: string,
  mangle: number,
  gso = false,
): Promise<[number, number, number]> {
  const rule = (op: string, dir: string) =>
    t.exec(t.ns.gateway, [
      "iptables",
      "-t",
      "mangle",
      op,
      "FORWARD",
      "-p",
      "tcp",
      dir,
      "80",
      "-j",
      "NFQUEUE",
      "--queue-num",
      String(PROBE_QUEUE),
      "--queue-bypass",
    ]);
  await rule("-A", "--dport");
  await rule("-A", "--sport");
  try {
    const child = t.spawn(
      t.ns.gateway,
      [probe, String(PROBE_QUEUE), gso ? "1" : "0", String(mangle), "1", String(SECONDS + 2)],
      { stderr: "piped", stdout: "null" },
    );
    await new Promise((r) => setTimeout(r, 300));
    const cpu0 = cpuSeconds(child.pid);
    const b = await bulk(t, "80");
    const cpu = cpuSeconds(child.pid) - cpu0;
    const { stderr } = await child.output();
    const text = new TextDecoder().decode(stderr);
    const packets = Number(/packets=(\d+)/.exec(text)?.[1] ?? NaN);
    return [packets / b.seconds, (cpu * 1e6) / (b.sent / 1e6), b.mbps];
  } finally {
    await rule("-D", "--dport");
    await rule("-D", "--sport");
  }
}

async function ssgArm(
  t: Topology,
  gso: boolean,
  gateway = GATEWAY,
): Promise<[number, number, number, number]> {
  const gw = new Gateway(
    t.spawn(t.ns.gateway, [DENO, "run", "--allow-all", gateway, String(SSG_QUEUE)], {
      stdout: "piped",
      stderr: "inherit",
      env: { SSG_NFQ_GSO: gso ? "1" : "0" },
    }),
  );
  try {
    await gw.until("ready", 0);
    const before = await gw.stats();
    const cpu0 = cpuSeconds(gw.pid);
    const b = await bulk(t, "25");
    const cpu = cpuSeconds(gw.pid) - cpu0;
    if (b.received !== b.sent) throw new Error(`SSG lost data: sent ${b.sent}, got ${b.received}`);
    const after = await gw.stats();
    const pkts = after.nfqPackets - before.nfqPackets;
    const batches = after.nfqBatches - before.nfqBatches;
    return [pkts / b.seconds, (cpu * 1e6) / (b.sent / 1e6), pkts / Math.max(1, batches), b.mbps];
  } finally {
    await gw.stop();
  }
}

/** CPU seconds (user + system) used so far by process `pid`; NaN when it is gone. */
function cpuSeconds(pid: number): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
  } catch {
    return NaN;
  }
}

const median = (x: number[]) => [...x].sort((a, b) => a - b)[Math.floor(x.length / 2)];
const k = (v: number) => `${(v / 1000).toFixed(0)}k`;

const probe = await probeBinary();
await using t = await createTopology();
/** The server peer (it exits by itself after 120 s, so one per round). */
async function startServer(): Promise<Deno.ChildProcess> {
  const server = t.spawn(t.ns.server, [
    DENO,
    "run",
    "--allow-all",
    PEER,
    "server",
    `${t.addr.server4}:25`,
    `${t.addr.server4}:80`,
  ], { stdout: "null", stderr: "inherit" });
  await t.waitForPort(t.ns.server, t.addr.server4, 80, 15_000);
  return server;
}
async function stopServer(server: Deno.ChildProcess): Promise<void> {
  try {
    server.kill("SIGTERM");
  } catch { /* ended */ }
  await server.status;
}
const names = [
  "cAccept",
  "ssgNoGso",
  "cMangle",
  "ssgGso",
  "cGsoCsum",
  ...(BASE ? ["ssgBase"] : []),
].filter((n) => ARMS.length === 0 || ARMS.includes(n));
const pps: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
const mbps: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
const cpuPerMb: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
const perBatch: number[] = [];
for (let round = 0; round < ROUNDS; round++) {
  const server = await startServer();
  try {
    for (const name of names) {
      let r: number[];
      if (name === "cAccept") r = await cArm(t, probe, 0);
      else if (name === "cMangle") r = await cArm(t, probe, 2);
      else if (name === "cGsoCsum") r = await cArm(t, probe, 2, true);
      else if (name === "ssgBase") {
        r = await ssgArm(t, false, `${BASE}/test/ffi/netns_gateway.ts`);
      } else {
        r = await ssgArm(t, name === "ssgGso");
        if (name === "ssgNoGso") perBatch.push(r[2]);
      }
      pps[name].push(r[0]);
      cpuPerMb[name].push(r[1]);
      mbps[name].push(r.at(-1)!);
    }
  } finally {
    await stopServer(server);
  }
}
const load = (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
console.log(
  `packet path, one bulk stream, ${ROUNDS} rounds x ${SECONDS} s, load ${load} (packets/s, ` +
    `median of rounds, then every round):`,
);
for (const name of names) {
  const v = pps[name];
  console.log(
    `  ${name.padEnd(9)} ${k(median(v)).padStart(6)} packets/s (${v.map(k).join(" / ")}), ` +
      `${median(mbps[name]).toFixed(0)} MB/s (${
        mbps[name].map((m) => m.toFixed(0)).join(" / ")
      }), ` +
      `consumer CPU ${median(cpuPerMb[name]).toFixed(0)} µs/MB`,
  );
}
const ratio = (a: string, b: string, x: Record<string, number[]>) =>
  x[a]?.length && x[b]?.length ? (median(x[a]) / median(x[b])).toFixed(2) : "-";
console.log(
  `  packets/s: ssgNoGso / cAccept = ${ratio("ssgNoGso", "cAccept", pps)}, ` +
    `ssgNoGso / cMangle = ${ratio("ssgNoGso", "cMangle", pps)}; ` +
    `MB/s: ssgGso / ssgNoGso = ${ratio("ssgGso", "ssgNoGso", mbps)}, ` +
    `ssgGso / cAccept = ${ratio("ssgGso", "cAccept", mbps)}, ` +
    `ssgGso / cGsoCsum = ${ratio("ssgGso", "cGsoCsum", mbps)}; ` +
    (BASE
      ? `before/after: packets/s ssgNoGso / ssgBase = ${ratio("ssgNoGso", "ssgBase", pps)}, ` +
        `MB/s ssgGso / ssgBase = ${ratio("ssgGso", "ssgBase", mbps)}; `
      : "") +
    `SSG (no GSO) packets per recvmmsg batch ${
      perBatch.length ? median(perBatch).toFixed(1) : "-"
    }`,
);
