/**
 * The `rspamd` condition through the policy engine, with a real Rspamd (test/engines/
 * rspamd_fixture.ts: a config the test writes, no network): GTUBE → Rspamd's reject action →
 * the rule's reply, the test symbol and the score tests, clean → forward; Rspamd unreachable →
 * each `rspamd.on_failure` verdict (ignore logged); a policy that never tests `rspamd` never
 * connects; the rule-file errors.
 */
import assert from "node:assert/strict";
import { ConfigError } from "../../src/config/config_error.ts";
import { parseConfig } from "../../src/config/load_config.ts";
import { summarizeConfig } from "../../src/config/summarize_config.ts";
import { MemoryLog } from "../../src/log/log.ts";
import { explainMessage, renderExplanation } from "../../src/policy/explain.ts";
import { PolicyEngine } from "../../src/policy/policy_engine.ts";
import type { Envelope } from "../../src/policy/verdict.ts";
import { policyEnvelope } from "./policy_helpers.ts";
import { freePort, GTUBE, MARKER, startRspamd } from "../engines/rspamd_fixture.ts";

const CRLF = "\r\n";
const enc = (s: string) => new TextEncoder().encode(s);

const ENVELOPE: Envelope = policyEnvelope({ authUser: "alice" });

const RULES = `rules:
  - name: rspamd-reject
    when: { rspamd: { action: reject } }
    action: reject
    reply: { code: 554, enhanced: "5.7.1", text: "Spam (rspamd)" }
  - name: test-marker
    when: { rspamd: { symbol: ssg_test_marker, score_at_least: 6 } }
    action: discard
`;

function configFor(rspamd: string, rules = RULES) {
  return parseConfig(`gateway:\n  protect: [198.51.100.0/24]\n${rspamd}${rules}`, "t.yaml");
}

function engineFor(rspamd: string, rules = RULES) {
  const log = new MemoryLog();
  return { engine: new PolicyEngine(configFor(rspamd, rules), log), log };
}

const mail = (body: string) =>
  enc(
    `From: <alice@example.com>${CRLF}To: <bob@example.net>${CRLF}Subject: minutes${CRLF}` +
      `Message-ID: <m1@example.com>${CRLF}${CRLF}${body}${CRLF}`,
  );
const CLEAN = mail("The minutes of today's meeting.");

