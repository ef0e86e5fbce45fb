/**
 * STARTTLS (RFC 3207) on both sides of a session, over real loopback TCP: the responder towards a
 * real TLS client (Deno.startTls, which verifies our certificate), and the relay towards a real
 * server that offers STARTTLS (aiosmtpd + Python's ssl). Certificates are throwaway, test-only,
 * made with openssl in a temporary directory. Loopback only; every wait is bounded.
 */
import assert from "node:assert/strict";
import type { TlsIdentity } from "../../src/config/config.ts";
import { MemoryLog } from "../../src/log/log.ts";
import { RelayClient } from "../../src/smtp/relay_client.ts";
import { serveSession, type SessionSummary } from "../../src/smtp/session.ts";
import {
  duplex,
  envelope,
  FAKE_EHLO,
  FakeServer,
  fakeUpstream,
  listenLoopback,
  recordingJudge,
  relayConfig,
  smtpConfig,
  startSession,
  transcript,
} from "./harness.ts";

const WAIT_MS = 5000;
const encoder = new TextEncoder();
const decoder = new TextDecoder("latin1");

/**
 * A self-signed, test-only identity for CN=mx.example. `endEntity` adds CA:FALSE and a SAN, as a
 * verifying client (rustls) requires; without it this is `openssl req -x509`'s default CA:TRUE
 * certificate, the kind an internal server often has.
 */
async function makeIdentity(endEntity: boolean): Promise<TlsIdentity & { dir: string }> {
  const dir = await Deno.makeTempDir({ prefix: "ssg-tls-" });
  const args = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=mx.example"];
  args.push("-days", "1", "-keyout", `${dir}/key.pem`, "-out", `${dir}/cert.pem`);
  if (endEntity) {
    args.push("-addext", "basicConstraints=critical,CA:FALSE");
    args.push("-addext", "subjectAltName=DNS:mx.example");
  }
  const out = await new Deno.Command("openssl", { args, stdout: "null", stderr: "piped" })
    .output();
  if (!out.success) throw new Error(`openssl failed: ${decoder.decode(out.stderr)}`);
  return {
    dir,
    certFile: `${dir}/cert.pem`,
    keyFile: `${dir}/key.pem`,
    cert: await Deno.readTextFile(`${dir}/cert.pem`),
    key: await Deno.readTextFile(`${dir}/key.pem`),
    subject: "CN=mx.example",
    validTo: "",
  };
}

let identityCache: Promise<TlsIdentity & { dir: string }> | undefined;
function identity() {
  identityCache ??= makeIdentity(true).then((id) => {
    globalThis.addEventListener("unload", () => Deno.removeSync(id.dir, { recursive: true }));
    return id;
  });
  return identityCache;
}

/** A raw SMTP client over loopback TCP that can switch to TLS (verifying `mx.example`). */
class Client {
  #conn: Deno.Conn;
  #buf = "";
  private constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }
  static async connect(port: number): Promise<Client> {
    return new Client(await Deno.connect({ hostname: "127.0.0.1", port }));
  }
  async write(s: string): Promise<void> {
    await this.#conn.write(encoder.encode(s));
  }
  /** The next complete reply. */
  async reply(): Promise<string> {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const m = /^(?:\d{3}-[^\n]*\r\n)*\d{3}(?: [^\n]*)?\r\n/.exec(this.#buf);
      if (m) {
        this.#buf = this.#buf.slice(m[0].length);
        return m[0];
      }
      const chunk = await this.#read(deadline - Date.now());
      if (chunk === null) throw new Error(`closed; received ${JSON.stringify(this.#buf)}`);
      this.#buf += chunk;
    }
  }
  /** Reads until the peer closes; what arrived. */
  async rest(): Promise<string> {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const chunk = await this.#read(deadline - Date.now()).catch(() => null);
      if (chunk === null) return this.#buf;
      this.#buf += chunk;
    }
  }
  async #read(ms: number): Promise<string | null> {
    const b = new Uint8Array(16384);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const n = await Promise.race([
      this.#conn.read(b),
      new Promise<never>((_, rej) => timer = setTimeout(() => rej(new Error("read timeout")), ms)),
    ]).finally(() => clearTimeout(timer));
    return n === null ? null : decoder.decode(b.subarray(0, n));
  }
  async startTls(cert: string): Promise<void> {
    assert.equal(this.#buf, "", "no bytes may be pending before the handshake");
    this.#conn = await Deno.startTls(this.#conn as Deno.TcpConn, {
      hostname: "mx.example",
      caCerts: [cert],
    });
  }
  close(): void {
    try {
      this.#conn.close();
    } catch { /* closed */ }
  }
}

