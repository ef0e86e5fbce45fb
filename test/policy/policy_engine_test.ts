import assert from "node:assert/strict";
import { parseConfig } from "../../src/config/load_config.ts";
import { MemoryLog } from "../../src/log/log.ts";
import { PolicyEngine } from "../../src/policy/policy_engine.ts";
import type { Envelope, Verdict } from "../../src/policy/verdict.ts";
import { policyEnvelope } from "./policy_helpers.ts";

const FIXTURES = new URL("../fixtures/messages/", import.meta.url);
const fixture = (name: string) => Deno.readFileSync(new URL(name, FIXTURES));
const enc = new TextEncoder();

const ENVELOPE: Envelope = policyEnvelope();

function engineFor(rulesYaml: string, log = new MemoryLog()) {
  const cfg = parseConfig(`gateway:\n  protect: [198.51.100.0/24]\nrules:\n${rulesYaml}`, "t.yaml");
  return { engine: new PolicyEngine(cfg.rules, log), log };
}

const CORPUS_RULES = `
  - name: lottery
    when:
      subject: { contains: ["lottery", "jackpot", "당첨", "복권"] }
    action: discard
  - name: pills
    when:
      body: { contains: ["cheap pills"] }
    action: reject
    reply: { code: 550, enhanced: "5.7.1", text: "No pills here" }
`;

// Every fixture, the verdict the corpus rules must give, and the evidence.
const CORPUS: { file: string; action: Verdict["action"]; rule?: string; evidence?: string }[] = [
  { file: "plain.eml", action: "forward" },
  {
    file: "lottery_subject.eml",
    action: "discard",
    rule: "lottery",
    evidence: 'subject contains "lottery"',
  },
  {
    file: "multipart_alternative.eml",
    action: "reject",
    rule: "pills",
    evidence: 'body contains "cheap pills"',
  },
  {
    file: "html_only.eml",
    action: "reject",
    rule: "pills",
    evidence: 'body contains "cheap pills"',
  },
  {
    file: "base64_body.eml",
    action: "reject",
    rule: "pills",
    evidence: 'body contains "cheap pills"',
  },
  { file: "qp_body.eml", action: "reject", rule: "pills", evidence: 'body contains "cheap pills"' },
  {
    file: "euc_kr_subject.eml",
    action: "discard",
    rule: "lottery",
    evidence: 'subject contains "당첨"',
  },
  {
    file: "iso_2022_kr.eml",
    action: "discard",
    rule: "lottery",
    evidence: 'subject contains "당첨"',
  },
  { file: "utf8_8bit.eml", action: "forward" },
  {
    file: "utf8_fullwidth.eml",
    action: "reject",
    rule: "pills",
    evidence: 'body contains "cheap pills"',
  },
  { file: "attachment.eml", action: "forward" },
  {
    file: "malformed_mime.eml",
    action: "discard",
    rule: "lottery",
    evidence: 'subject contains "lottery"',
  },
  {
    file: "nested_multipart.eml",
    action: "reject",
    rule: "pills",
    evidence: 'body contains "cheap pills"',
  },
];

for (const c of CORPUS) {
  Deno.test(`PolicyEngine.judge() gives ${c.file} the verdict ${c.action}${c.rule ? ` by rule ${c.rule}` : ""}`, async () => {
    const { engine, log } = engineFor(CORPUS_RULES);
    const v = await engine.judge(fixture(c.file), ENVELOPE);
    assert.equal(v.action, c.action);
    assert.equal(v.rule, c.rule);
    assert.equal(v.evidence, c.evidence);
    if (v.action === "reject") {
      assert.deepEqual(v.reply, { code: 550, enhanced: "5.7.1", text: "No pills here" });
    }
    const ev = log.named("policy.verdict");
    assert.equal(ev.length, 1);
    assert.equal(ev[0].fields.session, "S1");
    assert.equal(ev[0].fields.tx, "S1.1");
    assert.equal(ev[0].fields.action, c.action);
    assert.equal(ev[0].fields.rule, c.rule);
  });
}

Deno.test("PolicyEngine: the first matching rule wins; a forward rule is an allow rule", async () => {
  const msg = enc.encode("Subject: lottery results for staff\r\n\r\ncheap pills\r\n");
  const { engine } = engineFor(`
  - name: staff-newsletter
    when: { subject: { contains: "for staff" } }
    action: forward
  - name: lottery
    when: { subject: { contains: lottery } }
    action: discard
  - name: pills
    when: { body: { contains: "cheap pills" } }
    action: reject
`);
  const v = await engine.judge(msg, ENVELOPE);
  assert.deepEqual(v, {
    action: "forward",
    rule: "staff-newsletter",
    evidence: 'subject contains "for staff"',
  });
  const { engine: e2 } = engineFor(`
  - name: pills
    when: { body: { contains: "cheap pills" } }
    action: reject
  - name: lottery
    when: { subject: { contains: lottery } }
    action: discard
`);
  assert.equal((await e2.judge(msg, ENVELOPE)).rule, "pills");
});