Deno.test("with a real rspamd: GTUBE is rejected by rspamd: { action: reject }, the test symbol by symbol + score, clean mail is forwarded; explain shows the score", async (t) => {
  const rspamd = await startRspamd();
  try {
    const section = `rspamd:\n  address: 127.0.0.1:${rspamd.port}\n  timeout: 20s\n`;
    const { engine, log } = engineFor(section);
    try {
      assert.equal(engine.scores, true);
      await t.step("GTUBE", async () => {
        const v = await engine.judge(mail(GTUBE), ENVELOPE);
        assert.equal(v.action, "reject");
        assert.equal(v.rule, "rspamd-reject");
        assert.deepEqual(v.action === "reject" ? v.reply : undefined, {
          code: 554,
          enhanced: "5.7.1",
          text: "Spam (rspamd)",
        });
        assert.match(
          v.evidence ?? "",
          /^rspamd scored "score 15\/15 \(reject\); symbols .*GTUBE\(0\)/,
        );
        const line = log.named("policy.verdict").at(-1)!;
        assert.match(String(line.fields.rspamd), /\(reject\); symbols .*GTUBE/);
        assert.equal(typeof line.fields.rspamd_ms, "number");
      });
      await t.step("the marker symbol with a score of at least 6", async () => {
        const v = await engine.judge(mail(`read ${MARKER} now`), ENVELOPE);
        assert.equal(v.action, "discard");
        assert.equal(v.rule, "test-marker");
        assert.equal(
          v.evidence,
          'rspamd scored "SSG_TEST_MARKER fired; score 7/15 (add header); symbols SSG_TEST_MARKER(7)"',
        );
      });
      await t.step("clean", async () => {
        const v = await engine.judge(CLEAN, ENVELOPE);
        assert.equal(v.action, "forward");
        assert.equal(v.rule, undefined);
        assert.match(String(log.named("policy.verdict").at(-1)!.fields.rspamd), /\(no action\)/);
      });
    } finally {
      engine.close();
    }
    await t.step("score_at_least, score_below and action lists", async () => {
      const { engine } = engineFor(
        section,
        `rules:
  - name: high
    when: { rspamd: { score_at_least: 7 } }
    action: discard
  - name: low
    when: { rspamd: { score_below: 1, action: [no_action, greylist] } }
    action: quarantine
`,
      );
      try {
        assert.equal((await engine.judge(mail(MARKER), ENVELOPE)).rule, "high");
        assert.equal((await engine.judge(CLEAN, ENVELOPE)).rule, "low");
      } finally {
        engine.close();
      }
    });
    await t.step("explain", async () => {
      const e = await explainMessage(configFor(section), mail(GTUBE));
      assert.equal(e.rspamd?.status, "scored");
      assert.equal(e.verdict.action, "reject");
      const text = renderExplanation(e);
      assert.match(text, /^rspamd: score 15\/15 \(reject\); symbols .*GTUBE/m);
      assert.match(text, /✓ rspamd action "reject" — scored "score 15\/15 \(reject\)/);
    });
  } finally {
    await rspamd.stop();
  }
});

Deno.test("rspamd unreachable: each on_failure verdict for a message that would be forwarded; ignore forwards and logs policy.rspamd_ignored", async () => {
  const port = freePort(); // nothing listens there
  for (
    const [onFailure, action, code] of [
      ["tempfail", "tempfail", 451],
      ["reject", "reject", 554],
      ["quarantine", "quarantine", undefined],
      ["ignore", "forward", undefined],
    ] as const
  ) {
    const { engine, log } = engineFor(
      `rspamd:\n  address: 127.0.0.1:${port}\n  on_failure: ${onFailure}\n`,
    );
    try {
      const v = await engine.judge(CLEAN, ENVELOPE);
      assert.equal(v.action, action, onFailure);
      if (code) {
        assert.equal(v.action !== "forward" && "reply" in v ? v.reply.code : 0, code);
      }
      if (onFailure === "ignore") {
        const [ignored] = log.named("policy.rspamd_ignored");
        assert.match(String(ignored?.fields.error), /rspamd at http:\/\/127\.0\.0\.1:/);
        assert.equal(ignored.fields.action, "forward");
      } else {
        assert.equal(v.rule, "rspamd-failed");
        assert.match(v.evidence ?? "", /^rspamd check failed: rspamd at http:\/\/127\.0\.0\.1:/);
        assert.equal(log.named("policy.rspamd_ignored").length, 0);
      }
      const line = log.named("policy.verdict")[0];
      assert.equal(line.fields.rspamd, "error");
      assert.match(String(line.fields.rspamd_error), /127\.0\.0\.1/);
    } finally {
      engine.close();
    }
  }
  // The default is tempfail, with its own reply.
  const { engine } = engineFor(`rspamd:\n  address: 127.0.0.1:${port}\n`);
  try {
    const v = await engine.judge(CLEAN, ENVELOPE);
    assert.deepEqual(v.action === "tempfail" ? v.reply : undefined, {
      code: 451,
      enhanced: "4.3.0",
      text: "Spam check unavailable, try again later",
    });
  } finally {
    engine.close();
  }
});

Deno.test("a failed rspamd check never overrides a rule that stopped the message; the allowlist still wins; not(rspamd) does not let unscored mail through", async () => {
  const port = freePort();
  const section = `rspamd:\n  address: 127.0.0.1:${port}\n`;
  const lottery = RULES + `  - name: lottery
    when: { subject: { contains: [lottery] } }
    action: discard
`;
  let { engine } = engineFor(section, lottery);
  try {
    const v = await engine.judge(enc(`Subject: lottery${CRLF}${CRLF}win${CRLF}`), ENVELOPE);
    assert.equal(v.rule, "lottery");
  } finally {
    engine.close();
  }
  ({ engine } = engineFor(section + "allowlist:\n  clients: [192.0.2.0/24]\n"));
  try {
    assert.equal((await engine.judge(CLEAN, ENVELOPE)).rule, "allowlist");
  } finally {
    engine.close();
  }
  ({ engine } = engineFor(
    section,
    `rules:
  - name: ham-passes
    when: { not: { rspamd: { score_at_least: 5 } } }
    action: forward
`,
  ));
  try {
    const v = await engine.judge(CLEAN, ENVELOPE);
    assert.equal(v.action, "tempfail");
    assert.match(v.evidence ?? "", /would be forwarded by ham-passes/);
  } finally {
    engine.close();
  }
});

Deno.test("a rule set without rspamd never connects to rspamd", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let connections = 0;
  const loop = (async () => {
    for await (const c of l) {
      connections++;
      c.close();
    }
  })();
  try {
    const { engine, log } = engineFor(
      `rspamd:\n  address: 127.0.0.1:${(l.addr as Deno.NetAddr).port}\n`,
      `rules:\n  - name: lottery\n    when: { subject: { contains: [lottery] } }\n    action: discard\n`,
    );
    try {
      assert.equal(engine.scores, false);
      assert.equal((await engine.judge(mail(GTUBE), ENVELOPE)).action, "forward");
      assert.equal(log.named("policy.verdict")[0].fields.rspamd, undefined);
    } finally {
      engine.close();
    }
  } finally {
    l.close();
    await loop;
  }
  assert.equal(connections, 0);
});