/** Our session on loopback with `smtp.tls` set (unless `tls` is false), relaying to a fake. */
async function gateway(opts: { tls?: boolean; command?: number } = {}) {
  const id = await identity();
  const upstream = fakeUpstream();
  const judge = recordingJudge();
  const log = new MemoryLog();
  const listener = listenLoopback((conn, i) => {
    const remote = conn.remoteAddr as Deno.NetAddr;
    return serveSession(conn, {
      id: `T${i}`,
      client: { ip: remote.hostname, port: remote.port },
      server: { ip: "192.0.2.25", port: 25 },
      hostname: "mx.example",
      smtp: smtpConfig({
        tls: opts.tls === false ? undefined : id,
        timeouts: { command: opts.command ?? 5, data: 5, session: 30 },
      }),
      relay: relayConfig(),
      judge,
      log,
      connectUpstream: upstream.connect,
      shutdown: new AbortController().signal,
      clock: () => new Date(Date.UTC(2026, 10, 27, 22, 57, 1)),
    });
  }, 100);
  return {
    port: listener.port,
    cert: id.cert,
    upstream,
    judge,
    log,
    stop: (): Promise<SessionSummary[]> => listener.stop(),
  };
}

Deno.test("EHLO advertises STARTTLS only when smtp.tls is set, and no longer once TLS is active", async () => {
  const plain = await gateway({ tls: false });
  let c = await Client.connect(plain.port);
  await c.reply();
  await c.write("EHLO client.example\r\n");
  assert.doesNotMatch(await c.reply(), /STARTTLS/);
  await c.write("STARTTLS\r\n");
  assert.match(await c.reply(), /^502 5\.5\.1 /);
  c.close();
  await plain.stop();

  const g = await gateway();
  c = await Client.connect(g.port);
  await c.reply();
  await c.write("EHLO client.example\r\n");
  assert.match(await c.reply(), /^250-STARTTLS\r\n|^250 STARTTLS\r\n/m);
  await c.write("STARTTLS\r\n");
  assert.equal(await c.reply(), "220 2.0.0 Ready to start TLS\r\n");
  await c.startTls(g.cert);
  await c.write("EHLO client.example\r\n");
  const ehlo = await c.reply();
  assert.match(ehlo, /^250[ -]ENHANCEDSTATUSCODES/m);
  assert.doesNotMatch(ehlo, /STARTTLS/);
  await c.write("QUIT\r\n");
  assert.match(await c.reply(), /^221 /);
  c.close();
  const [s] = await g.stop();
  assert.equal(s.end, "quit");
  const ev = g.log.events.find((e) => e.name === "smtp.tls");
  assert.match(String(ev?.fields.protocol), /^TLSv1\.[23]$/);
});

Deno.test("After STARTTLS the client must EHLO again; the judge sees tls, the Received header says ESMTPS", async () => {
  const g = await gateway();
  const c = await Client.connect(g.port);
  await c.reply();
  await c.write("EHLO client.example\r\n");
  await c.reply();
  await c.write("STARTTLS\r\n");
  await c.reply();
  await c.startTls(g.cert);
  // RFC 3207 §4.2: the EHLO before TLS is forgotten.
  await c.write("MAIL FROM:<alice@example.org>\r\n");
  assert.match(await c.reply(), /^503 5\.5\.1 /);
  await c.write(envelope() + "Subject: over TLS\r\n\r\nhello\r\n.\r\n");
  const replies: string[] = [];
  for (let i = 0; i < 5; i++) replies.push(await c.reply());
  assert.match(replies[0], /^250[ -]/);
  assert.match(replies[3], /^354 /);
  assert.match(replies[4], /^250 2\.0\.0 /);
  await c.write("QUIT\r\n");
  await c.reply();
  c.close();
  await g.stop();
  assert.equal(g.judge.calls.length, 1);
  assert.equal(g.judge.calls[0].envelope.tls, true);
  const m = g.upstream.servers[0].messages[0];
  assert.match(
    m.content,
    /^Received: from client\.example \(\[127\.0\.0\.1\]\)\r\n\tby mx\.example \(SSG\) with ESMTPS id T0\.1\r\n/,
  );
});

Deno.test("Without STARTTLS the judge sees tls false and the Received header says ESMTP", async () => {
  const s = await startSession({ smtp: { tls: await identity() } });
  await s.client.write(envelope() + "Subject: plain\r\n\r\nhello\r\n.\r\nQUIT\r\n");
  assert.match(await s.client.rest(), /STARTTLS/);
  await s.summary;
  assert.equal(s.judge.calls[0].envelope.tls, false);
  assert.match(s.servers[0].messages[0].content, / with ESMTP id /);
});

