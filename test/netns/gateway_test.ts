/**
 * End to end, against the built `dist/ssg`, in network namespaces (test/netns/topology.ts):
 *
 *   swaks (client ns) ──▶ gateway ns: dist/ssg run <rules> ──▶ smtp-sink / aiosmtpd (server ns)
 *
 * Every assertion is on what a real peer saw: swaks's transcript and exit code on the client
 * side, smtp-sink's dump files (or aiosmtpd's byte-exact ones) on the server side, and the
 * firewall as iptables-save/ip6tables-save/nft print it. Cases (a)–(g) of issue 2, plus: SIGTERM
 * during a live session (421, exit 0, no rule left) and three protected servers at once (each
 * flow relayed to its own original destination).
 *
 * Needs root (namespaces, NFQUEUE) and `./build.sh` first; ignored with the reason printed
 * otherwise. SSG's output and log are printed when a test fails.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { canRunNetns } from "./topology.ts";
import {
  asSent,
  assertForwardedIntact,
  dumpWith,
  e2e,
  eventually,
  finalReply,
  firewallDump,
  lf,
  readSinkDumps,
  REJECT_TEXT,
  requireSsgBinary,
  simpleMessage,
  type SinkDump,
  splitFirstHeader,
  ssgRuleLines,
  startSink,
  swaks,
  swaksReplies,
  utf8Base64,
} from "./helpers.ts";

const ignore = !canRunNetns();
if (!ignore) {
  // Fail loudly (not "ignored") when the binary is missing: test.sh builds before testing.
  requireSsgBinary();
}

const CRLF = "\r\n";

/** A real-world shaped message that exercises transparency: dot lines, 8-bit text, a folded header, a 998-octet line, base64. */
const CLEAN_MESSAGE = [
  `From: "Sender Example" <sender@example.org>`,
  `To: <b@example.net>`,
  `Subject: Quarterly report, as promised`,
  `  (and a folded second line of the subject)`,
  `Date: Fri, 27 Nov 2026 10:00:00 +0000`,
  `Message-ID: <e2e-clean-1@example.org>`,
  `MIME-Version: 1.0`,
  `Content-Type: multipart/mixed; boundary="b1"`,
  ``,
  `This is a multi-part message in MIME format.`,
  `--b1`,
  `Content-Type: text/plain; charset=UTF-8`,
  `Content-Transfer-Encoding: 8bit`,
  ``,
  `Hello,`,
  `.a line that starts with a dot`,
  `..two dots`,
  `.`,
  `trailing spaces   `,
  `\ta tab-indented line`,
  `안녕하세요 — UTF-8 text, 8 bit`,
  `From the start of a line (mbox would escape this)`,
  "x".repeat(998),
  ``,
  `--b1`,
  `Content-Type: application/octet-stream; name="data.bin"`,
  `Content-Transfer-Encoding: base64`,
  ``,
  ...(btoa(String.fromCharCode(...Array.from({ length: 300 }, (_, i) => (i * 7) & 255))).match(
    /.{1,76}/g,
  ) as string[]),
  `--b1--`,
].join(CRLF);

/**
 * The dump is the sent message with exactly one header added in front: SSG's Received, naming
 * the client's HELO and real address and SSG's host name (which says SSG).
 */
function assertForwardedIntactSsg(d: SinkDump, sentFile: string, clientIp: string): void {
  assertForwardedIntact(d, sentFile, clientIp);
  assert.match(splitFirstHeader(d.message)[0], /SSG/, "Received says SSG");
}

e2e(
  "(a) a clean message crosses the gateway byte-identical apart from SSG's one Received header (IPv4)",
  {},
  async (w) => {
    const { t } = w;
    const sink = await startSink(t, t.addr.server4, join(w.dir, "sink"));
    const ssg = await w.startSsg();
    const file = await w.message("clean.eml", CLEAN_MESSAGE);
    const r = await swaks(t, { server: t.addr.server4, to: ["b@example.net"], dataFile: file });
    assert.equal(r.code, 0, r.transcript);
    // The client believes it talks to the server: the greeting came from "the server's" address.
    assert.match(r.transcript, new RegExp(`Connected to ${t.addr.server4.replaceAll(".", "\\.")}`));
    assert.equal(finalReply(r.transcript)?.code, 250, r.transcript);
    const dumps = await readSinkDumps(sink.dir);
    assert.equal(dumps.length, 1, "exactly one message reached the server");
    assertForwardedIntactSsg(dumps[0], CLEAN_MESSAGE, t.addr.client4);
    await ssg.assertLog(/\bflow\.new\b/, "the connection went through SSG's diversion");
    const status = await ssg.stop("SIGTERM");
    assert.equal(status.code, 0, "ssg exits 0 on SIGTERM");
    assert.match(
      ssg.log(),
      /\bssg\.stats\b.*\bsessions=1\b.*\bforwarded=1\b.*\bdiscarded=0\b/,
      "a final ssg.stats line counts the session and the forwarded message",
    );
  },
);