Deno.test("rule-file errors of rspamd: and the rspamd condition name the line and what was expected", () => {
  const cases: [string, string, RegExp][] = [
    [
      "",
      `  - name: x\n    when: { rspamd: { action: reject } }\n    action: reject\n`,
      /"rspamd" needs an "rspamd" section/,
    ],
    [
      "rspamd:\n",
      `  - name: x\n    when: { rspamd: { action: spam } }\n    action: reject\n`,
      /"rspamd.action" must be one of "no action", "greylist"/,
    ],
    ["rspamd:\n", `  - name: x\n    when: { rspamd: { scor: 5 } }\n    action: reject\n`, /scor/],
    [
      "rspamd:\n",
      `  - name: x\n    when: { rspamd: {} }\n    action: reject\n`,
      /"rspamd" needs one of score_at_least, score_below, action, symbol/,
    ],
    [
      "rspamd:\n",
      `  - name: x\n    when: { rspamd: { score_at_least: high } }\n    action: reject\n`,
      /"rspamd.score_at_least" must be a number/,
    ],
    [
      "rspamd:\n",
      `  - name: x\n    when: { rspamd: { score_at_least: 6, score_below: 6 } }\n    action: reject\n`,
      /nothing could match/,
    ],
    [
      "rspamd:\n",
      `  - name: x\n    when: { rspamd: { symbol: "BAD NAME" } }\n    action: reject\n`,
      /a symbol name/,
    ],
    ["rspamd:\n  url: https://127.0.0.1:11333\n", "", /"rspamd.url": .* is not an http:\/\/ URL/],
    ["rspamd:\n  url: http://127.0.0.1:11333\n  address: 127.0.0.1:11333\n", "", /not both/],
    ["rspamd:\n  address: 127.0.0.1\n", "", /needs a port/],
    [
      "rspamd:\n  on_failure: forward\n",
      "",
      /"rspamd.on_failure" must be one of tempfail, quarantine, reject, ignore/,
    ],
    ["rspamd:\n  timeout: 5m\n", "", /"rspamd.timeout"/],
    ["rspamd:\n  password: two words\n", "", /printable ASCII without spaces/],
  ];
  for (const [section, rules, message] of cases) {
    assert.throws(
      () => configFor(section, rules ? `rules:\n${rules}` : ""),
      (e: unknown) => {
        assert.ok(e instanceof ConfigError, String(e));
        assert.match(e.message, message);
        assert.match(e.message, /^t\.yaml:\d+:\d+: /);
        return true;
      },
      section + rules,
    );
  }
});