Deno.test("PolicyEngine: an observe rule is logged and not enforced; the next rule decides", async () => {
  const { engine, log } = engineFor(`
  - name: try-lottery
    when: { subject: { contains: lottery } }
    action: reject
    mode: observe
  - name: pills
    when: { body: { contains: "cheap pills" } }
    action: discard
`);
  const v1 = await engine.judge(fixture("lottery_subject.eml"), ENVELOPE);
  assert.deepEqual(v1, { action: "forward", evidence: undefined, observed: ["try-lottery"] });
  const obs = log.named("policy.observe");
  assert.equal(obs.length, 1);
  assert.deepEqual(obs[0].fields, {
    session: "S1",
    tx: "S1.1",
    rule: "try-lottery",
    would: "reject",
    evidence: 'subject contains "lottery"',
  });
  const v2 = await engine.judge(
    enc.encode("Subject: lottery\r\n\r\nbuy cheap pills\r\n"),
    ENVELOPE,
  );
  assert.equal(v2.action, "discard");
  assert.equal(v2.rule, "pills");
});

// Combinators: each case is a `when:` and whether it holds for the message below.
const MSG = enc.encode(
  "Subject: Weekly Lottery draw\r\nContent-Type: text/plain\r\n\r\nYou may win.\r\n",
);
const COMBINATORS: { when: string; holds: boolean; evidence?: string }[] = [
  {
    when: `{ subject: { contains: lottery } }`,
    holds: true,
    evidence: 'subject contains "lottery"',
  },
  {
    when: `{ subject: { contains: [jackpot, DRAW] } }`,
    holds: true,
    evidence: 'subject contains "DRAW"',
  },
  {
    when: `{ subject: { equals: "weekly lottery draw" } }`,
    holds: true,
    evidence: 'subject equals "weekly lottery draw"',
  },
  { when: `{ subject: { equals: "lottery" } }`, holds: false },
  {
    when: `{ subject: { contains: lottery }, body: { contains: win } }`,
    holds: true,
    evidence: 'subject contains "lottery" and body contains "win"',
  },
  { when: `{ subject: { contains: lottery }, body: { contains: lose } }`, holds: false },
  {
    when: `{ all: [{ subject: { contains: weekly } }, { body: { contains: "may win" } }] }`,
    holds: true,
    evidence: 'subject contains "weekly" and body contains "may win"',
  },
  {
    when: `{ any: [{ subject: { contains: nope } }, { body: { contains: "may win" } }] }`,
    holds: true,
    evidence: 'body contains "may win"',
  },
  {
    when: `{ any: [{ subject: { contains: nope } }, { body: { contains: nope } }] }`,
    holds: false,
  },
  {
    when: `{ not: { body: { contains: unsubscribe } } }`,
    holds: true,
    evidence: 'condition of rule "r" holds',
  },
  { when: `{ not: { subject: { contains: lottery } } }`, holds: false },
  {
    when: `{ subject: { contains: lottery }, not: { body: { contains: unsubscribe } } }`,
    holds: true,
    evidence: 'subject contains "lottery"',
  },
  { when: `{ subject: { contains: lottery, equals: nope } }`, holds: false },
];
for (const c of COMBINATORS) {
  Deno.test(`PolicyEngine: when ${c.when} ${c.holds ? "holds" : "does not hold"}`, async () => {
    const { engine } = engineFor(`  - name: r\n    when: ${c.when}\n    action: discard\n`);
    const v = await engine.judge(MSG, ENVELOPE);
    assert.equal(v.action, c.holds ? "discard" : "forward");
    if (c.holds) assert.equal(v.evidence, c.evidence);
  });
}

// Normalisation: `contains` ignores case, width, invisible characters and line breaks.
const NORMALISED: { needle: string; text: string; holds: boolean }[] = [
  { needle: "lottery", text: "LOTTERY", holds: true },
  { needle: "LOTTERY", text: "lottery", holds: true },
  { needle: "lottery", text: "ｌｏｔｔｅｒｙ", holds: true }, // full-width (NFKC)
  { needle: "lottery", text: "lot\u200btery", holds: true }, // zero-width space
  { needle: "lottery", text: "lot\u00adtery", holds: true }, // soft hyphen
  { needle: "strasse", text: "STRAẞE", holds: true }, // full case folding: ß → ss
  { needle: "cheap pills", text: "cheap\r\n  pills", holds: true }, // a wrapped line
  { needle: "당첨", text: "\u1103\u1161\u11BC\u110E\u1165\u11B7", holds: true }, // conjoining jamo (NFKC composes)
  { needle: "당첨", text: "당 첨", holds: false },
  { needle: "lottery", text: "lotery", holds: false },
];
for (const c of NORMALISED) {
  Deno.test(`PolicyEngine: contains ${JSON.stringify(c.needle)} ${c.holds ? "finds" : "does not find"} ${JSON.stringify(c.text)}`, async () => {
    const { engine } = engineFor(
      `  - name: r\n    when: { body: { contains: ${
        JSON.stringify(c.needle)
      } } }\n    action: discard\n`,
    );
    const msg = enc.encode(
      `Subject: s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nxx ${c.text} yy\r\n`,
    );
    assert.equal((await engine.judge(msg, ENVELOPE)).action, c.holds ? "discard" : "forward");
  });
}

