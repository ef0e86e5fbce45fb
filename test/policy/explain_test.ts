import assert from "node:assert/strict";
import { parseConfig } from "../../src/config/load_config.ts";
import { explainCommand, explainMessage, renderExplanation } from "../../src/policy/explain.ts";

const FIXTURES = new URL("../fixtures/messages/", import.meta.url);
const fixturePath = (name: string) => new URL(name, FIXTURES).pathname;

const RULES = `gateway:
  protect: [198.51.100.0/24]
lists:
  scam: ["wire transfer fee"]
spamtraps:
  addresses: [trap@corp.example]
rules:
  - name: watch-mailer
    mode: observe
    when: { header: { name: X-Mailer, matches: "^bulkmailer" } }
    action: reject
  - name: scam-tag
    when: { html: { in_list: scam } }
    action: [tag, alert]
    tag: { header: "X-Spam-Flag: YES" }
  - name: exe
    when:
      all:
        - attachment_name: { matches: "\\\\.pdf\\\\.exe$" }
        - not: { tls: true }
    action: quarantine
  - name: never
    when: { size: { over: 10M } }
    action: discard
`;

Deno.test("explainMessage() reports every rule, leaf by leaf, and the verdict", async () => {
  const cfg = parseConfig(RULES, "rules.yaml");
  const e = await explainMessage(cfg, Deno.readFileSync(fixturePath("phish_exe.eml")), {
    client: "203.0.113.7",
  });
  assert.deepEqual(e.steps.map((s) => [s.step, s.holds]), [
    ["allowlist", false],
    ["blacklist", false],
    ["spamtrap", false],
  ]);
  assert.deepEqual(e.rules.map((r) => [r.rule, r.matched, r.outcome]), [
    ["watch-mailer", true, "observed"],
    ["scam-tag", true, "accumulated"],
    ["exe", true, "decided"],
    ["never", false, "no match"],
  ]);
  assert.equal(e.rules[0].trace?.detail, '"^bulkmailer" ~ "bulkmailer"');
  assert.deepEqual(e.rules[2].trace?.children?.map((t) => [t.test, t.holds]), [
    ['attachment_name matches "\\\\.pdf\\\\.exe$"', true],
    ["not", true],
  ]);
  assert.equal(e.rules[3].trace?.detail, `size is ${e.facts.size}`);
  assert.equal(e.verdict.action, "quarantine");
  assert.deepEqual(e.verdict.tag, { headers: [{ name: "X-Spam-Flag", value: "YES" }] });
  assert.deepEqual(e.verdict.observed, ["watch-mailer"]);
  // Envelope defaults come from the message's headers.
  assert.equal(e.envelope.mailFrom, "security@paypa1-support.example");
  assert.deepEqual(e.envelope.rcptTo, ["bob@corp.example"]);
  assert.equal(e.envelope.server.ip, "198.51.100.0");

  const text = renderExplanation(e);
  for (
    const s of [
      "1. watch-mailer (reject) [observe only]: MATCHED → observed",
      "2. scam-tag (tag, alert): MATCHED → accumulated",
      `✓ html in_list scam — "wire transfer fee" ~`,
      "3. exe (quarantine): MATCHED → decided",
      "4. never (discard): no match",
      `✗ size over 10485760 — size is ${e.facts.size}`,
      "verdict: quarantine by exe",
      "tag: add header X-Spam-Flag: YES",
      "after the reply: alert (scam-tag)",
      "observed (logged only): watch-mailer",
    ]
  ) assert.ok(text.includes(s), `missing ${JSON.stringify(s)} in\n${text}`);
});

Deno.test("explainMessage() shows a spamtrap deciding before the rules, rules still traced", async () => {
  const cfg = parseConfig(RULES, "rules.yaml");
  const e = await explainMessage(cfg, Deno.readFileSync(fixturePath("plain.eml")), {
    to: ["trap@corp.example"],
    from: "x@spam.example",
  });
  assert.equal(e.verdict.action, "discard");
  assert.equal(e.verdict.rule, "spamtrap");
  assert.equal(e.rules.length, 4);
  const text = renderExplanation(e);
  assert.ok(text.includes("HOLDS spamtrap: recipient trap@corp.example is a spamtrap"), text);
  assert.ok(
    text.includes("after the reply: blacklist sender x@spam.example for 1d (spamtrap)"),
    text,
  );
});

Deno.test("explainCommand() prints text or JSON and returns 0; usage 64; bad rule file 2; missing message 1", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ssg-explain-" });
  try {
    await Deno.writeTextFile(`${dir}/rules.yaml`, RULES);
    await Deno.writeTextFile(
      `${dir}/bad.yaml`,
      "gateway:\n  protect: [198.51.100.0/24]\nrulez: []\n",
    );
    const run = async (args: string[]) => {
      let out = "";
      let err = "";
      const code = await explainCommand(args, {
        stdout: (s) => (out += s + "\n"),
        stderr: (s) => (err += s + "\n"),
      });
      return { code, out, err };
    };
    const text = await run([
      `${dir}/rules.yaml`,
      fixturePath("phish_exe.eml"),
      "--client",
      "203.0.113.7",
      "--tls",
    ]);
    assert.equal(text.code, 0);
    assert.match(text.out, /verdict: forward/); // --tls: the exe rule's not(tls) fails
    assert.match(text.out, /✗ not\n/);
    const json = await run([
      `${dir}/rules.yaml`,
      fixturePath("phish_exe.eml"),
      "--json",
      "--to",
      "a@corp.example",
      "--to",
      "b@corp.example",
    ]);
    assert.equal(json.code, 0);
    const parsed = JSON.parse(json.out);
    assert.equal(parsed.verdict.action, "quarantine");
    assert.deepEqual(parsed.envelope.rcptTo, ["a@corp.example", "b@corp.example"]);
    assert.equal((await run([`${dir}/rules.yaml`])).code, 64);
    assert.equal((await run([`${dir}/rules.yaml`, "m.eml", "--client"])).code, 64);
    assert.equal((await run([`${dir}/rules.yaml`, "m.eml", "--bogus"])).code, 64);
    const bad = await run([`${dir}/bad.yaml`, fixturePath("plain.eml")]);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /bad\.yaml:3:1: unknown key "rulez"/);
    const missing = await run([`${dir}/rules.yaml`, `${dir}/nope.eml`]);
    assert.equal(missing.code, 1);
    assert.match(missing.err, /cannot read message/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
