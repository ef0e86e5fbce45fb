/**
 * The policy manager and action modules end to end (issue 3), against the built `dist/ssg`, in
 * network namespaces (test/netns/topology.ts):
 *
 *   client ns                       gateway ns                         server ns
 *   192.0.2.10 (+ .11)  ── veth ──  dist/ssg run <rules>   ── veth ──  smtp-sink on
 *   swaks / raw sockets             ssg quarantine ...                  198.51.100.25 / .26 / .27
 *
 * Cases: a repeat offender blacklisted by a threshold and dropped at the packet level (also after
 * a restart); a bulk campaign across three servers stopped at the third; quarantine release
 * delivering the original bytes; an alert to the admin mailbox that carries no injected header;
 * a spamtrap hit (client dropped, sender refused, the allowlist exempt); a blacklist entry that
 * expires; SIGHUP reload (a bad file refused, a good one applied, a live session kept).
 *
 * Every assertion is on what a real peer saw: swaks's or a raw client's replies, smtp-sink's
 * dump files, whether a TCP handshake completed. Needs root and `./build.sh` first; ignored with
 * the reason printed otherwise. SSG's output and log are printed when a test fails.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { canRunNetns, type Topology } from "./topology.ts";
import {
  addressLiteral,
  assertForwardedIntact,
  e2e,
  E2eError,
  eventually,
  finalReply,
  parseSinkDump,
  readSinkDumps,
  requireSsgBinary,
  ruleFileText,
  simpleMessage,
  type SinkDump,
  splitFirstHeader,
  type SsgProcess,
  startSink,
  swaks,
  swaksReplies,
  utf8Base64,
} from "./helpers.ts";

const ignore = !canRunNetns();
if (!ignore) requireSsgBinary();

const CRLF = "\r\n";
/** A second client address, added in the client namespace by the tests that need one. */
const OTHER_CLIENT4 = "192.0.2.11";
/** How long a TCP connect may take before we call it "no handshake". */
const HANDSHAKE_WAIT_S = 3;

/** A message with 8-bit text, a folded header and a dot line: what must survive quarantine. */
const HELD_MESSAGE = [
  `From: "Accounts" <sender@example.org>`,
  `To: <b@example.net>`,
  `Subject: Invoice overdue, please pay`,
  `  (second line of a folded subject)`,
  `Date: Fri, 27 Nov 2026 10:00:00 +0000`,
  `Message-ID: <e2e-held-1@example.org>`,
  `MIME-Version: 1.0`,
  `Content-Type: text/plain; charset=UTF-8`,
  `Content-Transfer-Encoding: 8bit`,
  ``,
  `Hello,`,
  `.a line that starts with a dot`,
  `trailing spaces   `,
  `\ta tab-indented line`,
  `안녕하세요 — UTF-8 text, 8 bit`,
  "y".repeat(990),
  `Regards`,
].join(CRLF);

/** What a plain TCP connect from the client namespace got. */
type ConnectResult = "CONNECTED" | "TIMEOUT" | "REFUSED" | string;

/**
 * A plain TCP connect to `dst`:25 from the client namespace (from `src` when given), bounded by
 * HANDSHAKE_WAIT_S: "CONNECTED" once the handshake completed (a 220 greeting is then read and
 * reported too), "TIMEOUT" when no SYN-ACK came in time.
 */
async function tcpConnect(t: Topology, dst: string, src = ""): Promise<ConnectResult> {
  const r = await t.exec(t.ns.client, [
    "/usr/bin/python3",
    "-c",
    `
import socket, sys
src, dst, wait = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = socket.socket()
s.settimeout(wait)
if src: s.bind((src, 0))
try:
    s.connect((dst, 25))
except socket.timeout:
    print("TIMEOUT"); sys.exit(0)
except ConnectionRefusedError:
    print("REFUSED"); sys.exit(0)
except OSError as e:
    print("ERROR %s" % e); sys.exit(0)
try:
    greeting = s.makefile("rb").readline().decode("utf-8", "replace").strip()
except Exception as e:
    greeting = "<no greeting: %r>" % (e,)
s.sendall(b"QUIT\\r\\n")
print("CONNECTED " + greeting)
`,
    src,
    dst,
    String(HANDSHAKE_WAIT_S),
  ], { timeoutMs: HANDSHAKE_WAIT_S * 1000 + 10_000 });
  assert.equal(r.code, 0, `connect probe failed: ${r.stderr}`);
  return r.stdout.trim();
}

/**
 * A raw SMTP client (python socket, bytes sent exactly as in `dataFile`, no line-ending fix-up)
 * run in the client namespace. It writes every reply to `outFile`, one "REPLY ..." line each; with
 * `goFile` it stops after RCPT (writing "WAITING") until that file exists (bounded, 60 s).
 */
