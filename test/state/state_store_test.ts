import assert from "node:assert/strict";
import { DEFAULT_MAX_ROWS, StateError, StateStore } from "../../src/state/state_store.ts";
import { fingerprint } from "../../src/state/bulk_fingerprint.ts";

const T0 = Date.UTC(2026, 10, 27, 12, 0, 0);
const S = 1000;

Deno.test("StateStore counts events over a sliding window: edges at window-1, window, window+1", () => {
  const st = StateStore.open(":memory:");
  st.addEvent("k", "203.0.113.5", T0);
  st.addEvent("k", "203.0.113.5", T0 + 10 * S);
  // The window is (now − w, now]: an event exactly w old has left it.
  const cases: [number, number][] = [
    [T0 + 59 * S, 2], // w = 60 s: both inside
    [T0 + 60 * S, 1], // the first is exactly 60 s old: out
    [T0 + 61 * S, 1],
    [T0 + 69 * S, 1],
    [T0 + 70 * S, 0],
    [T0 + 71 * S, 0],
  ];
  for (const [now, n] of cases) {
    assert.equal(st.countEvents("k", "203.0.113.5", 60, now), n, `at +${(now - T0) / S}s`);
  }
  assert.equal(st.countEvents("k", "198.51.100.1", 60, T0 + S), 0, "another key");
  assert.equal(st.countEvents("other", "203.0.113.5", 60, T0 + S), 0, "another kind");
  st.close();
});

Deno.test("StateStore.resetEvents() forgets a key's events only", () => {
  const st = StateStore.open(":memory:");
  st.addEvent("k", "a", T0);
  st.addEvent("k", "b", T0);
  st.resetEvents("k", "a");
  assert.equal(st.countEvents("k", "a", 60, T0), 0);
  assert.equal(st.countEvents("k", "b", 60, T0), 1);
  st.close();
});

Deno.test("StateStore list entries expire, keep the later expiry, and can be removed", () => {
  const st = StateStore.open(":memory:");
  st.addEntry("blacklist", "sender", "Spammer@Spam.example", T0 + 60 * S, "r1", T0);
  assert.equal(st.getEntry("blacklist", "sender", "spammer@spam.example", T0)?.rule, "r1");
  assert.equal(
    st.getEntry("blacklist", "sender", "spammer@spam.example", T0 + 59 * S)?.untilMs,
    T0 + 60 * S,
  );
  assert.equal(
    st.getEntry("blacklist", "sender", "spammer@spam.example", T0 + 60 * S),
    undefined,
    "expired at until",
  );
  // A shorter re-add does not shorten; a longer one extends.
  st.addEntry("blacklist", "sender", "spammer@spam.example", T0 + 30 * S, "r2", T0);
  assert.equal(
    st.getEntry("blacklist", "sender", "spammer@spam.example", T0)?.untilMs,
    T0 + 60 * S,
  );
  st.addEntry("blacklist", "sender", "spammer@spam.example", T0 + 120 * S, "r3", T0);
  assert.equal(
    st.getEntry("blacklist", "sender", "spammer@spam.example", T0)?.untilMs,
    T0 + 120 * S,
  );
  assert.equal(
    st.getEntry("allowlist", "sender", "spammer@spam.example", T0),
    undefined,
    "other list",
  );
  assert.equal(st.removeEntry("blacklist", "sender", "spammer@spam.example"), true);
  assert.equal(st.removeEntry("blacklist", "sender", "spammer@spam.example"), false);
  assert.equal(st.getEntry("blacklist", "sender", "spammer@spam.example", T0), undefined);
  st.close();
});

