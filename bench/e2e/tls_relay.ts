/**
 * Per-message latency with STARTTLS to a real Postfix server, direct vs through SSG, in one run
 * and one namespace topology (issue 7: "STARTTLS to the server: 3.2 ms direct, 55 ms through
 * SSG"). Not a test: it measures and prints a table. Needs root and a built dist/ssg.
 *
 *   deno run --allow-all bench/e2e/tls_relay.ts [--messages 100] [--capture]
 *     [--relay-source client|gateway]
 *
 * The server is the interop suite's Postfix (test/netns/interop.ts: STARTTLS with a throwaway
 * certificate, TLS 1.3). A small smtplib client in the client namespace sends N messages one
 * after another, each on its own connection, and times each with a monotonic clock. Arms:
 *   (a) direct, plaintext                       (b) direct, the client says STARTTLS itself
 *   (c) from the gateway namespace, STARTTLS    (what SSG's relay leg does, done by Python)
 *   (d) through SSG, relay.starttls: opportunistic (the default: the relay leg uses TLS)
 *   (e) through SSG, relay.starttls: off
 *   (f) through SSG with TLS on both legs: the client says STARTTLS to SSG (`smtp.tls`, a
 *       throwaway certificate) and the relay leg uses STARTTLS; compare with (b)
 * `--relay-source gateway` runs the SSG arms with `relay.source: gateway` against a server that
 * does not authorise the gateway for XCLIENT (XFORWARD only, as a server without XCLIENT), so
 * relay connections are kept between sessions (README "Keeping relay connections open").
 * `--baseline PATH` adds arm (d0): the same as (d) with another build of SSG (e.g. one made from
 * the commit before a fix with `git archive C | tar -x -C DIR && DIR/build.sh`), so before and
 * after are measured in the same run, against the same server.
 * `--capture` also records the relay leg of the first messages of (d) with tcpdump in the server
 * namespace and prints each packet with its time since the connection's SYN, so a stall shows as
 * a gap (the figures in the report of the TLS fix were taken this way).
 *
 * @module
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { type InteropWorld, withInteropWorld } from "../../test/netns/interop.ts";
import { ruleFileText, SsgProcess, startSsg } from "../../test/netns/helpers.ts";
import { relaySource, withRelaySettings } from "./bench_setup.ts";

const { values: opt } = parseArgs({
  args: Deno.args,
  options: {
    messages: { type: "string", default: "100" },
    capture: { type: "boolean", default: false },
    baseline: { type: "string" },
    "relay-source": { type: "string", default: "client" },
  },
});
const N = Math.min(Math.max(1, Number(opt.messages)), 2_000);
const SOURCE = relaySource(opt["relay-source"]);

const CLIENT = `
import smtplib, ssl, sys, time
server, n, tls = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "tls"
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
msg = b"From: <bench@sender.test>\\r\\nTo: <b@example.net>\\r\\nSubject: tls bench\\r\\n\\r\\nhello\\r\\n"
deadline = time.monotonic() + 300
for i in range(n):
    if time.monotonic() > deadline:
        print("FAIL deadline"); break
    t0 = time.perf_counter()
    try:
        with smtplib.SMTP(server, 25, local_hostname="bench.sender.test", timeout=30) as s:
            if tls:
                s.starttls(context=ctx); s.ehlo("bench.sender.test")
            s.sendmail("bench@sender.test", ["b@example.net"], msg)
        print("%.3f" % ((time.perf_counter() - t0) * 1000), flush=True)
    except Exception as e:
        print("FAIL %r" % (e,), flush=True)
`;

interface Series {
  label: string;
  ok: number;
  failed: string[];
  medianMs: number;
  p90Ms: number;
  maxMs: number;
}

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

async function series(
  w: InteropWorld,
  label: string,
  ns: string,
  tls: boolean,
  n = N,
): Promise<Series> {
  const r = await w.t.exec(ns, [
    "python3",
    "-c",
    CLIENT,
    w.t.addr.server4,
    String(n),
    tls ? "tls" : "plain",
  ], { timeoutMs: 330_000 });
  const times: number[] = [];
  const failed: string[] = [];
  for (const line of r.stdout.split("\n")) {
    if (line.startsWith("FAIL")) failed.push(line);
    else if (line.trim()) times.push(Number(line));
  }
  if (r.code !== 0) failed.push(`exit ${r.code}: ${r.stderr.slice(0, 300)}`);
  times.sort((a, b) => a - b);
  await w.server.takeMail("inbox");
  return {
    label,
    ok: times.length,
    failed,
    medianMs: quantile(times, 0.5),
    p90Ms: quantile(times, 0.9),
    maxMs: times[times.length - 1] ?? NaN,
  };
}

/**
 * Runs `fn` while tcpdump records the relay leg (server namespace, port 25: with either relay
 * source, since nothing else talks to the server meanwhile) and prints the first TCP connection
 * it saw, one packet a line.
 */
