import assert from "node:assert/strict";
import {
  type BlacklistEntry,
  GatewayActions,
  type GatewayActionsOptions,
  quarantineFailureReply,
} from "../../src/action/action_runner.ts";
import type { AlertConfig } from "../../src/action/alert_mailer.ts";
import { QuarantineError, QuarantineStore } from "../../src/action/quarantine_store.ts";
import type { Effect, Verdict } from "../../src/action/verdict_types.ts";
import { MemoryLog } from "../../src/log/log.ts";
import { FakeSmtpServer } from "./fake_smtp_server.ts";
import { bytes, envelope, loopbackConnect, RELAY, tempDir, text } from "./helpers.ts";

const MESSAGE = bytes(
  "X-SSG-Verdict: clean\r\nSubject: lottery\r\nFrom: s@example.org\r\n\r\nbody\r\n",
);
const NOW = Date.parse("2026-11-27T10:00:00Z");

function actions(over: Partial<GatewayActionsOptions> = {}, port = 1) {
  const log = new MemoryLog();
  const blacklisted: BlacklistEntry[] = [];
  const blocked: [string, number][] = [];
  const a = new GatewayActions({
    hostname: "gateway.example",
    relay: RELAY,
    connect: loopbackConnect(port),
    log,
    addBlacklist: (e) => blacklisted.push(e),
    onBlockClient: (ip, until) => blocked.push([ip, until]),
    now: () => NOW,
    ...over,
  });
  return { a, log, blacklisted, blocked };
}

/** Alerts go to "198.51.100.25:25", which `loopbackConnect` maps to the fake server. */
const ALERT_CONFIG: AlertConfig = {
  to: ["postmaster@corp.example"],
  relay: { host: "198.51.100.25", port: 25 },
  from: "ssg@gateway.example",
  rate: { count: 10, seconds: 3600 },
};

Deno.test("GatewayActions.transform() strips forged verdict headers and applies the tag", () => {
  const { a } = actions();
  const v: Verdict = {
    action: "forward",
    rule: "tagger",
    tag: { headers: [{ name: "X-Spam-Flag", value: "YES" }], subjectPrefix: "[SPAM] " },
  };
  assert.equal(
    text(a.transform(MESSAGE, v)),
    "X-Spam-Flag: YES\r\nSubject: [SPAM] lottery\r\nFrom: s@example.org\r\n\r\nbody\r\n",
  );
  // No tag: the strip still happens.
  assert.equal(
    text(a.transform(MESSAGE, { action: "forward" })),
    "Subject: lottery\r\nFrom: s@example.org\r\n\r\nbody\r\n",
  );
});

Deno.test("GatewayActions.transform() with an invalid tag name logs and forwards stripped", () => {
  const { a, log } = actions();
  const out = a.transform(MESSAGE, {
    action: "forward",
    rule: "r",
    tag: { headers: [{ name: "Bad Name", value: "x" }] },
  });
  assert.equal(text(out), "Subject: lottery\r\nFrom: s@example.org\r\n\r\nbody\r\n");
  assert.equal(log.named("action.tag.invalid").length, 1);
});

Deno.test("GatewayActions.quarantine() stores and logs; a failing store rejects so the session answers 4xx", async () => {
  const t = await tempDir();
  try {
    const { a, log } = actions({ quarantine: { dir: t.dir } });
    const v: Verdict = { action: "quarantine", rule: "q" };
    const id = await a.quarantine(MESSAGE, envelope(), v);
    assert.equal((await a.store!.show(id)).message.length, MESSAGE.length);
    assert.equal(log.named("action.quarantine")[0].fields.id, id);

    const failing = new QuarantineStore(`${t.dir}/f`, {
      fs: {
        writeFileSynced: () => Promise.reject(new Error("No space left on device (os error 28)")),
        syncDir: () => Promise.resolve(),
      },
    });
    const b = actions({ quarantine: failing });
    await assert.rejects(b.a.quarantine(MESSAGE, envelope(), v), QuarantineError);
    assert.equal(b.log.named("action.quarantine.failed")[0].fields.kind, "io");

    const none = actions();
    await assert.rejects(none.a.quarantine(MESSAGE, envelope(), v), QuarantineError);
  } finally {
    await t.remove();
  }
});

