import assert from "node:assert/strict";
import { type AlertConfig, AlertConfigError, AlertMailer } from "../../src/action/alert_mailer.ts";
import { ALERT_HEADER_NAMES } from "../../src/action/alert_message.ts";
import { MemoryLog } from "../../src/log/log.ts";
import { FakeSmtpServer } from "./fake_smtp_server.ts";
import { bytes, envelope, headerNames, loopbackConnect, RELAY, text } from "./helpers.ts";

const MESSAGE = bytes("Subject: win a lottery\r\nFrom: s@example.org\r\n\r\nbody\r\n");

function config(over: Partial<AlertConfig> = {}): AlertConfig {
  return {
    to: ["postmaster@corp.example"],
    relay: { host: "198.51.100.25", port: 25 },
    from: "ssg@gateway.example",
    rate: { count: 3, seconds: 3600 },
    ...over,
  };
}

function mailer(server: FakeSmtpServer, over: Partial<AlertConfig> = {}, now = () => 0) {
  const log = new MemoryLog();
  const m = new AlertMailer({
    config: config(over),
    hostname: "gateway.example",
    connect: loopbackConnect(server.port),
    relay: RELAY,
    log,
    now,
  });
  return { m, log };
}

const ALERT = {
  rule: "spam-words",
  verdict: { action: "discard" as const, rule: "spam-words", evidence: "subject contains lottery" },
  envelope: envelope(),
  message: MESSAGE,
};

Deno.test("AlertMailer.alert() mails the admins with the null sender through the relay", async () => {
  const server = FakeSmtpServer.start();
  try {
    const { m, log } = mailer(server, { to: ["postmaster@corp.example", "sec@corp.example"] });
    const out = await m.alert(ALERT);
    assert.equal(out.mail, "sent");
    assert.equal(out.webhook, undefined);
    assert.equal(server.transactions.length, 1);
    const tx = server.transactions[0];
    assert.equal(tx.mailFrom, ""); // MAIL FROM:<>
    assert.match(tx.mailLine, /^MAIL FROM:<> SIZE=\d+$/);
    assert.deepEqual(tx.rcptTo, ["postmaster@corp.example", "sec@corp.example"]);
    assert.equal(tx.helo, "gateway.example");
    const wire = text(tx.data);
    assert.deepEqual(headerNames(wire), [...ALERT_HEADER_NAMES]);
    assert.ok(m.isOwnAlert(tx.data));
    assert.ok(!m.isOwnAlert(MESSAGE));
    assert.equal(log.named("action.alert.sent").length, 1);
    assert.equal(log.named("action.alert.sent")[0].fields.message_id, out.messageId);
  } finally {
    await server.close();
  }
});

Deno.test("AlertMailer.alert() rate limit at limit-1/limit/limit+1, summarised in the next alert", async () => {
  for (const [alerts, sent] of [[2, 2], [3, 3], [4, 3]]) {
    const server = FakeSmtpServer.start();
    try {
      let now = 0;
      const { m, log } = mailer(server, { rate: { count: 3, seconds: 3600 } }, () => now);
      const outcomes = [];
      for (let i = 0; i < alerts; i++) outcomes.push((await m.alert(ALERT)).mail);
      assert.equal(server.transactions.length, sent, `${alerts} alerts`);
      assert.equal(outcomes.filter((o) => o === "suppressed").length, alerts - sent);
      assert.equal(log.named("action.alert.suppressed").length, alerts - sent);
      // Another rule has its own bucket.
      assert.equal((await m.alert({ ...ALERT, rule: "other" })).mail, "sent");
      if (alerts > sent) {
        now += 3600_000 / 3; // one token later
        const next = await m.alert(ALERT);
        assert.equal(next.mail, "sent");
        assert.equal(next.summarised, alerts - sent);
        const body = text(server.transactions.at(-1)!.data);
        assert.match(body, /1 earlier alert\(s\) for this rule were not sent/);
      }
    } finally {
      await server.close();
    }
  }
});

Deno.test("AlertMailer.alert() reports a relay that refuses or is down, and never throws", async () => {
  const refusing = FakeSmtpServer.start({ rcpt: () => "550 5.1.1 unknown" });
  try {
    const { m, log } = mailer(refusing);
    const out = await m.alert(ALERT);
    assert.equal(out.mail, "failed");
    assert.equal(out.reply?.code, 550);
    assert.equal(log.named("action.alert.failed").length, 1);
  } finally {
    await refusing.close();
  }
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  const log = new MemoryLog();
  const m = new AlertMailer({
    config: config(),
    hostname: "gateway.example",
    connect: loopbackConnect(port),
    relay: RELAY,
    log,
  });
  const out = await m.alert(ALERT);
  assert.equal(out.mail, "failed");
  assert.equal(out.reply?.code, 451);
});

