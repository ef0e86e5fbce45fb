import assert from "node:assert/strict";
import {
  guardRegex,
  MAX_DEGREE,
  MAX_PATTERN_LENGTH,
  MAX_REGEX_SCAN_CHARS,
  RegexRefusedError,
  runGuarded,
} from "../../src/policy/regex_guard.ts";

// Known ReDoS patterns (OWASP, CVE write-ups) and non-regular constructs: refused at load.
const REFUSED: { pattern: string; why: RegExp }[] = [
  { pattern: "(a+)+$", why: /nested repetition/ },
  { pattern: "(a*)*b", why: /nested repetition/ },
  { pattern: "(a|a)*", why: /two branches starting with "a"/ },
  { pattern: "(a|aa)+$", why: /two branches starting with "a"/ },
  { pattern: "(.*a){12}", why: /nested repetition/ },
  { pattern: "(\\w+\\s?)*$", why: /nested repetition/ },
  { pattern: "^(([a-z])+.)+[A-Z]([a-z])+$", why: /nested repetition/ },
  {
    pattern:
      "^([a-zA-Z0-9])(([\\-.]|[_]+)?([a-zA-Z0-9]+))*(@){1}[a-z0-9]+[.]{1}(([a-z]{2,3})|([a-z]{2,3}[.]{1}[a-z]{2,3}))$",
    why: /nested repetition/,
  },
  { pattern: "(x+x+)+y", why: /nested repetition/ },
  { pattern: "(?:\\d|x)+", why: /starts with a class/ },
  { pattern: "(?:a|)+", why: /match nothing|empty/ },
  { pattern: "(?:a?)+", why: /nested repetition/ },
  { pattern: "((a|a)b)+", why: /two branches/ },
  { pattern: "(a)\\1", why: /backreferences/ },
  { pattern: "(?<x>a)\\k<x>", why: /named backreferences/ },
  { pattern: "(?=a)b", why: /lookahead/ },
  { pattern: "(?!a)b", why: /lookahead/ },
  { pattern: "(?<=a)b", why: /lookbehind/ },
  { pattern: "(?<!a)b", why: /lookbehind/ },
  { pattern: "a.*b.*c.*d.*e", why: /4 unbounded repetitions/ },
  { pattern: "\\d{1,16}\\d{1,16}\\d{1,16}\\d{1,16}", why: /multiply/ },
  { pattern: "(", why: /not a valid regular expression/ },
  { pattern: "a{2,1}", why: /not a valid regular expression/ },
  { pattern: "", why: /empty/ },
  { pattern: "a".repeat(MAX_PATTERN_LENGTH + 1), why: /longer than/ },
];
for (const c of REFUSED) {
  Deno.test(`guardRegex() refuses ${JSON.stringify(c.pattern.slice(0, 60))}`, () => {
    assert.throws(() => guardRegex(c.pattern), (e: unknown) => {
      assert.ok(e instanceof RegexRefusedError);
      assert.equal(e.name, "RegexRefusedError");
      assert.match(e.message, c.why);
      return true;
    });
  });
}

// Ordinary patterns: admitted, with the degree and scan budget they get.
const ADMITTED: { pattern: string; degree: number; scan: number; effective?: string }[] = [
  { pattern: "^bulk", degree: 0, scan: MAX_REGEX_SCAN_CHARS },
  { pattern: "viagra|cialis", degree: 0, scan: MAX_REGEX_SCAN_CHARS },
  { pattern: "\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}", degree: 0, scan: MAX_REGEX_SCAN_CHARS },
  { pattern: "(?:foo|bar)+", degree: 1, scan: 3162 },
  { pattern: "^win.*prize", degree: 1, scan: MAX_REGEX_SCAN_CHARS }, // anchored: n^1
  { pattern: ".*win.*prize.*", degree: 1, scan: 3162, effective: "win.*prize" },
  { pattern: "[a-z]+@[a-z]+\\.example", degree: 2, scan: 215 },
  { pattern: "a.*b.*c.*d", degree: 3, scan: 56 },
  { pattern: "a".repeat(MAX_PATTERN_LENGTH), degree: 0, scan: MAX_REGEX_SCAN_CHARS },
];
for (const c of ADMITTED) {
  Deno.test(`guardRegex() admits ${JSON.stringify(c.pattern.slice(0, 40))} with degree ${c.degree}, scanning ${c.scan} characters`, () => {
    const g = guardRegex(c.pattern);
    assert.equal(g.degree, c.degree);
    assert.equal(g.maxScanChars, c.scan);
    assert.ok(g.degree <= MAX_DEGREE);
    if (c.effective) assert.equal(g.effective, c.effective);
  });
}

Deno.test("runGuarded() finds matches case-insensitively and returns the matched text", () => {
  assert.equal(runGuarded(guardRegex("w[o0]n.*lottery"), "you WON the LOTTERY"), "WON the LOTTERY");
  assert.equal(runGuarded(guardRegex("^x-mailer"), "no"), null);
});

Deno.test("runGuarded() scans at most the pattern's budget: a match beyond it is not seen", () => {
  const g = guardRegex("a.*zz"); // degree 1 → 3162 characters
  assert.equal(runGuarded(g, "a" + "b".repeat(3100) + "zz"), "a" + "b".repeat(3100) + "zz");
  assert.equal(runGuarded(g, "a" + "b".repeat(g.maxScanChars) + "zz"), null);
});

// The budget is real: admitted worst-case patterns on adversarial 1 MiB texts finish quickly.
const ADVERSARIAL: { pattern: string; text: string }[] = [
  { pattern: ".*a.*b", text: "a".repeat(1 << 20) }, // 33 s on 4 KiB without the budget
  { pattern: "a.*b", text: "a".repeat(1 << 20) },
  { pattern: "\\w+\\w+x", text: "a".repeat(1 << 20) },
  { pattern: "a.*b.*c.*d", text: "abc".repeat(1 << 18) },
  { pattern: "[a-z]+@[a-z]+\\.example", text: "a@".repeat(1 << 19) },
  { pattern: "(?:ab|cd)+e", text: "ab".repeat(1 << 19) },
];
for (const c of ADVERSARIAL) {
  Deno.test(`runGuarded(${JSON.stringify(c.pattern)}) on 1 MiB of adversarial text stays bounded (well under 5 s; unguarded, hours)`, () => {
    const g = guardRegex(c.pattern);
    const t0 = performance.now();
    runGuarded(g, c.text);
    const ms = performance.now() - t0;
    assert.ok(ms < 5000, `${ms.toFixed(1)} ms`);
  });
}
