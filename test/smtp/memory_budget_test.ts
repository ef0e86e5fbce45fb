/**
 * The shared in-flight memory budget: one bound on message bytes held by all sessions, a 452 4.3.1
 * (temporary, not counted as a client error) past it, and every byte given back afterwards.
 */
import assert from "node:assert/strict";
import { MemoryBudget } from "../../src/smtp/memory_budget.ts";
import { DataReader } from "../../src/smtp/data_reader.ts";
import { bytes, envelope, transcript } from "./harness.ts";

Deno.test("MemoryBudget reserves up to its limit and not one byte more", () => {
  const b = new MemoryBudget(100);
  for (const [n, ok, used] of [[99, true, 99], [1, true, 100], [1, false, 100]] as const) {
    assert.equal(b.tryReserve(n), ok);
    assert.equal(b.used, used);
  }
  b.release(100);
  assert.equal(b.used, 0);
  b.release(5); // never below zero
  assert.equal(b.used, 0);
});

Deno.test("DataReader stops storing when the budget runs out, reads to the real end, and gives everything back", () => {
  const cases: [limit: number, noMemory: boolean][] = [
    [1 << 20, false], // plenty
    [70_000, true], // the initial 64 KiB fits, growing past it does not
    [1_000, true], // not even the initial buffer
  ];
  for (const [limit, noMemory] of cases) {
    const budget = new MemoryBudget(limit);
    const dr = new DataReader({
      maxMessageBytes: 1 << 20,
      maxTextLine: 1000,
      bareLineEndings: "reject",
      budget,
    });
    const line = "x".repeat(98) + "\r\n";
    const used = dr.push(bytes(line.repeat(1000) + ".\r\nNOOP\r\n"));
    assert.ok(dr.done, `limit ${limit}: the real end is still found`);
    assert.equal(used, line.length * 1000 + 3);
    assert.equal(dr.defects.noMemory, noMemory, `limit ${limit}`);
    assert.equal(dr.rejected, noMemory);
    assert.ok(budget.used <= limit);
    dr.dispose();
    dr.dispose(); // safe twice
    assert.equal(budget.used, 0, `limit ${limit}: all bytes given back`);
  }
});

Deno.test("A session whose message does not fit the shared budget gets 452 4.3.1 and the server nothing; the budget is whole again", async () => {
  const memory = new MemoryBudget(70_000);
  const body = ("y".repeat(98) + "\r\n").repeat(1000);
  const r = await transcript(envelope() + "Subject: big\r\n\r\n" + body + ".\r\nQUIT\r\n", {
    memory,
  });
  assert.deepEqual(r.codes, [250, 250, 250, 354, 452, 221]);
  assert.match(r.output, /452 4\.3\.1 /);
  assert.equal(r.servers[0].messages.length, 0);
  assert.equal(r.result.errors, 0, "our shortage is not the client's error");
  assert.equal(memory.used, 0);
});

Deno.test("A message within the shared budget is forwarded and its bytes are given back", async () => {
  const memory = new MemoryBudget(1 << 20);
  const r = await transcript(envelope() + "Subject: s\r\n\r\nbody\r\n.\r\nQUIT\r\n", { memory });
  assert.deepEqual(r.codes, [250, 250, 250, 354, 250, 221]);
  assert.equal(r.servers[0].messages.length, 1);
  assert.equal(memory.used, 0);
});