async function captured(w: InteropWorld, label: string, fn: () => Promise<unknown>): Promise<void> {
  const pcap = join(w.dir, "relay.pcap");
  const tcpdump = w.t.spawn(w.t.ns.server, [
    "tcpdump",
    "-i",
    "eth0",
    "-Z",
    "root",
    "-U",
    "-w",
    pcap,
    "tcp port 25",
  ], { stdout: "null", stderr: "piped" });
  // Bounded: until tcpdump says it is listening (10 s at most), then the traffic.
  const reader = tcpdump.stderr.getReader();
  let said = "";
  const deadline = Date.now() + 10_000;
  while (!said.includes("listening on") && Date.now() < deadline) {
    const r = await Promise.race([
      reader.read(),
      new Promise<undefined>((res) => setTimeout(() => res(undefined), 500)),
    ]);
    if (r && !r.done) said += new TextDecoder().decode(r.value);
    if (r?.done) break;
  }
  await fn();
  await new Promise((r) => setTimeout(r, 1_000));
  tcpdump.kill("SIGINT");
  await tcpdump.status;
  reader.releaseLock();
  await tcpdump.stderr.cancel().catch(() => {});
  const text = await w.t.exec(w.t.ns.server, ["tcpdump", "-r", pcap, "-ttttt", "-n", "-S"]);
  const keep = Deno.env.get("TLS_BENCH_LISTING");
  if (keep) await Deno.writeTextFile(`${keep}.${label.slice(1, 2)}`, text.stdout);
  console.log(`--- ${label}: the first captured connection (times since its SYN) ---`);
  console.log(firstConnection(text.stdout, w.t.addr.server4));
}