e2e(
  "(b) a subject keyword is discarded and a body keyword rejected with the rule's 550; the server receives only the clean mail",
  {},
  async (w) => {
    const { t } = w;
    const sink = await startSink(t, t.addr.server4, join(w.dir, "sink"));
    const ssg = await w.startSsg();
    const cases: { name: string; text: string; code: number; exit: number; replyText?: RegExp }[] =
      [
        {
          name: "subject keyword (ASCII) → discard: 250, nothing delivered",
          text: simpleMessage("You won the LOTTERY!", "Claim it now.", "spam-1"),
          code: 250,
          exit: 0,
        },
        {
          name: "subject keyword (UTF-8 encoded-word 당첨) → discard",
          text: simpleMessage(
            `=?UTF-8?B?${utf8Base64("축하합니다! 당첨되었습니다")}?=`,
            "확인하세요.",
            "spam-2",
          ),
          code: 250,
          exit: 0,
        },
        {
          name: "body keyword → reject 550 with the rule's text",
          text: simpleMessage("Hello", "Buy CHEAP PILLS today.", "spam-3"),
          code: 550,
          exit: 26,
          replyText: new RegExp(REJECT_TEXT.replaceAll(/[()]/g, "\\$&")),
        },
      ];
    for (const [i, c] of cases.entries()) {
      const file = await w.message(`spam-${i}.eml`, c.text);
      const r = await swaks(t, { server: t.addr.server4, to: ["b@example.net"], dataFile: file });
      const fin = finalReply(r.transcript);
      assert.equal(fin?.code, c.code, `${c.name}\n${r.transcript}`);
      if (c.replyText) assert.match(fin!.text, c.replyText, c.name);
      if (c.code === 550) assert.match(fin!.text, /^5\.7\.1 /, "enhanced status code of the rule");
      assert.equal(r.code, c.exit, `${c.name}: swaks exit\n${r.transcript}`);
      assert.deepEqual(await readSinkDumps(sink.dir), [], `${c.name}: server received nothing`);
    }
    // The same session machinery still forwards clean mail afterwards (and proves the sink works).
    const clean = await w.message("clean.eml", CLEAN_MESSAGE);
    const r = await swaks(t, { server: t.addr.server4, to: ["b@example.net"], dataFile: clean });
    assert.equal(r.code, 0, r.transcript);
    const dumps = await readSinkDumps(sink.dir);
    assert.equal(dumps.length, 1, "only the clean message reached the server");
    assertForwardedIntactSsg(dumps[0], CLEAN_MESSAGE, t.addr.client4);
    const log = await ssg.assertLog(/lottery[^]*pills|pills[^]*lottery/, "both verdicts logged");
    assert.match(log, /lottery/, "the discard is logged with its rule");
    assert.match(log, /pills/, "the reject is logged with its rule");
  },
);

