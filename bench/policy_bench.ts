/**
 * Rule-evaluation cost per message for a 100-rule file on the fixture corpus (issue 3's closing
 * note asks for it).
 *
 * Run: `deno run -A bench/policy_bench.ts [ROUNDS] [--no-bulk]` (default 300 rounds over the
 * corpus; `--no-bulk` replaces the bulk rule by a keyword rule, to show the state store's share).
 * Prints median and p99 per message for
 *   (a) `PolicyEngine.evaluate()` on already decoded facts (precedence steps, bulk fingerprint
 *       recorded in an in-memory state store, all rules), and
 *   (b) `PolicyEngine.judge()`: the same plus decoding the raw message with mailparser.
 * The rule file is generated here: a realistic mix of fields (subject, body, html, headers,
 * addresses, domains, attachments, sizes, recipient counts, client networks), operators
 * (contains, equals, matches, in_list), combinators and lists, with almost every rule failing on
 * the corpus, so that every message is evaluated against (nearly) all 100 rules — the worst
 * case for evaluation order. One bulk rule makes each message record its fingerprint.
 */
import { parseConfig } from "../src/config/load_config.ts";
import type { EventLog } from "../src/log/log.ts";
import { decodeMessage } from "../src/policy/message.ts";
import { PolicyEngine } from "../src/policy/policy_engine.ts";
import type { Envelope } from "../src/policy/verdict.ts";

const NO_BULK = Deno.args.includes("--no-bulk");
const ROUNDS = Number(Deno.args.find((a) => /^\d+$/.test(a)) ?? 300);
const FIXTURES = new URL("../test/fixtures/messages/", import.meta.url);

const words = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i}`);
const q = (a: string[]) => `[${a.map((x) => JSON.stringify(x)).join(", ")}]`;

function ruleFile(): string {
  const lists = `lists:
  spam_words: ${q([...words("spamword", 300), "wire transfer fee", "beneficiary"])}
  bad_senders: ${q([...words("@bad", 200).map((w) => w + ".example"), "x@spam.example"])}
  bad_nets: ${q(["203.0.113.0/26", "192.0.2.128/25", "2001:db8:bad::/48"])}
  domains: ${q(words("domain", 100).map((w) => w + ".example"))}
