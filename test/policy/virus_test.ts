/**
 * The `virus` condition through the policy engine, with a real clamd (test/engines/
 * clamd_fixture.ts: a signature database the test writes, no network): infected → the rule's
 * action, clean → forward, clamd stopped or the message over `clamav.max_bytes` → the
 * `clamav.on_failure` verdict, and a policy that never tests `virus` never connects.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { parseConfig } from "../../src/config/load_config.ts";
import { MemoryLog } from "../../src/log/log.ts";
import { explainMessage, renderExplanation } from "../../src/policy/explain.ts";
import { PolicyEngine } from "../../src/policy/policy_engine.ts";
import type { Envelope } from "../../src/policy/verdict.ts";
import { policyEnvelope } from "./policy_helpers.ts";
import { EICAR, MARKER, messageWithAttachment, startClamd } from "../engines/clamd_fixture.ts";

const CRLF = "\r\n";
const enc = (s: string) => new TextEncoder().encode(s);

const ENVELOPE: Envelope = policyEnvelope();

const VIRUS_RULES = `rules:
  - name: no-viruses
    when: { virus: true }
    action: reject
    reply: { code: 554, enhanced: "5.7.1", text: "Virus found" }
`;

function configFor(clamav: string, rules = VIRUS_RULES) {
  return parseConfig(
    `gateway:\n  protect: [198.51.100.0/24]\n${clamav}${rules}`,
    "t.yaml",
  );
}

function engineFor(clamav: string, rules = VIRUS_RULES) {
  const log = new MemoryLog();
  return { engine: new PolicyEngine(configFor(clamav, rules), log), log };
}

const CLEAN = enc(
  `From: <alice@example.com>${CRLF}To: <bob@example.net>${CRLF}Subject: minutes${CRLF}${CRLF}` +
    `The minutes of today's meeting.${CRLF}`,
);

Deno.test("virus: true rejects an EICAR attachment with the rule's reply, the signature in the evidence and the log", async () => {
  const clamd = await startClamd();
  try {
    const { engine, log } = engineFor(`clamav:\n  socket: ${clamd.socket}\n`);
    try {
      const v = await engine.judge(
        messageWithAttachment("eicar.com", enc(EICAR), "alice@example.com", "bob@example.net"),
        ENVELOPE,
      );
      assert.equal(v.action, "reject");
      assert.equal(v.rule, "no-viruses");
      assert.deepEqual(v.action === "reject" ? v.reply : undefined, {
        code: 554,
        enhanced: "5.7.1",
        text: "Virus found",
      });
      assert.equal(v.evidence, 'virus found "Test.EICAR-HDB.UNOFFICIAL"');
      const [line] = log.named("policy.verdict");
      assert.equal(line.fields.scan, "infected:Test.EICAR-HDB.UNOFFICIAL");
      assert.equal(typeof line.fields.scan_ms, "number");
    } finally {
      engine.close();
    }
  } finally {
    await clamd.stop();
  }
});

Deno.test("a clean message is forwarded when clamd says it is clean, and virus: false holds for it", async () => {
  const clamd = await startClamd();
  try {
    const { engine, log } = engineFor(
      `clamav:\n  socket: ${clamd.socket}\n`,
      VIRUS_RULES + `  - name: scanned-clean
    when: { virus: false }
    action: tag
    tag: { header: "X-Virus-Scanned: clean" }
`,
    );
    try {
      const v = await engine.judge(CLEAN, ENVELOPE);
      assert.equal(v.action, "forward");
      assert.equal(v.rule, undefined);
      assert.deepEqual(v.tag?.headers, [{ name: "X-Virus-Scanned", value: "clean" }]);
      assert.equal(log.named("policy.verdict")[0].fields.scan, "clean");
    } finally {
      engine.close();
    }
  } finally {
    await clamd.stop();
  }
});

Deno.test("virus: { contains } tests the signature name only, in any case", async () => {
  const clamd = await startClamd();
  try {
    const { engine } = engineFor(
      `clamav:\n  socket: ${clamd.socket}\n`,
      `rules:
  - name: test-signatures
    when: { virus: { contains: [eicar] } }
    action: discard
  - name: other-viruses
    when: { virus: true }
    action: quarantine
`,
    );
    try {
      const eicar = await engine.judge(
        messageWithAttachment("e.com", enc(EICAR), "alice@example.com", "bob@example.net"),
        ENVELOPE,
      );
      assert.equal(eicar.action, "discard");
      assert.equal(eicar.evidence, 'virus found "Test.EICAR-HDB.UNOFFICIAL"');
      const marker = await engine.judge(enc(`Subject: x${CRLF}${CRLF}${MARKER}${CRLF}`), ENVELOPE);
      assert.equal(marker.action, "quarantine");
      assert.equal(marker.rule, "other-viruses");
      assert.equal(marker.evidence, 'virus found "SSG.Test.Marker.UNOFFICIAL"');
    } finally {
      engine.close();
    }
  } finally {
    await clamd.stop();
  }
});

Deno.test("clamd stopped: a clean message gets 451 (on_failure tempfail, the default) with the reason in the evidence and the log", async () => {
  const clamd = await startClamd();
  const socket = clamd.socket;
  await clamd.stop();
  const { engine, log } = engineFor(`clamav:\n  socket: ${socket}\n  timeout: 5s\n`);
  try {
    const v = await engine.judge(CLEAN, ENVELOPE);
    assert.equal(v.action, "tempfail");
    assert.equal(v.rule, "virus-scan-failed");
    assert.deepEqual(v.action === "tempfail" ? v.reply : undefined, {
      code: 451,
      enhanced: "4.3.0",
      text: "Virus scan unavailable, try again later",
    });
    assert.match(v.evidence ?? "", /^virus scan failed: clamd at .*clamd\.sock: /);
    const [line] = log.named("policy.verdict");
    assert.equal(line.fields.scan, "error");
    assert.match(String(line.fields.scan_error), /clamd\.sock/);
    assert.equal(line.fields.code, 451);
  } finally {
    engine.close();
  }
});

Deno.test("a failed scan never overrides a rule that already stopped the message", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ssg-virus-" });
  try {
    const { engine } = engineFor(
      `clamav:\n  socket: ${join(dir, "none.sock")}\n`,
      VIRUS_RULES + `  - name: lottery
    when: { subject: { contains: [lottery] } }
    action: discard
`,
    );
    try {
      const v = await engine.judge(enc(`Subject: lottery${CRLF}${CRLF}win${CRLF}`), ENVELOPE);
      assert.equal(v.action, "discard");
      assert.equal(v.rule, "lottery");
    } finally {
      engine.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("each on_failure verdict applies to a message over clamav.max_bytes (limit-1 and limit scanned, limit+1 not)", async () => {
  const clamd = await startClamd();
  try {
    const head = `From: <alice@example.com>${CRLF}Subject: size${CRLF}${CRLF}`;
    const sized = (n: number) => enc(head + "a".repeat(n - head.length - 2) + CRLF);
    for (
      const [onFailure, action, code] of [
        ["tempfail", "tempfail", 451],
        ["reject", "reject", 554],
        ["quarantine", "quarantine", undefined],
        ["forward", "forward", undefined],
      ] as const
    ) {
      const { engine } = engineFor(
        `clamav:\n  socket: ${clamd.socket}\n  max_bytes: 2048\n  on_failure: ${onFailure}\n`,
      );
      try {
        for (const n of [2047, 2048]) {
          const v = await engine.judge(sized(n), ENVELOPE);
          assert.equal(v.action, "forward", `${n} bytes are scanned and clean`);
          assert.equal(v.rule, undefined);
        }
        const v = await engine.judge(sized(2049), ENVELOPE);
        assert.equal(v.action, action, onFailure);
        if (code !== undefined) {
          assert.equal(v.action === "reject" || v.action === "tempfail" ? v.reply.code : 0, code);
        }
        if (onFailure !== "forward") {
          assert.equal(v.rule, "virus-scan-failed");
          assert.match(v.evidence ?? "", /message of 2049 bytes is over the scan limit of 2048/);
        }
      } finally {
        engine.close();
      }
    }
  } finally {
    await clamd.stop();
  }
});

Deno.test("clamd's own StreamMaxLength below clamav.max_bytes is a scan failure, never clean", async () => {
  const clamd = await startClamd({ streamMaxLength: "1K" });
  try {
    const { engine } = engineFor(`clamav:\n  socket: ${clamd.socket}\n  max_bytes: 1M\n`);
    try {
      const v = await engine.judge(
        enc(`Subject: x${CRLF}${CRLF}${"a".repeat(4000)}${CRLF}`),
        ENVELOPE,
      );
      assert.equal(v.action, "tempfail");
      assert.equal(v.rule, "virus-scan-failed");
      assert.match(v.evidence ?? "", /size limit exceeded/);
    } finally {
      engine.close();
    }
  } finally {
    await clamd.stop();
  }
});

Deno.test("a rule set without virus never connects to clamd: the message is forwarded though the socket does not exist", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ssg-virus-" });
  try {
    const { engine, log } = engineFor(
      `clamav:\n  socket: ${join(dir, "does-not-exist.sock")}\n`,
      `rules:
  - name: lottery
    when: { subject: { contains: [lottery] } }
    action: discard
`,
    );
    try {
      assert.equal(engine.scans, false);
      const v = await engine.judge(
        messageWithAttachment("eicar.com", enc(EICAR), "alice@example.com", "bob@example.net"),
        ENVELOPE,
      );
      assert.equal(v.action, "forward");
      assert.equal(v.evidence, undefined);
      assert.equal(log.named("policy.verdict")[0].fields.scan, undefined);
    } finally {
      engine.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the allowlist still wins over a failed scan", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ssg-virus-" });
  try {
    const { engine } = engineFor(
      `clamav:\n  socket: ${join(dir, "none.sock")}\nallowlist:\n  clients: [192.0.2.0/24]\n`,
    );
    try {
      const v = await engine.judge(CLEAN, ENVELOPE);
      assert.equal(v.action, "forward");
      assert.equal(v.rule, "allowlist");
    } finally {
      engine.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ssg explain scans the message and shows the signature, or the failure and its verdict", async () => {
  const clamd = await startClamd();
  try {
    const cfg = configFor(`clamav:\n  socket: ${clamd.socket}\n`);
    const e = await explainMessage(
      cfg,
      messageWithAttachment("eicar.com", enc(EICAR), "alice@example.com", "bob@example.net"),
    );
    assert.deepEqual(e.scan, {
      status: "infected",
      signature: "Test.EICAR-HDB.UNOFFICIAL",
      onFailure: "tempfail",
    });
    assert.equal(e.verdict.action, "reject");
    const text = renderExplanation(e);
    assert.match(text, /virus scan: INFECTED: "Test\.EICAR-HDB\.UNOFFICIAL"/);
    assert.match(text, /✓ virus: true — found "Test\.EICAR-HDB\.UNOFFICIAL"/);
  } finally {
    await clamd.stop();
  }
  const down = configFor(`clamav:\n  socket: ${clamd.socket}\n`);
  const e = await explainMessage(down, CLEAN);
  assert.equal(e.scan?.status, "error");
  assert.equal(e.verdict.action, "tempfail");
  assert.match(renderExplanation(e), /virus scan: FAILED: .* \(clamav\.on_failure: tempfail\)/);
});

Deno.test("a clamd that does not answer within clamav.timeout gives on_failure (here quarantine), not clean", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ssg-virus-" });
  const path = join(dir, "silent.sock");
  const listener = Deno.listen({ transport: "unix", path });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const c of listener) held.push(c); // reads nothing, answers nothing
  })();
  try {
    const { engine } = engineFor(
      `clamav:\n  socket: ${path}\n  timeout: 1s\n  on_failure: quarantine\n`,
    );
    try {
      const t0 = performance.now();
      const v = await engine.judge(CLEAN, ENVELOPE);
      const took = performance.now() - t0;
      assert.equal(v.action, "quarantine");
      assert.equal(v.rule, "virus-scan-failed");
      assert.equal(v.evidence, "virus scan failed: no answer from clamd within 1000 ms");
      assert.ok(took >= 950 && took < 15_000, `bounded by the timeout: ${took} ms`);
    } finally {
      engine.close();
    }
  } finally {
    listener.close();
    for (const c of held) c.close();
    await accepting.catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
});