e2e(
  "(c) recipients the server refuses are refused to the client with the server's own codes; only the accepted one gets the message",
  {},
  async (w) => {
    const { t } = w;
    const dumpDir = join(w.dir, "aiosmtpd");
    const server = t.spawn(t.ns.server, [
      "/usr/bin/python3",
      new URL("./refusing_smtp_server.py", import.meta.url).pathname,
      t.addr.server4,
      "25",
      dumpDir,
    ], { stdout: "null", stderr: "null" });
    await t.waitForPort(t.ns.server, t.addr.server4, 25, 15_000);
    await w.startSsg();
    const file = await w.message("clean.eml", CLEAN_MESSAGE);

    const r = await swaks(t, {
      server: t.addr.server4,
      to: ["unknown@example.net", "b@example.net", "full@example.net"],
      dataFile: file,
    });
    const replies = swaksReplies(r.transcript);
    const rcpt = (addr: string) => replies.find((x) => x.after === `RCPT TO:<${addr}>`);
    const table: [string, number, RegExp][] = [
      ["unknown@example.net", 550, /^5\.1\.1 .*User unknown \(test server\)/],
      ["b@example.net", 250, /^2\.1\.5 /],
      ["full@example.net", 452, /^4\.2\.2 .*Mailbox full.*\(test server\)/],
    ];
    for (const [addr, code, text] of table) {
      const got = rcpt(addr);
      assert.equal(got?.code, code, `RCPT ${addr}\n${r.transcript}`);
      assert.match(got!.text, text, `RCPT ${addr}: the server's own text`);
    }
    assert.equal(finalReply(r.transcript)?.code, 250, r.transcript);
    assert.equal(r.code, 0, r.transcript);

    // Byte-exact on the server side (aiosmtpd keeps CRLF): one header added, nothing else changed.
    const env = JSON.parse(await Deno.readTextFile(join(dumpDir, "000001.json")));
    assert.deepEqual(env.rcpt_tos, ["b@example.net"]);
    assert.equal(env.mail_from, "sender@example.org");
    const eml = await Deno.readTextFile(join(dumpDir, "000001.eml"));
    const [received, rest] = splitFirstHeader(eml);
    assert.match(received, /^Received: from client\.example\.org /);
    assert.equal(rest, asSent(CLEAN_MESSAGE), "CRLF-exact apart from the Received header");

    // Only refused recipients: the client is refused and nothing is delivered.
    const none = await swaks(t, {
      server: t.addr.server4,
      to: ["unknown@example.net"],
      dataFile: file,
    });
    assert.equal(none.code, 24, `swaks: no RCPT accepted\n${none.transcript}`);
    assert.equal(swaksReplies(none.transcript).find((x) => x.after.startsWith("RCPT"))?.code, 550);
    const files = [...Deno.readDirSync(dumpDir)].map((e) => e.name).sort();
    assert.deepEqual(files, ["000001.eml", "000001.json"], "no second delivery");
    server.kill("SIGTERM");
    await server.status;
  },
);

e2e(
  "(d) with the server down the client gets 4xx and never a 250 for its message; the retry arrives once the server is back",
  { connectTimeout: 5 },
  async (w) => {
    const { t } = w;
    const ssg = await w.startSsg();
    const file = await w.message("clean.eml", CLEAN_MESSAGE);
    const cases: [string, string][] = [
      ["server host up, port 25 closed (connection refused)", t.addr.server4],
      ["no such host on the server network (connect fails after ARP)", "198.51.100.99"],
    ];
    for (const [what, server] of cases) {
      const started = Date.now();
      const r = await swaks(t, { server, to: ["b@example.net"], dataFile: file });
      const replies = swaksReplies(r.transcript);
      assert.notEqual(r.code, 0, `${what}: swaks must fail\n${r.transcript}`);
      assert.ok(
        replies.some((x) => x.code >= 400 && x.code < 500),
        `${what}: a 4xx reply (temporary: the client keeps the message and retries)\n${r.transcript}`,
      );
      assert.ok(
        !replies.some((x) => x.code >= 500),
        `${what}: never a permanent error for a server outage\n${r.transcript}`,
      );
      assert.ok(
        !replies.some((x) => x.after === "." && x.code === 250),
        `${what}: no 250 to end-of-data`,
      );
      assert.ok(Date.now() - started < 30_000, `${what}: answered within the relay timeouts`);
      assert.equal(ssg.status, undefined, "ssg is still running");
    }
    const sink = await startSink(t, t.addr.server4, join(w.dir, "sink"));
    const r = await swaks(t, { server: t.addr.server4, to: ["b@example.net"], dataFile: file });
    assert.equal(r.code, 0, r.transcript);
    const dumps = await readSinkDumps(sink.dir);
    assert.equal(dumps.length, 1);
    assertForwardedIntactSsg(dumps[0], CLEAN_MESSAGE, t.addr.client4);
  },
);