`;
  const rules: string[] = [];
  const add = (name: string, when: string, action = "discard", extra = "") =>
    rules.push(`  - name: ${name}\n    when: ${when}\n    action: ${action}\n${extra}`);
  for (let i = 0; i < 20; i++) {
    add(`subject-kw-${i}`, `{ subject: { contains: ${q(words(`subjkw${i}x`, 10))} } }`);
  }
  for (let i = 0; i < 21; i++) {
    add(`body-kw-${i}`, `{ body: { contains: ${q(words(`bodykw${i}x`, 8))} } }`, "reject");
  }
  for (let i = 0; i < 10; i++) {
    add(`subject-re-${i}`, `{ subject: { matches: "^(?:re|fwd): urgent${i} .*invoice" } }`);
  }
  for (let i = 0; i < 5; i++) {
    add(
      `body-re-${i}`,
      `{ body: { matches: "account${i} (?:suspended|locked) .*verify" } }`,
      "quarantine",
    );
  }
  for (let i = 0; i < 5; i++) {
    add(`header-${i}`, `{ header: { name: X-Mailer, matches: "^massmailer${i}" } }`);
  }
  add(
    "words-subject",
    `{ subject: { in_list: spam_words } }`,
    "[tag, alert]",
    `    tag: { header: "X-Spam: yes" }\n`,
  );
  add("words-html", `{ html: { in_list: spam_words }, size: { over: 1M } }`);
  add("bad-sender", `{ mail_from: { in_list: bad_senders } }`, "reject");
  add("bad-net", `{ client_ip: { in_list: bad_nets } }`, "reject");
  add("bad-domain", `{ sender_domain: { in_list: domains } }`);
  for (let i = 0; i < 10; i++) {
    add(
      `domain-eq-${i}`,
      `{ sender_domain: { equals: ${q(words(`spam${i}x`, 5).map((w) => w + ".example"))} } }`,
    );
  }
  for (let i = 0; i < 5; i++) {
    add(
      `attach-${i}`,
      `{ attachment_name: { matches: "\\\\.(?:exe${i}|scr${i}|bat${i})$" } }`,
      "quarantine",
    );
  }
  for (let i = 0; i < 5; i++) {
    add(`big-many-${i}`, `{ size: { over: ${10 + i}M }, rcpt_count: { at_least: ${50 + i} } }`);
  }
  for (let i = 0; i < 10; i++) {
    add(
      `combo-${i}`,
      `{ any: [ { all: [ { from_name: { contains: "paypal${i}" } }, { not: { sender_domain: { equals: paypal.example } } } ] }, { helo: { matches: "^dynamic-${i}-[0-9]+\\\\." } }, { to: { equals: "nobody${i}@corp.example" } } ] }`,
    );
  }
  if (NO_BULK) add("bulk", `{ subject: { contains: nobulkkeyword } }`);
  else add("bulk", `{ bulk: { servers: 50, recipients: 5000, within: 10m } }`, "[discard, alert]");
  add(
    "observe-tls",
    `{ tls: true, subject: { contains: observekw } }`,
    "reject",
    "    mode: observe\n",
  );
  add("server-x", `{ server: { in: [198.51.100.200/29] }, cc: { contains: "ccbulk" } }`);
  add("last", `{ subject: { contains: neverpresentkeyword } }`);
  if (rules.length !== 100) throw new Error(`generated ${rules.length} rules, not 100`);
  return `gateway:\n  protect: [198.51.100.0/24]\n${lists}rules:\n${rules.join("")}`;
}

const nullLog: EventLog = { event() {} };

function stats(samples: number[]): { median: number; p99: number; mean: number } {
  const s = [...samples].sort((a, b) => a - b);
  const at = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { median: at(0.5), p99: at(0.99), mean: s.reduce((a, b) => a + b, 0) / s.length };
}

const fmt = (ms: number) => `${(ms * 1000).toFixed(1)} µs`;

const cfg = parseConfig(ruleFile(), "bench.yaml");
const engine = new PolicyEngine(cfg, nullLog);
const corpus: { name: string; raw: Uint8Array }[] = [];
for (const e of Deno.readDirSync(FIXTURES)) {
  if (e.isFile && e.name.endsWith(".eml")) {
    corpus.push({ name: e.name, raw: Deno.readFileSync(new URL(e.name, FIXTURES)) });
  }
}
corpus.sort((a, b) => a.name.localeCompare(b.name));
const facts = await Promise.all(corpus.map((c) => decodeMessage(c.raw)));
const envelope = (i: number): Envelope => ({
  mailFrom: `sender${i}@example.org`,
  rcptTo: ["bob@corp.example", "carol@corp.example"],
  client: { ip: `192.0.2.${10 + (i % 100)}`, port: 40000 },
  server: { ip: `198.51.100.${25 + (i % 3)}`, port: 25 },
  helo: "mail.example.org",
  tls: i % 2 === 0,
  sessionId: `S${i}`,
  transactionId: `S${i}.1`,
});

// Warm-up (JIT), then measure.
for (let r = 0; r < 20; r++) {
  for (let i = 0; i < facts.length; i++) engine.evaluate(facts[i], envelope(i));
}
const evalSamples: number[] = [];
const perMessage = new Map<string, number[]>();
for (let r = 0; r < ROUNDS; r++) {
  for (let i = 0; i < facts.length; i++) {
    const t0 = performance.now();
    engine.evaluate(facts[i], envelope(r * facts.length + i));
    const dt = performance.now() - t0;
    evalSamples.push(dt);
    const list = perMessage.get(corpus[i].name) ?? [];
    list.push(dt);
    perMessage.set(corpus[i].name, list);
  }
}
const judgeSamples: number[] = [];
const judgeRounds = Math.max(10, Math.floor(ROUNDS / 5));
for (let r = 0; r < judgeRounds; r++) {
  for (let i = 0; i < corpus.length; i++) {
    const t0 = performance.now();
    await engine.judge(corpus[i].raw, envelope(r * corpus.length + i));
    judgeSamples.push(performance.now() - t0);
  }
}
engine.close();

const a = stats(evalSamples);
const b = stats(judgeSamples);
console.log(
  `policy bench${
    NO_BULK ? " (no bulk rule)" : ""
  }: ${cfg.rules.length} rules, ${corpus.length} fixture messages, Deno ${Deno.version.deno}`,
);
console.log(
  `(a) evaluate on decoded facts: ${evalSamples.length} samples  median ${fmt(a.median)}  p99 ${
    fmt(a.p99)
  }  mean ${fmt(a.mean)}`,
);
console.log(
  `(b) judge incl. decoding:      ${judgeSamples.length} samples  median ${fmt(b.median)}  p99 ${
    fmt(b.p99)
  }  mean ${fmt(b.mean)}`,
);
console.log("per message, evaluate median:");
for (const [name, s] of perMessage) console.log(`  ${name.padEnd(28)} ${fmt(stats(s).median)}`);