Deno.test("Plaintext pipelined after STARTTLS in the same segment is discarded, never executed (CVE-2011-0411)", async () => {
  const g = await gateway();
  const c = await Client.connect(g.port);
  await c.reply();
  await c.write("EHLO client.example\r\n");
  await c.reply();
  const injected = "EHLO evil.example\r\nMAIL FROM:<inject@evil.example>\r\n";
  await c.write("STARTTLS\r\n" + injected);
  assert.equal(await c.reply(), "220 2.0.0 Ready to start TLS\r\n");
  await c.startTls(g.cert);
  // Had the injected EHLO run after the handshake, MAIL would be accepted now.
  await c.write("MAIL FROM:<alice@example.org>\r\n");
  assert.match(await c.reply(), /^503 5\.5\.1 Error: send HELO\/EHLO first/);
  await c.write("QUIT\r\n");
  await c.reply();
  c.close();
  await g.stop();
  assert.equal(g.upstream.servers.length, 0, "the injected MAIL never reached the server");
  const ev = g.log.events.find((e) => e.name === "smtp.tls_discard");
  assert.equal(ev?.fields.bytes, injected.length);
});

Deno.test("STARTTLS: with an argument 501, before EHLO allowed (RFC 3207 §4), when active 554 5.5.1", async () => {
  const g = await gateway();
  const c = await Client.connect(g.port);
  await c.reply();
  await c.write("STARTTLS now\r\n");
  assert.equal(await c.reply(), "501 5.5.4 Syntax: STARTTLS\r\n");
  await c.write("STARTTLS\r\n");
  assert.equal(await c.reply(), "220 2.0.0 Ready to start TLS\r\n");
  await c.startTls(g.cert);
  await c.write("STARTTLS\r\n");
  assert.equal(await c.reply(), "554 5.5.1 Error: TLS already active\r\n");
  await c.write("EHLO client.example\r\nQUIT\r\n");
  await c.reply();
  assert.match(await c.reply(), /^221 /);
  c.close();
  const [s] = await g.stop();
  assert.equal(s.end, "quit");
});

Deno.test("STARTTLS inside a transaction (after MAIL) is refused 503 5.5.1 like Postfix, and the transaction goes on in plaintext", async () => {
  const id = await identity();
  const r = await transcript(
    "EHLO client.example\r\nMAIL FROM:<alice@example.org>\r\nSTARTTLS\r\n" +
      "RCPT TO:<bob@example.net>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n" +
      "QUIT\r\n",
    { smtp: { tls: id } },
  );
  assert.deepEqual(r.codes, [250, 250, 503, 250, 354, 250, 221]);
  assert.match(r.output, /\r\n503 5\.5\.1 Error: MAIL transaction in progress\r\n/);
  assert.equal(r.servers[0].messages.length, 1);
  assert.equal(r.judge.calls[0].envelope.tls, false);
  assert.equal(r.result.errors, 1);
  assert.ok(r.log.named("smtp.reject").some((e) => e.fields.reason === "starttls-in-transaction"));
});

Deno.test("A failed TLS handshake is logged and ends the session; a silent one is cut at the command timeout", async () => {
  const g = await gateway({ command: 0.3 });
  const bad = await Client.connect(g.port);
  await bad.reply();
  await bad.write("STARTTLS\r\n");
  await bad.reply();
  await bad.write("this is not a TLS ClientHello\r\n");
  await bad.rest();
  bad.close();
  const silent = await Client.connect(g.port);
  await silent.reply();
  await silent.write("STARTTLS\r\n");
  await silent.reply();
  const t0 = Date.now();
  await silent.rest();
  assert.ok(Date.now() - t0 < 10_000, "the handshake wait is bounded");
  silent.close();
  const ends = (await g.stop()).map((s) => s.end);
  assert.deepEqual(ends, ["tls-failed", "tls-failed"]);
  const failures = g.log.events.filter((e) => e.name === "smtp.tls_failed");
  assert.equal(failures.length, 2);
  assert.match(String(failures[1].fields.error), /timed out/);
});

// ---- the relay side ---------------------------------------------------------------------------

const python = "/usr/bin/python3";
const hasAiosmtpd = (() => {
  try {
    Deno.statSync("/usr/bin/aiosmtpd");
    Deno.statSync(python);
    return true;
  } catch {
    return false;
  }
})();

