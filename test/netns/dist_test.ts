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

Deno.test("dist/ssg starts V8 with build.sh's heap flags, and SSG_V8_FLAGS replaces them", async () => {
  const bin = requireSsgBinary();
  const flags = /^V8_FLAGS="([^"]+)"$/m.exec(
    await Deno.readTextFile(new URL("../../build.sh", import.meta.url)),
  )?.[1];
  assert.ok(flags, "build.sh sets V8_FLAGS");
  if (selfExtractHash(bin)) {
    const head = new TextDecoder("latin1").decode(
      (await Deno.readFile(bin)).subarray(0, 8192),
    );
    assert.ok(
      head.includes(`"--v8-flags=\${SSG_V8_FLAGS:-${flags}}"`),
      "the header passes build.sh's V8_FLAGS to deno run",
    );
  }
  await using cache = await tempDir("ssg-cache-");
  // An unknown flag is refused by V8 itself: proof that the variable reaches it.
  const r = await run([bin, "--version"], {
    timeoutMs: 60_000,
    env: { SSG_CACHE_DIR: cache.path, SSG_V8_FLAGS: "--no-such-ssg-test-flag" },
  });
  if (selfExtractHash(bin)) {
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /did not recognize flag '--no-such-ssg-test-flag'/);
  }
  const ok = await run([bin, "--version"], {
    timeoutMs: 60_000,
    env: { SSG_CACHE_DIR: cache.path, SSG_V8_FLAGS: flags },
  });
  assert.equal(ok.code, 0, ok.stderr);
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

Deno.test("a self-extracting dist/ssg removes other versions' unused copies at start, never one in use", async () => {
  const bin = requireSsgBinary();
  const hash = selfExtractHash(bin);
  if (!hash) {
    // A deno compile build unpacks nothing, so it has nothing to clean up: check that it starts.
    const r = await run([bin, "--version"], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, r.stderr);
    return;
  }
  await using cache = await tempDir("ssg-cache-");
  const fake = (c: string) => c.repeat(64);
  const old = (name: string, lastUsedAgoS: number) => {
    const d = join(cache.path, name);
    Deno.mkdirSync(join(d, "app"), { recursive: true });
    Deno.writeTextFileSync(join(d, ".complete"), "");
    Deno.writeTextFileSync(join(d, ".last-used"), "");
    const t = new Date(Date.now() - lastUsedAgoS * 1000);
    Deno.utimeSync(join(d, ".last-used"), t, t);
    return d;
  };
  const idle = old(fake("a"), 3 * 86400); // an older version nobody runs
  const busy = old(fake("b"), 3 * 86400); // an older version still running (its program is there)
  const starting = old(fake("c"), 5); // a version that is starting right now
  const stale = join(cache.path, ".extract.XYZ123");
  Deno.mkdirSync(stale);
  const twoDaysAgo = new Date(Date.now() - 2 * 86400 * 1000);
  Deno.utimeSync(stale, twoDaysAgo, twoDaysAgo);
  const foreign = join(cache.path, "notes"); // not a copy of ours: never touched
  Deno.mkdirSync(foreign);
  Deno.copyFileSync("/bin/sleep", join(busy, "deno"));
  Deno.chmodSync(join(busy, "deno"), 0o755);
  const sleeper = new Deno.Command(join(busy, "deno"), { args: ["30"] }).spawn();
  try {
    const r = await run([bin, "--version"], {
      timeoutMs: 60_000,
      env: { SSG_CACHE_DIR: cache.path },
    });
    assert.equal(r.code, 0, r.stderr);
    const left = [...Deno.readDirSync(cache.path)].map((e) => e.name).sort();
    assert.deepEqual(left, [hash, fake("b"), fake("c"), "notes"].sort());
  } finally {
    sleeper.kill("SIGKILL");
    await sleeper.status;
  }
  // Once nothing runs it (and its mark is old), the next start removes it too.
  const r2 = await run([bin, "--version"], {
    timeoutMs: 60_000,
    env: { SSG_CACHE_DIR: cache.path },
  });
  assert.equal(r2.code, 0, r2.stderr);
  const left2 = [...Deno.readDirSync(cache.path)].map((e) => e.name).sort();
  assert.deepEqual(left2, [hash, fake("c"), "notes"].sort());
  void idle;
  void starting;
});
