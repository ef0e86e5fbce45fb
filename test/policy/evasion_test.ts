/**
 * The evasion corpus (issue 8): every trick that once got a message forwarded with 250 past a
 * `subject contains` or `body contains` rule now gets the rule's verdict — or, when the trick is
 * to be unreadable, the `content.undecodable` verdict — through the policy engine and through
 * `ssg explain`. The messages are in test/fixtures/evasion/ (written by make_fixtures.ts).
 */
import assert from "node:assert/strict";
import { gunzipSync } from "node:zlib";
import { parseConfig } from "../../src/config/load_config.ts";
import { MemoryLog } from "../../src/log/log.ts";
import { explainCommand } from "../../src/policy/explain.ts";
import { PolicyEngine } from "../../src/policy/policy_engine.ts";
import type { Envelope, Verdict } from "../../src/policy/verdict.ts";
import { policyEnvelope } from "./policy_helpers.ts";

const DIR = new URL("../fixtures/evasion/", import.meta.url);
const RULES_PATH = new URL("rules.yaml", DIR).pathname;
const RULES = Deno.readTextFileSync(RULES_PATH);

const ENVELOPE: Envelope = policyEnvelope({
  mailFrom: "promo@sender.example",
  rcptTo: ["user@example.net"],
  helo: "sender.example",
});

function message(file: string): Uint8Array {
  const raw = Deno.readFileSync(new URL(file, DIR));
  return file.endsWith(".gz") ? new Uint8Array(gunzipSync(raw)) : raw;
}

interface Case {
  file: string;
  trick: string;
  action: Verdict["action"];
  rule: string;
  /** Part of the evidence. */
  evidence: RegExp;
}

const CASES: Case[] = [
  // 1. Size and count limits: read whole, or the undecodable verdict.
  {
    file: "parts_300_base64.eml.gz",
    trick: "more than mailparser's 256 MIME parts, the keyword in a base64 part",
    action: "reject",
    rule: "pills",
    evidence: /^body contains "cheap pills"$/,
  },
  {
    file: "parts_1001.eml.gz",
    trick: "more than max_parts (1000) MIME parts",
    action: "quarantine",
    rule: "undecodable",
    evidence: /^message not fully read: .*more than 1000 MIME parts/,
  },
  {
    file: "whitespace_padding.eml.gz",
    trick: "1.1 MB of white space before the keyword",
    action: "reject",
    rule: "pills",
    evidence: /^body contains "cheap pills"$/,
  },
  {
    file: "header_900k.eml.gz",
    trick: "a 900 KB header section before Subject (under max_header_bytes)",
    action: "discard",
    rule: "lottery",
    evidence: /^subject contains "lottery"$/,
  },
  {
    file: "header_1100k.eml.gz",
    trick: "a 1.1 MB header section before Subject (over max_header_bytes)",
    action: "quarantine",
    rule: "undecodable",
    evidence: /^message not fully read: .*a header section is larger than 1048576 bytes/,
  },
  // 2. What a client shows.
  {
    file: "attached_message_subject.eml",
    trick: "the keyword in the Subject of an attached message",
    action: "discard",
    rule: "lottery",
    evidence: /^subject contains "lottery"$/,
  },
  {
    file: "nested_attached_messages.eml",
    trick: "the keyword in a base64 body two attached messages down",
    action: "reject",
    rule: "pills",
    evidence: /^body contains "cheap pills"$/,
  },
  {
    file: "text_attachment.eml",
    trick: "the keyword in a text/plain attachment",
    action: "reject",
    rule: "pills",
    evidence: /^body contains "cheap pills"$/,
  },
  {
    file: "html_attachment.eml",
    trick: "the keyword in a text/html attachment",
    action: "reject",
    rule: "pills",
    evidence: /^body contains "cheap pills"$/,
  },
  ...["display_none", "visibility_hidden", "font_size_zero", "hidden_class"].map((k) => ({
    file: `css_${k}.eml`,
    trick: `the keyword split by text hidden with CSS (${k.replaceAll("_", " ")})`,
    action: "reject" as const,
    rule: "pills",
    evidence: /^body contains "cheap pills"$/,
  })),
  {
    file: "attachment_in_attached_message.eml",
    trick: "an .exe attachment inside an attached message",
    action: "reject",
    rule: "exe",
    evidence: /^attachment_name matches ".+\.exe\$"$/,
  },
  {
    file: "flowed_delsp.eml",
    trick: "format=flowed with DelSp=yes splitting the keyword at soft line breaks",
    action: "reject",
    rule: "pills",
    evidence: /^body contains "cheap pills"$/,
  },
  // 3. Encodings.
  {
    file: "raw_euc_kr_subject.eml",
    trick: "a raw 8-bit EUC-KR Subject without a charset label",
    action: "discard",
    rule: "lottery",
    evidence: /^subject contains "당첨"$/,
  },
  {
    file: "raw_cp949_subject.eml",
    trick: "a raw CP949 Subject (a syllable EUC-KR lacks) without a label",
    action: "discard",
    rule: "lottery",
    evidence: /^subject contains "당첨"$/,
  },
  {
    file: "raw_iso_2022_kr_subject.eml",
    trick: "a raw ISO-2022-KR Subject without a label",
    action: "discard",
    rule: "lottery",
    evidence: /^subject contains "당첨"$/,
  },
  {
    file: "raw_shift_jis_body.eml",
    trick: "a Shift_JIS body without a charset label",
    action: "reject",
    rule: "foreign-lottery",
    evidence: /^body contains "当選"$/,
  },
  {
    file: "raw_gb2312_body.eml",
    trick: "a GB2312 body without a charset label",
    action: "reject",
    rule: "foreign-lottery",
    evidence: /^body contains "中奖"$/,
  },
  {
    file: "raw_koi8_r_body.eml",
    trick: "a KOI8-R body without a charset label",
    action: "reject",
    rule: "foreign-lottery",
    evidence: /^body contains "лотерею"$/,
  },
  {
    file: "utf7_body.eml",
    trick: "a UTF-7 body",
    action: "reject",
    rule: "pills",
    evidence: /^body contains "cheap pills"$/,
  },
  {
    file: "utf7_encoded_word.eml",
    trick: "a UTF-7 encoded word in the Subject",
    action: "discard",
    rule: "lottery",
    evidence: /^subject contains "lottery"$/,
  },
  {
    file: "uuencoded_body.eml",
    trick: "a uuencoded body",
    action: "reject",
    rule: "pills",
    evidence: /^body contains "cheap pills"$/,
  },
  {
    file: "confusable_subject.eml",
    trick: "Cyrillic look-alike letters in the Subject",
    action: "discard",
    rule: "lottery",
    evidence: /^subject contains "lottery"$/,
  },
  {
    file: "confusable_greek_body.eml",
    trick: "Cyrillic, Greek and Roman-numeral look-alikes in the body",
    action: "reject",
    rule: "pills",
    evidence: /^body contains "cheap pills"$/,
  },
  // 4. Ambiguity: every reading is judged.
  {
    file: "duplicate_subject.eml",
    trick: "two Subject fields, the keyword in the second",
    action: "discard",
    rule: "lottery",
    evidence: /^subject contains "lottery"$/,
  },
  {
    file: "duplicate_from.eml",
    trick: "two From fields, the listed sender in the second",
    action: "reject",
    rule: "bad-sender",
    evidence: /^from_address equals "spammer@bad.example"$/,
  },
  {
    file: "duplicate_content_type.eml",
    trick: "two Content-Type fields (text/plain, then a multipart with a base64 part)",
    action: "reject",
    rule: "pills",
    evidence: /^body contains "cheap pills"$/,
  },
  {
    file: "duplicate_transfer_encoding.eml",
    trick: "two Content-Transfer-Encoding fields (7bit, then base64)",
    action: "reject",
    rule: "pills",
    evidence: /^body contains "cheap pills"$/,
  },
];

