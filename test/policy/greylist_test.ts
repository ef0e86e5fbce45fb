/**
 * Greylisting (issue 10): the triplet logic (`Greylist`) over a real state store with an
 * injected clock — no sleeping — and `action: greylist` through the policy engine, at RCPT time
 * (`checkRecipient`) and at the end of data (`judge`).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { parseConfig } from "../../src/config/load_config.ts";
import type { GreylistConfig } from "../../src/config/config.ts";
import { GREYLIST_DEFAULTS } from "../../src/config/defaults.ts";
import { MemoryLog } from "../../src/log/log.ts";
import { explainMessage, renderExplanation } from "../../src/policy/explain.ts";
import { Greylist, tripletNetwork } from "../../src/policy/greylist.ts";
import { PolicyEngine } from "../../src/policy/policy_engine.ts";
import type { Envelope } from "../../src/policy/verdict.ts";
import { policyEnvelope } from "./policy_helpers.ts";
import { StateStore } from "../../src/state/state_store.ts";

const T0 = Date.UTC(2026, 10, 30, 8, 0, 0);
const S = 1000;
const DAY = 86400 * S;

function greylist(cfg: Partial<GreylistConfig> = {}, store = StateStore.open(":memory:")) {
  return { gl: new Greylist(store, { ...GREYLIST_DEFAULTS, ...cfg }, () => T0), store };
}

const T = { clientIp: "192.0.2.10", sender: "Alice@Example.COM", recipient: "Bob@corp.example" };

Deno.test("Greylist: a first sighting is deferred for the delay, a retry before it too (without restarting the wait), a retry at the delay passes, later mail is known", () => {
  const { gl, store } = greylist();
  try {
    assert.deepEqual(gl.check(T, T0), {
      pass: false,
      reason: "new",
      retryInSeconds: 300,
      network: "192.0.2.0/24",
    });
    const early = gl.check(T, T0 + 120 * S);
    assert.equal(early.pass, false);
    assert.equal(early.reason, "early");
    assert.equal(early.retryInSeconds, 180, "the wait counts from the first sighting");
    assert.equal(gl.check(T, T0 + 299 * S).pass, false, "delay - 1 s: still deferred");
    assert.equal(gl.check(T, T0 + 299 * S).retryInSeconds, 1);
    assert.deepEqual(gl.check(T, T0 + 300 * S), {
      pass: true,
      reason: "retried",
      network: "192.0.2.0/24",
    });
    assert.equal(gl.check(T, T0 + 301 * S).reason, "known");
  } finally {
    store.close();
  }
});

Deno.test("Greylist: the retry window at limit-1 passes, at the limit it is over", () => {
  const { gl, store } = greylist({ delaySeconds: 60, retryWindowSeconds: 3600 });
  try {
    gl.check(T, T0);
    gl.check({ ...T, recipient: "c@corp.example" }, T0);
    assert.equal(gl.check(T, T0 + 3599 * S).reason, "retried", "window - 1 s");
    assert.equal(gl.check({ ...T, recipient: "c@corp.example" }, T0 + 3600 * S).reason, "new");
  } finally {
    store.close();
  }
});

Deno.test("Greylist: a retry after the retry window is a new first sighting", () => {
  const { gl, store } = greylist({ delaySeconds: 60, retryWindowSeconds: 3600 });
  try {
    gl.check(T, T0);
    const late = gl.check(T, T0 + 3600 * S);
    assert.equal(late.pass, false);
    assert.equal(late.reason, "new");
    assert.equal(late.retryInSeconds, 60);
    assert.equal(gl.check(T, T0 + 3659 * S).pass, false, "the new wait counts from the retry");
    assert.equal(gl.check(T, T0 + 3660 * S).reason, "retried");
  } finally {
    store.close();
  }
});

Deno.test("Greylist: a passed triplet lives pass_lifetime after its LAST use, each use refreshing it", () => {
  const { gl, store } = greylist({ passLifetimeSeconds: 36 * 86400 });
  try {
    gl.check(T, T0);
    assert.equal(gl.check(T, T0 + 300 * S).reason, "retried");
    let now = T0 + 300 * S;
    for (let i = 0; i < 3; i++) {
      now += 35 * DAY; // inside the lifetime since the last use, past it since the pass
      assert.equal(gl.check(T, now).reason, "known", `use ${i + 1} after 35 days`);
    }
    now += 36 * DAY; // unused for the whole lifetime
    assert.equal(gl.check(T, now).reason, "new", "forgotten once unused for pass_lifetime");
  } finally {
    store.close();
  }
});

Deno.test("Greylist: the triplet is (client /24 or /64, sender lower-cased or <>, recipient lower-cased)", () => {
  const { gl, store } = greylist();
  try {
    gl.check(T, T0);
    gl.check(T, T0 + 300 * S);
    const same = [
      { ...T, clientIp: "192.0.2.200" },
      { ...T, sender: "alice@example.com" },
      { ...T, recipient: "BOB@CORP.EXAMPLE" },
      { ...T, clientIp: "::ffff:192.0.2.77" },
    ];
    for (const t of same) assert.equal(gl.check(t, T0 + 301 * S).reason, "known", t.clientIp);
    const other = [
      { ...T, clientIp: "192.0.3.10" },
      { ...T, sender: "carol@example.com" },
      { ...T, sender: "" },
      { ...T, recipient: "dave@corp.example" },
    ];
    for (const t of other) {
      assert.equal(gl.check(t, T0 + 301 * S).reason, "new", JSON.stringify(t));
    }
    assert.equal(gl.triplet({ ...T, sender: "" }).key, "192.0.2.0/24 <> bob@corp.example");
    assert.equal(tripletNetwork("2001:db8:1:2:3::9", { ipv4: 24, ipv6: 64 }), "2001:db8:1:2::/64");
    assert.equal(tripletNetwork("192.0.2.99", { ipv4: 32, ipv6: 64 }), "192.0.2.99/32");
    const v6 = { ...T, clientIp: "2001:db8:1:2::10" };
    gl.check(v6, T0);
    assert.equal(
      gl.check({ ...v6, clientIp: "2001:db8:1:2:ffff::1" }, T0 + 300 * S).reason,
      "retried",
    );
  } finally {
    store.close();
  }
});

Deno.test("Greylist: a network whose retries passed for auto_allow_after triplets is allowed outright (limit-1, limit)", () => {
  for (const n of [1, 5]) {
    const { gl, store } = greylist({ autoAllowAfter: n });
    try {
      for (let i = 0; i < n - 1; i++) {
        const t = { ...T, recipient: `u${i}@corp.example` };
        gl.check(t, T0);
        assert.equal(gl.check(t, T0 + 300 * S).reason, "retried");
      }
      const fresh = { ...T, recipient: "fresh@corp.example" };
      assert.equal(gl.check(fresh, T0 + 301 * S).pass, false, `${n - 1} passes: not yet`);
      const last = { ...T, recipient: "last@corp.example" };
      gl.check(last, T0);
      assert.equal(gl.check(last, T0 + 300 * S).reason, "retried");
      const next = { ...T, clientIp: "192.0.2.33", recipient: "next@corp.example" };
      assert.deepEqual(gl.check(next, T0 + 302 * S), {
        pass: true,
        reason: "network",
        network: "192.0.2.0/24",
      });
      assert.equal(
        gl.check({ ...next, clientIp: "198.51.100.1" }, T0 + 302 * S).pass,
        false,
        "another network is not allowed",
      );
    } finally {
      store.close();
    }
  }
  const { gl, store } = greylist({ autoAllowAfter: 0 });
  try {
    for (let i = 0; i < 10; i++) {
      const t = { ...T, recipient: `u${i}@corp.example` };
      gl.check(t, T0);
      gl.check(t, T0 + 300 * S);
    }
    assert.equal(gl.check({ ...T, recipient: "x@corp.example" }, T0 + 301 * S).reason, "new");
  } finally {
    store.close();
  }
});

Deno.test("Greylist.peek() says what check() would, and records nothing", () => {
  const { gl, store } = greylist();
  try {
    assert.equal(gl.peek(T, T0).reason, "new");
    assert.equal(gl.peek(T, T0 + 400 * S).reason, "new", "peek recorded no first sighting");
    assert.equal(store.rowCounts.greylist, 0);
    gl.check(T, T0);
    assert.equal(gl.peek(T, T0 + 400 * S).reason, "retried");
    assert.equal(gl.check(T, T0 + 400 * S).reason, "retried", "peek did not pass it");
  } finally {
    store.close();
  }
});

Deno.test("Greylist: the memory survives closing and re-opening the state file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ssg-greylist-" });
  try {
    const file = join(dir, "state.db");
    const a = greylist({}, StateStore.open(file));
    a.gl.check(T, T0);
    a.gl.check({ ...T, recipient: "other@corp.example" }, T0);
    a.gl.check({ ...T, recipient: "other@corp.example" }, T0 + 300 * S);
    a.store.close();
    const b = greylist({}, StateStore.open(file));
    try {
      assert.equal(b.store.rowCounts.greylist, 2);
      assert.equal(b.gl.check(T, T0 + 300 * S).reason, "retried", "the first sighting was kept");
      assert.equal(
        b.gl.check({ ...T, recipient: "other@corp.example" }, T0 + 301 * S).reason,
        "known",
      );
    } finally {
      b.store.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Greylist: at most max_entries triplets (the soonest expiring go first); expired rows are swept by later writes", () => {
  const { gl, store } = greylist({ maxEntries: 50, retryWindowSeconds: 3600 });
  try {
    for (let i = 0; i < 51; i++) gl.check({ ...T, recipient: `u${i}@corp.example` }, T0 + i * S);
    assert.ok(store.rowCounts.greylist <= 50, `${store.rowCounts.greylist} rows at limit + 1`);
    assert.equal(
      gl.check({ ...T, recipient: "u50@corp.example" }, T0 + 400 * S).reason,
      "retried",
      "the newest triplet was kept",
    );
    for (let i = 0; i < 200; i++) gl.check({ ...T, recipient: `v${i}@corp.example` }, T0 + 500 * S);
    assert.ok(store.rowCounts.greylist <= 50, `${store.rowCounts.greylist} rows after 250 more`);
    // All but the passed u50 expire an hour later; one write then sweeps them.
    gl.check({ ...T, recipient: "late@corp.example" }, T0 + 2 * 3600 * S);
    assert.equal(store.rowCounts.greylist, 2, "expired triplets swept (u50 passed, late is new)");
  } finally {
    store.close();
  }
});

// ---- through the policy engine ---------------------------------------------------------------

const ENVELOPE: Envelope = policyEnvelope({ rcptTo: ["bob@corp.example"] });
const enc = (s: string) => new TextEncoder().encode(s);
const MESSAGE = enc("From: <alice@example.com>\r\nSubject: minutes\r\n\r\nHello.\r\n");

/** The log as `name k=v ...` lines, for matching. */
function logText(log: MemoryLog): string {
  return log.events.map((e) =>
    `${e.name} ${
      Object.entries(e.fields).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${v}`)
        .join(" ")
    }`
  ).join("\n");
}

function engineFor(body: string, now: { t: number }) {
  const log = new MemoryLog();
  const cfg = parseConfig(`gateway:\n  protect: [198.51.100.0/24]\n${body}`, "t.yaml");
  return { engine: new PolicyEngine(cfg, log, { now: () => now.t }), log };
}

const RCPT_RULES = `allowlist: { clients: [203.0.113.0/28], senders: ["@partner.example"] }
rules:
  - name: postmaster
    when: { rcpt_to: { equals: postmaster@corp.example } }
    action: forward
  - name: tag-everything
    when: { subject: { contains: minutes } }
    action: tag
    tag: { header: "X-Seen: yes" }
  - name: grey
    when: { authenticated: false }
    action: greylist
  - name: lottery
    when: { subject: { contains: lottery } }
    action: discard
