/**
 * `content.undecodable` (issue 8): what SSG cannot read must not pass as clean.
 */
import assert from "node:assert/strict";
import { parseConfig } from "../../src/config/load_config.ts";
import { MemoryLog } from "../../src/log/log.ts";
import { explainMessage, renderExplanation } from "../../src/policy/explain.ts";
import { PolicyEngine } from "../../src/policy/policy_engine.ts";
import type { Envelope } from "../../src/policy/verdict.ts";
import { policyEnvelope } from "./policy_helpers.ts";

const enc = new TextEncoder();
const ENVELOPE: Envelope = policyEnvelope({
  mailFrom: "promo@sender.example",
  rcptTo: ["user@example.net"],
  helo: "sender.example",
});

/** Six parts: past `max_parts: 5`. */
function sixParts(subject = "hello"): Uint8Array {
  let m = `Subject: ${subject}\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n`;
  for (let i = 0; i < 6; i++) m += `--B\r\nContent-Type: text/plain\r\n\r\npart ${i}\r\n`;
  return enc.encode(m + "--B--\r\n");
}

function config(content: string, rules = "", extra = "") {
  return parseConfig(
    `gateway:\n  protect: [198.51.100.0/24]\ncontent: { max_parts: 5${content} }\n${extra}rules:\n` +
      (rules ||
        `  - name: lottery\n    when: { subject: { contains: lottery } }\n    action: discard\n`),
    "rules.yaml",
  );
}

async function judge(cfg: ReturnType<typeof config>, raw: Uint8Array) {
  const log = new MemoryLog();
  const engine = new PolicyEngine(cfg, log);
  try {
    return { v: await engine.judge(raw, ENVELOPE), log };
  } finally {
    engine.close();
  }
}

Deno.test("undecodable: each setting gives its verdict, with the reason in the evidence and the log", async () => {
  const want = {
    quarantine: undefined,
    tempfail: {
      code: 451,
      enhanced: "4.6.0",
      text: "Message content could not be fully checked, try again later",
    },
    reject: { code: 554, enhanced: "5.6.0", text: "Message content could not be fully checked" },
  };
  for (const [setting, reply] of Object.entries(want)) {
    const { v, log } = await judge(config(`, undecodable: ${setting}`), sixParts());
    assert.equal(v.action, setting);
    assert.equal(v.rule, "undecodable");
    assert.match(v.evidence ?? "", /^message not fully read: .*more than 5 MIME parts/);
    if (v.action === "reject" || v.action === "tempfail") assert.deepEqual(v.reply, reply);
    const logged = log.named("policy.verdict")[0].fields;
    assert.equal(logged.action, setting);
    assert.equal(logged.rule, "undecodable");
    assert.match(String(logged.evidence), /more than 5 MIME parts/);
  }
});

Deno.test("undecodable: forward keeps the old behaviour (forwarded, the partial decode said in the evidence)", async () => {
  const { v } = await judge(config(", undecodable: forward"), sixParts());
  assert.equal(v.action, "forward");
  assert.equal(v.rule, undefined);
  assert.match(v.evidence ?? "", /^no rule matched; partial decode: .*more than 5 MIME parts/);
});

Deno.test("undecodable: a rule that stops the message on what was read still decides", async () => {
  const { v } = await judge(config(""), sixParts("lottery"));
  assert.equal(v.action, "discard");
  assert.equal(v.rule, "lottery");
  assert.match(v.evidence ?? "", /^subject contains "lottery"; partial decode: /);
});

Deno.test("undecodable: a forward rule does not let an unread message through; the static allowlist does", async () => {
  const forwardRule =
    `  - name: partner\n    when: { mail_from: { contains: sender.example } }\n    action: forward\n`;
  const { v } = await judge(config("", forwardRule), sixParts());
  assert.equal(v.action, "quarantine");
  assert.equal(v.rule, "undecodable");
  assert.match(v.evidence ?? "", /would be forwarded by partner/);
  const allow = await judge(
    config("", "", 'allowlist: { senders: ["@sender.example"] }\n'),
    sixParts(),
  );
  assert.equal(allow.v.action, "forward");
  assert.equal(allow.v.rule, "allowlist");
});

Deno.test("undecodable: a message read whole is judged as before (limit: exactly max_parts is read)", async () => {
  let m = "Subject: hello\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n";
  for (let i = 0; i < 4; i++) m += `--B\r\nContent-Type: text/plain\r\n\r\npart ${i}\r\n`;
  const { v } = await judge(config(""), enc.encode(m + "--B--\r\n")); // 5 parts with the root
  assert.deepEqual(v, { action: "forward", evidence: undefined });
});

Deno.test("ssg explain reads with the rule file's content: bounds and shows why a message was not fully read", async () => {
  const e = await explainMessage(config(", undecodable: reject"), sixParts());
  assert.equal(e.verdict.action, "reject");
  assert.equal(e.verdict.rule, "undecodable");
  assert.equal(e.facts.undecodable, "reject");
  assert.ok(e.facts.problems.includes("more than 5 MIME parts"));
  const text = renderExplanation(e);
  assert.match(
    text,
    /^ {2}NOT FULLY READ: more than 5 MIME parts \(content\.undecodable: reject\)$/m,
  );
  assert.match(text, /^verdict: reject by undecodable$/m);
  assert.match(text, /^ {2}reply: 554 5\.6\.0 Message content could not be fully checked$/m);
  assert.match(text, /^ {2}evidence: message not fully read: /m);
  // JSON carries the same.
  const json = JSON.parse(JSON.stringify(e));
  assert.equal(json.verdict.rule, "undecodable");
});

Deno.test("ssg explain lists every subject judged when there are several", async () => {
  const raw = enc.encode("Subject: hello\r\nSubject: You won the lottery\r\n\r\nhi\r\n");
  const e = await explainMessage(config(""), raw);
  assert.deepEqual(e.facts.subjects, ["hello", "You won the lottery"]);
  assert.match(renderExplanation(e), /^ {2}every subject judged: "hello", "You won the lottery"$/m);
  assert.equal(e.verdict.action, "discard");
});