const RAW_CLIENT = `
import socket, sys, os, time
src, dst, mfrom, rcpt, datafile, gofile, outfile = sys.argv[1:8]
out = open(outfile, "w")
def say(x):
    out.write(x + "\\n"); out.flush()
s = socket.socket(); s.settimeout(30)
if src: s.bind((src, 0))
s.connect((dst, 25))
f = s.makefile("rb")
def reply(after):
    lines = []
    while True:
        l = f.readline().decode("utf-8", "replace")
        if not l:
            lines.append("<closed>"); break
        lines.append(l.rstrip("\\r\\n"))
        if l[3:4] != "-": break
    say("REPLY %s: %s" % (after, " | ".join(lines)))
def cmd(c):
    s.sendall(c.encode() + b"\\r\\n"); reply(c)
reply("greeting")
cmd("EHLO client.example.org")
cmd("MAIL FROM:<%s>" % mfrom)
cmd("RCPT TO:<%s>" % rcpt)
if gofile:
    say("WAITING")
    deadline = time.time() + 60
    while not os.path.exists(gofile) and time.time() < deadline:
        time.sleep(0.05)
cmd("DATA")
s.sendall(open(datafile, "rb").read() + b"\\r\\n.\\r\\n")
reply(".")
cmd("QUIT")
say("DONE")
`;

interface RawClientOptions {
  dst: string;
  dataFile: string;
  outFile: string;
  src?: string;
  from?: string;
  to?: string;
  goFile?: string;
}

function rawClientArgs(o: RawClientOptions): string[] {
  return [
    "/usr/bin/python3",
    "-c",
    RAW_CLIENT,
    o.src ?? "",
    o.dst,
    o.from ?? "sender@example.org",
    o.to ?? "b@example.net",
    o.dataFile,
    o.goFile ?? "",
    o.outFile,
  ];
}

/** The "REPLY <after>: ..." line a raw client wrote for `after`. */
function rawReply(out: string, after: string): string | undefined {
  const line = out.split("\n").find((l) => l.startsWith(`REPLY ${after}: `));
  return line?.slice(`REPLY ${after}: `.length);
}

/**
 * The complete transactions smtp-sink has dumped so far, in no meaningful order. Unlike readSinkDumps it
 * skips a file still being written: smtp-sink opens a transaction's dump at MAIL FROM, and a
 * session held open after RCPT (the SIGHUP test) leaves one incomplete until its DATA.
 */
async function completeDumps(dir: string): Promise<SinkDump[]> {
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) if (e.isFile) names.push(e.name);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  const out: SinkDump[] = [];
  for (const n of names) {
    const p = join(dir, n);
    try {
      out.push(parseSinkDump(p, await Deno.readTextFile(p)));
    } catch (e) {
      if (!(e instanceof E2eError)) throw e;
    }
  }
  return out;
}

/** Text of a file, "" when it does not exist. */
function readOr(path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return "";
  }
}

/** Waits (bounded) until the SSG log matches `re` at least `count` times. */
async function logCount(ssg: SsgProcess, re: RegExp, count: number, ms = 10_000): Promise<boolean> {
  const g = new RegExp(re.source, "g");
  return await eventually(() => (ssg.log().match(g)?.length ?? 0) >= count, ms);
}

/** Runs `dist/ssg ARGS...` in the gateway namespace (bounded). */
async function ssgCommand(t: Topology, args: string[]) {
  return await t.exec(t.ns.gateway, [requireSsgBinary(), ...args], { timeoutMs: 60_000 });
}

const LOTTERY = simpleMessage("You won the LOTTERY!", "Claim it now.", "lottery");
const CLEAN = simpleMessage("Minutes of the meeting", "Attached are the minutes.", "clean");

// ---------------------------------------------------------------------------------------------

const REPEAT_OFFENDER = `
thresholds:
  - name: repeat-offender
    count: [discard]
    key: client_ip
    at_least: 3
    within: 1h
    action: [blacklist]
    blacklist: { for: 1h }
`;

