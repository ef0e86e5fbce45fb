import assert from "node:assert/strict";
import { MAX_KEYS, parseRate, RateLimiter } from "../../src/action/rate_limiter.ts";

Deno.test("RateLimiter allows limit-1 and limit events at once, refuses limit+1", () => {
  const limit = 10;
  for (const [events, allowed] of [[limit - 1, limit - 1], [limit, limit], [limit + 1, limit]]) {
    const r = new RateLimiter({ count: limit, seconds: 3600 }, () => 0);
    let n = 0;
    for (let i = 0; i < events; i++) if (r.take("rule").allowed) n++;
    assert.equal(n, allowed, `${events} events`);
    assert.equal(r.pending("rule"), events - allowed);
  }
});

Deno.test("RateLimiter refills over time and reports what it suppressed to the next allowed event", () => {
  let now = 1_000_000;
  const r = new RateLimiter({ count: 3, seconds: 3600 }, () => now);
  for (let i = 0; i < 3; i++) assert.deepEqual(r.take("a"), { allowed: true, suppressed: 0 });
  now += 1;
  assert.deepEqual(r.take("a"), { allowed: false, suppressed: 1 });
  now += 1;
  assert.deepEqual(r.take("a"), { allowed: false, suppressed: 2 });
  now += 1_200_000 - 3; // one token (3600 s / 3) after the bucket emptied, less a millisecond
  assert.equal(r.take("a").allowed, false);
  now += 1;
  assert.deepEqual(r.take("a"), { allowed: true, suppressed: 3, suppressedSince: 1_000_001 });
  assert.equal(r.pending("a"), 0);
});

Deno.test("RateLimiter keeps separate buckets per key", () => {
  const r = new RateLimiter({ count: 1, seconds: 60 }, () => 0);
  assert.ok(r.take("a").allowed);
  assert.ok(!r.take("a").allowed);
  assert.ok(r.take("b").allowed);
});

Deno.test("RateLimiter forgets the least recently used key past MAX_KEYS", () => {
  const r = new RateLimiter({ count: 1, seconds: 60 }, () => 0);
  for (let i = 0; i < MAX_KEYS; i++) r.take(`k${i}`);
  assert.ok(!r.take("k0").allowed); // k0 is now the most recently used
  r.take("new"); // evicts k1
  assert.ok(r.take("k1").allowed); // fresh bucket
  assert.ok(!r.take("k0").allowed);
});

Deno.test("RateLimiter refuses a nonsensical rate", () => {
  for (
    const rate of [{ count: 0, seconds: 1 }, { count: 1, seconds: 0 }, { count: NaN, seconds: 1 }]
  ) {
    assert.throws(() => new RateLimiter(rate), RangeError);
  }
});

Deno.test("parseRate() reads COUNT/DURATION", () => {
  const cases: [string, { count: number; seconds: number } | undefined][] = [
    ["10/1h", { count: 10, seconds: 3600 }],
    ["3/30m", { count: 3, seconds: 1800 }],
    [" 1 / 90s ", { count: 1, seconds: 90 }],
    ["10/h", { count: 10, seconds: 3600 }],
    ["0/1h", undefined],
    ["10/0s", undefined],
    ["10", undefined],
    ["ten/1h", undefined],
    ["10/1x", undefined],
  ];
  for (const [text, want] of cases) assert.deepEqual(parseRate(text), want, text);
});