`;

Deno.test("action greylist at RCPT time: 451 4.7.1 with the wait, per recipient; never for authenticated sessions, allowlisted clients or senders, or a recipient an earlier envelope rule forwards", () => {
  const now = { t: T0 };
  const { engine, log } = engineFor(RCPT_RULES, now);
  try {
    assert.equal(engine.checksRecipients, true);
    const r = engine.checkRecipient(ENVELOPE);
    assert.deepEqual(r, {
      code: 451,
      enhanced: "4.7.1",
      text: "Greylisted, try again in 300 seconds",
    });
    assert.match(
      logText(log),
      /greylist\.defer .*rule=grey .*network=192\.0\.2\.0\/24 .*reason=new .*retry_in=300 .*at=rcpt/,
    );
    const skip: [string, Envelope][] = [
      ["authenticated", { ...ENVELOPE, authenticated: true }],
      ["allowlisted client", { ...ENVELOPE, client: { ip: "203.0.113.5", port: 1 } }],
      ["allowlisted sender", { ...ENVELOPE, mailFrom: "x@partner.example" }],
      ["forwarded recipient", { ...ENVELOPE, rcptTo: ["postmaster@corp.example"] }],
    ];
    for (const [what, e] of skip) assert.equal(engine.checkRecipient(e), undefined, what);
    now.t += 100 * S;
    assert.equal(engine.checkRecipient(ENVELOPE)?.text, "Greylisted, try again in 200 seconds");
    now.t += 200 * S;
    assert.equal(engine.checkRecipient(ENVELOPE), undefined, "the retry after the delay passes");
    assert.match(logText(log), /greylist\.pass .*reason=retried/);
  } finally {
    engine.close();
  }
});

Deno.test("action greylist decided at RCPT is not applied again at the end of data; the later rules still decide", async () => {
  const now = { t: T0 };
  const { engine } = engineFor(RCPT_RULES, now);
  try {
    // The session asked checkRecipient for bob only; carol was never greylisted-checked.
    const e = { ...ENVELOPE, rcptTo: ["bob@corp.example", "carol@corp.example"] };
    const v = await engine.judge(MESSAGE, e);
    assert.equal(v.action, "forward");
    assert.deepEqual(v.tag?.headers, [{ name: "X-Seen", value: "yes" }]);
    const spam = enc("Subject: lottery\r\n\r\nwin\r\n");
    assert.equal((await engine.judge(spam, e)).action, "discard");
  } finally {
    engine.close();
  }
});

Deno.test("action greylist after a content rule that could decide waits for the end of data: the whole message gets 451 until every recipient's retry passes; thresholds do not count it", async () => {
  const now = { t: T0 };
  const { engine } = engineFor(
    `thresholds:
  - { name: t, count: [tempfail], key: client_ip, at_least: 1, within: 1h, action: [alert] }