e2e(
  "a client with 3 discards in 1h is blacklisted: its next SYN gets no answer, even after a restart, while another client still gets mail through",
  { extraSections: REPEAT_OFFENDER },
  async (w) => {
    const { t } = w;
    const add = await t.exec(t.ns.client, [
      "ip",
      "addr",
      "add",
      `${OTHER_CLIENT4}/24`,
      "dev",
      "eth0",
    ]);
    assert.equal(add.code, 0, add.stderr);
    const sink = await startSink(t, t.addr.server4, join(w.dir, "sink"));
    let ssg = await w.startSsg();
    const spam = await w.message("lottery.eml", LOTTERY);
    const clean = await w.message("clean.eml", CLEAN);
    const discard = async (n: number) => {
      const r = await swaks(t, { server: t.addr.server4, to: ["b@example.net"], dataFile: spam });
      assert.equal(finalReply(r.transcript)?.code, 250, `discard #${n}: 250\n${r.transcript}`);
    };

    // limit − 1: two discards, and the client is still served.
    await discard(1);
    await discard(2);
    assert.ok(await logCount(ssg, /\bpolicy\.verdict\b.*lottery/, 2), "two verdicts logged");
    const still = await swaks(t, {
      server: t.addr.server4,
      to: ["b@example.net"],
      dataFile: clean,
    });
    assert.equal(still.code, 0, `after 2 discards the client is still served\n${still.transcript}`);
    assert.equal((await readSinkDumps(sink.dir)).length, 1);
    assert.match(await tcpConnect(t, t.addr.server4), /^CONNECTED 220 /);

    // limit: the third discard blacklists the client IP, enforced on packets.
    await discard(3);
    assert.ok(
      await logCount(ssg, /\bdivert\.block\b.*192\.0\.2\.10\b/, 1),
      "the blacklist reached the packet path (divert.block logged)",
    );
    const flowsBefore = ssg.log().match(/\bflow\.new\b/g)?.length ?? 0;
    assert.equal(
      await tcpConnect(t, t.addr.server4),
      "TIMEOUT",
      "the blacklisted client's SYN is never answered",
    );
    assert.equal(
      ssg.log().match(/\bflow\.new\b/g)?.length ?? 0,
      flowsBefore,
      "the dropped SYN never became a flow",
    );
    // Another client address is not affected.
    assert.match(await tcpConnect(t, t.addr.server4, OTHER_CLIENT4), /^CONNECTED 220 /);
    const other = await swaks(t, {
      server: t.addr.server4,
      to: ["b@example.net"],
      dataFile: clean,
      extra: ["--local-interface", OTHER_CLIENT4],
    });
    assert.equal(other.code, 0, `another client still gets mail through\n${other.transcript}`);
    let dumps = await readSinkDumps(sink.dir);
    assert.equal(dumps.length, 2, "the other client's message was delivered");
    // Found by the client address in SSG's Received header, not by file order (smtp-sink's names
    // have one-second resolution).
    const fromOther = dumps.filter((d) =>
      addressLiteral(OTHER_CLIENT4).test(splitFirstHeader(d.message)[0])
    );
    assert.equal(fromOther.length, 1, "exactly one message from the other client");
    assertForwardedIntact(fromOther[0], CLEAN, OTHER_CLIENT4);

    // Persistence: the same state file after a restart keeps the block.
    assert.equal((await ssg.stop("SIGTERM")).code, 0);
    ssg = await w.startSsg();
    assert.ok(
      await logCount(ssg, /\bdivert\.block\b.*192\.0\.2\.10\b/, 1),
      "the block is re-applied at start from the state file",
    );
    assert.equal(await tcpConnect(t, t.addr.server4), "TIMEOUT", "still blocked after restart");
    const after = await swaks(t, {
      server: t.addr.server4,
      to: ["b@example.net"],
      dataFile: clean,
      extra: ["--local-interface", OTHER_CLIENT4],
    });
    assert.equal(after.code, 0, `the other client after restart\n${after.transcript}`);
    dumps = await readSinkDumps(sink.dir);
    assert.equal(dumps.length, 3);
    assert.ok(
      dumps.every((d) => !d.message.includes("LOTTERY")),
      "no discarded message ever reached the server",
    );
  },
);

// ---------------------------------------------------------------------------------------------

const BULK_RULE = `  - name: bulk-campaign
    when:
      bulk: { servers: 3, within: 10m }
    action: reject
    reply: { code: 554, enhanced: "5.7.1", text: "Bulk mail refused (ssg e2e bulk rule)" }
`;

function campaignCopy(name: string, order: number, amount: string, to: string): string {
  return simpleMessage(
    `Your order ${order} has shipped`,
    [
      `Dear ${name},`,
      ``,
      `Great news! Your order number ${order} for a total of ${amount} dollars has been`,
      `processed by our fulfilment centre and is now on its way to you. We think you will`,
      `love our exclusive members only offers: every week we select the finest watches,`,
      `handbags and electronics at prices you will not find anywhere else on the web.`,
      `To track your parcel or to claim your free loyalty gift, simply visit our members`,
      `page and enter the reference code printed on this message. Offer valid while`,
      `stocks last. If you no longer wish to receive our newsletter reply with remove`,
      `in the subject line and we will take you off the list within ten working days.`,
      ``,
      `Kind regards, the customer happiness team`,
    ].join(CRLF),
    `bulk-${order}`,
    to,
  );
}