/** aiosmtpd offering STARTTLS on loopback with `openssl req -x509`'s default certificate. */
async function startTlsServer() {
  const id = await makeIdentity(false);
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  const child = new Deno.Command("timeout", {
    args: [
      "120",
      python,
      new URL("./starttls_smtp_server.py", import.meta.url).pathname,
      "127.0.0.1",
      String(port),
      `${id.dir}/dump`,
      id.certFile,
      id.keyFile,
    ],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  const deadline = Date.now() + 10_000;
  while (!out.includes("ready") && Date.now() < deadline) {
    const r = await reader.read();
    if (r.done) break;
    out += r.value;
  }
  reader.releaseLock();
  void child.stdout.cancel().catch(() => {});
  return {
    port,
    async dumps(): Promise<{ tls: boolean; mail_from: string }[]> {
      const out: { tls: boolean; mail_from: string }[] = [];
      for await (const e of Deno.readDir(`${id.dir}/dump`)) {
        if (e.name.endsWith(".json")) {
          out.push(JSON.parse(await Deno.readTextFile(`${id.dir}/dump/${e.name}`)));
        }
      }
      return out;
    },
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await child.status;
      await Deno.remove(id.dir, { recursive: true });
    },
  };
}

/** One message through a session whose relay reaches the server at 127.0.0.1:`port`. */
async function relayThrough(port: number, starttls: "opportunistic" | "off") {
  const s = await startSession({
    relay: { starttls, replyTimeout: 5, dataTimeout: 5 },
    connect: () => Deno.connect({ hostname: "127.0.0.1", port }),
  });
  await s.client.write(envelope() + "Subject: relay tls\r\n\r\nhello\r\n.\r\nQUIT\r\n");
  const out = await s.client.rest();
  await s.summary;
  return { out, log: s.log };
}

Deno.test({
  name:
    "The relay uses STARTTLS to a server that offers it (unverified certificate) and the server receives the message",
  ignore: !hasAiosmtpd,
  async fn() {
    const server = await startTlsServer();
    try {
      const { out, log } = await relayThrough(server.port, "opportunistic");
      assert.match(out, /^250 2\.0\.0 Ok: queued as TLS000001/m);
      assert.deepEqual((await server.dumps()).map((d) => [d.mail_from, d.tls]), [[
        "alice@example.org",
        true,
      ]]);
      const connect = log.events.find((e) => e.name === "relay.connect");
      assert.match(String(connect?.fields.tls), /^TLSv1\.[23] /);
      assert.ok(!log.events.some((e) => e.name === "relay.tls_failed"));
    } finally {
      await server.stop();
    }
  },
});

Deno.test({
  name: "relay.starttls off: the relay stays in plaintext even when the server offers STARTTLS",
  ignore: !hasAiosmtpd,
  async fn() {
    const server = await startTlsServer();
    try {
      const { out, log } = await relayThrough(server.port, "off");
      assert.match(out, /^250 2\.0\.0 /m);
      assert.deepEqual((await server.dumps()).map((d) => d.tls), [false]);
      assert.equal(log.events.find((e) => e.name === "relay.connect")?.fields.tls, "none");
    } finally {
      await server.stop();
    }
  },
});

const EHLO_TLS = FAKE_EHLO.replace(
  "250 ENHANCEDSTATUSCODES",
  "250-ENHANCEDSTATUSCODES\r\n250 STARTTLS",
);

Deno.test("RelayClient: a STARTTLS the server refuses continues in plaintext and says why", async () => {
  const up = fakeUpstream({ ehlo: EHLO_TLS, starttls: () => "454 4.7.0 TLS not available" });
  const client = await RelayClient.open({
    server: { ip: "192.0.2.25", port: 25 },
    hostname: "mx.example",
    connect: up.connect,
    config: relayConfig(),
  });
  assert.equal(client.tls, undefined);
  assert.equal(client.tlsFailure, "Server answered STARTTLS with 454");
  assert.equal((await client.mail("a@example.org")).code, 250);
  await client.quit();
  assert.equal(up.servers.length, 1);
  assert.deepEqual(up.servers[0].commands.slice(0, 3), [
    "EHLO mx.example",
    "STARTTLS",
    "MAIL FROM:<a@example.org>",
  ]);
});

Deno.test("RelayClient: a failed TLS handshake is retried once in plaintext on a new connection", async () => {
  let n = 0;
  const servers: FakeServer[] = [];
  const up = fakeUpstream();
  const connect = async (s: { ip: string; port: number }, ms: number) => {
    if (n++ > 0) return await up.connect(s, ms);
    const d = duplex();
    servers.push(
      new FakeServer(d.b, {
        ehlo: EHLO_TLS,
        // 220, then plaintext garbage instead of a TLS ServerHello, then close.
        starttls: () => "220 2.0.0 Ready\r\nthis is not TLS\r\n!close",
      }),
    );
    return d.a;
  };
  const client = await RelayClient.open({
    server: { ip: "192.0.2.25", port: 25 },
    hostname: "mx.example",
    connect,
    config: relayConfig(),
  });
  assert.equal(client.tls, undefined);
  assert.match(client.tlsFailure ?? "", /TLS|closed/i);
  assert.equal((await client.mail("a@example.org")).code, 250);
  await client.quit();
  assert.equal(up.servers.length, 1);
  assert.ok(!up.servers[0].commands.includes("STARTTLS"), "the retry never tries STARTTLS");
});