Deno.test("PolicyEngine: a message not fully read is stopped by a matching rule (partial decode in the evidence), else gets the undecodable verdict", async () => {
  // 1001 parts: past the default 1000 (mailparser's maxChildNodes and SSG's own walk).
  let m = "Subject: lottery\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n";
  for (let i = 0; i < 1000; i++) m += `--B\r\nContent-Type: text/plain\r\n\r\npart ${i}\r\n`;
  const { engine, log } = engineFor(CORPUS_RULES);
  const v = await engine.judge(enc.encode(m + "--B--\r\n"), ENVELOPE);
  assert.equal(v.action, "discard");
  assert.match(
    v.evidence ?? "",
    /^subject contains "lottery"; partial decode: mailparser could not decode the message \(Max allowed child nodes exceeded\); judged on the headers, the raw body and SSG's own MIME walk; more than 1000 MIME parts$/,
  );
  assert.equal(log.named("policy.verdict")[0].fields.decoder, "fallback");
  const clean = await engine.judge(
    enc.encode(m.replace("lottery", "hello") + "--B--\r\n"),
    ENVELOPE,
  );
  assert.equal(clean.action, "quarantine");
  assert.equal(clean.rule, "undecodable");
  assert.match(clean.evidence ?? "", /^message not fully read: .*more than 1000 MIME parts/);
  assert.equal(log.named("policy.verdict")[1].fields.rule, "undecodable");
});

Deno.test("PolicyEngine.evaluate(explain) reports every rule and the same verdict", async () => {
  const { engine } = engineFor(
    CORPUS_RULES + `
  - name: never
    when: { subject: { contains: zzz } }
    action: reject
`,
  );
  const { decodeMessage } = await import("../../src/policy/message.ts");
  const facts = await decodeMessage(enc.encode("Subject: lottery\r\n\r\ncheap pills\r\n"));
  const short = engine.evaluate(facts, ENVELOPE);
  const full = engine.evaluate(facts, ENVELOPE, true);
  assert.deepEqual(short.verdict, full.verdict);
  assert.deepEqual(short.results.map((r) => r.rule), ["lottery"]);
  assert.deepEqual(full.results.map((r) => [r.rule, r.matched, r.decided]), [
    ["lottery", true, true],
    ["pills", true, false],
    ["never", false, false],
  ]);
});

Deno.test("PolicyEngine with no rules forwards everything", async () => {
  const engine = new PolicyEngine([], new MemoryLog());
  assert.deepEqual(await engine.judge(fixture("lottery_subject.eml"), ENVELOPE), {
    action: "forward",
    evidence: undefined,
  });
});

Deno.test("PolicyEngine: a keyword after 3 MiB of text is seen, in bounded time", async () => {
  const big = "Subject: s\r\nContent-Type: text/plain\r\n\r\n" +
    ("lorem ipsum dolor sit amet ".repeat(37) + "\r\n").repeat(3000) + "cheap pills\r\n";
  const { engine, log } = engineFor(CORPUS_RULES);
  const t0 = performance.now();
  const v = await engine.judge(enc.encode(big), ENVELOPE);
  const ms = performance.now() - t0;
  assert.equal(v.action, "reject");
  assert.equal(v.rule, "pills");
  assert.ok(ms < 10_000, `took ${ms} ms`);
  assert.ok(Number(log.named("policy.verdict")[0].fields.eval_ms) < 2000);
});

Deno.test("PolicyEngine: text past max_text_chars is not forwarded as clean", async () => {
  const words = ("lorem ipsum dolor sit amet ".repeat(37) + "\r\n").repeat(200); // ~200 KB
  const msg = enc.encode("Subject: s\r\nContent-Type: text/plain\r\n\r\n" + words + "clean\r\n");
  const log = new MemoryLog();
  const cfg = parseConfig(
    `gateway:\n  protect: [198.51.100.0/24]\ncontent:\n  max_text_chars: 100000\n  undecodable: reject\nrules:\n${CORPUS_RULES}`,
    "t.yaml",
  );
  const engine = new PolicyEngine(cfg, log);
  const v = await engine.judge(msg, ENVELOPE);
  assert.equal(v.action, "reject");
  assert.equal(v.rule, "undecodable");
  if (v.action === "reject") {
    assert.deepEqual(v.reply, {
      code: 554,
      enhanced: "5.6.0",
      text: "Message content could not be fully checked",
    });
  }
  assert.match(v.evidence ?? "", /a text is longer than 100000 characters/);
  engine.close();
});