e2e(
  "a bulk campaign to three internal servers reaches at most two: the third copy is rejected at the gateway",
  { extraRules: BULK_RULE },
  async (w) => {
    const { t } = w;
    const sinks = await Promise.all(
      t.addr.servers4.map((ip) => startSink(t, ip, join(w.dir, `sink-${ip}`))),
    );
    const ssg = await w.startSsg();
    const copies: [string, number, string, string][] = [
      ["Alice Example", 10432, "129.99", "alice@example.net"],
      ["Bob Sample", 877, "54.10", "bob@example.net"],
      ["Carol Test", 3301955, "1,020.00", "carol@example.net"],
    ];
    const codes: number[] = [];
    for (const [i, [name, order, amount, to]] of copies.entries()) {
      const file = await w.message(`copy-${i}.eml`, campaignCopy(name, order, amount, to));
      const r = await swaks(t, { server: t.addr.servers4[i], to: [to], dataFile: file });
      codes.push(finalReply(r.transcript)?.code ?? 0);
      if (i < 2) {
        assert.equal(codes[i], 250, `copy ${i + 1} (to ${t.addr.servers4[i]})\n${r.transcript}`);
      } else {
        assert.equal(codes[i], 554, `copy 3 is caught at the gateway\n${r.transcript}`);
        assert.match(finalReply(r.transcript)!.text, /Bulk mail refused/);
      }
    }
    const received = await Promise.all(sinks.map((s) => readSinkDumps(s.dir)));
    assert.deepEqual(
      received.map((d) => d.length),
      [1, 1, 0],
      "the first two servers got their copy, the third none",
    );
    assert.match(received[0][0].message, /Dear Alice Example/);
    assert.match(received[1][0].message, /Dear Bob Sample/);
    await ssg.assertLog(/bulk-campaign/, "the bulk verdict is logged with its rule");
  },
);

// ---------------------------------------------------------------------------------------------

const HOLD_RULE = `  - name: hold-invoices
    when:
      subject: { contains: ["invoice overdue"] }
    action: quarantine
`;

e2e(
  "a quarantined message gets 250, reaches no server, is listed, and its release delivers the original bytes",
  { extraRules: HOLD_RULE },
  async (w) => {
    const { t } = w;
    const sink = await startSink(t, t.addr.server4, join(w.dir, "sink"));
    await w.startSsg();
    const file = await w.message("held.eml", HELD_MESSAGE);
    const r = await swaks(t, { server: t.addr.server4, to: ["b@example.net"], dataFile: file });
    assert.equal(r.code, 0, r.transcript);
    assert.equal(finalReply(r.transcript)?.code, 250, r.transcript);
    assert.deepEqual(await readSinkDumps(sink.dir), [], "the server received nothing");

    const list = await ssgCommand(t, ["quarantine", "list", "--rules", w.ruleFile]);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /hold-invoices/, `the listing names the rule:\n${list.stdout}`);
    const json = await ssgCommand(t, ["quarantine", "list", "--json", "--rules", w.ruleFile]);
    assert.equal(json.code, 0, json.stderr);
    const entries = JSON.parse(json.stdout) as { id: string; rule?: string; subject: string }[];
    assert.equal(entries.length, 1, json.stdout);
    const { id } = entries[0];
    assert.equal(entries[0].rule, "hold-invoices");
    assert.match(entries[0].subject, /Invoice overdue/);
    assert.ok(list.stdout.includes(id), "the plain listing shows the id");

    const rel = await ssgCommand(t, ["quarantine", "release", id, "--rules", w.ruleFile]);
    assert.equal(rel.code, 0, `release: ${rel.stdout}${rel.stderr}`);
    assert.match(rel.stdout, /Released .* 250/);
    const dumps = await readSinkDumps(sink.dir);
    assert.equal(dumps.length, 1, "release delivered exactly one message");
    // The message is the original; the envelope is too, except that release declares the 8-bit
    // body it carries (RFC 6152) even where the client did not.
    assertForwardedIntact(
      dumps[0],
      HELD_MESSAGE,
      t.addr.client4,
      /^<sender@example\.org>( BODY=8BITMIME)?$/,
    );

    const empty = await ssgCommand(t, ["quarantine", "list", "--json", "--rules", w.ruleFile]);
    assert.deepEqual(JSON.parse(empty.stdout), [], "a released entry is gone");
    const again = await ssgCommand(t, ["quarantine", "release", id, "--rules", w.ruleFile]);
    assert.notEqual(again.code, 0, "a second release of the same id fails");
    assert.equal((await readSinkDumps(sink.dir)).length, 1, "and delivers nothing");
  },
);

// ---------------------------------------------------------------------------------------------

const ALERT_SECTIONS = `
smtp:
  bare_line_endings: normalize
alert:
  to: [postmaster@example.net]
  relay: "198.51.100.26:25"
  from: ssg@gateway.example.net
  rate: 10/1h
`;
const ALERT_RULE = `  - name: injection-alert
    when:
      subject: { contains: ["alert-trigger"] }
    action: [discard, alert]
`;

/** The header fields an alert may have (lower case): a fixed set, none from the message. */
const ALERT_FIELDS = [
  "from",
  "to",
  "subject",
  "date",
  "message-id",
  "auto-submitted",
  "x-auto-response-suppress",
  "x-ssg-alert-mark",
  "mime-version",
  "content-type",
  "content-transfer-encoding",
];

/** A header field: its name and its full text (folded lines joined with "\n"). */
function headerFields(lines: string[]): { name: string; text: string }[] {
  const out: { name: string; text: string }[] = [];
  for (const l of lines) {
    if (/^[ \t]/.test(l) && out.length > 0) out[out.length - 1].text += "\n" + l;
    else out.push({ name: l.slice(0, Math.max(0, l.indexOf(":"))), text: l });
  }
  return out;
}

