import assert from "node:assert/strict";
import { BlockList } from "../../ffi/block_list.ts";

Deno.test("BlockList.has() is true until the deadline and false from it on", () => {
  const b = new BlockList();
  b.add("192.0.2.10", 1000, 0);
  const cases: [number, boolean][] = [[0, true], [999, true], [1000, false], [1001, false]];
  for (const [now, want] of cases) {
    b.add("192.0.2.10", 1000, 0);
    assert.equal(b.has("192.0.2.10", now), want, `at ${now}`);
  }
  assert.equal(b.has("192.0.2.11", 0), false);
});

Deno.test("BlockList.has() drops an expired entry; add() replaces a deadline", () => {
  const b = new BlockList();
  b.add("2001:db8:1::10", 10, 0);
  assert.equal(b.has("2001:db8:1::10", 10), false);
  assert.equal(b.size, 0);
  b.add("2001:db8:1::10", 10, 0);
  b.add("2001:db8:1::10", 100, 0);
  assert.equal(b.has("2001:db8:1::10", 50), true);
  assert.equal(b.size, 1);
});

Deno.test("BlockList holds at most max entries: max-1, max, max+1", () => {
  const max = 4;
  for (const n of [max - 1, max, max + 1]) {
    const b = new BlockList(max);
    for (let i = 0; i < n; i++) b.add(`192.0.2.${i}`, 1000, 0);
    assert.equal(b.size, Math.min(n, max), `${n} added`);
    // Past the bound the oldest entry went; the newest is kept.
    assert.equal(b.has("192.0.2.0", 0), n <= max, `${n} added: oldest kept?`);
    assert.equal(b.has(`192.0.2.${n - 1}`, 0), true);
  }
});

Deno.test("BlockList evicts expired entries before live ones when full", () => {
  const b = new BlockList(3);
  b.add("a", 5000, 0); // live, oldest
  b.add("b", 10, 0); // expires early
  b.add("c", 5000, 0);
  b.add("d", 5000, 100); // over the bound at t=100: "b" has expired and goes first
  assert.equal(b.size, 3);
  assert.equal(b.has("a", 100), true);
  assert.equal(b.has("b", 100), false);
  assert.equal(b.has("d", 100), true);
});