e2e(
  "(e) non-SMTP TCP to a protected server and SMTP to an unprotected host pass the gateway untouched",
  {},
  async (w) => {
    const { t } = w;
    // A dual-stack port-80 listener that reports who it saw, in the server namespace.
    const web = t.spawn(t.ns.server, [
      "/usr/bin/python3",
      "-c",
      `
import socket
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0); s.bind(("::", 80)); s.listen(8); s.settimeout(60)
for _ in range(8):
    c, peer = s.accept(); data = c.recv(100)
    c.sendall(("peer=%s local=%s data=%s\\n" % (peer[0].replace("::ffff:", ""), c.getsockname()[0].replace("::ffff:", ""), data.decode())).encode()); c.close()
`,
    ], { stdout: "null", stderr: "null" });
    await t.waitForPort(t.ns.server, t.addr.server4, 80);
    const unprotected = await startSink(t, t.addr.unprotected4, join(w.dir, "unprotected"));
    const ssg = await w.startSsg();

    for (
      const [dst, client] of [[t.addr.server4, t.addr.client4], [t.addr.server6, t.addr.client6]]
    ) {
      const r = await t.exec(t.ns.client, [
        "/usr/bin/python3",
        "-c",
        `import socket,sys; c=socket.create_connection((sys.argv[1], 80), timeout=5); c.sendall(b"GET"); print(c.recv(200).decode().strip())`,
        dst,
      ], { timeoutMs: 15_000 });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim(), `peer=${client} local=${dst} data=GET`, `port 80 to ${dst}`);
    }

    const file = await w.message("clean.eml", CLEAN_MESSAGE);
    const r = await swaks(t, {
      server: t.addr.unprotected4,
      to: ["b@example.net"],
      dataFile: file,
    });
    assert.equal(r.code, 0, r.transcript);
    const dumps = await readSinkDumps(unprotected.dir);
    assert.equal(dumps.length, 1);
    assert.equal(dumps[0].clientAddr, t.addr.client4, "the server saw the client itself");
    assert.equal(dumps[0].helo, "client.example.org");
    assert.equal(dumps[0].message, lf(asSent(CLEAN_MESSAGE)), "no header added, nothing changed");
    assert.doesNotMatch(dumps[0].message, /SSG/);
    assert.doesNotMatch(ssg.log(), /203\.0\.113\.25/, "SSG never saw the unprotected flow");
    web.kill("SIGKILL");
    await web.status;
  },
);

/** Rule lines without packet counters, sorted: comparable between two starts. */
function normalizeRules(lines: string[]): string[] {
  return lines.map((l) =>
    l.replace(/counter packets \d+ bytes \d+ ?/g, "").replace(/\[\d+:\d+\]/g, "").trim()
  ).sort();
}

e2e(
  "(f) SIGTERM leaves no SSG rule; after kill -9 new connections reach the server directly; the next start cleans up and works",
  {},
  async (w) => {
    const { t } = w;
    const sink = await startSink(t, t.addr.server4, join(w.dir, "sink"));
    // Each send carries its own Message-ID and is found by it: smtp-sink's file names have
    // one-second resolution, so "the newest file" is not a thing two fast sends can rely on.
    const sent = new Map<string, string>();
    const send = async (label: string) => {
      const id = `e2e-f-${sent.size + 1}@example.org`;
      const text = CLEAN_MESSAGE.replace("<e2e-clean-1@example.org>", `<${id}>`);
      sent.set(label, text);
      const file = await w.message(`clean-${sent.size}.eml`, text);
      const r = await swaks(t, { server: t.addr.server4, to: ["b@example.net"], dataFile: file });
      assert.equal(r.code, 0, `${label}\n${r.transcript}`);
      return { dump: dumpWith(await readSinkDumps(sink.dir), `<${id}>`), text };
    };
    const noRules = async (label: string) => {
      const fw = await firewallDump(t, t.ns.gateway);
      assert.deepEqual(ssgRuleLines(fw), [], `${label}: no SSG rule left\n${fw}`);
    };

    // 1. SIGTERM: clean exit, rules removed.
    const first = await w.startSsg();
    const installed = ssgRuleLines(await firewallDump(t, t.ns.gateway));
    const one = await send("through ssg #1");
    assertForwardedIntactSsg(one.dump, one.text, t.addr.client4);
    const st1 = await first.stop("SIGTERM");
    assert.equal(st1.code, 0, "exit status after SIGTERM");
    await noRules("after SIGTERM");

    // 2. kill -9: rules stay behind, and queue bypass lets new connections reach the server.
    const second = await w.startSsg();
    await second.stop("SIGKILL");
    const stale = ssgRuleLines(await firewallDump(t, t.ns.gateway));
    assert.ok(stale.length > 0, "kill -9 cannot remove rules (this is the case being tested)");
    const direct = await send("with ssg killed");
    assert.equal(direct.dump.clientAddr, t.addr.client4, "the server saw the client directly");
    assert.equal(direct.dump.message, lf(asSent(direct.text)), "no SSG header: not diverted");

    // 3. The next start removes the stale rules (no duplicates) and diverts again.
    const third = await w.startSsg();
    const again = ssgRuleLines(await firewallDump(t, t.ns.gateway));
    assert.deepEqual(
      normalizeRules(again),
      normalizeRules(installed),
      "the same rule set as a fresh start (nothing duplicated): stale rules cleaned",
    );
    const three = await send("through ssg #3");
    assertForwardedIntactSsg(three.dump, three.text, t.addr.client4);
    assert.equal((await third.stop("SIGTERM")).code, 0);
    await noRules("after the final SIGTERM");
    assert.equal((await readSinkDumps(sink.dir)).length, 3);
  },
);