Deno.test("the evasion corpus has a test case for every message in it", () => {
  const files = [...Deno.readDirSync(DIR)].map((e) => e.name).filter((n) =>
    /\.eml(\.gz)?$/.test(n)
  );
  assert.deepEqual(files.sort(), CASES.map((c) => c.file).sort());
});

for (const c of CASES) {
  Deno.test(`the policy engine gives ${c.file} (${c.trick}) ${c.action} by ${c.rule}`, async () => {
    const log = new MemoryLog();
    const engine = new PolicyEngine(parseConfig(RULES, "rules.yaml"), log);
    try {
      const v = await engine.judge(message(c.file), ENVELOPE);
      assert.equal(v.action, c.action, v.evidence);
      assert.equal(v.rule, c.rule);
      assert.match(v.evidence ?? "", c.evidence);
      const logged = log.named("policy.verdict")[0].fields;
      assert.equal(logged.rule, c.rule);
      assert.match(String(logged.evidence), c.evidence);
    } finally {
      engine.close();
    }
  });

  Deno.test(`ssg explain shows ${c.file} (${c.trick}) as ${c.action} by ${c.rule}`, async () => {
    let path = new URL(c.file, DIR).pathname;
    let tmp: string | undefined;
    if (c.file.endsWith(".gz")) {
      tmp = Deno.makeTempFileSync({ suffix: ".eml" });
      Deno.writeFileSync(tmp, message(c.file));
      path = tmp;
    }
    try {
      const out: string[] = [];
      const code = await explainCommand([RULES_PATH, path], { stdout: (s) => out.push(s) });
      assert.equal(code, 0);
      const text = out.join("\n");
      assert.match(text, new RegExp(`^verdict: ${c.action} by ${c.rule}$`, "m"));
      const evidence = /^ {2}evidence: (.*)$/m.exec(text)?.[1] ?? "";
      assert.match(evidence, c.evidence);
      if (c.rule === "undecodable") {
        assert.match(text, /^ {2}NOT FULLY READ: .+ \(content\.undecodable: quarantine\)$/m);
      }
    } finally {
      if (tmp) Deno.removeSync(tmp);
    }
  });
}