Deno.test("GatewayActions.deliver() redirects to the original server and returns the reply", async () => {
  const server = FakeSmtpServer.start();
  try {
    const { a, log } = actions({}, server.port);
    const r = await a.deliver(
      { kind: "redirect", to: ["quarantine@corp.example"] },
      MESSAGE,
      envelope(),
    );
    assert.deepEqual(r, { code: 250, text: "2.0.0 queued" });
    assert.deepEqual(server.transactions[0].rcptTo, ["quarantine@corp.example"]);
    assert.equal(log.named("action.deliver")[0].fields.server, "198.51.100.25:25");
  } finally {
    await server.close();
  }
});

Deno.test("GatewayActions.after() blacklists: state hook, packet block for client IPs, allowlist wins", async () => {
  const allow = new Set(["192.0.2.10"]);
  const { a, blacklisted, blocked, log } = actions({
    isAllowlisted: (key, value) => key === "client_ip" && allow.has(value),
  });
  const effects: Effect[] = [
    { type: "blacklist", key: "client_ip", value: "203.0.113.66", seconds: 86400, rule: "trap" },
    { type: "blacklist", key: "sender", value: "s@example.org", seconds: 3600, rule: "trap" },
    { type: "blacklist", key: "client_ip", value: "192.0.2.10", seconds: 60, rule: "trap" },
    { type: "blacklist", key: "sender_domain", value: "", seconds: 60, rule: "trap" },
  ];
  a.after({ action: "discard", rule: "trap", effects }, envelope(), { code: 250 }, MESSAGE);
  await a.settled();
  assert.deepEqual(blacklisted, [
    { key: "client_ip", value: "203.0.113.66", untilMs: NOW + 86400_000, rule: "trap" },
    { key: "sender", value: "s@example.org", untilMs: NOW + 3600_000, rule: "trap" },
  ]);
  assert.deepEqual(blocked, [["203.0.113.66", NOW + 86400_000]]);
  assert.equal(log.named("action.blacklist.skipped").length, 2);
});

Deno.test("GatewayActions.after() records the verdict and runs the threshold's effects", async () => {
  const server = FakeSmtpServer.start();
  try {
    const recorded: string[] = [];
    const { a, blocked } = actions({
      alert: ALERT_CONFIG,
      record: (v) => {
        recorded.push(v.action);
        return [
          {
            type: "blacklist",
            key: "client_ip",
            value: "203.0.113.5",
            seconds: 60,
            rule: "repeat-offender",
          },
          {
            type: "alert",
            rule: "repeat-offender",
            evidence: "3 discards from 203.0.113.5 within 1h",
          },
        ];
      },
    }, server.port);
    a.after({ action: "discard", rule: "spam" }, envelope(), { code: 250 }, MESSAGE);
    await a.settled();
    assert.deepEqual(recorded, ["discard"]);
    assert.deepEqual(blocked, [["203.0.113.5", NOW + 60_000]]);
    assert.equal(server.transactions.length, 1);
    const alert = text(server.transactions[0].data);
    assert.match(alert, /repeat-offender/);
    assert.match(alert, /^Why:\r\n> 3 discards from 203\.0\.113\.5 within 1h\r\n/m);
  } finally {
    await server.close();
  }
});

