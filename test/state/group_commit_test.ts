/**
 * The state store's group commit (issue 9): heuristic observations (bulk, counter events) share
 * one transaction committed within GROUP_COMMIT_MS; list entries commit at once, with whatever
 * is pending; a process that dies without `close()` loses at most the pending observations.
 * Each case runs a child Deno process on a state file and then reopens the file here.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { GROUP_COMMIT_MS, StateStore } from "../../src/state/state_store.ts";
import { fingerprint } from "../../src/state/bulk_fingerprint.ts";

const T0 = Date.UTC(2026, 10, 27, 12, 0, 0);
const S = 1000;
const MODULE = new URL("../../src/state/state_store.ts", import.meta.url).href;
const FP_MODULE = new URL("../../src/state/bulk_fingerprint.ts", import.meta.url).href;
const TEXT = "the same campaign text goes to many servers at once today";

/** Runs `body` in a child process with `st` open on `path`; the child exits without close(). */
async function child(path: string, body: string): Promise<void> {
  const code = `import { StateStore } from ${JSON.stringify(MODULE)};
import { fingerprint } from ${JSON.stringify(FP_MODULE)};
const st = StateStore.open(${JSON.stringify(path)});
const fp = fingerprint(${JSON.stringify(TEXT)});
${body}
Deno.exit(0);
`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", code],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
}

async function withFile(fn: (path: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ssg-group-" });
  try {
    await fn(join(dir, "state.db"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function observed(path: string): { events: number; cluster: boolean; blocks: number } {
  const st = StateStore.open(path);
  try {
    const events = st.countEvents("k", "203.0.113.5", 3600, T0 + S);
    const fp = fingerprint(TEXT)!;
    const before = st.rowCounts.bulk_clusters;
    st.observeBulk(fp, "198.51.100.9", ["z@corp.example"], T0 + S);
    return {
      events,
      cluster: before === 1 && st.rowCounts.bulk_clusters === 1,
      blocks: st.activeClientBlocks(T0 + S).length,
    };
  } finally {
    st.close();
  }
}

Deno.test("group commit: observations reach the file within GROUP_COMMIT_MS without close()", async () => {
  await withFile(async (path) => {
    await child(
      path,
      `st.observeBulk(fp, "198.51.100.25", ["a@corp.example"], ${T0});
st.addEvent("k", "203.0.113.5", ${T0});
await new Promise((r) => setTimeout(r, ${GROUP_COMMIT_MS * 5}));`,
    );
    assert.deepEqual(observed(path), { events: 1, cluster: true, blocks: 0 });
  });
});

Deno.test("group commit: a list entry commits at once, with the observations before it", async () => {
  await withFile(async (path) => {
    await child(
      path,
      `st.observeBulk(fp, "198.51.100.25", ["a@corp.example"], ${T0});
st.addEvent("k", "203.0.113.5", ${T0});
st.addEntry("blacklist", "client_ip", "203.0.113.5", ${T0 + 3600 * S}, "t", ${T0});`,
    );
    assert.deepEqual(observed(path), { events: 1, cluster: true, blocks: 1 });
  });
});

Deno.test("group commit: a process that dies at once loses only the pending observations", async () => {
  await withFile(async (path) => {
    await child(
      path,
      `st.addEntry("blacklist", "client_ip", "203.0.113.5", ${T0 + 3600 * S}, "t", ${T0});
st.observeBulk(fp, "198.51.100.25", ["a@corp.example"], ${T0});
st.addEvent("k", "203.0.113.5", ${T0});`,
    );
    const st = StateStore.open(path);
    try {
      assert.equal(st.activeClientBlocks(T0 + S).length, 1, "the entry survived");
      assert.equal(st.countEvents("k", "203.0.113.5", 3600, T0 + S), 0, "pending event lost");
      assert.equal(st.rowCounts.bulk_clusters, 0, "pending observation lost");
    } finally {
      st.close();
    }
  });
});

Deno.test("group commit: close() commits what is pending; reads see it before", async () => {
  await withFile((path) => {
    const a = StateStore.open(path);
    a.addEvent("k", "203.0.113.5", T0);
    assert.equal(a.countEvents("k", "203.0.113.5", 60, T0 + S), 1);
    a.close();
    const b = StateStore.open(path);
    assert.equal(b.countEvents("k", "203.0.113.5", 60, T0 + S), 1);
    b.close();
    return Promise.resolve();
  });
});

Deno.test("bulk memo: an exact copy after its cluster expired starts a new cluster", () => {
  const st = StateStore.open(":memory:");
  st.retain({ bulkSeconds: 60 });
  const fp = fingerprint(TEXT)!;
  const a = st.observeBulk(fp, "198.51.100.25", ["a@corp.example"], T0);
  assert.equal(st.observeBulk(fp, "198.51.100.26", ["b@corp.example"], T0 + 59 * S), a);
  // Last seen at T0+59 s: alive until T0+119 s (exclusive).
  assert.equal(st.observeBulk(fp, "198.51.100.27", ["c@corp.example"], T0 + 118 * S), a);
  // (A new cluster may reuse the id of the one purged: its reach tells them apart.)
  const b = st.observeBulk(fp, "198.51.100.28", ["d@corp.example"], T0 + 178 * S + 1);
  assert.deepEqual(st.bulkReach(b, 60, T0 + 178 * S + 1), { servers: 1, recipients: 1 });
  st.close();
});

Deno.test("bulk memo: an exact copy of an evicted cluster starts a new one", () => {
  const st = StateStore.open(":memory:", { maxRows: 2 });
  const fp = fingerprint(TEXT)!;
  const a = st.observeBulk(fp, "198.51.100.25", ["a@corp.example"], T0);
  st.observeBulk(
    fingerprint("an entirely different text about other things here")!,
    "s",
    [],
    T0 + 1,
  );
  st.observeBulk(fingerprint("yet another unrelated message body with words")!, "s", [], T0 + 2);
  const b = st.observeBulk(fp, "198.51.100.26", ["b@corp.example"], T0 + 3);
  assert.notEqual(b, a, "the oldest cluster was evicted, so the copy starts anew");
  assert.deepEqual(st.bulkReach(b, 60, T0 + 3), { servers: 1, recipients: 1 });
  st.close();
});
