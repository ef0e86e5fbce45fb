import assert from "node:assert/strict";
import { parseConfig } from "../../src/config/load_config.ts";
import { MemoryLog } from "../../src/log/log.ts";
import { BLACKLIST_REPLY, PolicyEngine } from "../../src/policy/policy_engine.ts";
import type { Envelope, Verdict } from "../../src/policy/verdict.ts";
import { StateStore } from "../../src/state/state_store.ts";

const enc = new TextEncoder();
const SPAM = enc.encode("Subject: WIN the lottery\r\n\r\ncheap pills inside\r\n");
const CLEAN = enc.encode("Subject: minutes\r\n\r\nthe meeting notes\r\n");
const ENV: Envelope = {
  mailFrom: "alice@sender.example",
  rcptTo: ["bob@corp.example"],
  client: { ip: "203.0.113.5", port: 40000 },
  server: { ip: "198.51.100.25", port: 25 },
  helo: "mail.sender.example",
  tls: false,
  sessionId: "S1",
  transactionId: "S1.1",
};

function engineFor(body: string, opts: { state?: StateStore; now?: () => number } = {}) {
  const cfg = parseConfig(`gateway:\n  protect: [198.51.100.0/24]\n${body}`, "t.yaml");
  const log = new MemoryLog();
  return { engine: new PolicyEngine(cfg, log, opts), log };
}

const RULES = `rules:
  - name: tag-lottery
    when: { subject: { contains: lottery } }
    action: [tag, alert]
    tag: { header: "X-Spam-Flag: YES", subject_prefix: "[SPAM] " }
  - name: archive
    when: { subject: { contains: win } }
    action: bcc
    bcc: { to: [archive@corp.example], server: "198.51.100.27:25" }
  - name: try-pills
    mode: observe
    when: { body: { contains: pills } }
    action: reject
  - name: pills
    when: { body: { contains: pills } }
    action: [quarantine, blacklist]
    blacklist: { key: sender, for: 1h }
  - name: after
    when: { body: { contains: inside } }
    action: [discard, alert]
`;

Deno.test("precedence: non-terminal actions accumulate until the first terminal rule, which decides", async () => {
  const { engine } = engineFor(RULES);
  const v = await engine.judge(SPAM, ENV);
  assert.deepEqual(
    v,
    {
      action: "quarantine",
      rule: "pills",
      evidence: 'body contains "pills"',
      tag: { headers: [{ name: "X-Spam-Flag", value: "YES" }], subjectPrefix: "[SPAM] " },
      effects: [
        { type: "alert", rule: "tag-lottery", evidence: 'subject contains "lottery"' },
        {
          type: "blacklist",
          key: "sender",
          value: "alice@sender.example",
          seconds: 3600,
          rule: "pills",
          evidence: 'body contains "pills"',
        },
      ],
      observed: ["try-pills"],
    } satisfies Verdict,
  );
  engine.close();
});

Deno.test("precedence: with no terminal match the message is forwarded with what accumulated", async () => {
  const { engine } = engineFor(
    RULES.replace(
      "body: { contains: pills } }\n    action: [quarantine",
      "body: { contains: nothing-here } }\n    action: [quarantine",
    ).replace("contains: inside", "contains: nothing"),
  );
  const v = await engine.judge(SPAM, ENV);
  assert.equal(v.action, "forward");
  assert.equal(v.rule, undefined);
  assert.deepEqual(v.deliveries, [{
    kind: "bcc",
    to: ["archive@corp.example"],
    server: { host: "198.51.100.27", port: 25 },
  }]);
  assert.equal(v.tag?.subjectPrefix, "[SPAM] ");
  assert.match(
    v.evidence!,
    /tag-lottery: subject contains "lottery"; archive: subject contains "win"/,
  );
  engine.close();
});

Deno.test("precedence: a reject, tempfail or discard verdict carries no tag and no deliveries", async () => {
  for (const action of ["reject", "tempfail", "discard"]) {
    const { engine } = engineFor(`rules:
  - name: t
    when: { subject: { contains: lottery } }
    action: [tag, bcc]
    tag: { header: "X-T: 1" }
    bcc: { to: [a@corp.example] }
  - name: d
    when: { subject: { contains: lottery } }
    action: [${action}, alert]
`);
    const v = await engine.judge(SPAM, ENV);
    assert.equal(v.action, action);
    assert.equal(v.tag, undefined);
    assert.equal(v.deliveries, undefined);
    assert.deepEqual(v.effects, [{
      type: "alert",
      rule: "d",
      evidence: 'subject contains "lottery"',
    }]);
    engine.close();
  }
});

