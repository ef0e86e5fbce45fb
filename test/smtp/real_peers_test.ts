/**
 * The session between real peers on loopback: swaks (a real SMTP client) talks to a session
 * served on 127.0.0.1, which relays to Postfix's smtp-sink (a real SMTP server) on 127.0.0.1.
 * Skipped when swaks or smtp-sink is not installed. Loopback only; every process is bounded by
 * `timeout` and killed at the end.
 */
import assert from "node:assert/strict";
import { MemoryLog } from "../../src/log/log.ts";
import { serveSession, type SessionSummary } from "../../src/smtp/session.ts";
import { listenLoopback, recordingJudge, relayConfig, smtpConfig } from "./harness.ts";

function has(bin: string): boolean {
  for (const dir of ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"]) {
    try {
      Deno.statSync(`${dir}/${bin}`);
      return true;
    } catch { /* not here */ }
  }
  return false;
}

const ready = has("swaks") && has("smtp-sink") && has("smtp-source") && has("timeout");

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      c.close();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`nothing listens on 127.0.0.1:${port}`);
}

/** smtp-sink on loopback, dumping every message into `dir/dump`; `args` add fault injection. */
async function startSink(dir: string, args: string[] = []) {
  const port = freePort();
  const root = Deno.uid() === 0;
  const child = new Deno.Command("timeout", {
    args: [
      "60",
      "smtp-sink",
      ...(root ? ["-u", "nobody"] : []),
      "-D",
      `${dir}/dump`,
      ...args,
      `127.0.0.1:${port}`,
      "50",
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  await waitForPort(port);
  return {
    port,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      await child.status;
    },
  };
}

/** Our session on loopback, relaying every connection to 127.0.0.1:`serverPort`. */
function startGateway(serverPort: number, log: MemoryLog) {
  return listenLoopback((conn, i) => {
    const remote = conn.remoteAddr as Deno.NetAddr;
    return serveSession(conn, {
      id: `R${i}`,
      client: { ip: remote.hostname, port: remote.port },
      server: { ip: "127.0.0.1", port: serverPort },
      hostname: "mx.example",
      smtp: smtpConfig(),
      relay: relayConfig({ connectTimeout: 5, replyTimeout: 10, dataTimeout: 10 }),
      judge: recordingJudge(),
      log,
      connectUpstream: (s) => Deno.connect({ hostname: s.ip, port: s.port }),
      shutdown: new AbortController().signal,
    });
  }, 10_000);
}

async function run(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  const r = await new Deno.Command("timeout", {
    args: ["60", cmd, ...args],
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout) + dec.decode(r.stderr) };
}

async function tempDir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "ssg-smtp-" });
  await Deno.chmod(dir, 0o777); // smtp-sink writes as nobody
  return dir;
}

Deno.test({
  name: "swaks through the session to smtp-sink: the message arrives with our Received header",
  ignore: !ready,
  async fn() {
    const dir = await tempDir();
    const sink = await startSink(dir);
    const log = new MemoryLog();
    const gw = startGateway(sink.port, log);
    try {
      const body =
        "From: a@example.org\r\nSubject: real peers\r\n\r\n.leading dot\r\nsecond line\r\n";
      await Deno.writeTextFile(`${dir}/msg.eml`, body);
      const r = await run("swaks", [
        "--server",
        `127.0.0.1:${gw.port}`,
        "--helo",
        "client.example",
        "--from",
        "a@example.org",
        "--to",
        "b@example.net",
        "--data",
        `${dir}/msg.eml`,
      ]);
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, /<- {2}250 2\.0\.0 Ok/);
    } finally {
      const sums = await gw.stop();
      await sink.stop();
      assert.equal(sums[0]?.forwarded, 1);
    }
    const dump = await Deno.readTextFile(`${dir}/dump`);
    // smtp-sink writes LF line ends and its own Received first; ours follows, then the message.
    assert.match(dump, /X-Mail-Args: <a@example\.org>/);
    assert.match(dump, /X-Rcpt-Args: <b@example\.net>/);
    assert.match(
      dump,
      /Received: from client\.example \(\[127\.0\.0\.1\]\)\n\tby mx\.example \(SSG\) with ESMTP id R0\.1\n\tfor <b@example\.net>; .+\nFrom: a@example\.org\nSubject: real peers\n\n\.leading dot\nsecond line\n/,
    );
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "swaks sees smtp-sink's own refusal of a recipient, with its code",
  ignore: !ready,
  async fn() {
    const dir = await tempDir();
    const sink = await startSink(dir, ["-f", "RCPT"]);
    const gw = startGateway(sink.port, new MemoryLog());
    let out = "";
    try {
      const r = await run("swaks", [
        "--server",
        `127.0.0.1:${gw.port}`,
        "--from",
        "a@example.org",
        "--to",
        "b@example.net",
      ]);
      out = r.out;
      assert.notEqual(r.code, 0);
    } finally {
      await gw.stop();
      await sink.stop();
    }
    const refusal = /<\*\* (5\d\d) (\S+) /.exec(out);
    assert.ok(refusal, out);
    assert.equal(refusal[1][0], "5");
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "Measurement: smtp-source sends 200 messages through the session to smtp-sink, none lost",
  ignore: !ready,
  async fn() {
    const dir = await tempDir();
    const sink = await startSink(dir);
    const gw = startGateway(sink.port, new MemoryLog());
    let sums: SessionSummary[] = [];
    const t0 = performance.now();
    try {
      // 4 parallel sessions, 200 messages of 10 KB, 2 recipients each.
      const r = await run("smtp-source", [
        "-s",
        "4",
        "-m",
        "200",
        "-l",
        "10000",
        "-r",
        "2",
        "-f",
        "a@example.org",
        "-t",
        "b@example.net",
        `127.0.0.1:${gw.port}`,
      ]);
      assert.equal(r.code, 0, r.out);
    } finally {
      sums = await gw.stop();
      await sink.stop();
    }
    const ms = performance.now() - t0;
    const forwarded = sums.reduce((n, s) => n + s.forwarded, 0);
    assert.equal(forwarded, 200);
    const dump = await Deno.readTextFile(`${dir}/dump`);
    assert.equal(dump.split("\nX-Mail-Args: ").length - 1, 200);
    console.log(
      `200 messages (10 KB, 4 sessions) in ${ms.toFixed(0)} ms: ${
        (200 / (ms / 1000)).toFixed(0)
      } msg/s`,
    );
    await Deno.remove(dir, { recursive: true });
  },
});
