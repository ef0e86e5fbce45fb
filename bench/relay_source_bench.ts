/**
 * What `relay.source: client` costs against `relay.source: gateway`, in one topology and one run:
 * per-message latency (a small smtplib client in the client namespace, N messages one after
 * another, each on its own connection, timed with a monotonic clock) and the packets the queue
 * Worker handled per message (from SSG's `divert.stop` counters), plus packets per second at the
 * end-to-end rate and the Worker's per-packet cost for relay packets (`Diverter.handle()`, pure).
 * Not a test: it measures and prints. Needs root and a built dist/ssg.
 *
 *   deno run --allow-all bench/relay_source_bench.ts [--messages 200] [--size 2048]
 *
 * The server is smtp-sink (no disk). Arms run one after another; each starts a fresh SSG with its
 * own rule file. Bounded: N ≤ 5000, every step has a timeout.
 *
 * @module
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createTopology, type Topology } from "../test/netns/topology.ts";
import { startSsg, tempDir } from "../test/netns/helpers.ts";
import { benchRuleFile, startSink } from "./e2e/bench_setup.ts";
import { Diverter, PacketHook } from "../src/divert/diverter.ts";
import { FlowTable } from "../src/flow/flow_table.ts";
import { RelayRegistry } from "../src/flow/relay_registry.ts";
import { buildTcpPacket } from "../src/packet/build_tcp_packet.ts";
import { parseCidr } from "../src/packet/cidr.ts";
import { parseIp } from "../src/packet/ip_address.ts";
import { TCP_ACK, TCP_SYN } from "../src/packet/packet_view.ts";

const { values: opt } = parseArgs({
  args: Deno.args,
  options: {
    messages: { type: "string", default: "200" },
    size: { type: "string", default: "2048" },
  },
});
const N = Math.min(Math.max(1, Number(opt.messages)), 5_000);
const SIZE = Math.min(Math.max(100, Number(opt.size)), 10_000_000);

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

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

interface Arm {
  label: string;
  ok: number;
  failed: number;
  medianMs: number;
  p90Ms: number;
  seconds: number;
  packets: number;
  relayPackets: number;
  sourceClient: number;
}

async function arm(t: Topology, dir: string, mode: "client" | "gateway"): Promise<Arm> {
  const logFile = join(dir, `ssg-${mode}.log`);
  const ruleFile = join(dir, `rules-${mode}.yaml`);
  await Deno.writeTextFile(ruleFile, benchRuleFile(logFile, "test", mode));
  const ssg = await startSsg(t, ruleFile, logFile);
  const t0 = performance.now();
  const r = await t.exec(t.ns.client, [
    "/usr/bin/python3",
    "-c",
    CLIENT,
    t.addr.server4,
    String(N),
    String(SIZE),
  ], { timeoutMs: 660_000 });
  const seconds = (performance.now() - t0) / 1000;
  await ssg.stop("SIGTERM");
  const log = ssg.log();
  const stop = /\bdivert\.stop\b.*$/m.exec(log)?.[0] ?? "";
  const num = (k: string, s = stop) => Number(new RegExp(`\\b${k}=(\\d+)`).exec(s)?.[1] ?? 0);
  const stats = /\bssg\.stats\b.*$/m.exec(log)?.[0] ?? "";
  const times = r.stdout.split("\n").filter((l) => l.trim() && !l.startsWith("FAIL")).map(Number)
    .sort((a, b) => a - b);
  return {
    label: mode,
    ok: times.length,
    failed: r.stdout.split("\n").filter((l) => l.startsWith("FAIL")).length,
    medianMs: quantile(times, 0.5),
    p90Ms: quantile(times, 0.9),
    seconds,
    packets: num("nfqPackets"),
    relayPackets: num("relayPacketsOut") + num("relayPacketsIn"),
    sourceClient: num("relaySourceClient", stats),
  };
}

/** ns per `Diverter.handle()` for a relay data segment (out) and a reply (in), vs a diverted one. */
function micro(): Record<string, number> {
  const ip = (s: string) => parseIp(s)!;
  const registry = new RelayRegistry(61000, 61999);
  const table = new FlowTable({ max: 65536, idleSeconds: 600 });
  const d = new Diverter({
    protect: [parseCidr("198.51.100.0/24")],
    ports: [25],
    responder4: ip("192.0.2.1"),
    responderPort: 10025,
    table,
    relay: { registry, table: new FlowTable({ max: 1000, idleSeconds: 600 }) },
  });
  const payload = new Uint8Array(1400).fill(0x61);
  const lease = registry.lease({ ip: "192.0.2.10", port: 40000 }, {
    ip: "198.51.100.25",
    port: 25,
  }, true)!;
  const g = ip("198.51.100.1"), s = ip("198.51.100.25"), c = ip("192.0.2.10");
  d.handle(
    buildTcpPacket({ src: g, dst: s, srcPort: lease.port, dstPort: 25, flags: TCP_SYN }),
    0,
    PacketHook.LocalOut,
  );
  d.handle(
    buildTcpPacket({ src: c, dst: s, srcPort: 40001, dstPort: 25, flags: TCP_SYN }),
    0,
    PacketHook.PreRouting,
  );
  const out = buildTcpPacket({
    src: g,
    dst: s,
    srcPort: lease.port,
    dstPort: 25,
    flags: TCP_ACK,
    payload,
  });
  const inn = buildTcpPacket({ src: s, dst: c, srcPort: 25, dstPort: 40000, flags: TCP_ACK });
  const div = buildTcpPacket({
    src: c,
    dst: s,
    srcPort: 40001,
    dstPort: 25,
    flags: TCP_ACK,
    payload,
  });
  const time = (p: Uint8Array, hook: number) => {
    const copy = p.slice();
    const n = 200_000;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      copy.set(p);
      d.handle(copy, 1, hook);
    }
    return ((performance.now() - t0) * 1e6) / n;
  };
  // Warm-up of all three paths first (one JIT state for all), then the best of 3 rounds each.
  for (let i = 0; i < 3; i++) {
    time(out, PacketHook.LocalOut);
    time(inn, PacketHook.PreRouting);
    time(div, PacketHook.PreRouting);
  }
  const best = (p: Uint8Array, hook: number) =>
    Math.min(time(p, hook), time(p, hook), time(p, hook));
  return {
    relayOutNs: best(out, PacketHook.LocalOut),
    relayInNs: best(inn, PacketHook.PreRouting),
    divertedInNs: best(div, PacketHook.PreRouting),
  };
}