Deno.test("precedence: redirect is forward with a redirect delivery; tempfail uses its 4xx reply", async () => {
  const { engine } = engineFor(`rules:
  - name: hold
    when: { subject: { contains: minutes } }
    action: tempfail
    reply: { code: 452, text: "Busy" }
  - name: divert
    when: { subject: { contains: lottery } }
    action: redirect
    redirect: { to: [quarantine@corp.example] }
`);
  assert.deepEqual(await engine.judge(SPAM, ENV), {
    action: "forward",
    rule: "divert",
    evidence: 'subject contains "lottery"',
    deliveries: [{ kind: "redirect", to: ["quarantine@corp.example"] }],
  });
  const t = await engine.judge(CLEAN, ENV);
  assert.equal(t.action, "tempfail");
  assert.deepEqual(t.action === "tempfail" && t.reply, {
    code: 452,
    enhanced: "4.7.1",
    text: "Busy",
  });
  engine.close();
});

Deno.test("precedence: the static allowlist wins over the blacklist, spamtraps and every rule", async () => {
  const { engine } = engineFor(`allowlist:
  clients: [203.0.113.0/28]
blacklist:
  clients: [203.0.113.5]
spamtraps:
  addresses: [bob@corp.example]
rules:
  - name: all
    when: { subject: { contains: lottery } }
    action: discard
`);
  const v = await engine.judge(SPAM, ENV);
  assert.deepEqual(v, {
    action: "forward",
    rule: "allowlist",
    evidence: "client 203.0.113.5 is in 203.0.113.0/28",
  });
  assert.equal(engine.isAllowlisted("client_ip", "203.0.113.9"), true);
  assert.equal(engine.isAllowlisted("client_ip", "203.0.113.16"), false);
  engine.close();
});

Deno.test("precedence: allowlisted senders (address or @domain) are forwarded; others are not", async () => {
  const { engine } = engineFor(`allowlist:
  senders: ["boss@partner.example", "@friends.example"]
rules:
  - name: all
    when: { subject: { contains: lottery } }
    action: discard
`);
  const cases: [string, string][] = [
    ["boss@partner.example", "forward"],
    ["BOSS@Partner.Example", "forward"],
    ["intern@partner.example", "discard"],
    ["anyone@friends.example", "forward"],
    ["anyone@sub.friends.example", "discard"],
    ["", "discard"],
  ];
  for (const [from, action] of cases) {
    assert.equal((await engine.judge(SPAM, { ...ENV, mailFrom: from })).action, action, from);
  }
  assert.equal(engine.isAllowlisted("sender", "boss@partner.example"), true);
  assert.equal(engine.isAllowlisted("sender_domain", "friends.example"), true);
  engine.close();
});

