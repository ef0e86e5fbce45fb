/**
 * Mirroring between real peers on loopback: the same Python smtplib client runs the same dialogue
 * straight to Postfix's smtp-sink and through a mirroring session, and must see the same thing —
 * greeting, EHLO name and keywords (less XCLIENT/XFORWARD, which SSG never passes on), DSN
 * parameters arriving verbatim, AUTH answered by the server, BDAT refused the same way when the
 * server has no CHUNKING. Skipped when smtp-sink or python3 is missing. Loopback only; every
 * process bounded by `timeout`.
 */
import assert from "node:assert/strict";
import { MemoryLog } from "../../src/log/log.ts";
import { ServerProfiles } from "../../src/smtp/server_profiles.ts";
import { serveSession } from "../../src/smtp/session.ts";
import { listenLoopback, recordingJudge, relayConfig, smtpConfig } from "./harness.ts";

function has(bin: string): boolean {
  for (const dir of ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/root/.pyenv/shims"]) {
    try {
      Deno.statSync(`${dir}/${bin}`);
      return true;
    } catch { /* not here */ }
  }
  return false;
}

const ready = has("smtp-sink") && has("python3") && has("timeout");

/** The client: one dialogue, its observations as JSON on stdout. */
const CLIENT = `
import json, smtplib, socket, sys, base64
port = int(sys.argv[1]); out = {}
s = smtplib.SMTP(timeout=10)
out["greeting"] = s.connect("127.0.0.1", port)[1].decode()
code, resp = s.ehlo("client.example")
lines = resp.decode().split("\\n")
out["ehlo_name"] = lines[0]
out["keywords"] = sorted(l.split(" ")[0].upper() for l in lines[1:] if l)
out["auth"] = s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\\0bob\\0pw").decode())[0]
r = s.sendmail("a@example.org", ["b@example.net"], b"Subject: dsn\\r\\n\\r\\nbody\\r\\n",
               mail_options=["RET=HDRS", "ENVID=QQ314159"],
               rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;b+40example.net"])
out["sent"] = r == {}
s.putcmd("BDAT", "5 LAST"); s.send(b"hello")
out["bdat"] = s.getreply()[0]
print(json.dumps(out))
`;