/** Starts another build of SSG (`--baseline`) in the gateway namespace; bounded (60 s). */
async function startBinary(w: InteropWorld, bin: string): Promise<SsgProcess> {
  let offset = 0;
  try {
    offset = Deno.statSync(w.logFile).size;
  } catch { /* not written yet */ }
  const ssg = new SsgProcess(
    w.t.spawn(w.t.ns.gateway, [bin, "run", w.ruleFile]),
    w.logFile,
    offset,
  );
  const deadline = Date.now() + 60_000;
  while (!/\bssg\.ready\b/.test(ssg.log())) {
    if (ssg.status || Date.now() > deadline) {
      await ssg.stop("SIGKILL").catch(() => {});
      throw new Error(`${bin} did not start:\n${ssg.transcript()}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return ssg;
}

/** A throwaway certificate for SSG's own STARTTLS (arm f), in the world's directory. */
async function gatewayCert(w: InteropWorld): Promise<string> {
  const cert = join(w.dir, "gw.crt");
  const key = join(w.dir, "gw.key");
  const r = await new Deno.Command("openssl", {
    args: ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
      .concat(["-subj", "/CN=mx.server.test", "-days", "1", "-keyout", key, "-out", cert]),
    stdout: "null",
    stderr: "null",
  }).output();
  if (!r.success) throw new Error("openssl req failed");
  return `smtp:\n  tls: { cert: ${JSON.stringify(cert)}, key: ${JSON.stringify(key)} }\n`;
}

async function ssgArm(
  w: InteropWorld,
  label: string,
  starttls: string,
  binary?: string,
  clientTls = false,
): Promise<Series> {
  await Deno.writeTextFile(
    w.ruleFile,
    withRelaySettings(
      ruleFileText({
        logFile: w.logFile,
        level: "info",
        extraSections: clientTls ? await gatewayCert(w) : "",
      }),
      `starttls: ${starttls}`,
      `source: ${SOURCE}`,
    ),
  );
  const ssg = binary ? await startBinary(w, binary) : await startSsg(w.t, w.ruleFile, w.logFile);
  try {
    // The first relay connections pay for warming up (JIT, TLS context): not timed.
    await series(w, "warm-up", w.t.ns.client, false, 3);
    if (opt.capture && starttls !== "off") {
      await captured(w, label, () => series(w, "captured", w.t.ns.client, false, 1));
    }
    return await series(w, label, w.t.ns.client, clientTls);
  } finally {
    await ssg.stop("SIGTERM").catch(() => {});
  }
}

/** The packets of the first TCP connection in a `tcpdump -ttttt -n` listing, compacted. */
function firstConnection(listing: string, server: string): string {
  const lines = listing.split("\n").filter(Boolean);
  const syn = lines.findIndex((l) => /Flags \[S\]/.test(l));
  if (syn < 0) return `(no connection captured)\n${listing.slice(0, 2_000)}`;
  const port = / IP [\d.]+\.(\d+) > /.exec(lines[syn])?.[1];
  const t0 = seconds(lines[syn]);
  const out: string[] = [];
  for (const l of lines.slice(syn)) {
    const m = / IP ([\d.]+)\.(\d+) > ([\d.]+)\.(\d+): Flags \[([^\]]+)\].* length (\d+)(.*)$/.exec(
      l,
    );
    if (!m || (m[2] !== port && m[4] !== port)) continue;
    const dir = m[1] === server ? "server -> gateway" : "gateway -> server";
    const what = m[7].replace(/^: SMTP:?\s*/, "").slice(0, 40);
    out.push(
      `${((seconds(l) - t0) * 1000).toFixed(3).padStart(9)} ms  ${dir}  [${m[5]}]`.padEnd(42) +
        `${m[6].padStart(5)} B  ${what}`,
    );
    if (out.length >= 40) break;
  }
  return out.join("\n");
}

function seconds(line: string): number {
  const m = /^\s*(\d+):(\d+):(\d+\.\d+)/.exec(line);
  return m ? Number(m[1]) * 3600 + Number(m[2]) * 60 + Number(m[3]) : NaN;
}

// A server without XCLIENT for the gateway (`--relay-source gateway`): XFORWARD only.
const serverExtra: Record<string, string> = SOURCE === "gateway"
  ? { smtpd_authorized_xclient_hosts: "" }
  : {};
await withInteropWorld(serverExtra, async (w) => {
  const rows: Series[] = [];
  rows.push(await series(w, "(a) direct, plaintext", w.t.ns.client, false));
  rows.push(await series(w, "(b) direct, client STARTTLS", w.t.ns.client, true));
  const arm = "(c) Python STARTTLS from the gateway ns";
  if (opt.capture) await captured(w, arm, () => series(w, arm, w.t.ns.gateway, true, 1));
  rows.push(await series(w, arm, w.t.ns.gateway, true));
  if (opt.baseline) {
    rows.push(
      await ssgArm(w, "(d0) baseline SSG, relay STARTTLS", "opportunistic", opt.baseline),
    );
  }
  rows.push(await ssgArm(w, "(d) through SSG, relay STARTTLS (default)", "opportunistic"));
  rows.push(await ssgArm(w, "(e) through SSG, relay.starttls: off", "off"));
  if (opt.baseline) {
    rows.push(
      await ssgArm(w, "(f0) baseline SSG, TLS on both legs", "opportunistic", opt.baseline, true),
    );
  }
  rows.push(await ssgArm(w, "(f) through SSG, TLS on both legs", "opportunistic", undefined, true));
  const tls = /TLS connection established from unknown\[198\.51\.100\.1\]: (\S+)/.exec(
    w.server.log(),
  );
  console.log(`\nper-message latency, ${N} messages per arm, each on its own connection`);
  console.log(
    `server: Postfix ${w.server.name} on ${w.t.addr.server4}; relay TLS: ${tls?.[1]}; ` +
      `SSG relay.source: ${SOURCE}`,
  );
  console.log(
    "arm".padEnd(48) + "ok".padStart(6) + "median ms".padStart(11) +
      "p90 ms".padStart(9) + "max ms".padStart(9),
  );
  for (const r of rows) {
    console.log(
      r.label.padEnd(48) + String(r.ok).padStart(6) + r.medianMs.toFixed(2).padStart(11) +
        r.p90Ms.toFixed(2).padStart(9) + r.maxMs.toFixed(2).padStart(9),
    );
    for (const f of r.failed.slice(0, 3)) console.log(`   ${f}`);
  }
});
