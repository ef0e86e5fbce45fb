/**
 * Availability under a slowloris: legitimate mail keeps flowing while 30 addresses hold every
 * connection they can and drip one byte every 3 s (issue 8: before this, 16 of 16 legitimate
 * probes got `421 too many sessions`).
 *
 * ```
 *  client ns: 192.0.2.10 (the legitimate sender, swaks)          gateway ns: dist/ssg
 *             192.0.2.128-157 (30 attackers, one python process)  server ns: smtp-sink
 * ```
 * Bounded: the flood runs for FLOOD_S seconds, probes for at most PROBES; everything is stopped
 * and the namespaces removed at the end, also on failure. The figures are printed; the pass line
 * is a generous floor, never a timing.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { e2e, finalReply, processMemoryMb, simpleMessage, startSink, swaks } from "./helpers.ts";

const FLOOD_S = 45;
const PROBES = 12;
const ATTACKERS = Array.from({ length: 30 }, (_, i) => `192.0.2.${128 + i}`);

/** One python process: for each attacker address, 5 connection slots that drip bytes. */
const SLOWLORIS = `
import socket, sys, threading, time, json
addrs = sys.argv[1].split(","); dst = sys.argv[2]; dur = float(sys.argv[3]); out = sys.argv[4]
stop = time.time() + dur
stats = {"connects": 0, "refused_at_greeting": 0, "closed_later": 0, "errors": 0}
lock = threading.Lock()
def count(k):
    with lock: stats[k] += 1
def slot(src):
    while time.time() < stop:
        s = socket.socket()
        s.settimeout(5)
        try:
            s.bind((src, 0)); s.connect((dst, 25))
            count("connects")
            g = s.recv(512)
            if not g or g.startswith(b"421"):
                count("refused_at_greeting"); s.close(); time.sleep(1); continue
            while time.time() < stop:
                time.sleep(3)
                s.send(b"X")
                s.setblocking(False)
                try:
                    d = s.recv(512)
                    if d == b"" or d.startswith(b"421"):
                        count("closed_later"); break
                except BlockingIOError:
                    pass
                s.setblocking(True); s.settimeout(5)
        except Exception:
            count("errors"); time.sleep(1)
        finally:
            s.close()
threads = [threading.Thread(target=slot, args=(a,), daemon=True) for a in addrs for _ in range(5)]
for t in threads: t.start()
for t in threads: t.join(dur + 10)
open(out, "w").write(json.dumps(stats))
`;

e2e(
  "during a slowloris from 30 addresses legitimate mail still gets through (slow sessions are shed, not newcomers refused)",
  {
    level: "info",
    extraSections: `smtp:
  max_sessions: 120
  max_sessions_per_client: 20
  max_sessions_per_network: 60
  network_prefix: { ipv4: 28 }
`,
  },
  async (w) => {
    const { t } = w;
    for (const a of ATTACKERS) {
      const r = await t.exec(t.ns.client, ["ip", "addr", "add", `${a}/24`, "dev", "eth0"]);
      assert.equal(r.code, 0, r.stderr);
    }
    const sink = await startSink(t, t.addr.server4, join(w.dir, "sink"));
    const ssg = await w.startSsg();
    const statsFile = join(w.dir, "slowloris.json");
    const flood = t.spawn(t.ns.client, [
      "/usr/bin/python3",
      "-c",
      SLOWLORIS,
      ATTACKERS.join(","),
      t.addr.server4,
      String(FLOOD_S),
      statsFile,
    ], { stdout: "null", stderr: "null" });
    try {
      // Let the attackers fill the gateway and their sessions age past the shedding minimum.
      await new Promise((r) => setTimeout(r, 8_000));
      let served = 0;
      const codes: number[] = [];
      const file = await w.message(
        "probe.eml",
        simpleMessage("probe", "A legitimate message.", "p"),
      );
      for (let i = 0; i < PROBES; i++) {
        const r = await swaks(t, {
          server: t.addr.server4,
          to: ["b@example.net"],
          dataFile: file,
          timeoutS: 15,
        });
        const code = finalReply(r.transcript)?.code ?? 0;
        codes.push(code);
        if (r.code === 0 && code === 250) served++;
        else {console.log(
            `probe ${i + 1} not served:\n${r.transcript.split("\n").slice(0, 12).join("\n")}`,
          );}
        await new Promise((r) => setTimeout(r, 1_000));
      }
      const status = await flood.status;
      const stats = JSON.parse(await Deno.readTextFile(statsFile));
      const rss = processMemoryMb(ssg.child.pid).hwm;
      const log = ssg.log();
      const limitLines = log.match(/\bsmtp\.limit\b/g)?.length ?? 0;
      const pressureLines = log.match(/\bsmtp\.pressure\b/g)?.length ?? 0;
      const shedLines = log.match(/\bsmtp\.shed\b/g)?.length ?? 0;
      console.log(
        `slowloris figures: legitimate probes served ${served}/${PROBES} (final codes ${
          codes.join(",")
        }); attackers ${JSON.stringify(stats)}; ssg: ${shedLines} sessions shed, ` +
          `${limitLines} smtp.limit lines, ${pressureLines} smtp.pressure lines, peak RSS ${rss} MB`,
      );
      assert.equal(status.code, 0, "the attack script ran to its end");
      assert.ok(stats.connects > 150, "the attackers really tried to hold the gateway");
      assert.ok(
        served >= PROBES * 0.75,
        `at least 75% of legitimate probes served (got ${served}/${PROBES})`,
      );
      assert.ok(pressureLines >= 1, "the attack is logged as smtp.pressure");
      assert.ok(
        limitLines <= 20,
        `refusals are aggregated, not one line each (${limitLines} smtp.limit lines)`,
      );
      assert.equal(ssg.status, undefined, "ssg is still running");
      const dumps = await Deno.readDir(sink.dir)[Symbol.asyncIterator]().next();
      assert.ok(!dumps.done, "the server received the legitimate messages");
    } finally {
      try {
        flood.kill("SIGKILL");
      } catch { /* ended */ }
      await flood.status.catch(() => {});
    }
  },
);
