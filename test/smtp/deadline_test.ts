/**
 * deadline.ts: bounded waits. Long waits share a coarse clock (issue 9): they still never end
 * early, they end by themselves, and nothing stays scheduled once every wait has settled (Deno's
 * sanitizers fail the test otherwise).
 */
import assert from "node:assert/strict";
import { COARSE_MIN_MS, raceDeadline } from "../../src/smtp/deadline.ts";

const never = new Promise<number>(() => {});

Deno.test("a long wait on the coarse clock times out, never early", async () => {
  const t0 = performance.now();
  const r = await raceDeadline(never, COARSE_MIN_MS);
  assert.deepEqual(r, { ok: false, why: "timeout" });
  assert.ok(performance.now() - t0 >= COARSE_MIN_MS - 1, "ended before its deadline");
});

Deno.test("a long wait that is won leaves nothing scheduled; many waits at once each settle", async () => {
  const won = await raceDeadline(new Promise<number>((r) => setTimeout(() => r(7), 5)), 60_000);
  assert.deepEqual(won, { ok: true, value: 7 });
  const t0 = performance.now();
  const waits = Array.from(
    { length: 50 },
    (_, i) => raceDeadline(i % 2 ? never : Promise.resolve(i), COARSE_MIN_MS + i),
  );
  const all = await Promise.all(waits);
  all.forEach((r, i) => {
    if (i % 2) assert.deepEqual(r, { ok: false, why: "timeout" });
    else assert.deepEqual(r, { ok: true, value: i });
  });
  assert.ok(performance.now() - t0 >= COARSE_MIN_MS + 49 - 1);
});

Deno.test("an abort ends a long wait at once", async () => {
  const c = new AbortController();
  const p = raceDeadline(never, 60_000, c.signal);
  c.abort();
  assert.deepEqual(await p, { ok: false, why: "aborted" });
});
