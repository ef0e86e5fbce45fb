/**
 * decode_pool.ts (issue 9): decoding in Workers gives exactly the facts and fingerprint of
 * decoding here, and a failing worker never loses a message (it is decoded here instead).
 */
import assert from "node:assert/strict";
import {
  cheaperHere,
  DECODE_HERE_MAX_BYTES,
  decodeHere,
  DecodePool,
  decodeWorkerCount,
} from "../../src/policy/decode_pool.ts";
import { MemoryLog } from "../../src/log/log.ts";
import { PolicyEngine } from "../../src/policy/policy_engine.ts";
import { parseConfig } from "../../src/config/load_config.ts";
import type { Envelope } from "../../src/policy/verdict.ts";

const FIXTURES = new URL("../fixtures/messages/", import.meta.url);
/** A message mailparser must decode (quoted-printable): it goes to a worker. */
const NOT_PLAIN = new TextEncoder().encode(
  "Subject: lottery\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nhello=20\r\n",
);

Deno.test("decode pool: worker facts and fingerprints equal those decoded here, for every fixture", async () => {
  const pool = new DecodePool(2);
  try {
    for (const e of Deno.readDirSync(FIXTURES)) {
      if (!e.isFile) continue;
      const raw = Deno.readFileSync(new URL(e.name, FIXTURES));
      const req = {
        raw,
        needs: "full" as const,
        limits: {},
        checkBounds: true,
        fingerprint: true,
      };
      const [there, here] = await Promise.all([pool.decode(req), decodeHere(req)]);
      assert.deepEqual(there, here, e.name);
    }
    assert.equal(pool.fallbacks, 0);
  } finally {
    pool.close();
  }
});

Deno.test("decode pool: a worker that fails is replaced and its message decoded here", async () => {
  const broken = new URL(
    "data:application/javascript,self.onmessage = () => { throw new Error('boom'); };",
  );
  const pool = new DecodePool(1, { url: broken });
  try {
    const raw = NOT_PLAIN;
    const d = await pool.decode({
      raw,
      needs: "full",
      limits: {},
      checkBounds: true,
      fingerprint: false,
    });
    assert.equal(d.facts.subject, "lottery");
    assert.equal(pool.fallbacks, 1);
    assert.equal(pool.size, 1);
  } finally {
    pool.close();
  }
});

Deno.test("decode pool: an engine judging through the pool gives the same verdicts", async () => {
  const cfg = parseConfig(
    `gateway:\n  protect: [198.51.100.0/24]\nrules:\n` +
      `  - name: lottery\n    when: { subject: { contains: lottery } }\n    action: discard\n` +
      `  - name: bulk\n    when: { bulk: { recipients: 2, within: 10m } }\n    action: reject\n`,
    "rules.yaml",
  );
  const env = (rcpt: string): Envelope => ({
    mailFrom: "a@sender.example",
    rcptTo: [rcpt],
    client: { ip: "192.0.2.10", port: 40000 },
    server: { ip: "198.51.100.25", port: 25 },
    helo: "sender.example",
    tls: false,
    sessionId: "S",
    transactionId: "S.1",
  });
  const pool = new DecodePool(1);
  const engine = new PolicyEngine(cfg, new MemoryLog(), { decode: pool.decode });
  try {
    const enc = new TextEncoder();
    const lottery = await engine.judge(enc.encode("Subject: lottery\r\n\r\nwin\r\n"), env("x@a"));
    assert.equal(lottery.rule, "lottery");
    const text = enc.encode("Subject: hi\r\n\r\nthe same words again and again for everyone\r\n");
    assert.equal((await engine.judge(text, env("one@a"))).action, "forward");
    const second = await engine.judge(text, env("two@a"));
    assert.equal(second.rule, "bulk");
  } finally {
    engine.close();
    pool.close();
  }
});

Deno.test("decode pool: with offload false, messages are decoded here (no worker involved)", async () => {
  const broken = new URL(
    "data:application/javascript,self.onmessage = () => { throw new Error('boom'); };",
  );
  let busy = false;
  const pool = new DecodePool(1, { url: broken, offload: () => busy });
  try {
    const raw = NOT_PLAIN;
    const req = { raw, needs: "full" as const, limits: {}, checkBounds: true, fingerprint: false };
    assert.equal((await pool.decode(req)).facts.subject, "lottery");
    assert.equal(pool.fallbacks, 0);
    assert.equal(pool.started, 0);
    busy = true;
    assert.equal((await pool.decode(req)).facts.subject, "lottery");
    assert.equal(pool.fallbacks, 1);
  } finally {
    pool.close();
  }
});

Deno.test("decode pool: worker count from cores, or SSG_DECODE_WORKERS", () => {
  assert.equal(decodeWorkerCount(1), 0);
  assert.equal(decodeWorkerCount(2), 1);
  assert.equal(decodeWorkerCount(8), 4);
  assert.equal(decodeWorkerCount(4), 2);
  assert.equal(decodeWorkerCount(2, "0"), 0);
  assert.equal(decodeWorkerCount(2, "3"), 3);
  assert.equal(decodeWorkerCount(2, "x"), 1);
});

Deno.test("decode pool: a small plain message, or one the rules read only the headers of, is decoded here", async () => {
  const broken = new URL(
    "data:application/javascript,self.onmessage = () => { throw new Error('boom'); };",
  );
  const pool = new DecodePool(1, { url: broken });
  try {
    const plain = new TextEncoder().encode("Subject: lottery\r\n\r\nhello\r\n");
    const req = {
      raw: plain,
      needs: "full" as const,
      limits: {},
      checkBounds: true,
      fingerprint: true,
    };
    assert.ok(cheaperHere(req));
    const d = await pool.decode(req);
    assert.equal(d.facts.subject, "lottery");
    assert.equal(d.facts.decoder, "plain");
    assert.deepEqual(d, await decodeHere(req));
    assert.ok(cheaperHere({ ...req, raw: NOT_PLAIN, needs: "headers" }));
    assert.equal(pool.started, 0, "no worker was needed");
    // Too large to read here in one go, plain or not: a worker decodes it.
    const big = new TextEncoder().encode(
      "Subject: big\r\n\r\n" + "x".repeat(DECODE_HERE_MAX_BYTES) + "\r\n",
    );
    assert.equal(cheaperHere({ ...req, raw: big }), false);
    assert.equal(cheaperHere({ ...req, raw: NOT_PLAIN }), false);
    assert.equal((await pool.decode({ ...req, raw: big })).facts.subject, "big");
    assert.equal(pool.fallbacks, 1);
  } finally {
    pool.close();
  }
});
