/**
 * Where a message's added latency goes: the median and p90 of each SMTP step (TCP connect, then
 * the banner,
 * EHLO, MAIL, RCPT, DATA, the ~10 KB message to its 250, QUIT, close), timed by a raw-socket
 * client with TCP_NODELAY, directly to the server and through SSG, one run, one topology.
 * Not a test. Needs root and a built dist/ssg.
 *
 *   deno run -A bench/e2e/steps.ts [PATH-TO-ANOTHER-SSG-BUILD]   (SRC=gateway for relay.source;
 *   XCLIENT=no for a server that does not offer XCLIENT: smtp-sink -C)
 *
 * @module
 */
import { createTopology } from "../../test/netns/topology.ts";
import { startSsg, tempDir } from "../../test/netns/helpers.ts";
import { benchRuleFile, relaySource, startSink } from "./bench_setup.ts";
import { join } from "node:path";
const CLIENT = `
import socket, sys, time
server, n = sys.argv[1], int(sys.argv[2])
body = ("x" * 70 + "\\r\\n") * 140
def rd(s):
    buf=b""
    while True:
        c=s.recv(65536)
        if not c: return buf
        buf+=c
        lines=buf.split(b"\\r\\n")
        if len(lines)>=2 and len(lines[-2])>=4 and lines[-2][3:4]==b" ": return buf
steps={}
for i in range(n):
    t=time.perf_counter(); s=socket.create_connection((server,25)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    steps.setdefault("connect",[]).append(time.perf_counter()-t); t=time.perf_counter()
    rd(s); steps.setdefault("banner",[]).append(time.perf_counter()-t)
    for name,cmd in [("ehlo",b"EHLO b.example\\r\\n"),("mail",b"MAIL FROM:<a@example.org>\\r\\n"),("rcpt",b"RCPT TO:<s@example.net>\\r\\n"),("data",b"DATA\\r\\n"),("eod",(("Subject: x\\r\\n\\r\\n"+body).encode()+b".\\r\\n")),("quit",b"QUIT\\r\\n")]:
        t=time.perf_counter(); s.sendall(cmd); r=rd(s); steps.setdefault(name,[]).append(time.perf_counter()-t)
    t=time.perf_counter(); s.recv(10); s.close(); steps.setdefault("close",[]).append(time.perf_counter()-t)
for k,v in steps.items():
    v.sort(); print("%-7s median %.3f ms  p90 %.3f ms" % (k, v[len(v)//2]*1000, v[int(len(v)*0.9)]*1000))
`;
await using t = await createTopology();
await using tmp = await tempDir("ssg-diag-");
const sink = startSink(t, { xclient: Deno.env.get("XCLIENT") !== "no" });
await t.waitForPort(t.ns.server, t.addr.server4, 25);
const py = async (label: string) => {
  const r = await t.exec(t.ns.client, [
    "/usr/bin/python3",
    "-c",
    CLIENT,
    t.addr.server4,
    Deno.env.get("N") ?? "60",
  ], {
    timeoutMs: 120_000,
  });
  console.log(`== ${label}\n${r.stdout}${r.stderr.slice(0, 500)}`);
};
await py("direct");
const logFile = join(tmp.path, "ssg.log");
const ruleFile = join(tmp.path, "rules.yaml");
await Deno.writeTextFile(
  ruleFile,
  benchRuleFile(logFile, "test", relaySource(Deno.env.get("SRC"))),
);
const bin = Deno.args[0] || undefined;
const ssg = await startSsg(t, ruleFile, logFile, undefined, bin);
await py("ssg " + (bin ?? "current"));
await ssg.stop("SIGTERM").catch(() => {});
sink.kill("SIGKILL");