rules:
  - name: lottery
    when: { subject: { contains: lottery } }
    action: discard
  - name: grey
    when: { helo: { matches: "." } }
    action: greylist
`,
    now,
  );
  try {
    assert.equal(engine.checksRecipients, false, "no RCPT-time greylisting");
    assert.equal(engine.checkRecipient(ENVELOPE), undefined);
    const e = { ...ENVELOPE, rcptTo: ["bob@corp.example", "carol@corp.example"] };
    const v1 = await engine.judge(MESSAGE, e);
    assert.equal(v1.action, "tempfail");
    assert.equal(v1.rule, "grey");
    if (v1.action === "tempfail") {
      assert.deepEqual(v1.reply, {
        code: 451,
        enhanced: "4.7.1",
        text: "Greylisted, try again in 300 seconds",
      });
    }
    assert.match(v1.evidence ?? "", /bob@corp\.example \(new.*carol@corp\.example \(new/);
    assert.deepEqual(engine.record(v1, e), [], "a deferral is not counted");
    now.t += 300 * S;
    assert.equal((await engine.judge(MESSAGE, e)).action, "forward");
    // A new recipient in the same transaction defers the whole message again.
    const v3 = await engine.judge(MESSAGE, { ...e, rcptTo: [...e.rcptTo, "dave@corp.example"] });
    assert.equal(v3.action, "tempfail");
    assert.match(v3.evidence ?? "", /^helo matches.*dave@corp\.example \(new/);
    // A message the earlier content rule decides is never greylisted.
    assert.equal((await engine.judge(enc("Subject: lottery\r\n\r\nx\r\n"), e)).action, "discard");
    // Authenticated sessions are not greylisted at the end of data either.
    const fresh = { ...e, rcptTo: ["erin@corp.example"], authenticated: true };
    assert.equal((await engine.judge(MESSAGE, fresh)).action, "forward");
  } finally {
    engine.close();
  }
});

Deno.test("authenticated: true|false holds on the session's AUTH state", async () => {
  const { engine } = engineFor(
    `rules:
  - name: auth-tag
    when: { authenticated: true }
    action: tag
    tag: { header: "X-Auth: yes" }
  - name: anon-tag
    when: { authenticated: false }
    action: tag
    tag: { header: "X-Auth: no" }
