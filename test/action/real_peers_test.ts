/**
 * The action modules against a real SMTP server: Postfix's smtp-sink on 127.0.0.1 receives an
 * admin alert built from an injection-laden message, and a quarantine release. smtp-sink dumps
 * each message with its own X-Client-*, X-Mail-Args, X-Rcpt-Args and Received fields first, and
 * LF line ends. Skipped when smtp-sink or timeout is missing. Loopback only; the sink is bounded
 * by `timeout` and killed at the end.
 */
import assert from "node:assert/strict";
import { AlertMailer } from "../../src/action/alert_mailer.ts";
import { ALERT_HEADER_NAMES } from "../../src/action/alert_message.ts";
import { QuarantineStore } from "../../src/action/quarantine_store.ts";
import { denoConnect, sendMessage } from "../../src/action/send_message.ts";
import { MemoryLog } from "../../src/log/log.ts";
import { bytes, canRun, envelope, RELAY, uid } from "./helpers.ts";

function has(bin: string): boolean {
  return ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"].some((d) => {
    try {
      Deno.statSync(`${d}/${bin}`);
      return true;
    } catch {
      return false;
    }
  });
}

const ready = canRun && uid !== undefined && has("smtp-sink") && has("timeout");

async function startSink(dir: string) {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  const child = new Deno.Command("timeout", {
    args: [
      "30",
      "smtp-sink",
      ...(uid === 0 ? ["-u", "nobody"] : []),
      "-D",
      `${dir}/dump`,
      `127.0.0.1:${port}`,
      "5",
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  for (let i = 0; i < 100; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    port,
    async dump(): Promise<string> {
      for (let i = 0; i < 50; i++) {
        try {
          const t = await Deno.readTextFile(`${dir}/dump`);
          if (t.length > 0) return t;
        } catch { /* not yet */ }
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error("smtp-sink wrote no dump");
    },
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await child.status;
    },
  };
}

/** Splits smtp-sink's dump into its own fields (up to and including Received) and the message. */
function splitDump(dump: string): { sink: string[]; message: string } {
  const lines = dump.split("\n");
  let i = 0;
  const sink: string[] = [];
  while (i < lines.length && !lines[i].startsWith("Received:")) sink.push(lines[i++]);
  i++;
  while (i < lines.length && /^[ \t]/.test(lines[i])) i++;
  return { sink, message: lines.slice(i).join("\n") };
}

async function sinkDir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "ssg-action-sink-" });
  await Deno.chmod(dir, 0o777); // smtp-sink writes as nobody
  return dir;
}

Deno.test({
  name: "An alert reaches smtp-sink with the null sender and exactly the expected header fields",
  ignore: !ready,
  async fn() {
    const dir = await sinkDir();
    const sink = await startSink(dir);
    try {
      const m = new AlertMailer({
        config: {
          to: ["postmaster@corp.example"],
          relay: { host: "127.0.0.1", port: sink.port },
          from: "ssg@gateway.example",
          rate: { count: 10, seconds: 3600 },
        },
        hostname: "gateway.example",
        connect: denoConnect,
        relay: RELAY,
        log: new MemoryLog(),
      });
      const hostile = bytes(
        "Subject: =?UTF-8?Q?win=0D=0ABcc:_victim@example.org=0D=0A?= \x00 " + "A".repeat(10_000) +
          "\r\nFrom: =?UTF-8?B?" + btoa("x\r\nTo: victim@example.org") +
          "?= <s@example.org>\r\n\r\nbody\r\n",
      );
      const out = await m.alert({
        rule: "spam-words",
        verdict: {
          action: "discard",
          rule: "spam-words",
          evidence: "line1\r\nBcc: victim@example.org\nline3",
        },
        envelope: envelope({ helo: "evil\r\nBcc: victim@example.org" }),
        message: hostile,
      });
      assert.equal(out.mail, "sent", JSON.stringify(out.reply));
      const { sink: sinkFields, message } = splitDump(await sink.dump());
      assert.ok(sinkFields.includes("X-Mail-Args: <>"), sinkFields.join("|")); // the null sender
      assert.ok(sinkFields.includes("X-Rcpt-Args: <postmaster@corp.example>"));
      const head = message.slice(0, message.indexOf("\n\n"));
      const names = head.split("\n").filter((l) => !/^[ \t]/.test(l)).map((l) =>
        l.slice(0, l.indexOf(":"))
      );
      assert.deepEqual(names, [...ALERT_HEADER_NAMES]);
      assert.ok(!/^(Bcc|To: victim)/im.test(head.replace(/^To: postmaster@corp\.example$/m, "")));
      assert.ok(m.isOwnAlert(bytes(message.replaceAll("\n", "\r\n"))));
    } finally {
      await sink.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "A quarantine release reaches smtp-sink with the original envelope and content",
  ignore: !ready,
  async fn() {
    const dir = await sinkDir();
    const sink = await startSink(dir);
    try {
      const store = new QuarantineStore(`${dir}/q`);
      const original = "Subject: held\r\nFrom: s@example.org\r\n\r\n.leading dot\r\nline 2\r\n";
      const id = await store.store(
        bytes(original),
        envelope({ mailFrom: "orig@example.org", rcptTo: ["a@corp.example", "b@corp.example"] }),
        { action: "quarantine", rule: "held" },
      );
      const r = await store.release(id, (message, env) =>
        sendMessage(
          {
            server: { host: "127.0.0.1", port: sink.port },
            hostname: "gateway.example",
            connect: denoConnect,
            relay: RELAY,
          },
          env,
          message,
        ));
      assert.equal(r.code, 250);
      const { sink: sinkFields, message } = splitDump(await sink.dump());
      // smtp-sink does not advertise SIZE, so the client sends no SIZE= (RFC 1870 §6).
      assert.ok(sinkFields.includes("X-Mail-Args: <orig@example.org>"), sinkFields.join("|"));
      assert.ok(sinkFields.includes("X-Rcpt-Args: <a@corp.example>"));
      assert.ok(sinkFields.includes("X-Rcpt-Args: <b@corp.example>"));
      assert.ok(message.startsWith(original.replaceAll("\r\n", "\n")), JSON.stringify(message));
      assert.deepEqual(await store.list(), []);
    } finally {
      await sink.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