Deno.test("precedence: static and dynamic blacklists reject 554 5.7.1 before any rule", async () => {
  const state = StateStore.open(":memory:");
  const now = Date.UTC(2026, 10, 27);
  const { engine } = engineFor(
    `blacklist:
  clients: [192.0.2.0/24]
  senders: ["@spam.example"]
rules:
  - name: forward-all
    when: { subject: { contains: "" } }
    action: forward
`.replace(`{ contains: "" }`, `{ contains: "e" }`),
    { state, now: () => now },
  );
  const reject = (v: Verdict) =>
    v.action === "reject" && v.rule === "blacklist" ? v.reply : undefined;
  assert.deepEqual(
    reject(await engine.judge(CLEAN, { ...ENV, client: { ip: "192.0.2.9", port: 1 } })),
    BLACKLIST_REPLY,
  );
  assert.deepEqual(
    reject(await engine.judge(CLEAN, { ...ENV, mailFrom: "x@spam.example" })),
    BLACKLIST_REPLY,
  );
  assert.equal((await engine.judge(CLEAN, ENV)).action, "forward");
  state.addEntry("blacklist", "client_ip", "203.0.113.5", now + 60_000, "t", now);
  const v = await engine.judge(CLEAN, ENV);
  assert.equal(v.action, "reject");
  assert.match(v.evidence!, /client 203\.0\.113\.5 is on the dynamic blacklist \(by t/);
  // Expired: forwarded again.
  const later = engineFor(`rules: []\n`, { state, now: () => now + 60_000 }).engine;
  assert.equal((await later.judge(CLEAN, ENV)).action, "forward");
  assert.deepEqual(engine.staticBlockedClients(), ["192.0.2.0/24"]);
  engine.close();
  state.close();
});

Deno.test("precedence: a spamtrap recipient discards and blacklists sender and client; the null sender only the client", async () => {
  const { engine } = engineFor(`spamtraps:
  addresses: [trap@corp.example]
  blacklist_for: 2h
rules:
  - name: fwd
    when: { subject: { contains: minutes } }
    action: forward
`);
  const v = await engine.judge(CLEAN, {
    ...ENV,
    rcptTo: ["bob@corp.example", "Trap@Corp.Example"],
  });
  assert.equal(v.action, "discard");
  assert.equal(v.rule, "spamtrap");
  assert.deepEqual(v.effects?.map((e) => e.type === "blacklist" && [e.key, e.value, e.seconds]), [
    ["client_ip", "203.0.113.5", 7200],
    ["sender", "alice@sender.example", 7200],
  ]);
  const n = await engine.judge(CLEAN, { ...ENV, mailFrom: "", rcptTo: ["trap@corp.example"] });
  assert.deepEqual(n.effects?.map((e) => e.type === "blacklist" && e.key), ["client_ip"]);
  engine.close();
});

Deno.test("precedence: an observe rule is only logged, with policy.observe, and named in observed", async () => {
  const { engine, log } = engineFor(`rules:
  - name: watch
    mode: observe
    when: { subject: { contains: lottery } }
    action: [discard, alert, blacklist]
    blacklist: { key: client_ip, for: 1h }
`);
  const v = await engine.judge(SPAM, ENV);
  assert.deepEqual(v, { action: "forward", evidence: undefined, observed: ["watch"] });
  assert.equal(log.named("policy.observe")[0].fields.would, "discard");
  engine.close();
});

Deno.test("record(): a threshold fires at at_least within the window, then counts again from zero", () => {
  const state = StateStore.open(":memory:");
  const { engine, log } = engineFor(
    `thresholds:
  - name: repeat-offender
    count: [discard, reject]
    key: client_ip
    at_least: 3
    within: 1h
    action: [blacklist, alert]
    blacklist: { for: 24h }
`,
    { state },
  );
  const t0 = Date.UTC(2026, 10, 27);
  const discard: Verdict = { action: "discard", rule: "r" };
  const fwd: Verdict = { action: "forward" };
  assert.deepEqual(engine.record(discard, ENV, undefined, t0), []);
  assert.deepEqual(engine.record(fwd, ENV, undefined, t0 + 1), [], "forward is not counted");
  assert.deepEqual(engine.record(discard, ENV, undefined, t0 + 2), []);
  const fired = engine.record(
    { action: "reject", rule: "r", reply: BLACKLIST_REPLY },
    ENV,
    undefined,
    t0 + 3,
  );
  assert.deepEqual(fired.map((e) => e.type), ["blacklist", "alert"]);
  assert.deepEqual(fired[0], {
    type: "blacklist",
    key: "client_ip",
    value: "203.0.113.5",
    seconds: 86400,
    rule: "repeat-offender",
    evidence: "client_ip 203.0.113.5: 3 × discard/reject within 3600s (threshold 3)",
  });
  assert.equal(log.named("policy.threshold").length, 1);
  assert.deepEqual(engine.record(discard, ENV, undefined, t0 + 4), [], "counting restarted");
  engine.close();
  state.close();
});

Deno.test("record(): verdicts spread wider than the window never fire (window − 1 ms, window, window + 1 ms)", () => {
  for (const [gap, fires] of [[3_599_999, true], [3_600_000, false], [3_600_001, false]] as const) {
    const { engine } = engineFor(`thresholds:
  - name: t
    count: [discard]
    key: sender_domain
    at_least: 2
    within: 1h
    action: [alert]
`);
    const t0 = Date.UTC(2026, 10, 27);
    engine.record({ action: "discard", rule: "r" }, ENV, undefined, t0);
    const e = engine.record({ action: "discard", rule: "r" }, ENV, undefined, t0 + gap);
    assert.equal(e.length === 1, fires, `gap ${gap}`);
    if (fires) {
      assert.deepEqual(e[0], {
        type: "alert",
        rule: "t",
        evidence: "sender_domain sender.example: 2 × discard within 3600s (threshold 2)",
      });
    }
    engine.close();
  }
});

Deno.test("record(): keys differ per threshold key (client_ip, sender, sender_domain); a null sender is not counted", () => {
  const { engine } = engineFor(`thresholds:
  - name: by-sender
    count: [discard]
    key: sender
    at_least: 2
    within: 1h
    action: [alert]
`);
  const d: Verdict = { action: "discard", rule: "r" };
  engine.record(d, ENV);
  assert.equal(engine.record(d, { ...ENV, mailFrom: "other@sender.example" }).length, 0);
  assert.equal(engine.record(d, { ...ENV, mailFrom: "" }).length, 0);
  assert.equal(engine.record(d, { ...ENV, mailFrom: "ALICE@sender.example" }).length, 1);
  engine.close();
});

Deno.test("a failing state store fails open while judging: logged, bulk not reached, lists empty", async () => {
  const state = StateStore.open(":memory:");
  const { engine, log } = engineFor(
    `rules:
  - name: bulk
    when: { bulk: { servers: 1, within: 10m } }
    action: discard
`,
    { state },
  );
  state.close(); // every call now throws StateError
  const v = await engine.judge(CLEAN, ENV);
  assert.equal(v.action, "forward");
  const ops = log.named("policy.state_failed").map((e) => e.fields.op);
  assert.ok(ops.includes("observe_bulk") && ops.includes("list_lookup"), ops.join());
  assert.throws(() =>
    engineFor(
      `thresholds:
  - name: t
    count: [forward]
    key: client_ip
    at_least: 1
    within: 1h
    action: [alert]
`,
      { state },
    ).engine.record({ action: "forward" }, ENV)
  );
});
