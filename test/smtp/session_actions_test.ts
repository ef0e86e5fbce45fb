/**
 * The session carrying out issue-3 verdicts through its `VerdictActions`: quarantine (250 only
 * after the store resolved, 4xx when it failed), tempfail, tag, bcc first then the server,
 * redirect instead of the server, and `after()` called once with the code the client got.
 */
import assert from "node:assert/strict";
import type { VerdictActions } from "../../src/smtp/session.ts";
import type { Delivery, Envelope, Reply, Verdict } from "../../src/policy/verdict.ts";
import { envelope, receivedFor, recordingJudge, text, transcript } from "./harness.ts";

const MSG = "Subject: s\r\n\r\nbody\r\n";
const FULL = envelope() + MSG + ".\r\nQUIT\r\n";

/** Fake action modules that record every call. */
function fakeActions(opts: {
  quarantine?: (m: string) => Promise<string>;
  deliver?: (d: Delivery, m: string) => { code: number; text: string };
} = {}) {
  const calls = {
    quarantined: [] as string[],
    delivered: [] as { d: Delivery; m: string }[],
    after: [] as { verdict: Verdict; code: number; message: string }[],
  };
  const actions: VerdictActions = {
    transform: (m, v) =>
      v.tag ? new TextEncoder().encode(`X-Tag: ${v.tag.headers[0].value}\r\n` + text(m)) : m,
    quarantine: async (m: Uint8Array, _e: Envelope, _v: Verdict) => {
      calls.quarantined.push(text(m));
      return await (opts.quarantine ?? (() => Promise.resolve("q1")))(text(m));
    },
    failureReply: (): Reply => ({ code: 452, enhanced: "4.3.1", text: "full" }),
    deliver: (d: Delivery, m: Uint8Array) => {
      calls.delivered.push({ d, m: text(m) });
      return Promise.resolve((opts.deliver ?? (() => ({ code: 250, text: "ok" })))(d, text(m)));
    },
    after: (verdict, _e, outcome, message) => {
      calls.after.push({ verdict, code: outcome.code, message: text(message) });
    },
  };
  return { actions, calls };
}

Deno.test("Quarantine: 250 only after the store resolved, the server gets nothing, after() sees 250", async () => {
  const { actions, calls } = fakeActions();
  const r = await transcript(FULL, {
    actions,
    judge: recordingJudge(() => ({ action: "quarantine", rule: "hold" })),
  });
  assert.deepEqual(r.codes, [250, 250, 250, 354, 250, 221]);
  assert.equal(r.servers[0]?.messages.length ?? 0, 0);
  assert.equal(calls.quarantined.length, 1);
  assert.equal(calls.quarantined[0], receivedFor("bob@example.net") + MSG);
  assert.deepEqual(calls.after.map((a) => a.code), [250]);
});

Deno.test("Quarantine failure: the client gets the store's 4xx, never 250", async () => {
  const { actions, calls } = fakeActions({ quarantine: () => Promise.reject(new Error("ENOSPC")) });
  const r = await transcript(FULL, {
    actions,
    judge: recordingJudge(() => ({ action: "quarantine", rule: "hold" })),
  });
  assert.deepEqual(r.codes, [250, 250, 250, 354, 452, 221]);
  assert.match(r.output, /452 4\.3\.1 full\r\n/);
  assert.deepEqual(calls.after.map((a) => a.code), [452]);
});

Deno.test("A quarantine verdict without action modules is a 451, not a 250", async () => {
  const r = await transcript(FULL, {
    judge: recordingJudge(() => ({ action: "quarantine", rule: "hold" })),
  });
  assert.deepEqual(r.codes, [250, 250, 250, 354, 451, 221]);
});

Deno.test("Tempfail gives the rule's 4xx and the server receives nothing", async () => {
  const { actions, calls } = fakeActions();
  const r = await transcript(FULL, {
    actions,
    judge: recordingJudge(() => ({
      action: "tempfail",
      rule: "later",
      reply: { code: 451, enhanced: "4.7.1", text: "Try again later" },
    })),
  });
  assert.deepEqual(r.codes, [250, 250, 250, 354, 451, 221]);
  assert.match(r.output, /451 4\.7\.1 Try again later\r\n/);
  assert.equal(r.servers[0].messages.length, 0);
  assert.deepEqual(calls.after.map((a) => a.code), [451]);
});

Deno.test("A tag reaches the server; after() gets the message as received", async () => {
  const { actions, calls } = fakeActions();
  const r = await transcript(FULL, {
    actions,
    judge: recordingJudge(() => ({
      action: "forward",
      rule: "t",
      tag: { headers: [{ name: "X-Tag", value: "spam" }] },
    })),
  });
  assert.deepEqual(r.codes, [250, 250, 250, 354, 250, 221]);
  assert.equal(
    r.servers[0].messages[0].content,
    receivedFor("bob@example.net") + "X-Tag: spam\r\n" + MSG,
  );
  assert.equal(calls.after[0].message, MSG);
});

Deno.test("bcc is delivered first, then the server; a failed bcc is a 451 and the server gets nothing", async () => {
  const bcc: Delivery = { kind: "bcc", to: ["archive@example.net"] };
  const ok = fakeActions();
  const r1 = await transcript(FULL, {
    actions: ok.actions,
    judge: recordingJudge(() => ({ action: "forward", rule: "arch", deliveries: [bcc] })),
  });
  assert.deepEqual(r1.codes, [250, 250, 250, 354, 250, 221]);
  assert.equal(ok.calls.delivered.length, 1);
  assert.equal(ok.calls.delivered[0].m, receivedFor("bob@example.net") + MSG);
  assert.equal(r1.servers[0].messages.length, 1);

  const bad = fakeActions({ deliver: () => ({ code: 451, text: "down" }) });
  const r2 = await transcript(FULL, {
    actions: bad.actions,
    judge: recordingJudge(() => ({ action: "forward", rule: "arch", deliveries: [bcc] })),
  });
  assert.deepEqual(r2.codes, [250, 250, 250, 354, 451, 221]);
  assert.equal(r2.servers[0].messages.length, 0);
});

Deno.test("redirect delivers there instead of the server; its refusal is a 451", async () => {
  const redirect: Delivery = { kind: "redirect", to: ["q@example.net"] };
  const ok = fakeActions();
  const r1 = await transcript(FULL, {
    actions: ok.actions,
    judge: recordingJudge(() => ({ action: "forward", rule: "r", deliveries: [redirect] })),
  });
  assert.deepEqual(r1.codes, [250, 250, 250, 354, 250, 221]);
  assert.equal(r1.servers[0].messages.length, 0);
  assert.equal(ok.calls.delivered[0].d.kind, "redirect");

  const bad = fakeActions({ deliver: () => ({ code: 550, text: "no" }) });
  const r2 = await transcript(FULL, {
    actions: bad.actions,
    judge: recordingJudge(() => ({ action: "forward", rule: "r", deliveries: [redirect] })),
  });
  assert.deepEqual(r2.codes, [250, 250, 250, 354, 451, 221]);
});

Deno.test("after() is called once per message with the code of a plain forward, discard and reject", async () => {
  for (
    const [verdict, code] of [
      [{ action: "forward" }, 250],
      [{ action: "discard", rule: "d" }, 250],
      [{ action: "reject", rule: "r", reply: { code: 550, enhanced: "5.7.1", text: "no" } }, 550],
    ] as [Verdict, number][]
  ) {
    const { actions, calls } = fakeActions();
    await transcript(FULL, { actions, judge: recordingJudge(() => verdict) });
    assert.deepEqual(calls.after.map((a) => a.code), [code], verdict.action);
  }
});