Deno.test("StateStore calls onBlockClient for a blacklisted client IP and lists active blocks", () => {
  const calls: [string, number][] = [];
  const st = StateStore.open(":memory:", { onBlockClient: (ip, until) => calls.push([ip, until]) });
  st.addEntry("blacklist", "client_ip", "203.0.113.66", T0 + 3600 * S, "t", T0);
  st.addEntry("blacklist", "client_ip", "203.0.113.67", T0 + 10 * S, "t", T0);
  st.addEntry("blacklist", "sender", "x@spam.example", T0 + 3600 * S, "t", T0);
  st.addEntry("allowlist", "client_ip", "192.0.2.1", T0 + 3600 * S, "t", T0);
  assert.deepEqual(calls, [["203.0.113.66", T0 + 3600 * S], ["203.0.113.67", T0 + 10 * S]]);
  assert.deepEqual(st.activeClientBlocks(T0 + 20 * S), [{
    ip: "203.0.113.66",
    untilMs: T0 + 3600 * S,
  }]);
  st.addBlacklist({ key: "client_ip", value: "203.0.113.70", untilMs: T0 + S, rule: "x" }, false);
  assert.equal(calls.length, 2, "addBlacklist(notify=false) does not call the hook");
  st.close();
});

Deno.test("StateStore persists entries, counters and bulk clusters across close and reopen (WAL)", () => {
  const dir = Deno.makeTempDirSync({ prefix: "ssg-state-" });
  const path = `${dir}/sub/state.db`;
  try {
    const a = StateStore.open(path);
    a.addEntry("blacklist", "client_ip", "203.0.113.66", T0 + 3600 * S, "spamtrap", T0);
    a.addEvent("threshold:t", "203.0.113.66", T0);
    const fp = fingerprint("the same campaign text goes to many servers at once today")!;
    const id = a.observeBulk(fp, "198.51.100.25", ["a@corp.example"], T0);
    a.close();
    a.close(); // safe twice
    assert.equal(Deno.statSync(`${dir}/sub`).mode! & 0o777, 0o700, "directory created 0700");
    const b = StateStore.open(path);
    assert.deepEqual(b.activeClientBlocks(T0), [{ ip: "203.0.113.66", untilMs: T0 + 3600 * S }]);
    assert.equal(b.countEvents("threshold:t", "203.0.113.66", 60, T0 + S), 1);
    assert.equal(b.observeBulk(fp, "198.51.100.26", ["b@corp.example"], T0 + S), id);
    assert.deepEqual(b.bulkReach(id, 60, T0 + S), { servers: 2, recipients: 2 });
    b.close();
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("StateStore: a second process-like opener of the same file is refused while the first holds it", () => {
  const dir = Deno.makeTempDirSync({ prefix: "ssg-state-" });
  try {
    const a = StateStore.open(`${dir}/state.db`);
    a.addEvent("k", "v", T0); // takes the exclusive lock
    assert.throws(
      () => {
        const b = StateStore.open(`${dir}/state.db`);
        b.addEvent("k", "v", T0);
      },
      (e: unknown) =>
        e instanceof StateError && e.name === "StateError" && /locked|busy/i.test(e.message),
    );
    a.close();
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("StateStore refuses a file that is not a database with a StateError that keeps its cause", () => {
  const dir = Deno.makeTempDirSync({ prefix: "ssg-state-" });
  try {
    Deno.writeTextFileSync(`${dir}/state.db`, "this is not sqlite ".repeat(100));
    assert.throws(
      () => StateStore.open(`${dir}/state.db`),
      (e: unknown) =>
        e instanceof StateError && e.cause !== undefined &&
        /cannot open state file/.test(e.message),
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("StateStore is closed after close(): calls throw StateError", () => {
  const st = StateStore.open(":memory:");
  st.close();
  assert.equal(st.closed, true);
  assert.throws(() => st.countEvents("k", "v", 1, T0), StateError);
});

// Bounds: every table at maxRows − 1, maxRows, maxRows + 1.
for (const extra of [-1, 0, 1]) {
  Deno.test(`StateStore keeps at most maxRows events (inserting maxRows${extra >= 0 ? "+" : ""}${extra})`, () => {
    const max = 100;
    const st = StateStore.open(":memory:", { maxRows: max });
    for (let i = 0; i < max + extra; i++) st.addEvent("k", `v${i}`, T0 + i);
    assert.equal(st.rowCounts.events, Math.min(max, max + extra));
    if (extra > 0) {
      assert.equal(st.countEvents("k", "v0", 3600, T0 + max), 0, "the oldest was evicted");
    }
    assert.equal(
      st.countEvents("k", `v${max + extra - 1}`, 3600, T0 + max),
      1,
      "the newest is kept",
    );
    st.close();
  });
  Deno.test(`StateStore keeps at most maxRows list entries, evicting the soonest expiring (maxRows${extra >= 0 ? "+" : ""}${extra})`, () => {
    const max = 100;
    const st = StateStore.open(":memory:", { maxRows: max });
    for (let i = 0; i < max + extra; i++) {
      st.addEntry("blacklist", "sender", `s${i}@spam.example`, T0 + (1000 + i) * S, "r", T0);
    }
    assert.equal(st.rowCounts.entries, Math.min(max, max + extra));
    if (extra > 0) {
      assert.equal(st.getEntry("blacklist", "sender", "s0@spam.example", T0), undefined);
    }
    st.close();
  });
}

Deno.test("StateStore bounds bulk clusters and their hits", () => {
  const st = StateStore.open(":memory:", { maxRows: 100 });
  for (let i = 0; i < 150; i++) {
    const fp = fingerprint(
      `unique message number ${"x".repeat(i % 7)} word${i} alpha${i} beta${i} gamma${i}`,
    )!;
    st.observeBulk(fp, "198.51.100.25", ["a@corp.example"], T0 + i);
  }
  assert.ok(st.rowCounts.bulk_clusters <= 100, `${st.rowCounts.bulk_clusters} clusters`);
  assert.ok(st.rowCounts.bulk_hits <= 100, `${st.rowCounts.bulk_hits} hits`);
  st.close();
});

Deno.test("StateStore purges expired entries and old events incrementally on writes", () => {
  const st = StateStore.open(":memory:");
  st.retain({ eventSeconds: 60, bulkSeconds: 60 });
  for (let i = 0; i < 50; i++) {
    st.addEntry("blacklist", "sender", `s${i}@x.example`, T0 + S, "r", T0);
  }
  for (let i = 0; i < 50; i++) st.addEvent("k", `v${i}`, T0);
  assert.equal(st.rowCounts.entries, 50);
  st.addEvent("k", "late", T0 + 120 * S); // a write after everything expired
  assert.equal(st.rowCounts.entries, 0);
  assert.equal(st.rowCounts.events, 1);
  st.close();
});

Deno.test("StateStore.bulkReach counts distinct servers and recipients within the window only", () => {
  const st = StateStore.open(":memory:");
  const fp = fingerprint(
    "Dear customer, your parcel is waiting. Pay the customs fee at the link below.",
  )!;
  const id = st.observeBulk(fp, "198.51.100.25", ["a@corp.example", "b@corp.example"], T0);
  st.observeBulk(fp, "198.51.100.25", ["a@corp.example"], T0 + 1 * S); // same server, same rcpt
  st.observeBulk(fp, "198.51.100.26", ["c@corp.example"], T0 + 2 * S);
  assert.deepEqual(st.bulkReach(id, 600, T0 + 2 * S), { servers: 2, recipients: 3 });
  // At T0+601s a 600 s window is (T0+1s, T0+601s]: only the hit at T0+2s; 599 s: nothing.
  assert.deepEqual(st.bulkReach(id, 600, T0 + 601 * S), { servers: 1, recipients: 1 });
  assert.deepEqual(st.bulkReach(id, 599, T0 + 601 * S), { servers: 0, recipients: 0 });
  assert.equal(DEFAULT_MAX_ROWS, 100_000);
  st.close();
});