/** The header section of a dumped message (LF line endings), as lines. */
function headerLines(message: string): string[] {
  const end = message.indexOf("\n\n");
  return (end < 0 ? message : message.slice(0, end)).split("\n");
}

e2e(
  "an alert reaches the admin mailbox with a null sender and no header injected from the message",
  { extraSections: ALERT_SECTIONS, extraRules: ALERT_RULE },
  async (w) => {
    const { t } = w;
    const [server, adminRelay] = [t.addr.servers4[0], t.addr.servers4[1]];
    const sink = await startSink(t, server, join(w.dir, "sink"));
    const admin = await startSink(t, adminRelay, join(w.dir, "admin"));
    const ssg = await w.startSsg();

    // 1. Encoded words that decode to CR LF / LF followed by a header (swaks sends it as is).
    const encoded = simpleMessage(
      `=?UTF-8?B?${utf8Base64("alert-trigger x\r\nBcc: victim@example.org")}?=` +
        ` =?UTF-8?Q?=0AInjected:_yes?=`,
      "Nothing to see.",
      "inject-1",
    );
    const f1 = await w.message("inject-1.eml", encoded);
    const r1 = await swaks(t, { server, to: ["b@example.net"], dataFile: f1 });
    assert.equal(finalReply(r1.transcript)?.code, 250, `discarded with 250\n${r1.transcript}`);

    // 2. A raw bare LF inside the Subject line (normalised to CRLF by smtp.bare_line_endings).
    const raw = new TextEncoder().encode(
      [
        `From: <sender@example.org>`,
        `To: <b@example.net>`,
        `Subject: alert-trigger two\nInjected: yes`,
        `Bcc: victim@example.org`,
        `Message-ID: <inject-2@example.org>`,
        ``,
        `Nothing to see either.`,
      ].join(CRLF),
    );
    const f2 = await w.message("inject-2.eml", raw);
    const out2 = join(w.dir, "raw-2.out");
    const c2 = await t.exec(
      t.ns.client,
      rawClientArgs({ dst: server, dataFile: f2, outFile: out2 }),
      { timeoutMs: 60_000 },
    );
    const o2 = readOr(out2);
    assert.equal(c2.code, 0, `raw client: ${c2.stderr}\n${o2}`);
    assert.match(rawReply(o2, ".") ?? "", /^250 /, `bare-LF message discarded with 250\n${o2}`);

    assert.ok(
      await eventually(async () => (await completeDumps(admin.dir)).length >= 2, 20_000),
      `two alerts reached the admin mailbox (got ${(await completeDumps(admin.dir)).length})`,
    );
    const alerts = await readSinkDumps(admin.dir);
    assert.equal(alerts.length, 2, "one alert per message, no more");
    for (const a of alerts) {
      assert.match(a.mailFrom, /^<>( |$)/, `the alert's envelope sender is null: ${a.mailFrom}`);
      assert.deepEqual(a.rcpts, ["<postmaster@example.net>"], "only the admin is a recipient");
      assert.equal(a.clientAddr, t.addr.gwServer4, "sent by the gateway itself, not diverted");
      const lines = headerLines(a.message);
      const header = lines.join("\n");
      assert.ok(
        lines.every((l) => /^[ \t]/.test(l) || /^[\x21-\x39\x3b-\x7e]+:/.test(l)),
        `every header line is a field or a continuation:\n${header}`,
      );
      const fields = headerFields(lines);
      const names = fields.map((f) => f.name.toLowerCase());
      for (const bad of ["bcc", "cc", "injected"]) {
        assert.ok(!names.includes(bad), `no "${bad}" field in the alert:\n${header}`);
      }
      assert.equal(names.filter((n) => n === "to").length, 1, header);
      const unexpected = names.filter((n) => !ALERT_FIELDS.includes(n));
      assert.deepEqual(unexpected, [], `only the alert's own fixed fields:\n${header}`);
      assert.match(header, /^Auto-Submitted: auto-generated/m);
      const subject = fields.find((f) => f.name.toLowerCase() === "subject");
      assert.ok(subject, `the alert has a Subject:\n${header}`);
      // The attacker's text may be quoted inside the Subject's value, never as a field of its own.
      for (const f of fields.filter((f) => f !== subject)) {
        assert.doesNotMatch(
          f.text,
          /victim@example\.org/,
          `only the Subject quotes the attacker:\n${header}`,
        );
      }
    }
    assert.deepEqual(await readSinkDumps(sink.dir), [], "the discarded messages reached no server");
    assert.ok(
      !/\bflow\.new\b.*198\.51\.100\.26/.test(ssg.log()),
      "the alert connection was never diverted into SSG",
    );
  },
);

// ---------------------------------------------------------------------------------------------

const SPAMTRAP = `
allowlist:
  clients: [${OTHER_CLIENT4}]
spamtraps:
  addresses: [trap@example.net]
  blacklist_for: 1h
`;