e2e("(g) a clean message crosses the gateway byte-identical over IPv6", {}, async (w) => {
  const { t } = w;
  const sink = await startSink(t, t.addr.server6, join(w.dir, "sink6"));
  const ssg = await w.startSsg();
  const file = await w.message("clean.eml", CLEAN_MESSAGE);
  const r = await swaks(t, { server: t.addr.server6, to: ["b@example.net"], dataFile: file });
  assert.equal(r.code, 0, r.transcript);
  assert.equal(finalReply(r.transcript)?.code, 250);
  const dumps = await readSinkDumps(sink.dir);
  assert.equal(dumps.length, 1);
  assertForwardedIntactSsg(dumps[0], CLEAN_MESSAGE, t.addr.client6);
  assert.ok(
    await eventually(() => /\bflow\.new\b.*2001:db8:25::25/.test(ssg.log()), 2_000),
    "the IPv6 flow went through SSG's diversion",
  );
});

e2e(
  "SIGTERM while a client is mid-session closes that session with 421, then SSG exits 0 with no rule left",
  {},
  async (w) => {
    const { t } = w;
    await startSink(t, t.addr.server4, join(w.dir, "sink"));
    const ssg = await w.startSsg();
    // A client that stops after EHLO and waits (bounded, 20 s) for whatever the server says next.
    const client = t.spawn(t.ns.client, [
      "/usr/bin/python3",
      "-c",
      `
import socket, sys
c = socket.create_connection(("${t.addr.server4}", 25), timeout=20)
f = c.makefile("rb")
print("GREETING", f.readline().decode().strip(), flush=True)
c.sendall(b"EHLO client.example.org\\r\\n")
while True:
    line = f.readline().decode()
    if line[3:4] != "-": break
print("READY", flush=True)
try:
    print("NEXT", f.readline().decode().strip() or "<closed>", flush=True)
except Exception as e:
    print("NEXT <error %r>" % (e,), flush=True)
`,
    ], { stderr: "null" });
    const lines: string[] = [];
    const reader = client.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    const until = async (prefix: string) => {
      const deadline = Date.now() + 20_000;
      while (!lines.some((l) => l.startsWith(prefix)) && Date.now() < deadline) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        const parts = buf.split("\n");
        buf = parts.pop() ?? "";
        lines.push(...parts);
      }
      return lines.find((l) => l.startsWith(prefix));
    };
    assert.match((await until("GREETING")) ?? "", /^GREETING 220 /, lines.join("\n"));
    assert.ok(await until("READY"), lines.join("\n"));
    const status = await ssg.stop("SIGTERM");
    const next = await until("NEXT");
    await client.status;
    assert.match(next ?? "", /^NEXT 421 /, `the waiting client is told 421: ${lines.join(" | ")}`);
    assert.equal(status.code, 0, "exit status after SIGTERM");
    const fw = await firewallDump(t, t.ns.gateway);
    assert.deepEqual(ssgRuleLines(fw), [], fw);
  },
);

e2e(
  "one gateway protects every internal server: mail to each of three servers reaches that server and no other",
  {},
  async (w) => {
    const { t } = w;
    const sinks = await Promise.all(
      t.addr.servers4.map((ip) => startSink(t, ip, join(w.dir, `sink-${ip}`))),
    );
    await w.startSsg();
    const file = await w.message("clean.eml", CLEAN_MESSAGE);
    // Interleaved and concurrent, so a mix-up of original destinations between flows would show.
    const results = await Promise.all(
      [...t.addr.servers4, ...t.addr.servers4].map((server) =>
        swaks(t, { server, to: ["b@example.net"], dataFile: file })
      ),
    );
    for (const r of results) assert.equal(r.code, 0, r.transcript);
    for (const [i, ip] of t.addr.servers4.entries()) {
      const dumps = await readSinkDumps(sinks[i].dir);
      assert.equal(dumps.length, 2, `${ip} received its own two messages`);
      for (const d of dumps) assertForwardedIntactSsg(d, CLEAN_MESSAGE, t.addr.client4);
    }
  },
);
