/**
 * The evasion corpus (issue 8) through the built gateway: every message in
 * test/fixtures/evasion/ is sent by swaks through `dist/ssg` (rules of the same shape as the
 * corpus's rules.yaml) to an smtp-sink behind it. None may reach the server: each gets its
 * rule's reply (reject: 5xx; discard: 250, dropped) or the `content.undecodable` verdict
 * (quarantine: 250 after the message is on disk). Test/policy/evasion_test.ts checks the same
 * corpus through the engine and `ssg explain`. Needs root and `./build.sh` first.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import {
  e2e,
  eventually,
  finalReply,
  readSinkDumps,
  REJECT_TEXT,
  startSink,
  swaks,
} from "./helpers.ts";

const DIR = new URL("../fixtures/evasion/", import.meta.url);

/** Expected SMTP outcome per message: the final reply code and the rule in the verdict log. */
const EXPECTED: Record<string, { code: number; rule: string }> = {
  "parts_300_base64.eml.gz": { code: 550, rule: "pills" },
  "parts_1001.eml.gz": { code: 250, rule: "undecodable" },
  "whitespace_padding.eml.gz": { code: 550, rule: "pills" },
  "header_900k.eml.gz": { code: 250, rule: "lottery" },
  "header_1100k.eml.gz": { code: 250, rule: "undecodable" },
  "attached_message_subject.eml": { code: 250, rule: "lottery" },
  "nested_attached_messages.eml": { code: 550, rule: "pills" },
  "text_attachment.eml": { code: 550, rule: "pills" },
  "html_attachment.eml": { code: 550, rule: "pills" },
  "attachment_in_attached_message.eml": { code: 550, rule: "exe" },
  "flowed_delsp.eml": { code: 550, rule: "pills" },
  "css_display_none.eml": { code: 550, rule: "pills" },
  "css_visibility_hidden.eml": { code: 550, rule: "pills" },
  "css_font_size_zero.eml": { code: 550, rule: "pills" },
  "css_hidden_class.eml": { code: 550, rule: "pills" },
  "raw_euc_kr_subject.eml": { code: 250, rule: "lottery" },
  "raw_cp949_subject.eml": { code: 250, rule: "lottery" },
  "raw_iso_2022_kr_subject.eml": { code: 250, rule: "lottery" },
  "raw_shift_jis_body.eml": { code: 550, rule: "foreign-lottery" },
  "raw_gb2312_body.eml": { code: 550, rule: "foreign-lottery" },
  "raw_koi8_r_body.eml": { code: 550, rule: "foreign-lottery" },
  "utf7_body.eml": { code: 550, rule: "pills" },
  "utf7_encoded_word.eml": { code: 250, rule: "lottery" },
  "uuencoded_body.eml": { code: 550, rule: "pills" },
  "confusable_subject.eml": { code: 250, rule: "lottery" },
  "confusable_greek_body.eml": { code: 550, rule: "pills" },
  "duplicate_subject.eml": { code: 250, rule: "lottery" },
  "duplicate_from.eml": { code: 550, rule: "bad-sender" },
  "duplicate_content_type.eml": { code: 550, rule: "pills" },
  "duplicate_transfer_encoding.eml": { code: 550, rule: "pills" },
};

const EXTRA_RULES = `  - name: foreign-lottery
    when:
      body: { contains: ["当選", "中奖", "лотерею"] }
    action: reject
  - name: bad-sender
    when:
      from_address: { equals: spammer@bad.example }
    action: reject
  - name: exe
    when:
      attachment_name: { matches: "\\\\.exe$" }
    action: reject
`;

e2e(
  "no message of the evasion corpus reaches the server through the gateway: each gets its rule's verdict or the undecodable one",
  { extraRules: EXTRA_RULES, level: "info" },
  async (w) => {
    const { t } = w;
    const files = [...Deno.readDirSync(DIR)].map((e) => e.name).filter((n) =>
      /\.eml(\.gz)?$/.test(n)
    ).sort();
    assert.deepEqual(files, Object.keys(EXPECTED).sort(), "every corpus message has an outcome");
    const sink = await startSink(t, t.addr.server4, join(w.dir, "sink"));
    const ssg = await w.startSsg();
    // A clean message first: the gateway forwards mail it can read and no rule stops.
    const clean = await w.message(
      "clean.eml",
      "From: a@example.org\r\nTo: b@example.net\r\nSubject: minutes\r\n\r\nSee you at ten.\r\n",
    );
    const ok = await swaks(t, { server: t.addr.server4, to: ["b@example.net"], dataFile: clean });
    assert.equal(finalReply(ok.transcript)?.code, 250, ok.transcript);
    let verdicts = 1;
    for (const name of files) {
      let raw = Deno.readFileSync(new URL(name, DIR));
      if (name.endsWith(".gz")) raw = new Uint8Array(gunzipSync(raw));
      const path = await w.message(name.replace(/\.gz$/, ""), raw);
      const r = await swaks(t, {
        server: t.addr.server4,
        to: ["b@example.net"],
        dataFile: path,
        timeoutS: 60,
      });
      const want = EXPECTED[name];
      const reply = finalReply(r.transcript);
      assert.equal(reply?.code, want.code, `${name}: ${reply?.code} ${reply?.text}`);
      if (want.rule === "pills") assert.ok(reply?.text.includes(REJECT_TEXT), reply?.text);
      verdicts++;
      const logged = await eventually(
        () => (ssg.log().match(/\bpolicy\.verdict\b/g)?.length ?? 0) >= verdicts,
        10_000,
      );
      assert.ok(logged, `${name}: verdict logged`);
      const last = ssg.log().split("\n").filter((l) => /\bpolicy\.verdict\b/.test(l)).at(-1) ?? "";
      assert.match(
        last,
        new RegExp(`\\brule\\W+${want.rule}\\b`),
        `${name}: ${last.slice(0, 300)}`,
      );
    }
    await sink.stop();
    const dumps = await readSinkDumps(sink.dir);
    assert.equal(dumps.length, 1, "only the clean message reached the server");
    assert.match(dumps[0].message, /See you at ten\./);
  },
);