Deno.test("AlertMailer posts the webhook JSON with cleaned facts", async () => {
  const server = FakeSmtpServer.start();
  const posts: { body: Record<string, unknown>; type: string | null }[] = [];
  const ac = new AbortController();
  const http = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
    async (req) => {
      posts.push({ body: await req.json(), type: req.headers.get("content-type") });
      return new Response("ok");
    },
  );
  try {
    const { m, log } = mailer(server, {
      webhook: { url: `http://127.0.0.1:${http.addr.port}/hook`, timeoutSeconds: 5 },
    });
    const out = await m.alert({
      ...ALERT,
      message: bytes("Subject: =?UTF-8?Q?a=0D=0Ab?=\r\n\r\nx\r\n"),
    });
    assert.equal(out.mail, "sent");
    assert.equal(out.webhook, "sent");
    assert.equal(posts.length, 1);
    assert.equal(posts[0].type, "application/json");
    const b = posts[0].body;
    assert.equal(b.event, "ssg.alert");
    assert.equal(b.rule, "spam-words");
    assert.equal(b.action, "discard");
    assert.equal(b.subject, "a b"); // decoded, CRLF cleaned
    assert.equal(b.messageId, out.messageId);
    assert.deepEqual(b.rcptTo, ["user@corp.example"]);
    assert.deepEqual(b.evidence, ["subject contains lottery"]);
    assert.equal(log.named("action.webhook.sent").length, 1);
  } finally {
    ac.abort();
    await http.finished;
    await server.close();
  }
});

Deno.test("AlertMailer webhook: a stalled endpoint times out, an error status fails, the mail still goes", async () => {
  const server = FakeSmtpServer.start();
  const ac = new AbortController();
  let release: () => void = () => {};
  const stalled = new Promise<void>((r) => release = r);
  const http = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
    async (req) => {
      if (new URL(req.url).pathname === "/slow") {
        await stalled;
        return new Response("late");
      }
      return new Response("no", { status: 500 });
    },
  );
  try {
    const base = `http://127.0.0.1:${http.addr.port}`;
    const slow = mailer(server, { webhook: { url: `${base}/slow`, timeoutSeconds: 0.3 } });
    const t0 = performance.now();
    const out = await slow.m.alert(ALERT);
    const ms = performance.now() - t0;
    assert.equal(out.webhook, "failed");
    assert.equal(out.mail, "sent");
    assert.ok(ms < 10_000, `webhook timeout took ${ms} ms`);
    assert.match(String(slow.log.named("action.webhook.failed")[0].fields.error), /Timeout|abort/i);

    const bad = mailer(server, { webhook: { url: `${base}/err`, timeoutSeconds: 5 } });
    const out2 = await bad.m.alert(ALERT);
    assert.equal(out2.webhook, "failed");
    assert.equal(bad.log.named("action.webhook.failed")[0].fields.status, 500);
  } finally {
    release();
    ac.abort();
    await http.finished;
    await server.close();
  }
});

Deno.test("AlertMailer refuses unusable configuration", () => {
  const base: AlertConfig = {
    to: ["a@corp.example"],
    relay: { host: "198.51.100.25", port: 25 },
    from: "ssg@gateway.example",
    rate: { count: 1, seconds: 60 },
  };
  const bad: Partial<AlertConfig>[] = [
    { to: [] },
    { to: ["no-at-sign"] },
    { to: ["a@b\r\nRCPT TO:<x@y>"] },
    { from: "SSG <ssg@gateway.example>" },
    { rate: { count: 0, seconds: 60 } },
    { webhook: { url: "not a url", timeoutSeconds: 1 } },
    { webhook: { url: "file:///etc/passwd", timeoutSeconds: 1 } },
  ];
  for (const over of bad) {
    assert.throws(
      () =>
        new AlertMailer({
          config: { ...base, ...over },
          hostname: "gw.example",
          connect: loopbackConnect(1),
          relay: RELAY,
          log: new MemoryLog(),
        }),
      AlertConfigError,
      JSON.stringify(over),
    );
  }
});