`,
    { t: T0 },
  );
  try {
    const a = await engine.judge(MESSAGE, { ...ENVELOPE, authenticated: true });
    assert.deepEqual(a.tag?.headers, [{ name: "X-Auth", value: "yes" }]);
    const b = await engine.judge(MESSAGE, ENVELOPE);
    assert.deepEqual(b.tag?.headers, [{ name: "X-Auth", value: "no" }]);
  } finally {
    engine.close();
  }
});

Deno.test("a greylist rule in observe mode is only logged, and never greylists at RCPT", async () => {
  const { engine, log } = engineFor(
    `rules:\n  - name: grey\n    when: { authenticated: false }\n    action: greylist\n    mode: observe\n`,
    { t: T0 },
  );
  try {
    assert.equal(engine.checksRecipients, false);
    assert.equal((await engine.judge(MESSAGE, ENVELOPE)).action, "forward");
    assert.match(logText(log), /policy\.observe .*rule=grey .*would=greylist/);
    assert.equal(engine.state.rowCounts.greylist, 0);
  } finally {
    engine.close();
  }
});

Deno.test("ssg explain peeks: a greylist rule shows the 451 of a first sighting, --auth shows it skipped", async () => {
  const cfg = parseConfig(`gateway:\n  protect: [198.51.100.0/24]\n${RCPT_RULES}`, "t.yaml");
  const e = await explainMessage(cfg, MESSAGE, { client: "192.0.2.10", to: ["bob@corp.example"] });
  assert.equal(e.verdict.action, "tempfail");
  assert.equal(e.verdict.rule, "grey");
  const text = renderExplanation(e);
  assert.match(text, /Greylisted, try again in 300 seconds|451/);
  assert.match(text, /bob@corp\.example \(new, network 192\.0\.2\.0\/24\)/);
  const auth = await explainMessage(cfg, MESSAGE, {
    client: "192.0.2.10",
    to: ["bob@corp.example"],
    authenticated: true,
  });
  assert.equal(auth.verdict.action, "forward");
  assert.match(renderExplanation(auth), /, authenticated/);
});