Deno.test("GatewayActions.after() does not count a transaction the client will retry", async () => {
  const recorded: [string, number][] = [];
  const { a } = actions({ record: (v) => (recorded.push([v.action, 0]), []) });
  a.after({ action: "quarantine", rule: "q" }, envelope(), { code: 451 }, MESSAGE); // disk full
  a.after({ action: "forward" }, envelope(), { code: 421 }, MESSAGE); // server down
  a.after(
    { action: "tempfail", rule: "t", reply: { code: 451, enhanced: "4.7.1", text: "later" } },
    envelope(),
    { code: 451 },
    MESSAGE,
  );
  a.after(
    { action: "reject", rule: "r", reply: { code: 550, enhanced: "5.7.1", text: "no" } },
    envelope(),
    { code: 550 },
    MESSAGE,
  );
  await a.settled();
  assert.deepEqual(recorded.map((r) => r[0]), ["tempfail", "reject"]);
});

Deno.test("GatewayActions.after() alerts once per rule and names the quarantine entry", async () => {
  const server = FakeSmtpServer.start();
  const t = await tempDir();
  try {
    const { a } = actions(
      { alert: ALERT_CONFIG, quarantine: { dir: t.dir } },
      server.port,
    );
    const v: Verdict = {
      action: "quarantine",
      rule: "q",
      effects: [{ type: "alert", rule: "q" }, { type: "alert", rule: "q" }, {
        type: "alert",
        rule: "other",
      }],
    };
    const env = envelope({ transactionId: "s9.t3" });
    const id = await a.quarantine(MESSAGE, env, v);
    a.after(v, env, { code: 250 }, MESSAGE);
    await a.settled();
    assert.equal(server.transactions.length, 2);
    const bodies = server.transactions.map((tx) => text(tx.data)).join("\n");
    assert.ok(bodies.includes(`Quarantine id:  ${id}`));
  } finally {
    await server.close();
    await t.remove();
  }
});

Deno.test("GatewayActions.after() never alerts about its own returning alert", async () => {
  const server = FakeSmtpServer.start();
  try {
    const { a, log } = actions({ alert: ALERT_CONFIG }, server.port);
    a.after({ action: "discard", rule: "r", effects: [{ type: "alert", rule: "r" }] }, envelope(), {
      code: 250,
    }, MESSAGE);
    await a.settled();
    assert.equal(server.transactions.length, 1);
    const alert = server.transactions[0].data;
    // The alert comes back through the gateway and matches a rule that alerts again.
    a.after({ action: "discard", rule: "r", effects: [{ type: "alert", rule: "r" }] }, envelope(), {
      code: 250,
    }, alert);
    await a.settled();
    assert.equal(server.transactions.length, 1);
    assert.equal(log.named("action.alert.loop").length, 1);
  } finally {
    await server.close();
  }
});

Deno.test("GatewayActions.after() never throws, whatever the hooks do", async () => {
  const { a, log } = actions({
    record: () => {
      throw new Error("counter store broken");
    },
    addBlacklist: () => {
      throw new Error("state store broken");
    },
    onBlockClient: () => {
      throw new Error("divert broken");
    },
  });
  a.after(
    {
      action: "discard",
      rule: "r",
      effects: [
        { type: "blacklist", key: "client_ip", value: "203.0.113.66", seconds: 60, rule: "r" },
        { type: "alert", rule: "r" }, // no mailer configured
      ],
    },
    envelope(),
    { code: 250 },
    MESSAGE,
  );
  await a.settled();
  for (
    const name of [
      "action.record.failed",
      "action.blacklist.failed",
      "action.block.failed",
      "action.alert.unconfigured",
    ]
  ) {
    assert.equal(log.named(name).length, 1, name);
  }
});

Deno.test("quarantineFailureReply() is 452 4.3.1 when full, 451 4.3.0 otherwise, never 2xx", () => {
  assert.equal(quarantineFailureReply(new QuarantineError("full", "full")).code, 452);
  assert.equal(quarantineFailureReply(new QuarantineError("full", "full")).enhanced, "4.3.1");
  for (const e of [new QuarantineError("io", "x"), new Error("x"), "x", undefined]) {
    const r = quarantineFailureReply(e);
    assert.equal(r.code, 451);
    assert.equal(r.enhanced, "4.3.0");
  }
});
