/** The event log: one escaped line per event, and a log file that follows rotation by `mv`. */
import assert from "node:assert/strict";
import { AppLog, formatEvent, formatValue, LOG_FLUSH_CHARS, MemoryLog } from "../../src/log/log.ts";

/** Polls `path` until its text matches `re` (bounded: at most 5 s); returns the text. */
async function fileMatching(path: string, re: RegExp): Promise<string> {
  let text = "";
  for (let i = 0; i < 500; i++) {
    text = await Deno.readTextFile(path).catch(() => "");
    if (re.test(text)) return text;
    await new Promise((r) => setTimeout(r, 10));
  }
  return text;
}

Deno.test("formatValue quotes and escapes so that untrusted text can never start a new line", () => {
  const cases: [unknown, string][] = [
    ["plain", "plain"],
    ["two words", '"two words"'],
    ["a\r\nINFO forged=1", '"a\\r\\nINFO forged=1"'],
    ['q"uote', '"q\\"uote"'],
    ["nul\x00", '"nul\\x00"'],
    ["", '""'],
    [undefined, "-"],
    [["a", "b"], "a,b"],
    [42, "42"],
  ];
  for (const [v, want] of cases) assert.equal(formatValue(v as string), want);
});

Deno.test("formatEvent writes the event name and key=value fields on one line", () => {
  const line = formatEvent("smtp.reject", { session: "s1", reason: "x\ny" }, "warning");
  assert.match(line, /^\S+ WARNING smtp\.reject session=s1 reason="x\\ny"$/);
});

Deno.test("MemoryLog keeps events for tests", () => {
  const log = new MemoryLog();
  log.event("a", { k: 1 });
  log.event("b");
  assert.deepEqual(log.named("a").map((e) => e.fields), [{ k: 1 }]);
});

Deno.test("AppLog appends to its file, and starts a new file after the old one was moved away", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/ssg.log`;
  const log = await AppLog.open({ file: path, stderr: false });
  try {
    log.event("one", { n: 1 });
    assert.match(await fileMatching(path, / one n=1\n/), / one n=1\n/);
    await Deno.rename(path, `${path}.1`);
    log.event("two", { n: 2 }); // still goes to the moved file until the rotation check runs
    let reopened = false;
    for (let i = 0; i < 60 && !reopened; i++) { // bounded: at most 6 s
      await new Promise((r) => setTimeout(r, 100));
      reopened = await Deno.stat(path).then(() => true, () => false);
    }
    assert.ok(reopened, "a new log file appears at the configured path");
    log.event("three", { n: 3 });
    await fileMatching(path, / three n=3\n/);
    const old = await Deno.readTextFile(`${path}.1`);
    const fresh = await Deno.readTextFile(path);
    assert.match(old, / one n=1\n/);
    assert.match(old, / two n=2\n/);
    assert.match(fresh, / three n=3\n/);
    assert.doesNotMatch(fresh, /one|two/);
  } finally {
    await log.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("AppLog batches lines: all of them, in order, written by the flush timer, the size bound, reopen() and close()", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/ssg.log`;
  const log = await AppLog.open({ file: path, stderr: false });
  const lines = () => Deno.readTextFileSync(path).split("\n").filter((l) => l !== "");
  try {
    for (let i = 0; i < 5; i++) log.event("batch", { i });
    assert.equal(lines().length, 0, "nothing written within the turn");
    const text = await fileMatching(path, / batch i=4\n/);
    assert.deepEqual(text.match(/i=\d/g), ["i=0", "i=1", "i=2", "i=3", "i=4"]);
    // Past LOG_FLUSH_CHARS pending, lines go out at once.
    const big = "x".repeat(1000);
    const n = Math.ceil(LOG_FLUSH_CHARS / 1000) + 1;
    for (let i = 0; i < n; i++) log.event("big", { i, big });
    assert.ok(lines().length > 5, "the size bound flushed without waiting");
    log.event("before-reopen");
    log.reopen();
    assert.match(lines().at(-1)!, / before-reopen$/);
    log.event("before-close");
  } finally {
    await log.close();
  }
  try {
    assert.match(lines().at(-1)!, / before-close$/);
    assert.equal(
      lines().filter((l) => / big /.test(l)).length,
      Math.ceil(LOG_FLUSH_CHARS / 1000) + 1,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("AppLog writes an error line at the end of its turn", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/ssg.log`;
  const log = await AppLog.open({ file: path, stderr: false });
  try {
    log.event("before", {});
    log.event("boom", { why: "x" }, "error");
    await Promise.resolve();
    await Promise.resolve();
    const text = Deno.readTextFileSync(path);
    assert.match(text, / before\n.* ERROR boom why=x\n$/);
  } finally {
    await log.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("AppLog flushes on Deno.exit() without close()", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/ssg.log`;
  try {
    const mod = new URL("../../src/log/log.ts", import.meta.url).href;
    const code = `import { AppLog } from ${JSON.stringify(mod)};
const log = await AppLog.open({ file: ${JSON.stringify(path)}, stderr: false });
log.event("last-words", { n: 1 });
Deno.exit(3);
`;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--ext=ts", code],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 3, new TextDecoder().decode(out.stderr));
    assert.match(await Deno.readTextFile(path), / last-words n=1\n/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
