/**
 * The interop harness: real Postfix on both sides of the gateway, every case run twice in one
 * test — **direct** (SSG not running: the gateway namespace only forwards) and **through SSG**
 * (`dist/ssg run` diverts the same connection) — and compared aspect by aspect.
 *
 * ```
 *  client ns                         gateway ns                          server ns
 *  sending Postfix 192.0.2.10  ──▶   forwarding; dist/ssg in the   ──▶   server Postfix 198.51.100.25
 *  (relayhost=[198.51.100.25],       "ssg" half of each case             STARTTLS, DSN, SMTPUTF8,
 *   sendmail -C DIR injects;                                             CHUNKING, SIZE 30 MB, virtual
 *   virtual maildir for bounces)                                         maildir, XCLIENT/XFORWARD for
 *  python raw-socket client                                              198.51.100.1
 * ```
 *
 * An outcome is what each end can observe: the status the sending Postfix logs per recipient
 * (status + dsn), the bytes the server stored (Received headers removed: SSG adds one, and each
 * hop's differs anyway), the client address the server logged, the notifications (bounces,
 * success DSNs) the sender's mailbox got, and for the raw-socket cases the server's replies.
 * Each case names its aspects; the test file (`interop_test.ts`) decides which aspects it asserts.
 *
 * Bounds: every wait is bounded (delivery 60 s, SSG start 45 s, raw client 30 s); a case's
 * failure is recorded in its outcome (never hangs the test); the topology, both Postfix
 * instances and SSG are removed at the end, also on failure.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { canRunNetns, createTopology, type Topology } from "./topology.ts";
import { requireSsgBinary, ruleFileText, type SsgProcess, startSsg, tempDir } from "./helpers.ts";
import { type DeliveryStatus, escape, PostfixInstance } from "./postfix_instance.ts";

/** Which way a run went. */
export type Path = "direct" | "ssg";

/** One test's world: the topology, both Postfix instances and SSG's rule file. */
export interface InteropWorld {
  t: Topology;
  dir: string;
  server: PostfixInstance;
  sender: PostfixInstance;
  ruleFile: string;
  logFile: string;
  /** SSG while the "ssg" half runs. */
  ssg?: SsgProcess;
}

/** The domain of the server's virtual mailboxes. */
export const SERVER_DOMAIN = "example.net";
/** The sender's domain (its virtual mailboxes receive bounces and DSNs). */
export const SENDER_DOMAIN = "sender.test";
/** A server recipient that is accepted at RCPT and bounced later by the server's queue. */
export const LATER_BOUNCE = `later-bounce@${SERVER_DOMAIN}`;
/** The server's message size limit (SIZE): above SSG's default 25M. */
export const SERVER_SIZE_LIMIT = 30 * 1024 * 1024;

/** The server's main.cf for every case (a case adds its own on top). */
export function serverParams(t: Topology): Record<string, string> {
  return {
    virtual_mailbox_domains: SERVER_DOMAIN,
    virtual_mailbox_maps: "regexp:$config_directory/vmailbox",
    transport_maps: `inline:{ {${LATER_BOUNCE} = error:5.2.2 mailbox full (test)}, ` +
      `{${SENDER_DOMAIN} = smtp:[${t.addr.client4}]:25} }`,
    default_transport: "error:5.3.0 no outbound mail in this test",
    // Otherwise smtpd refuses, at RCPT, a recipient routed to the error transport: the later
    // bounce (and an accepted relay attempt) must happen in the queue, after the 250.
    smtpd_reject_unlisted_recipient: "no",
    smtputf8_enable: "yes",
    message_size_limit: String(SERVER_SIZE_LIMIT),
    smtpd_tls_security_level: "may",
    smtpd_tls_cert_file: "$config_directory/server.crt",
    smtpd_tls_key_file: "$config_directory/server.key",
    smtpd_tls_loglevel: "1",
    smtp_tls_security_level: "none",
    smtpd_authorized_xclient_hosts: t.addr.gwServer4,
    smtpd_authorized_xforward_hosts: t.addr.gwServer4,
    mynetworks: "127.0.0.0/8",
  };
}

