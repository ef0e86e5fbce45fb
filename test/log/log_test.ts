/** The event log: one escaped line per event, and a log file that follows rotation by `mv`. */
import assert from "node:assert/strict";
import { AppLog, formatEvent, formatValue, MemoryLog } from "../../src/log/log.ts";

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
    await new Promise((r) => setTimeout(r, 10));
    await Deno.rename(path, `${path}.1`);
    log.event("two", { n: 2 }); // still goes to the moved file until the rotation check runs
    let reopened = false;
    for (let i = 0; i < 60 && !reopened; i++) { // bounded: at most 6 s
      await new Promise((r) => setTimeout(r, 100));
      reopened = await Deno.stat(path).then(() => true, () => false);
    }
    assert.ok(reopened, "a new log file appears at the configured path");
    log.event("three", { n: 3 });
    await new Promise((r) => setTimeout(r, 10));
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