e2e(
  "mail to a spamtrap is discarded and its client's next connection never completes a handshake; an allowlisted client is exempt",
  { extraSections: SPAMTRAP },
  async (w) => {
    const { t } = w;
    const add = await t.exec(t.ns.client, [
      "ip",
      "addr",
      "add",
      `${OTHER_CLIENT4}/24`,
      "dev",
      "eth0",
    ]);
    assert.equal(add.code, 0, add.stderr);
    const sink = await startSink(t, t.addr.server4, join(w.dir, "sink"));
    const ssg = await w.startSsg();
    const text = simpleMessage(
      "Hello friend",
      "A perfectly innocent looking text.",
      "trap",
      "trap@example.net",
    );
    const file = await w.message("trap.eml", text);

    // Precedence 1: the static allowlist wins over the spamtrap — forwarded, never blocked.
    const allowed = await swaks(t, {
      server: t.addr.server4,
      to: ["trap@example.net"],
      dataFile: file,
      extra: ["--local-interface", OTHER_CLIENT4],
    });
    assert.equal(finalReply(allowed.transcript)?.code, 250, allowed.transcript);
    const dumps = await readSinkDumps(sink.dir);
    assert.equal(dumps.length, 1, "the allowlisted client's message was forwarded");
    assert.deepEqual(dumps[0].rcpts, ["<trap@example.net>"]);
    assert.match(await tcpConnect(t, t.addr.server4, OTHER_CLIENT4), /^CONNECTED 220 /);

    // Any other client: discarded, then dropped at the packet level.
    assert.match(await tcpConnect(t, t.addr.server4), /^CONNECTED 220 /, "served before the trap");
    const r = await swaks(t, { server: t.addr.server4, to: ["trap@example.net"], dataFile: file });
    assert.equal(finalReply(r.transcript)?.code, 250, `discarded with 250\n${r.transcript}`);
    assert.equal(
      (await readSinkDumps(sink.dir)).length,
      1,
      "the trapped message reached no server",
    );
    assert.ok(
      await logCount(ssg, /\bdivert\.block\b.*192\.0\.2\.10\b/, 1),
      "the spamtrap's blacklist reached the packet path",
    );
    assert.equal(
      await tcpConnect(t, t.addr.server4),
      "TIMEOUT",
      "the trapped client's next SYN is never answered",
    );
    assert.match(
      await tcpConnect(t, t.addr.server4, OTHER_CLIENT4),
      /^CONNECTED 220 /,
      "the allowlisted client is still served",
    );
    assert.doesNotMatch(ssg.log(), /\bdivert\.block\b.*192\.0\.2\.11\b/);

    // The trapped sender is blacklisted too: from a third, unlisted client it is refused 554 5.7.1,
    // while another sender from there still gets through.
    const third = "192.0.2.12";
    const add3 = await t.exec(t.ns.client, ["ip", "addr", "add", `${third}/24`, "dev", "eth0"]);
    assert.equal(add3.code, 0, add3.stderr);
    const clean = await w.message("clean.eml", CLEAN);
    const bySender = await swaks(t, {
      server: t.addr.server4,
      to: ["b@example.net"],
      dataFile: clean,
      extra: ["--local-interface", third],
    });
    const refused = swaksReplies(bySender.transcript).find((x) => x.code >= 500);
    assert.equal(refused?.code, 554, `the trapped sender is refused\n${bySender.transcript}`);
    assert.match(refused!.text, /^5\.7\.1 /);
    const other = await swaks(t, {
      server: t.addr.server4,
      from: "someone-else@example.org",
      to: ["b@example.net"],
      dataFile: clean,
      extra: ["--local-interface", third],
    });
    assert.equal(other.code, 0, `another sender from the same client\n${other.transcript}`);
    assert.equal((await readSinkDumps(sink.dir)).length, 2);
  },
);

// ---------------------------------------------------------------------------------------------

const SHORT_BLOCK_SECONDS = 4;
const SHORT_BLOCK_RULE = `  - name: short-block
    when:
      subject: { contains: ["block-me"] }
    action: [discard, blacklist]
    blacklist: { key: client_ip, for: ${SHORT_BLOCK_SECONDS}s }
`;

e2e(
  "a rule's blacklist entry drops the client's SYNs while it lives and lets them through once it has expired",
  { extraRules: SHORT_BLOCK_RULE },
  async (w) => {
    const { t } = w;
    const sink = await startSink(t, t.addr.server4, join(w.dir, "sink"));
    const ssg = await w.startSsg();
    const file = await w.message("block.eml", simpleMessage("please block-me", "x", "block"));
    const r = await swaks(t, { server: t.addr.server4, to: ["b@example.net"], dataFile: file });
    assert.equal(finalReply(r.transcript)?.code, 250, r.transcript);
    const blockedAt = Date.now();
    assert.ok(await logCount(ssg, /\bdivert\.block\b.*192\.0\.2\.10\b/, 1), "blocked");
    assert.equal(await tcpConnect(t, t.addr.server4), "TIMEOUT", "dropped while the entry lives");
    // Bounded: the entry lives SHORT_BLOCK_SECONDS; allow 15 s more for expiry to be applied.
    let got = "";
    const deadline = blockedAt + SHORT_BLOCK_SECONDS * 1000 + 15_000;
    while (Date.now() < deadline) {
      got = await tcpConnect(t, t.addr.server4);
      if (got.startsWith("CONNECTED")) break;
    }
    assert.match(got, /^CONNECTED 220 /, "served again after the entry expired");
    const clean = await w.message("clean.eml", CLEAN);
    const again = await swaks(t, {
      server: t.addr.server4,
      to: ["b@example.net"],
      dataFile: clean,
    });
    assert.equal(again.code, 0, again.transcript);
    assert.equal((await readSinkDumps(sink.dir)).length, 1);
  },
);