/** The sending Postfix's main.cf. */
export function senderParams(t: Topology): Record<string, string> {
  return {
    relayhost: `[${t.addr.server4}]`,
    mydomain: SENDER_DOMAIN,
    myorigin: SENDER_DOMAIN,
    virtual_mailbox_domains: SENDER_DOMAIN,
    virtual_mailbox_maps: "regexp:$config_directory/vmailbox",
    smtputf8_enable: "yes",
    message_size_limit: String(64 * 1024 * 1024),
    smtp_tls_security_level: "may",
    mynetworks: "127.0.0.0/8",
  };
}

async function makeCert(dir: string): Promise<{ cert: string; key: string }> {
  const cert = join(dir, "server.crt");
  const key = join(dir, "server.key");
  const r = await new Deno.Command("openssl", {
    args: [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-subj",
      "/CN=mx.server.test",
      "-days",
      "1",
      "-keyout",
      key,
      "-out",
      cert,
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!r.success) throw new Error(`openssl req failed: ${new TextDecoder().decode(r.stderr)}`);
  return { cert: await Deno.readTextFile(cert), key: await Deno.readTextFile(key) };
}

/**
 * Builds the world, runs `fn`, and removes everything (SSG, both instances, namespaces, temp
 * dir) whatever happens.
 */
export async function withInteropWorld(
  serverExtra: Record<string, string>,
  fn: (w: InteropWorld) => Promise<void>,
): Promise<void> {
  await using t = await createTopology();
  await using tmp = await tempDir("ssg-interop-");
  const { cert, key } = await makeCert(tmp.path);
  await using server = await PostfixInstance.start(t, {
    name: "server",
    ns: t.ns.server,
    address: t.addr.server4,
    hostname: "mx.server.test",
    params: { ...serverParams(t), ...serverExtra },
    files: {
      vmailbox: `/@${SERVER_DOMAIN.replaceAll(".", "\\.")}$/ inbox/\n`,
      "server.crt": cert,
      "server.key": key,
    },
  });
  await using sender = await PostfixInstance.start(t, {
    name: "sender",
    ns: t.ns.client,
    address: t.addr.client4,
    hostname: "mta.sender.test",
    params: senderParams(t),
    files: { vmailbox: `/@${SENDER_DOMAIN.replaceAll(".", "\\.")}$/ inbox/\n` },
  });
  const logFile = join(tmp.path, "ssg.log");
  const ruleFile = join(tmp.path, "rules.yaml");
  // SSG set up as an administrator would for this server: its message size limit at least the
  // server's (30 MB), so the SIZE it offers is the server's own, and a certificate, so STARTTLS
  // is offered as the server offers it (the same test certificate, for the server's name).
  await Deno.writeTextFile(
    ruleFile,
    ruleFileText({
      logFile,
      connectTimeout: 10,
      extraSections: `smtp:
  max_message_bytes: 40M
  tls:
    cert: ${JSON.stringify(join(tmp.path, "server.crt"))}
    key: ${JSON.stringify(join(tmp.path, "server.key"))}
`,
    }),
  );
  const w: InteropWorld = { t, dir: tmp.path, server, sender, ruleFile, logFile };
  try {
    await fn(w);
  } finally {
    await w.ssg?.[Symbol.asyncDispose]();
  }
}

// ---- outcomes ----

/** What one run of a case observed. `error` when the run itself failed (timeout, crash). */
export interface Outcome {
  /** Per recipient, sorted: "rcpt status dsn". */
  senderStatus?: string[];
  /** Messages the server stored (Received headers removed), sorted (delivery order is not defined). */
  stored?: string[];
  /** The `client=` the server logged for the message, e.g. "unknown[192.0.2.10]". */
  serverClient?: string[];
  /** Per recipient, sorted: "rcpt status dsn" as the server's own queue logged it. */
  serverStatus?: string[];
  /** Summaries of the notifications (bounces, DSNs) in the sender's mailbox. */
  notifications?: string[];
  /** Raw-socket cases: what the server said, step by step. */
  replies?: string[];
  /** Raw-socket cases: the greeting line, the EHLO reply's first line and its keywords. */
  greeting?: string;
  ehloName?: string;
  ehloKeywords?: string[];
  error?: string;
}

/** Removes every Received header field (with its folded lines) from a stored message. */
export function withoutReceived(message: string): string {
  const nl = message.indexOf("\n\n");
  const head = nl < 0 ? message : message.slice(0, nl + 1);
  const body = nl < 0 ? "" : message.slice(nl + 1);
  const out: string[] = [];
  let skipping = false;
  for (const line of head.split("\n")) {
    if (/^[ \t]/.test(line) && skipping) continue;
    skipping = /^Received:/i.test(line);
    if (!skipping) out.push(line);
  }
  return out.join("\n") + body;
}

/** A stored message for comparison: large ones by length and SHA-256, small ones verbatim. */
async function storedForm(bytes: Uint8Array): Promise<string> {
  const text = withoutReceived(new TextDecoder().decode(bytes));
  if (text.length <= 64 * 1024) return text;
  const h = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  const hex = Array.from(new Uint8Array(h), (b) => b.toString(16).padStart(2, "0")).join("");
  return `[${text.length} chars, sha256 ${hex}]`;
}

/**
 * The parts of a notification (RFC 3464 report) that must not depend on the path: who sent
 * it, the report's per-recipient Action/Status, the Original-Envelope-Id, and whether the
 * original came back whole (message/rfc822) or as headers (text/rfc822-headers).
 */
export function summarizeNotification(raw: string): string {
  const parts: string[] = [];
  const from = /^From: (.*)$/m.exec(raw)?.[1] ?? "?";
  parts.push(`from=${from.replace(/^.*</, "").replace(/>.*$/, "")}`);
  parts.push(`report=${/report-type=([\w-]+)/i.exec(raw)?.[1] ?? "none"}`);
  const envid = /^Original-Envelope-Id: (.*)$/mi.exec(raw)?.[1];
  parts.push(`envid=${envid ?? "none"}`);
  const actions = [...raw.matchAll(/^Action: (.*)$/gmi)].map((m) => m[1].trim());
  const statuses = [...raw.matchAll(/^Status: (.*)$/gmi)].map((m) => m[1].trim());
  parts.push(`action=${actions.join(",")}`, `status=${statuses.join(",")}`);
  const returned = /Content-Type: (message\/rfc822|text\/rfc822-headers)/i.exec(raw)?.[1] ??
    "nothing";
  parts.push(`returned=${returned}`);
  parts.push(`body-returned=${raw.includes(BODY_MARK) ? "yes" : "no"}`);
  return parts.join(" ");
}

/** A line in the body of every message the sender injects (to see if a bounce returned it). */
export const BODY_MARK = "interop-body-marker-line";

/** A message the sending Postfix injects. */
export interface Injected {
  from: string;
  rcpts: string[];
  messageId: string;
  subject: string;
  /** Body lines (LF joined); BODY_MARK is added. */
  body?: string;
  /** sendmail's DSN options, e.g. ["-N", "never"]. */
  sendmailOpts?: string[];
  /** Extra header lines. */
  headers?: string[];
}

/** The message text handed to sendmail (LF line endings, as a local program writes it). */
export function injectedText(m: Injected): string {
  return [
    `From: <${m.from}>`,
    `To: ${m.rcpts.map((r) => `<${r}>`).join(", ")}`,
    `Subject: ${m.subject}`,
    `Date: Mon, 30 Nov 2026 10:00:00 +0000`,
    `Message-ID: <${m.messageId}>`,
    `MIME-Version: 1.0`,
    `Content-Type: text/plain; charset=UTF-8`,
    `Content-Transfer-Encoding: 8bit`,
    ...(m.headers ?? []),
    ``,
    m.body ?? "Hello from the interop suite.",
    BODY_MARK,
    ``,
  ].join("\n");
}

/**
 * Injects `m` into the sending Postfix and waits (bounded) until: the sender logged a status
 * for every recipient; the server finished the message (removed from its queue) if it took it;
 * every notification either side generated has reached the sender's mailbox. Returns the
 * outcome; `extraWaitMs` lets a case give a late notification time to show up.
 */
export async function deliverViaSender(
  w: InteropWorld,
  m: Injected,
  opts: { body?: string | Uint8Array; timeoutMs?: number } = {},
): Promise<Outcome> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const s0 = w.sender.logSize();
  const v0 = w.server.logSize();
  await w.server.takeMail("inbox");
  await w.sender.takeMail("inbox");
  await w.sender.sendmail(m.from, m.rcpts, opts.body ?? injectedText(m), m.sendmailOpts ?? []);
  const statuses = await w.sender.waitForDelivery(m.messageId, m.rcpts.length, s0, timeoutMs);
  const out: Outcome = {
    senderStatus: statuses.map((s: DeliveryStatus) => `${s.recipient} ${s.status} ${s.dsn}`)
      .sort(),
  };
  // Every notification: the sender's own (its queue id logs "sender ... notification: ID"),
  // and the server's (same, in its log), each delivered to the sender's mailbox.
  let expected = 0;
  const senderQid = w.sender.queueIds(m.messageId, s0)[0];
  // A deferred message stays queued (and is deleted below); any other is removed when done.
  if (!statuses.some((s) => s.status === "deferred")) {
    await w.sender.waitForLog(new RegExp(`: ${senderQid}: removed`), s0, timeoutMs);
  }
  expected += countNotifications(w.sender.logSince(s0), senderQid);
  // A message the sender handed over ("sent") is in the server's queue; its log line may lag
  // (postlogd writes asynchronously), so wait for it rather than read too early.
  if (statuses.some((s) => s.status === "sent")) {
    await w.server.waitForLog(
      new RegExp(`: [0-9A-F]{6,}: message-id=<${escape(m.messageId)}>`),
      v0,
      timeoutMs,
    );
  }
  const serverQids = w.server.queueIds(m.messageId, v0);
  out.serverClient = serverQids.map((q) => w.server.clientOf(q, v0) ?? "?");
  out.serverStatus = [];
  for (const q of serverQids) {
    await w.server.waitForLog(new RegExp(`: ${q}: removed`), v0, timeoutMs);
    expected += countNotifications(w.server.logSince(v0), q);
    for (const s of w.server.statuses(q, v0)) {
      out.serverStatus.push(`${s.recipient} ${s.status} ${s.dsn}`);
    }
  }
  out.serverStatus.sort();
  const deadline = Date.now() + timeoutMs;
  const got: Uint8Array[] = [];
  // Bounded: until every expected notification arrived or the deadline.
  while (got.length < expected && Date.now() < deadline) {
    got.push(...await w.sender.takeMail("inbox"));
    if (got.length < expected) await new Promise((r) => setTimeout(r, 50));
  }
  got.push(...await w.sender.takeMail("inbox"));
  out.notifications = got.map((b) => summarizeNotification(new TextDecoder().decode(b))).sort();
  out.stored = [];
  for (const b of await w.server.takeMail("inbox")) out.stored.push(await storedForm(b));
  // Postfix delivers a message's recipients in parallel: their order is not defined, so the
  // comparison is of the set of stored messages.
  out.stored.sort();
  await w.sender.clearQueue();
  return out;
}

function countNotifications(log: string, qid: string | undefined): number {
  if (!qid) return 0;
  return [...log.matchAll(new RegExp(`: ${qid}: sender [\\w -]*notification: `, "g"))].length;
}

// ---- the raw-socket client ----

/** One step of a raw-socket dialogue: bytes to send, and how many replies to read after. */
export interface RawStep {
  /** Text sent as UTF-8 (use \r\n yourself). */
  send: string;
  /** Replies to read after sending (0: none). */
  replies: number;
}

/**
 * A Python client that speaks raw SMTP over a socket (smtplib cannot send BDAT, a bare LF or an
 * over-long line as-is). Prints one JSON object: the greeting and, per step, the replies read
 * ("timeout" / "closed" when none came within 10 s).
 */
const RAW_CLIENT = String.raw`
import json, socket, sys, time
host, steps = sys.argv[1], json.loads(sys.stdin.read())
s = socket.create_connection((host, 25), timeout=10)
buf = b""
def reply():
    global buf
    lines = []
    while True:
        while b"\r\n" not in buf:
            try:
                d = s.recv(65536)
            except socket.timeout:
                return "timeout"
            except OSError as e:
                return "reset" if isinstance(e, ConnectionResetError) else "error " + str(e)
            if not d:
                return "closed"
            buf += d
        line, buf = buf.split(b"\r\n", 1)
        lines.append(line.decode("utf-8", "replace"))
        if len(line) < 4 or line[3:4] != b"-":
            return "\n".join(lines)
out = {"greeting": reply(), "steps": []}
for st in steps:
    if out["steps"] and out["steps"][-1][-1:] in (["closed"], ["reset"]):
        break
    try:
        s.sendall(st["send"].encode("utf-8"))
    except OSError as e:
        out["steps"].append(["send failed: " + type(e).__name__])
        break
    out["steps"].append([reply() for _ in range(st["replies"])])
print(json.dumps(out))
`;

/** What the raw client saw. */
export interface RawResult {
  greeting: string;
  steps: string[][];
}

/** Runs the raw client in the client namespace against the server's address (bounded). */
export async function rawDialogue(w: InteropWorld, steps: RawStep[]): Promise<RawResult> {
  const r = await w.t.exec(w.t.ns.client, ["python3", "-c", RAW_CLIENT, w.t.addr.server4], {
    stdin: JSON.stringify(steps),
    timeoutMs: 30_000,
  });
  if (r.code !== 0) throw new Error(`raw client failed (exit ${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as RawResult;
}

/**
 * "250 2.0.0 Ok: queued as 4F1B2" → "250 2.0.0 Ok: queued as <id>" (ids differ per run); the
 * server hanging up is "closed" whether its kernel sent a FIN or, because bytes the client had
 * already sent were left unread, a RST (a race with the client's writes, not a behaviour); and
 * Postfix's BDAT byte counts "Ok: 166 bytes" → "Ok: <n> bytes": through SSG the server counts
 * SSG's Received header too (one more header field, the only intended difference).
 */
export function replyShape(reply: string): string {
  return reply.split("\n").map((l) =>
    l.replace(/queued as \S+/, "queued as <id>").replace(/\bid=\S+/, "id=<id>")
      .replace(/^(250[ -]2\.0\.0 Ok: )\d+ bytes/, "$1<n> bytes")
      .replace(/^reset$/, "closed")
  ).join("\n");
}

/**
 * Runs a raw dialogue that sends one message, then collects the server side: stored messages
 * and the client address it logged (the message is found by `messageId`).
 */
export async function rawDelivery(
  w: InteropWorld,
  steps: RawStep[],
  messageId: string,
): Promise<Outcome> {
  const v0 = w.server.logSize();
  await w.server.takeMail("inbox");
  const r = await rawDialogue(w, steps);
  const out: Outcome = {
    greeting: r.greeting.split(" ")[0],
    replies: r.steps.map((s) => s.map(replyShape).join(" | ")),
  };
  const qids = w.server.queueIds(messageId, v0);
  out.serverClient = qids.map((q) => w.server.clientOf(q, v0) ?? "?");
  for (const q of qids) await w.server.waitForLog(new RegExp(`: ${q}: removed`), v0, 30_000);
  out.stored = [];
  for (const b of await w.server.takeMail("inbox")) out.stored.push(await storedForm(b));
  // Postfix delivers a message's recipients in parallel: their order is not defined, so the
  // comparison is of the set of stored messages.
  out.stored.sort();
  return out;
}

// ---- cases and aspects ----

/** One interop case: how to run it, and the aspects that compare the two runs. */
export interface InteropCase {
  /** A sentence: what is sent. */
  name: string;
  /** Server main.cf parameters for this case. */
  server?: Record<string, string>;
  /** Runs the case once on `path`. */
  run(w: InteropWorld, path: Path): Promise<Outcome>;
  /** What the direct run must show for the case to mean anything (a sentence, and the check). */
  direct: { name: string; check(o: Outcome): void };
}

/** An aspect: a sentence naming what must be the same, and the check. */
export interface Aspect {
  name: string;
  check(direct: Outcome, ssg: Outcome): void;
}

function same<K extends keyof Outcome>(key: K, what: string): Aspect {
  return {
    name: what,
    check(direct, ssg) {
      assert.ok(!direct.error, `the direct run failed: ${direct.error}`);
      assert.ok(!ssg.error, `the run through SSG failed: ${ssg.error}`);
      assert.notEqual(direct[key], undefined, `the direct run observed no ${key}`);
      assert.deepEqual(ssg[key], direct[key], `${what}: through SSG (actual) vs direct (expected)`);
    },
  };
}

/** The aspects every test file can pick from. */
export const ASPECTS = {
  status: same("senderStatus", "the sending Postfix logs the same status and dsn"),
  stored: same("stored", "the server stores the same bytes (Received headers aside)"),
  client: same("serverClient", "the server logs the same client address"),
  notifications: same("notifications", "the sender's mailbox gets the same notifications"),
  serverStatus: same("serverStatus", "the server's queue logs the same outcome per recipient"),
  replies: same("replies", "the server's replies are the same"),
  greeting: same("greeting", "the greeting is the same"),
  ehloName: same("ehloName", "the EHLO reply names the same host"),
  ehloKeywords: same("ehloKeywords", "the EHLO reply offers the same extensions"),
} as const;

/** Aspect names. */
export type AspectName = keyof typeof ASPECTS;

/** Runs `c` direct, then through SSG, in one fresh world; returns both outcomes. */
export async function runBoth(c: InteropCase): Promise<{ direct: Outcome; ssg: Outcome }> {
  let direct: Outcome = { error: "not run" };
  let ssg: Outcome = { error: "not run" };
  await withInteropWorld(c.server ?? {}, async (w) => {
    direct = await c.run(w, "direct").catch((e) => ({ error: String(e?.stack ?? e) }));
    w.ssg = await startSsg(w.t, w.ruleFile, w.logFile);
    try {
      ssg = await c.run(w, "ssg").catch((e) => ({ error: String(e?.stack ?? e) }));
    } finally {
      const status = await w.ssg.stop("SIGTERM").catch((e) => e);
      if (ssg.error || (status as Deno.CommandStatus)?.code !== 0) {
        console.error(`--- SSG for "${c.name}" ---\n${w.ssg.transcript().slice(-8_000)}`);
      }
      w.ssg = undefined;
    }
  });
  return { direct, ssg };
}

/**
 * Registers one Deno test per case: the case runs direct and through SSG, then each named aspect
 * is a step. Ignored (with the reason printed once) only when namespaces cannot be made.
 */
export function interopTest(c: InteropCase, aspects: AspectName[]): void {
  const ignore = !canRunNetns();
  if (!ignore) requireSsgBinary();
  Deno.test({
    name: `interop: ${c.name}`,
    ignore,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn(tc) {
      const { direct, ssg } = await runBoth(c);
      let failed = !await tc.step({
        name: `direct, without SSG: ${c.direct.name}`,
        sanitizeOps: false,
        sanitizeResources: false,
        fn() {
          assert.ok(!direct.error, `the direct run failed: ${direct.error}`);
          c.direct.check(direct);
        },
      });
      for (const a of aspects) {
        const ok = await tc.step({
          name: ASPECTS[a].name,
          sanitizeOps: false,
          sanitizeResources: false,
          fn: () => ASPECTS[a].check(direct, ssg),
        });
        failed ||= !ok;
      }
      if (failed || Deno.env.get("INTEROP_VERBOSE")) {
        console.error(`--- "${c.name}": direct ---\n${JSON.stringify(direct, null, 1)}`);
        console.error(`--- "${c.name}": through SSG ---\n${JSON.stringify(ssg, null, 1)}`);
      }
    },
  });
}
