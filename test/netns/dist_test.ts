/**
 * The built executable itself (`./build.sh` → dist/ssg): it starts from any directory, and a
 * self-extracting build unpacks once, atomically, into a cache keyed by its payload's hash.
 * Needs no root. Fails (never skips) when dist/ssg has not been built: run ./build.sh.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { requireSsgBinary, tempDir } from "./helpers.ts";
import { run } from "./topology.ts";
import { VERSION } from "../../src/version.ts";

/** The stamped payload hash of a self-extracting build, or undefined for a `deno compile` one. */
function selfExtractHash(bin: string): string | undefined {
  const f = Deno.openSync(bin);
  try {
    const head = new Uint8Array(4096);
    const n = f.readSync(head) ?? 0;
    const text = new TextDecoder("latin1").decode(head.subarray(0, n));
    return /^SSG_SHA256=([0-9a-f]{64})$/m.exec(text)?.[1];
  } finally {
    f.close();
  }
}

Deno.test("dist/ssg --version works from another directory and prints the version", async () => {
  const bin = requireSsgBinary();
  await using cache = await tempDir("ssg-cache-");
  const r = await run(["sh", "-c", `cd / && exec "$0" --version`, bin], {
    timeoutMs: 60_000,
    env: { SSG_CACHE_DIR: cache.path },
  });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout + r.stderr, new RegExp(VERSION.replaceAll(".", "\\.")));
});

Deno.test("a self-extracting dist/ssg unpacks once per payload and not again on the next start", async () => {
  const bin = requireSsgBinary();
  const hash = selfExtractHash(bin);
  if (!hash) {
    console.log("dist/ssg was built by deno compile: nothing to extract (checked --version only)");
    return;
  }
  await using cache = await tempDir("ssg-cache-");
  const start = () =>
    run([bin, "--version"], { timeoutMs: 60_000, env: { SSG_CACHE_DIR: cache.path } });
  const first = await start();
  assert.equal(first.code, 0, first.stderr);
  const entries = [...Deno.readDirSync(cache.path)].map((e) => e.name);
  assert.deepEqual(entries, [hash], "one directory named after the payload hash, no temp left");
  const dir = join(cache.path, hash);
  for (const p of [".complete", "deno", "app/main.ts", "app/ffi/queue_worker.ts", "deno_dir"]) {
    assert.ok(Deno.statSync(join(dir, p)), `${p} extracted`);
  }
  const marker = Deno.statSync(join(dir, ".complete")).mtime?.getTime();
  const second = await start();
  assert.equal(second.code, 0, second.stderr);
  assert.equal(second.stdout, first.stdout);
  assert.equal(Deno.statSync(join(dir, ".complete")).mtime?.getTime(), marker, "not re-extracted");
  assert.deepEqual([...Deno.readDirSync(cache.path)].map((e) => e.name), [hash]);
});

Deno.test("concurrent first starts of a self-extracting dist/ssg all succeed and leave one copy", async () => {
  const bin = requireSsgBinary();
  const hash = selfExtractHash(bin);
  if (!hash) {
    console.log("dist/ssg was built by deno compile: no extraction race to test");
    return;
  }
  await using cache = await tempDir("ssg-cache-");
  const results = await Promise.all(
    Array.from(
      { length: 4 },
      () => run([bin, "--version"], { timeoutMs: 90_000, env: { SSG_CACHE_DIR: cache.path } }),
    ),
  );
  for (const r of results) assert.equal(r.code, 0, r.stderr);
  assert.deepEqual([...Deno.readDirSync(cache.path)].map((e) => e.name), [hash]);
});

Deno.test("a damaged self-extracting dist/ssg refuses to start instead of running damaged code", async () => {
  const bin = requireSsgBinary();
  if (!selfExtractHash(bin)) {
    console.log("dist/ssg was built by deno compile: no payload checksum to test");
    return;
  }
  await using tmp = await tempDir("ssg-damaged-");
  const copy = join(tmp.path, "ssg");
  const bytes = await Deno.readFile(bin);
  bytes[bytes.length - 100] ^= 0xff; // one flipped byte inside the gzip payload
  await Deno.writeFile(copy, bytes, { mode: 0o755 });
  const r = await run([copy, "--version"], {
    timeoutMs: 60_000,
    env: { SSG_CACHE_DIR: join(tmp.path, "cache") },
  });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /checksum mismatch/);
  assert.deepEqual(
    [...Deno.readDirSync(join(tmp.path, "cache"))].map((e) => e.name),
    [],
    "no half-extracted copy left behind",
  );
});
