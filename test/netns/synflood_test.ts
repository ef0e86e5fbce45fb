/**
 * Availability and memory under a spoofed SYN flood (issue 8: before this, 2 of 5 legitimate
 * probes got no greeting and SSG's RSS grew from 98 to 757 MB and stayed there; nothing logged).
 *
 * ```
 *  client ns: 192.0.2.10 (swaks, the legitimate sender)       gateway ns: dist/ssg
 *             python raw socket (IP_HDRINCL) spoofing SYNs from  server ns: smtp-sink
 *             203.0.113.128/25 and 192.0.2.128/25 to 198.51.100.25:25
 * ```
 * The gateway routes both spoofed /25s back via the client, whose namespace does not forward:
 * the responder's SYN-ACKs die there, as they would on the Internet. Bounded: the sender stops
 * after FLOOD_S seconds or FLOOD_MAX SYNs, the probes are at most PROBES. The figures are
 * printed; the pass lines are generous floors, never a timing.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { e2e, finalReply, processMemoryMb, simpleMessage, startSink, swaks } from "./helpers.ts";

const FLOOD_S = 25;
const FLOOD_MAX = 3_000_000;
const PROBES = 8;
const SPOOFED = ["203.0.113.128/25", "192.0.2.128/25"];

/** Raw SYN sender: spoofed sources, random ports and sequence numbers; prints what it sent. */
const SENDER = `
import socket, struct, sys, time, random, json
dst = socket.inet_aton(sys.argv[1]); dur = float(sys.argv[2]); most = int(sys.argv[3])
srcs = [socket.inet_aton("203.0.113.%d" % i) for i in range(129, 255)] + \\
       [socket.inet_aton("192.0.2.%d" % i) for i in range(129, 255)]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
def csum(b):
    if len(b) % 2: b += b"\\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16: t = (t & 0xffff) + (t >> 16)
    return (~t) & 0xffff
sent = 0; errors = 0; stop = time.time() + dur; rnd = random.Random(25)
while sent < most:
    if sent % 1000 == 0 and time.time() >= stop: break
    src = srcs[sent % len(srcs)]
    sport = 1024 + rnd.randrange(64000); seq = rnd.getrandbits(32)
    tcp = struct.pack("!HHIIBBHHH", sport, 25, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    c = csum(src + dst + struct.pack("!BBH", 0, 6, 20) + tcp)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, sent & 0xffff, 0, 64, 6, 0, src, dst)
    try:
        s.sendto(ip + tcp, (sys.argv[1], 0)); sent += 1
    except OSError:
        errors += 1
        if errors > 100000: break
print(json.dumps({"sent": sent, "errors": errors}))
`;