Deno.test("rspamd: defaults, url with a prefix, and the summary line", () => {
  const d = configFor("rspamd:\n");
  assert.deepEqual(d.rspamd, {
    address: { hostname: "127.0.0.1", port: 11333 },
    pathPrefix: "",
    timeoutSeconds: 15,
    maxBytes: 25 * 1024 * 1024,
    onFailure: "tempfail",
  });
  const c = configFor(
    "rspamd:\n  url: http://[::1]:11334/rspamd/checkv2\n  password: pw\n  on_failure: ignore\n  max_bytes: 10M\n",
  );
  assert.deepEqual(c.rspamd?.address, { hostname: "::1", port: 11334 });
  assert.equal(c.rspamd?.pathPrefix, "/rspamd");
  const summary = summarizeConfig(c);
  assert.match(
    summary,
    /rspamd: http:\/\/\[::1\]:11334\/rspamd\/checkv2, 15s per message, messages up to 10485760 bytes scored, with a password; not scored → ignore \(judged without rspamd, logged policy\.rspamd_ignored\); messages of 10485761 to/,
  );
  assert.match(summary, /rspamd action "reject" → reject/);
});

Deno.test("rspamd and clamd are asked at the same time: each fake answers only once both have a request", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ssg-rspamd-" });
  let both!: () => void;
  const bothConnected = new Promise<void>((r) => (both = r));
  let seen = 0;
  const arrived = () => {
    if (++seen === 2) both();
  };
  const json = '{"score":1.5,"action":"no action","symbols":{"X":{"score":1.5}}}';
  const http = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const unix = Deno.listen({ transport: "unix", path: `${dir}/clamd.sock` });
  const serve = async (
    l: Deno.Listener,
    done: (b: Uint8Array) => boolean,
    answer: string,
  ) => {
    const conn = await l.accept();
    const buf = new Uint8Array(1 << 16);
    let used = 0;
    while (!done(buf.subarray(0, used))) {
      const n = await conn.read(buf.subarray(used));
      if (n === null) break;
      used += n;
    }
    arrived();
    // Sequential asking would leave this one alone: it then answers nonsense (a failure).
    let timer: ReturnType<typeof setTimeout> | undefined;
    const together = await Promise.race([
      bothConnected.then(() => true),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 15_000))),
    ]);
    clearTimeout(timer);
    await conn.write(enc(together ? answer : "nonsense")).catch(() => 0);
    conn.close();
  };
  const ends = (b: Uint8Array, tail: number[]) =>
    b.length >= tail.length && tail.every((x, i) => b[b.length - tail.length + i] === x);
  const servers = Promise.all([
    serve(
      http,
      (b) => ends(b, [...enc(`${CRLF}`)]) && new TextDecoder().decode(b).includes("minutes"),
      `HTTP/1.1 200 OK\r\nContent-Length: ${json.length}\r\n\r\n${json}`,
    ),
    serve(unix, (b) => ends(b, [0, 0, 0, 0]), "stream: OK\0"),
  ]);
  try {
    const { engine, log } = engineFor(
      `rspamd:\n  address: 127.0.0.1:${(http.addr as Deno.NetAddr).port}\n  timeout: 30s\n` +
        `clamav:\n  socket: ${dir}/clamd.sock\n  timeout: 30s\n`,
      RULES + `  - name: no-viruses\n    when: { virus: true }\n    action: reject\n`,
    );
    try {
      const v = await engine.judge(CLEAN, ENVELOPE);
      assert.equal(v.action, "forward", JSON.stringify(v));
      const line = log.named("policy.verdict")[0];
      assert.equal(line.fields.scan, "clean");
      assert.equal(line.fields.rspamd, "score 1.5 (no action); symbols X(1.5)");
    } finally {
      engine.close();
    }
  } finally {
    await servers;
    http.close();
    unix.close();
    await Deno.remove(dir, { recursive: true });
  }
});