// ---------------------------------------------------------------------------------------------

const LONG_BLOCK_RULE = `  - name: long-block
    when:
      subject: { contains: ["block-me"] }
    action: [discard, blacklist]
    blacklist: { key: client_ip, for: 1h }
`;

e2e(
  "an administrator lifts a wrong block by allowlisting the client and sending SIGHUP",
  { extraRules: LONG_BLOCK_RULE },
  async (w) => {
    const { t } = w;
    const sink = await startSink(t, t.addr.server4, join(w.dir, "sink"));
    const ssg = await w.startSsg();
    const file = await w.message("block.eml", simpleMessage("please block-me", "x", "block"));
    const r = await swaks(t, { server: t.addr.server4, to: ["b@example.net"], dataFile: file });
    assert.equal(finalReply(r.transcript)?.code, 250, r.transcript);
    assert.ok(await logCount(ssg, /\bdivert\.block\b.*192\.0\.2\.10\b/, 1), "blocked");
    assert.equal(await tcpConnect(t, t.addr.server4), "TIMEOUT", "dropped while blacklisted");

    await Deno.writeTextFile(
      w.ruleFile,
      ruleFileText({
        ...w.ruleOptions,
        extraSections: "allowlist:\n  clients: [192.0.2.10]\n",
      }),
    );
    ssg.child.kill("SIGHUP");
    assert.ok(
      await logCount(ssg, /\bdivert\.unblock\b.*192\.0\.2\.10\b/, 1),
      "unblocked on reload (divert.unblock)",
    );
    assert.match(await tcpConnect(t, t.addr.server4), /^CONNECTED 220 /, "served again");
    const clean = await w.message("clean.eml", CLEAN);
    const again = await swaks(t, {
      server: t.addr.server4,
      to: ["b@example.net"],
      dataFile: clean,
    });
    assert.equal(again.code, 0, again.transcript);
    assert.equal((await readSinkDumps(sink.dir)).length, 1, "the clean mail arrives");
  },
);

// ---------------------------------------------------------------------------------------------

function reloadRule(keyword: string): string {
  return `  - name: reload-probe
    when:
      subject: { contains: [${JSON.stringify(keyword)}] }
    action: discard
`;
}

e2e(
  "SIGHUP: a bad rule file is refused and the old rules stay; a good edit takes effect; a live session survives both",
  { extraRules: reloadRule("alpha-keyword") },
  async (w) => {
    const { t } = w;
    const sink = await startSink(t, t.addr.server4, join(w.dir, "sink"));
    const ssg = await w.startSsg();
    const send = async (label: string, subject: string) => {
      const f = await w.message(`${label}.eml`, simpleMessage(subject, "Body.", label));
      const r = await swaks(t, { server: t.addr.server4, to: ["b@example.net"], dataFile: f });
      assert.equal(finalReply(r.transcript)?.code, 250, `${label}\n${r.transcript}`);
      return (await completeDumps(sink.dir)).length;
    };
    assert.equal(await send("alpha-0", "about alpha-keyword"), 0, "alpha is discarded at start");

    // A session that is mid-transaction (after RCPT) across both reloads.
    const liveMsg = await w.message("live.eml", CLEAN);
    const goFile = join(w.dir, "go");
    const liveOut = join(w.dir, "live.out");
    const live = t.spawn(
      t.ns.client,
      rawClientArgs({ dst: t.addr.server4, dataFile: liveMsg, outFile: liveOut, goFile }),
      { stdout: "null", stderr: "null" },
    );
    assert.ok(
      await eventually(() => readOr(liveOut).includes("WAITING"), 15_000),
      `live session reached RCPT: ${readOr(liveOut)}`,
    );
    assert.match(rawReply(readOr(liveOut), "RCPT TO:<b@example.net>") ?? "", /^250 /);

    // 1. A bad file: refused, logged, old rules in force.
    await Deno.writeTextFile(
      w.ruleFile,
      ruleFileText({
        ...w.ruleOptions,
        extraRules: reloadRule("beta-keyword") + "    no_such_key: true\n",
      }),
    );
    ssg.child.kill("SIGHUP");
    assert.ok(
      await logCount(ssg, /\bconfig\.reload\.refused\b/, 1),
      "the bad file is refused (config.reload.refused)",
    );
    assert.match(
      ssg.log().split("\n").find((l) => /config\.reload\.refused/.test(l)) ?? "",
      /no_such_key/,
      "the reason names the problem",
    );
    assert.equal(await send("alpha-1", "about alpha-keyword"), 0, "old rule still discards alpha");
    assert.equal(
      await send("beta-1", "about beta-keyword"),
      1,
      "new rule not applied: beta passes",
    );

    // 2. A good edit: applied.
    await Deno.writeTextFile(
      w.ruleFile,
      ruleFileText({ ...w.ruleOptions, extraRules: reloadRule("beta-keyword") }),
    );
    ssg.child.kill("SIGHUP");
    assert.ok(
      await logCount(ssg, /\bconfig\.reload /, 1),
      "the good file is loaded (config.reload)",
    );
    assert.equal(await send("beta-2", "about beta-keyword"), 1, "beta is now discarded");
    assert.equal(await send("alpha-2", "about alpha-keyword"), 2, "alpha now passes");

    // 3. The live session was not dropped: it completes and its message is delivered.
    await Deno.writeTextFile(goFile, "");
    const st = await Promise.race([
      live.status,
      new Promise<undefined>((r) => setTimeout(() => r(undefined), 30_000)),
    ]);
    const out = readOr(liveOut);
    assert.ok(st, `live client finished within 30 s\n${out}`);
    assert.equal(st.code, 0, `live client exit\n${out}`);
    assert.match(rawReply(out, "DATA") ?? "", /^354 /, out);
    assert.match(rawReply(out, ".") ?? "", /^250 /, `the live session's message accepted\n${out}`);
    assert.match(rawReply(out, "QUIT") ?? "", /^221 /, out);
    const dumps = await readSinkDumps(sink.dir);
    assert.equal(dumps.length, 3, "every dump is complete now: nothing else is in progress");
    assert.ok(
      dumps.some((d) => d.message.includes("Minutes of the meeting")),
      "live message delivered",
    );
    assert.equal(ssg.status, undefined, "ssg is still running");
  },
);