async function python(port: number): Promise<Record<string, unknown>> {
  const r = await new Deno.Command("timeout", {
    args: ["30", "python3", "-c", CLIENT, String(port)],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  assert.equal(r.code, 0, dec.decode(r.stderr));
  return JSON.parse(dec.decode(r.stdout));
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

Deno.test({
  name:
    "smtplib sees the same server straight and through a mirroring session (smtp-sink): greeting, name, keywords, DSN, AUTH, BDAT",
  ignore: !ready,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "ssg-mirror-" });
    await Deno.chmod(dir, 0o777);
    const port = freePort();
    const root = Deno.uid() === 0;
    const sink = new Deno.Command("timeout", {
      args: [
        "60",
        "smtp-sink",
        ...(root ? ["-u", "nobody"] : []),
        "-D",
        `${dir}/dump`,
        `127.0.0.1:${port}`,
        "20",
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    const profiles = new ServerProfiles();
    const log = new MemoryLog();
    const gw = listenLoopback((conn, i) => {
      const remote = conn.remoteAddr as Deno.NetAddr;
      return serveSession(conn, {
        id: `M${i}`,
        client: { ip: remote.hostname, port: remote.port },
        server: { ip: "127.0.0.1", port },
        hostname: "mx.example",
        smtp: smtpConfig(),
        relay: relayConfig({ connectTimeout: 5, replyTimeout: 10, dataTimeout: 10 }),
        judge: recordingJudge(),
        log,
        connectUpstream: (s) => Deno.connect({ hostname: s.ip, port: s.port }),
        shutdown: new AbortController().signal,
        profiles,
      });
    }, 100);
    try {
      for (let i = 0; i < 50; i++) {
        try {
          (await Deno.connect({ hostname: "127.0.0.1", port })).close();
          break;
        } catch {
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      const direct = await python(port);
      const through = await python(gw.port);
      assert.equal(through.greeting, direct.greeting);
      assert.equal(through.ehlo_name, direct.ehlo_name);
      const relayable = (k: unknown) =>
        (k as string[]).filter((w) => w !== "XCLIENT" && w !== "XFORWARD" && w !== "SIZE");
      assert.deepEqual(relayable(through.keywords), relayable(direct.keywords));
      assert.equal(through.auth, direct.auth);
      assert.equal(through.sent, true);
      assert.equal(direct.sent, true);
      assert.equal(
        through.bdat,
        521,
        "smtp-sink offers no CHUNKING: refused and closed, never parsed",
      );
    } finally {
      await gw.stop();
      try {
        sink.kill("SIGTERM");
      } catch { /* gone */ }
      await sink.status;
    }
    const dump = await Deno.readTextFile(`${dir}/dump`);
    // Both deliveries carry the DSN parameters verbatim: direct and through SSG.
    assert.equal(
      dump.split("X-Mail-Args: <a@example.org> RET=HDRS ENVID=QQ314159").length - 1,
      2,
      dump,
    );
    assert.equal(
      dump.split("X-Rcpt-Args: <b@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40example.net")
        .length - 1,
      2,
      dump,
    );
    await Deno.remove(dir, { recursive: true });
  },
});

/** Milliseconds from connect to the complete 220 greeting on `port`. */
async function timeToGreeting(port: number): Promise<number> {
  const t0 = performance.now();
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  const buf = new Uint8Array(1024);
  let got = "";
  while (!got.endsWith("\r\n")) {
    const n = await c.read(buf);
    if (n === null) break;
    got += new TextDecoder().decode(buf.subarray(0, n));
  }
  const ms = performance.now() - t0;
  await c.write(new TextEncoder().encode("QUIT\r\n"));
  await c.read(buf).catch(() => null);
  c.close();
  assert.match(got, /^220 /);
  return ms;
}

Deno.test({
  name:
    "Measurement: time to greeting through a mirroring session, first contact vs a cached profile (smtp-sink)",
  ignore: !ready,
  async fn() {
    const port = freePort();
    const root = Deno.uid() === 0;
    const sink = new Deno.Command("timeout", {
      args: ["60", "smtp-sink", ...(root ? ["-u", "nobody"] : []), `127.0.0.1:${port}`, "20"],
      stdout: "null",
      stderr: "null",
    }).spawn();
    let profiles = new ServerProfiles();
    const gw = listenLoopback((conn, i) => {
      const remote = conn.remoteAddr as Deno.NetAddr;
      return serveSession(conn, {
        id: `G${i}`,
        client: { ip: remote.hostname, port: remote.port },
        server: { ip: "127.0.0.1", port },
        hostname: "mx.example",
        smtp: smtpConfig(),
        relay: relayConfig({ connectTimeout: 5, replyTimeout: 10, dataTimeout: 10 }),
        judge: recordingJudge(),
        log: new MemoryLog(),
        connectUpstream: (s) => Deno.connect({ hostname: s.ip, port: s.port }),
        shutdown: new AbortController().signal,
        profiles,
      });
    }, 200);
    const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    try {
      for (let i = 0; i < 50; i++) {
        try {
          (await Deno.connect({ hostname: "127.0.0.1", port })).close();
          break;
        } catch {
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      const direct: number[] = [];
      const first: number[] = [];
      const cached: number[] = [];
      for (let i = 0; i < 20; i++) direct.push(await timeToGreeting(port));
      for (let i = 0; i < 20; i++) {
        profiles = new ServerProfiles(); // every session a first contact
        first.push(await timeToGreeting(gw.port));
      }
      for (let i = 0; i < 20; i++) cached.push(await timeToGreeting(gw.port));
      console.log(
        `median of 20, time to greeting: direct ${median(direct).toFixed(2)} ms, through SSG ` +
          `first contact ${median(first).toFixed(2)} ms, cached profile ${
            median(cached).toFixed(2)
          } ms`,
      );
      assert.ok(median(cached) < median(first) + 50);
    } finally {
      await gw.stop();
      try {
        sink.kill("SIGTERM");
      } catch { /* gone */ }
      await sink.status;
    }
  },
});