e2e(
  "during a spoofed SYN flood legitimate mail still gets through and SSG's memory is bounded and given back",
  { level: "info" },
  async (w) => {
    const { t } = w;
    for (const net of SPOOFED) {
      const r = await t.exec(t.ns.gateway, ["ip", "route", "add", net, "via", t.addr.client4]);
      assert.equal(r.code, 0, r.stderr);
    }
    const sink = await startSink(t, t.addr.server4, join(w.dir, "sink"));
    const ssg = await w.startSsg();
    const pid = ssg.child.pid;
    const file = await w.message("probe.eml", simpleMessage("probe", "A legitimate message.", "p"));
    // Warm up: one message before the flood, so the baseline includes a served session.
    const warm = await swaks(t, { server: t.addr.server4, to: ["b@example.net"], dataFile: file });
    assert.equal(finalReply(warm.transcript)?.code, 250, warm.transcript);
    await new Promise((r) => setTimeout(r, 1_000));
    const before = processMemoryMb(pid);
    const flood = t.spawn(t.ns.client, [
      "/usr/bin/python3",
      "-c",
      SENDER,
      t.addr.server4,
      String(FLOOD_S),
      String(FLOOD_MAX),
    ], { stdout: "piped", stderr: "piped" });
    const out = new Response(flood.stdout).text();
    const err = new Response(flood.stderr).text();
    let served = 0;
    const codes: number[] = [];
    let peak = before.rss;
    try {
      await new Promise((r) => setTimeout(r, 3_000));
      for (let i = 0; i < PROBES; i++) {
        const r = await swaks(t, {
          server: t.addr.server4,
          to: ["b@example.net"],
          dataFile: file,
          timeoutS: 10,
        });
        const code = finalReply(r.transcript)?.code ?? 0;
        codes.push(code);
        if (r.code === 0 && code === 250) served++;
        else {
          console.log(
            `probe ${i + 1} not served:\n${r.transcript.split("\n").slice(0, 8).join("\n")}`,
          );
        }
        peak = Math.max(peak, processMemoryMb(pid).rss);
        await new Promise((r) => setTimeout(r, 1_000));
      }
    } finally {
      // The sender ends by itself within FLOOD_S; SIGKILL only if it overstays.
      const timer = setTimeout(() => {
        try {
          flood.kill("SIGKILL");
        } catch { /* ended */ }
      }, (FLOOD_S + 20) * 1_000);
      await flood.status.catch(() => {});
      clearTimeout(timer);
    }
    const sent = JSON.parse((await out).trim() || `{"sent":0,"errors":-1}`);
    const during = processMemoryMb(pid);
    // Half-open flows expire after the SYN timeout (20 s); give the heap time to shrink.
    let settled = during;
    for (let i = 0; i < 15; i++) {
      await new Promise((r) => setTimeout(r, 2_000));
      settled = processMemoryMb(pid);
      if (settled.rss <= before.rss + 40) break;
    }
    const after = await swaks(t, { server: t.addr.server4, to: ["b@example.net"], dataFile: file });
    const afterCode = finalReply(after.transcript)?.code ?? 0;
    await ssg.stop("SIGTERM");
    const log = ssg.log();
    const stop = /^.*\bdivert\.stop\b.*$/m.exec(log)?.[0] ?? "";
    const num = (k: string) => Number(new RegExp(`"?${k}"?[=:]\\s*(\\d+)`).exec(stop)?.[1] ?? -1);
    const pressure = log.match(/\bdivert\.pressure\b/g)?.length ?? 0;
    const logBytes = new TextEncoder().encode(log).length;
    console.log(
      `SYN flood figures: sent ${sent.sent} spoofed SYNs in ≤${FLOOD_S} s (send errors ${sent.errors}); ` +
        `legitimate probes served ${served}/${PROBES} (codes ${
          codes.join(",")
        }), after the flood ${afterCode}; ` +
        `ssg RSS before ${before.rss} MB, peak sampled ${peak} MB, at flood end ${during.rss} MB, ` +
        `settled ${settled.rss} MB, VmHWM ${settled.hwm} MB; flows created ${
          num("flowsCreated")
        }, ` +
        `evicted ${num("flowsEvicted")}, ended half-open ${num("flowsEndedHandshake")}, ` +
        `table-full drops ${num("droppedTableFull")}, packets ${num("nfqPackets")}, ` +
        `ENOBUFS ${num("nfqEnobufs")}, flow-event posts ${num("flowEventPosts")}; ` +
        `packet Worker heap at stop ${num("workerHeapUsedMb")} MB used of ${
          num("workerHeapTotalMb")
        } MB; ` +
        `divert.pressure lines ${pressure}; log ${logBytes} bytes`,
    );
    if (sent.errors < 0) console.log(`sender stderr: ${await err}`);
    assert.ok(sent.sent >= 100_000, `the flood really happened (${sent.sent} SYNs sent)`);
    assert.ok(
      served >= PROBES * 0.6,
      `at least 60% of legitimate probes served during the flood (got ${served}/${PROBES})`,
    );
    assert.equal(afterCode, 250, "mail is served after the flood");
    // History (issue 8): with a Flow object per SYN, 1 M SYNs made peak +425 / settled +424 MB;
    // with half-open Flows recycled, +150 / +138 MB (the Worker kept the room the full flow table
    // took). With the fixed SynCache (half-open state in typed arrays allocated at start, a Flow
    // only at the handshake ACK): ~+25 MB, whatever the flood's size. Generous lines:
    console.log(
      `RSS summary: before ${before.rss} MB, peak ${settled.hwm} MB (+${
        settled.hwm - before.rss
      }), ` +
        `settled ${settled.rss} MB (+${settled.rss - before.rss})`,
    );
    assert.ok(
      settled.hwm <= before.rss + 120,
      `peak RSS within 120 MB of the pre-flood RSS (${before.rss} → ${settled.hwm} MB)`,
    );
    assert.ok(
      settled.rss <= before.rss + 80,
      `settled RSS within 80 MB of the pre-flood RSS (${before.rss} → ${settled.rss} MB)`,
    );
    assert.ok(pressure >= 1, "the flood is logged as divert.pressure");
    assert.ok(logBytes < 2_000_000, `the log is not a line per SYN (${logBytes} bytes)`);
    const dumps = await Deno.readDir(sink.dir)[Symbol.asyncIterator]().next();
    assert.ok(!dumps.done, "the server received the legitimate messages");
  },
);