e2e(
  "SIGHUP applies smtp settings to the next session (bare LF refused, then normalised) and names each restart-only change in config.reload.partial",
  { extraSections: "smtp:\n  bare_line_endings: reject\n" },
  async (w) => {
    const { t } = w;
    const sink = await startSink(t, t.addr.server4, join(w.dir, "sink"));
    const ssg = await w.startSsg();
    const bareLf = new TextEncoder().encode(
      [
        `From: <sender@example.org>`,
        `To: <b@example.net>`,
        `Subject: a line that ends in a bare LF`,
        `Message-ID: <bare-lf-reload@example.org>`,
        ``,
        `first line\nsecond line`,
      ].join(CRLF),
    );
    const file = await w.message("bare-lf.eml", bareLf);
    const sendRaw = async (label: string) => {
      const out = join(w.dir, `${label}.out`);
      const c = await t.exec(
        t.ns.client,
        rawClientArgs({ dst: t.addr.server4, dataFile: file, outFile: out }),
        { timeoutMs: 60_000 },
      );
      const o = readOr(out);
      assert.equal(c.code, 0, `raw client: ${c.stderr}\n${o}`);
      return o;
    };
    const before = await sendRaw("before");
    assert.match(rawReply(before, ".") ?? "", /^550 /, `reject: bare LF refused\n${before}`);
    assert.deepEqual(await readSinkDumps(sink.dir), [], "nothing delivered under reject");

    // The edit: one live setting (smtp.bare_line_endings) and one that needs a restart
    // (gateway.hostname, which names the gateway in greetings and Received headers).
    const edited = ruleFileText({
      ...w.ruleOptions,
      extraSections: "smtp:\n  bare_line_endings: normalize\n",
    }).replace("hostname: ssg.gateway.test", "hostname: renamed.gateway.test");
    assert.match(edited, /renamed\.gateway\.test/);
    await Deno.writeTextFile(w.ruleFile, edited);
    ssg.child.kill("SIGHUP");
    assert.ok(await logCount(ssg, /\bconfig\.reload\b(?!\.)/, 1), `reloaded\n${ssg.log()}`);
    await ssg.assertLog(
      /\bconfig\.reload\.partial\b.*gateway\.hostname/,
      "the restart-only change is named",
    );
    assert.doesNotMatch(
      ssg.log(),
      /\bconfig\.reload\.partial\b.*bare_line_endings/,
      "the live change is not reported as ignored",
    );

    const after = await sendRaw("after");
    assert.match(rawReply(after, ".") ?? "", /^250 /, `normalize: accepted\n${after}`);
    const dumps = await readSinkDumps(sink.dir);
    assert.equal(dumps.length, 1, "delivered once");
    assert.match(
      splitFirstHeader(dumps[0].message)[0],
      /\bby ssg\.gateway\.test\b/,
      "the host name stays as running until a restart",
    );
    assert.match(dumps[0].message, /first line\nsecond line/, "the bare LF became a line end");
  },
);