Deno.test("PolicyEngine.judge() never rejects on random bytes", async () => {
  const { engine } = engineFor(CORPUS_RULES);
  let seed = 42;
  const rnd = () => (seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 32;
  for (let i = 0; i < 100; i++) {
    const raw = new Uint8Array(Math.floor(rnd() * 4000));
    for (let k = 0; k < raw.length; k++) raw[k] = Math.floor(rnd() * 256);
    const v = await engine.judge(raw, ENVELOPE);
    // Random bytes are often a header section without a body, read in full; a message that
    // could not be read gets the undecodable verdict (quarantine by default).
    assert.ok(["forward", "discard", "reject", "quarantine"].includes(v.action));
  }
});

Deno.test("the shipped rules/default.yaml discards the lottery fixture and rejects the pills one", async () => {
  const { loadConfig } = await import("../../src/config/load_config.ts");
  const cfg = await loadConfig(new URL("../../rules/default.yaml", import.meta.url).pathname);
  const engine = new PolicyEngine(cfg, new MemoryLog());
  assert.equal((await engine.judge(fixture("euc_kr_subject.eml"), ENVELOPE)).action, "discard");
  const exe = await engine.judge(fixture("phish_exe.eml"), ENVELOPE);
  assert.equal(exe.action, "quarantine");
  assert.equal(exe.rule, "disguised-executable");
  assert.deepEqual(
    exe.tag?.headers,
    [{ name: "X-Spam-Flag", value: "YES" }],
    "scam-phrases tagged it",
  );
  const v = await engine.judge(fixture("qp_body.eml"), ENVELOPE);
  assert.equal(v.action, "reject");
  if (v.action === "reject") {
    assert.equal(v.reply.text, "Message rejected: content not accepted here");
  }
  assert.equal((await engine.judge(fixture("plain.eml"), ENVELOPE)).action, "forward");
  engine.close();
});

Deno.test("an engine built from the rules alone treats a named list as empty and logs it", async () => {
  const { loadConfig } = await import("../../src/config/load_config.ts");
  const cfg = await loadConfig(new URL("../../rules/default.yaml", import.meta.url).pathname);
  const log = new MemoryLog();
  const engine = new PolicyEngine(cfg.rules, log);
  assert.deepEqual(log.named("policy.list_missing").map((e) => e.fields.list), [
    "scam_words",
    "scam_words",
  ]);
  assert.equal((await engine.judge(fixture("plain.eml"), ENVELOPE)).action, "forward");
  engine.close();
});

// Every field of the extractor table, tested through a rule on a fixture and an envelope.
const FIELD_CASES: { when: string; file: string; holds: boolean }[] = [
  { when: `{ from: { equals: "alice@example.com" } }`, file: "plain.eml", holds: true },
  { when: `{ from: { contains: "Alice Example" } }`, file: "plain.eml", holds: true },
  { when: `{ from: { contains: "이벤트" } }`, file: "euc_kr_subject.eml", holds: true },
  { when: `{ from: { contains: "mallory" } }`, file: "plain.eml", holds: false },
  { when: `{ to: { equals: "bob@example.net" } }`, file: "plain.eml", holds: true },
  { when: `{ cc: { contains: "@" } }`, file: "plain.eml", holds: false },
  { when: `{ mail_from: { equals: "ALICE@example.com" } }`, file: "plain.eml", holds: true },
  { when: `{ rcpt_to: { contains: "@example.net" } }`, file: "plain.eml", holds: true },
  { when: `{ helo: { equals: "mail.example.com" } }`, file: "plain.eml", holds: true },
  { when: `{ attachment_name: { contains: ".pdf" } }`, file: "attachment.eml", holds: true },
  { when: `{ attachment_name: { contains: ".pdf" } }`, file: "plain.eml", holds: false },
  {
    when: `{ attachment_type: { equals: "image/png" } }`,
    file: "nested_multipart.eml",
    holds: true,
  },
];
for (const c of FIELD_CASES) {
  Deno.test(`PolicyEngine: field test ${c.when} ${c.holds ? "holds" : "does not hold"} for ${c.file}`, async () => {
    const { engine } = engineFor(`  - name: r\n    when: ${c.when}\n    action: discard\n`);
    assert.equal(
      (await engine.judge(fixture(c.file), ENVELOPE)).action,
      c.holds ? "discard" : "forward",
    );
  });
}
