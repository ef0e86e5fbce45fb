/**
 * Decoding only what the rules read (issue 9): envelope-only rules decode nothing, header rules
 * only the header section, anything else everything; what was not read still cannot pass as clean.
 */
import assert from "node:assert/strict";
import { parseConfig } from "../../src/config/load_config.ts";
import { MemoryLog } from "../../src/log/log.ts";
import { decodeNeedsOf } from "../../src/policy/decode_needs.ts";
import type { Rule } from "../../src/policy/rule.ts";
import { PolicyEngine } from "../../src/policy/policy_engine.ts";
import type { Envelope } from "../../src/policy/verdict.ts";
import { policyEnvelope } from "./policy_helpers.ts";

const enc = new TextEncoder();
const ENVELOPE: Envelope = policyEnvelope({
  mailFrom: "promo@sender.example",
  rcptTo: ["user@example.net"],
  helo: "sender.example",
});

function config(rules: string, content = "") {
  return parseConfig(
    `gateway:\n  protect: [198.51.100.0/24]\ncontent: { max_parts: 5${content} }\n` +
      `lists:\n  words: [lottery]\nrules:\n${rules}`,
    "rules.yaml",
  );
}

const rule = (name: string, when: string, action = "discard") =>
  `  - name: ${name}\n    when: ${when}\n    action: ${action}\n`;

Deno.test("decode needs: envelope, session and memory leaves need nothing", () => {
  const cfg = config(
    rule("a", "{ mail_from: { contains: x } }") +
      rule("b", "{ all: [ { rcpt_count: { over: 5 } }, { client_ip: { in: [192.0.2.0/24] } } ] }") +
      rule(
        "c",
        "{ not: { any: [ { helo: { equals: x } }, { tls: true }, { listed: blacklist } ] } }",
      ) +
      rule("d", "{ size: { over: 5M } }"),
  );
  assert.equal(decodeNeedsOf(cfg.rules), "none");
});

Deno.test("decode needs: a header test needs the header section; text fields and bulk need everything", () => {
  const header = rule("h", "{ header: { name: x-mailer, contains: bulkmail } }");
  assert.equal(decodeNeedsOf(config(header).rules), "headers");
  for (
    const when of [
      "{ subject: { contains: lottery } }",
      "{ any: [ { mail_from: { contains: x } }, { body: { in_list: words } } ] }",
      "{ not: { attachment_name: { matches: 'exe$' } } }",
      "{ from_address: { contains: x } }",
      "{ bulk: { servers: 3, within: 10m } }",
    ]
  ) {
    assert.equal(decodeNeedsOf(config(header + rule("t", when)).rules), "full", when);
  }
});

async function judge(cfg: ReturnType<typeof config>, raw: Uint8Array) {
  const log = new MemoryLog();
  const engine = new PolicyEngine(cfg, log);
  try {
    const v = await engine.judge(raw, ENVELOPE);
    return { v, decoder: log.named("policy.verdict")[0].fields.decoder, needs: engine.decodeNeeds };
  } finally {
    engine.close();
  }
}

const PLAIN = enc.encode(
  "Subject: You won the lottery\r\nX-Mailer: BulkMail 3\r\n\r\nclaim the lottery prize\r\n",
);

function sixParts(): Uint8Array {
  let m = `Subject: hello\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n`;
  for (let i = 0; i < 6; i++) m += `--B\r\nContent-Type: text/plain\r\n\r\npart ${i}\r\n`;
  return enc.encode(m + "--B--\r\n");
}

Deno.test("decode needs: the engine decodes only what its rules read, with the same verdicts", async () => {
  const env = await judge(
    config(rule("partner", "{ mail_from: { contains: sender.example } }")),
    PLAIN,
  );
  assert.equal(env.needs, "none");
  assert.equal(env.decoder, "none");
  assert.equal(env.v.action, "discard");
  assert.equal(env.v.rule, "partner");

  const hdr = await judge(
    config(rule("mailer", "{ header: { name: X-Mailer, contains: bulkmail } }")),
    PLAIN,
  );
  assert.equal(hdr.decoder, "headers");
  assert.equal(hdr.v.rule, "mailer");
  assert.match(hdr.v.evidence ?? "", /bulkmail/);

  const full = await judge(config(rule("lottery", "{ body: { contains: lottery } }")), PLAIN);
  assert.equal(full.decoder, "plain"); // a plain message: read without mailparser
  assert.equal(full.v.rule, "lottery");
});

Deno.test("decode needs: an envelope-only policy still never forwards a message past the bounds as clean", async () => {
  const forward = rule("partner", "{ mail_from: { contains: sender.example } }", "forward");
  const q = await judge(config(forward), sixParts());
  assert.equal(q.decoder, "none");
  assert.equal(q.v.action, "quarantine");
  assert.equal(q.v.rule, "undecodable");
  assert.match(q.v.evidence ?? "", /more than 5 MIME parts/);
  // With `undecodable: forward` nothing is read at all, and the rule decides.
  const f = await judge(config(forward, ", undecodable: forward"), sixParts());
  assert.equal(f.v.action, "forward");
  assert.equal(f.v.rule, "partner");
  // Header bounds are checked in header mode too.
  let many = "";
  for (let i = 0; i < 12; i++) many += `X-Trace-${i}: ${i}\r\n`;
  const h = await judge(
    config(
      rule("mailer", "{ header: { name: x-mailer, contains: nothing } }"),
      ", max_headers: 10",
    ),
    enc.encode(`${many}Subject: hi\r\n\r\nbody\r\n`),
  );
  assert.equal(h.decoder, "headers");
  assert.equal(h.v.rule, "undecodable");
  assert.match(h.v.evidence ?? "", /more than 10 header fields/);
});

Deno.test("decode needs: engines that read the raw bytes or the envelope (rspamd, auth, dnsbl, virus) need nothing decoded", () => {
  for (const kind of ["rspamd", "auth", "dnsbl", "virus"]) {
    const r = { name: kind, mode: "enforce", when: { kind }, actions: [] } as unknown as Rule;
    assert.equal(decodeNeedsOf([r]), "none", kind);
  }
  const unknown = { name: "x", mode: "enforce", when: { kind: "future" }, actions: [] };
  assert.equal(decodeNeedsOf([unknown as unknown as Rule]), "full");
});