const m = micro();
console.log(
  `Diverter.handle() per packet (incl. a 1.4 kB copy): relay out ${m.relayOutNs.toFixed(0)} ns, ` +
    `relay in ${m.relayInNs.toFixed(0)} ns, diverted in ${m.divertedInNs.toFixed(0)} ns`,
);

await using t = await createTopology();
await using tmp = await tempDir("ssg-bench-relay-");
const sink = startSink(t);
await t.waitForPort(t.ns.gateway, t.addr.server4, 25);
const arms: Arm[] = [];
for (const mode of ["gateway", "client", "gateway", "client"] as const) {
  arms.push(await arm(t, tmp.path, mode));
}
try {
  sink.kill("SIGTERM");
} catch { /* gone */ }
console.log(`\n${N} messages of ${SIZE} bytes each, one connection per message, per arm:`);
console.log(
  "mode     ok  fail  median ms  p90 ms  msg/s   queue pkts/msg  relay pkts/msg  pkts/s  sessions with client source",
);
for (const a of arms) {
  console.log(
    [
      a.label.padEnd(8),
      String(a.ok).padStart(3),
      String(a.failed).padStart(4),
      a.medianMs.toFixed(2).padStart(9),
      a.p90Ms.toFixed(2).padStart(7),
      (a.ok / a.seconds).toFixed(1).padStart(6),
      (a.packets / Math.max(1, a.ok)).toFixed(1).padStart(15),
      (a.relayPackets / Math.max(1, a.ok)).toFixed(1).padStart(15),
      (a.packets / a.seconds).toFixed(0).padStart(7),
      String(a.sourceClient).padStart(6),
    ].join("  "),
  );
}
