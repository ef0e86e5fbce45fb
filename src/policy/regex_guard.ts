/**
 * The budget of the `matches` operator: administrators write regular expressions, attackers
 * write the text they run on, and JavaScript's RegExp (V8 irregexp) backtracks. A crafted
 * subject must not stall the event loop that serves every other session, so a pattern is
 * admitted only when its worst case is bounded, and the text it scans is cut to what that bound
 * allows.
 *
 * How (two parts, both needed):
 * 1. At load, the pattern is parsed (a small parser of the `u`-mode syntax) and refused when it
 *    can backtrack exponentially or is not a regular language: backreferences (`\1`, `\k<n>`),
 *    lookaround (`(?=`, `(?!`, `(?<=`, `(?<!`), a repeated group that contains any quantifier
 *    (`(a+)+`, `(a?)*`, `(\w+\s?)*`), a repeated group with an alternation whose branches can
 *    start with the same character or match nothing (`(a|a)*`, `(a|ab)+`, `(\d|x)+`, `(a|)+`),
 *    more than `MAX_DEGREE` unbounded repetitions, or bounded repetitions whose product exceeds
 *    `MAX_BOUNDED_PRODUCT`.
 * 2. What remains is polynomial: with k unbounded repetitions (`*`, `+`, `{n,}`, `{n,m}` with
 *    m > 16) an unanchored search on n characters costs O(n^(k+1)) steps at worst (O(n^k) when
 *    anchored with `^`; e.g. `a.*b` on "aaaa…" is quadratic, `.*a.*b` took 33 s on 4 KiB in
 *    V8 here). So each pattern gets its own scan length: the largest n with n^(k+1) within
 *    `STEP_BUDGET`, capped at `MAX_REGEX_SCAN_CHARS` — 64 KiB for k = 0, 3162 characters for
 *    k = 1, 215 for k = 2, 46 for k = 3. A leading or trailing `.*` is dropped first (it never
 *    changes whether an unanchored pattern matches), so `.*win.*prize.*` costs like `win.*prize`.
 *
 * Rejected alternatives: running patterns in a Worker with a timeout (a postMessage and a copy of
 * the text per test, and `evaluate()` would become asynchronous); V8's linear engine (`/l`,
 * needs `--enable-experimental-regexp-engine` on the command line of the whole process); a
 * hand-written NFA matcher (linear, but ~10× slower than irregexp on every message for the
 * sake of patterns we can refuse instead).
 *
 * Matching is on normalised text (`fold_text.ts`) with flags `iu`: case-insensitive, Unicode.
 */

/** Longest pattern accepted, in characters. */
export const MAX_PATTERN_LENGTH = 1000;
/** Most unbounded repetitions in one pattern. */
export const MAX_DEGREE = 3;
/** A repetition whose maximum exceeds this counts as unbounded. */
export const UNBOUNDED_REPEAT = 16;
/** Largest product of bounded repetition maxima along one path (`\d{1,3}` four times: 81). */
export const MAX_BOUNDED_PRODUCT = 10_000;
/** Worst-case backtracking steps allowed per test (~25 ms in V8 on the dev machine). */
export const STEP_BUDGET = 10_000_000;
/** Most characters any pattern scans (a linear pattern). */
export const MAX_REGEX_SCAN_CHARS = 64 * 1024;

/** A pattern was refused; `message` says why, for `ssg check`. */
export class RegexRefusedError extends Error {
  /** The error class name, "RegexRefusedError". */
  override name = "RegexRefusedError";
  /** The pattern as written. */
  readonly pattern: string;
  /** Creates the error for `pattern`; `message` says why it was refused. */
  constructor(pattern: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.pattern = pattern;
  }
}

/** An admitted pattern with its budget. */
export interface GuardedRegex {
  /** The pattern as written. */
  source: string;
  /** The pattern actually run (leading/trailing `.*` removed). */
  effective: string;
  /** Unbounded repetitions of `effective`. */
  degree: number;
  /** Whether every branch is anchored at the start (`^`). */
  anchored: boolean;
  /** Most characters of a text that are scanned. */
  maxScanChars: number;
  /** The compiled RegExp (flags `iu`, not global: no `lastIndex` state). */
  regex: RegExp;
}

type Atom =
  | { t: "char"; c: string }
  | { t: "set" }
  | { t: "group"; alt: Alt }
  | { t: "assert"; c: string };
interface Item {
  atom: Atom;
  min: number;
  max: number;
  start: number;
  end: number;
}
interface Alt {
  branches: Item[][];
}

/** Checks and compiles `pattern`; throws `RegexRefusedError` with the reason when refused. */
export function guardRegex(pattern: string): GuardedRegex {
  if (pattern.length === 0) throw new RegexRefusedError(pattern, "the pattern is empty");
  if (pattern.length > MAX_PATTERN_LENGTH) {
    throw new RegexRefusedError(
      pattern,
      `the pattern is longer than ${MAX_PATTERN_LENGTH} characters`,
    );
  }
  // V8 is the authority on syntax: a pattern it refuses is refused with its message.
  try {
    new RegExp(pattern, "iu");
  } catch (e) {
    throw new RegexRefusedError(
      pattern,
      `not a valid regular expression: ${(e as Error).message}`,
      {
        cause: e,
      },
    );
  }
  const alt = new PatternParser(pattern).parse();
  checkAlt(pattern, alt, false);
  let effective = pattern;
  if (alt.branches.length === 1) {
    const items = alt.branches[0];
    const isDotStar = (it: Item | undefined) =>
      it !== undefined && it.atom.t === "set" && pattern[it.start] === "." && it.min === 0 &&
      it.max === Infinity;
    let from = 0;
    let to = pattern.length;
    if (items.length > 1 && isDotStar(items[0])) from = items[0].end;
    if (items.length > 1 && isDotStar(items[items.length - 1])) {
      to = items[items.length - 1].start;
    }
    if (to > from) effective = pattern.slice(from, to);
  }
  const effAlt = effective === pattern ? alt : new PatternParser(effective).parse();
  const degree = degreeOf(effAlt);
  if (degree > MAX_DEGREE) {
    throw new RegexRefusedError(
      pattern,
      `the pattern has ${degree} unbounded repetitions (*, +, {n,}); at most ${MAX_DEGREE} are allowed, because each multiplies the worst-case time`,
    );
  }
  const product = boundedProduct(effAlt);
  if (product > MAX_BOUNDED_PRODUCT) {
    throw new RegexRefusedError(
      pattern,
      `the pattern's bounded repetitions multiply to ${product} steps per position; at most ${MAX_BOUNDED_PRODUCT}`,
    );
  }
  const anchored = effAlt.branches.every((b) => b[0]?.atom.t === "assert" && b[0].atom.c === "^");
  const exponent = anchored ? degree : degree + 1;
  const maxScanChars = exponent === 0
    ? MAX_REGEX_SCAN_CHARS
    : Math.min(MAX_REGEX_SCAN_CHARS, Math.floor(Math.pow(STEP_BUDGET, 1 / exponent)));
  return {
    source: pattern,
    effective,
    degree,
    anchored,
    maxScanChars,
    regex: new RegExp(effective, "iu"),
  };
}

/** Runs an admitted pattern on `text` within its budget; returns the matched text or null. */
export function runGuarded(g: GuardedRegex, text: string): string | null {
  const t = text.length > g.maxScanChars ? text.slice(0, g.maxScanChars) : text;
  const m = g.regex.exec(t);
  return m ? m[0] : null;
}

/** A recursive-descent parser of the `u`-mode pattern syntax, for analysis only. */
class PatternParser {
  readonly #p: string;
  #i = 0;
  constructor(pattern: string) {
    this.#p = pattern;
  }

  parse(): Alt {
    const alt = this.#alt();
    if (this.#i < this.#p.length) this.#refuse(`unexpected "${this.#p[this.#i]}"`);
    return alt;
  }

  #refuse(why: string): never {
    throw new RegexRefusedError(this.#p, `${why} at offset ${this.#i}`);
  }

  #alt(): Alt {
    const branches = [this.#seq()];
    while (this.#p[this.#i] === "|") {
      this.#i++;
      branches.push(this.#seq());
    }
    return { branches };
  }

  #seq(): Item[] {
    const items: Item[] = [];
    const p = this.#p;
    while (this.#i < p.length && p[this.#i] !== "|" && p[this.#i] !== ")") {
      const start = this.#i;
      const atom = this.#atom();
      let min = 1;
      let max = 1;
      const q = this.#quantifier();
      if (q) {
        if (atom.t === "assert") this.#refuse("a quantified assertion");
        [min, max] = q;
      }
      items.push({ atom, min, max, start, end: this.#i });
    }
    return items;
  }

  #quantifier(): [number, number] | undefined {
    const p = this.#p;
    let q: [number, number] | undefined;
    const c = p[this.#i];
    if (c === "*") q = [0, Infinity];
    else if (c === "+") q = [1, Infinity];
    else if (c === "?") q = [0, 1];
    if (q) {
      this.#i++;
    } else if (c === "{") {
      const m = /^\{(\d+)(,(\d*))?\}/.exec(p.slice(this.#i));
      if (!m) return undefined;
      const min = Number(m[1]);
      const max = m[2] === undefined ? min : m[3] === "" ? Infinity : Number(m[3]);
      q = [min, max];
      this.#i += m[0].length;
    } else {
      return undefined;
    }
    if (p[this.#i] === "?") this.#i++; // lazy: same worst case
    return q;
  }

  #atom(): Atom {
    const p = this.#p;
    const c = p[this.#i];
    if (c === "(") return this.#group();
    if (c === "[") return this.#class();
    if (c === ".") {
      this.#i++;
      return { t: "set" };
    }
    if (c === "^" || c === "$") {
      this.#i++;
      return { t: "assert", c };
    }
    if (c === "\\") return this.#escape();
    if (c === "*" || c === "+" || c === "?" || c === "{") this.#refuse("nothing to repeat");
    const cp = p.codePointAt(this.#i)!;
    const ch = String.fromCodePoint(cp);
    this.#i += ch.length;
    return { t: "char", c: ch.toLowerCase() };
  }

  #group(): Atom {
    const p = this.#p;
    const rest = p.slice(this.#i);
    if (rest.startsWith("(?=") || rest.startsWith("(?!")) {
      this.#refuse("lookahead is not allowed (it can hide unbounded backtracking)");
    }
    if (rest.startsWith("(?<=") || rest.startsWith("(?<!")) {
      this.#refuse("lookbehind is not allowed (it can hide unbounded backtracking)");
    }
    if (rest.startsWith("(?:")) {
      this.#i += 3;
    } else if (rest.startsWith("(?<")) {
      const close = p.indexOf(">", this.#i);
      if (close < 0) this.#refuse("unterminated group name");
      this.#i = close + 1;
    } else if (rest.startsWith("(?")) {
      this.#refuse("unsupported group syntax");
    } else {
      this.#i++;
    }
    const alt = this.#alt();
    if (p[this.#i] !== ")") this.#refuse("missing )");
    this.#i++;
    return { t: "group", alt };
  }

  #class(): Atom {
    const p = this.#p;
    this.#i++;
    if (p[this.#i] === "^") this.#i++;
    while (this.#i < p.length && p[this.#i] !== "]") {
      if (p[this.#i] === "\\") {
        const next = p[this.#i + 1];
        if ((next === "p" || next === "P" || next === "u") && p[this.#i + 2] === "{") {
          const close = p.indexOf("}", this.#i);
          this.#i = close < 0 ? p.length : close + 1;
          continue;
        }
        this.#i += 2;
        continue;
      }
      this.#i++;
    }
    if (p[this.#i] !== "]") this.#refuse("unterminated character class");
    this.#i++;
    return { t: "set" };
  }

  #escape(): Atom {
    const p = this.#p;
    const d = p[this.#i + 1];
    this.#i += 2;
    if (d === undefined) this.#refuse("a trailing backslash");
    if (d >= "1" && d <= "9") {
      this.#refuse("backreferences are not allowed (not a regular language)");
    }
    if (d === "k") this.#refuse("named backreferences are not allowed (not a regular language)");
    if (d === "b" || d === "B") return { t: "assert", c: d };
    if ("dDwWsS".includes(d)) return { t: "set" };
    if (d === "p" || d === "P") {
      if (p[this.#i] === "{") {
        const close = p.indexOf("}", this.#i);
        this.#i = close < 0 ? p.length : close + 1;
      }
      return { t: "set" };
    }
    if (d === "x") {
      const hex = p.slice(this.#i, this.#i + 2);
      this.#i += 2;
      return { t: "char", c: String.fromCodePoint(parseInt(hex, 16) || 0).toLowerCase() };
    }
    if (d === "u") {
      let code: number;
      if (p[this.#i] === "{") {
        const close = p.indexOf("}", this.#i);
        code = parseInt(p.slice(this.#i + 1, close), 16);
        this.#i = close < 0 ? p.length : close + 1;
      } else {
        code = parseInt(p.slice(this.#i, this.#i + 4), 16);
        this.#i += 4;
      }
      return { t: "char", c: String.fromCodePoint(code || 0).toLowerCase() };
    }
    if (d === "c") {
      this.#i++;
      return { t: "set" };
    }
    const named: Record<string, string> = { n: "\n", r: "\r", t: "\t", f: "\f", v: "\v", 0: "\0" };
    return { t: "char", c: (named[d] ?? d).toLowerCase() };
  }
}

/** Refuses the exponential shapes; `inRepeat` is true under a repetition (max > 1). */
function checkAlt(pattern: string, alt: Alt, inRepeat: boolean): void {
  if (inRepeat && alt.branches.length > 1) {
    const firsts = alt.branches.map(firstChars);
    for (let i = 0; i < firsts.length; i++) {
      const a = firsts[i];
      if (a === "any" || a.size === 0) {
        throw new RegexRefusedError(
          pattern,
          `a repeated alternation has a branch that can match nothing or starts with a class (exponential backtracking); write a character class or make the branches start with distinct characters`,
        );
      }
      for (let j = 0; j < i; j++) {
        const b = firsts[j] as Set<string>;
        for (const c of a) {
          if (b.has(c)) {
            throw new RegexRefusedError(
              pattern,
              `a repeated alternation has two branches starting with "${c}" (exponential backtracking)`,
            );
          }
        }
      }
    }
  }
  for (const branch of alt.branches) {
    for (const item of branch) {
      const repeats = item.max > 1;
      if (item.atom.t !== "group") continue;
      if (repeats || inRepeat) {
        if (containsQuantifier(item.atom.alt)) {
          throw new RegexRefusedError(
            pattern,
            `a repeated group contains a quantifier ("${
              pattern.slice(item.start, item.end)
            }": nested repetition backtracks exponentially)`,
          );
        }
        if (repeats && canBeEmpty(item.atom.alt)) {
          throw new RegexRefusedError(
            pattern,
            `a repeated group can match the empty string ("${
              pattern.slice(item.start, item.end)
            }")`,
          );
        }
      }
      checkAlt(pattern, item.atom.alt, inRepeat || repeats);
    }
  }
}

function containsQuantifier(alt: Alt): boolean {
  return alt.branches.some((b) =>
    b.some((it) =>
      it.min !== 1 || it.max !== 1 || (it.atom.t === "group" && containsQuantifier(it.atom.alt))
    )
  );
}

function canBeEmpty(alt: Alt): boolean {
  return alt.branches.some((b) =>
    b.every((it) =>
      it.min === 0 || it.atom.t === "assert" || (it.atom.t === "group" && canBeEmpty(it.atom.alt))
    )
  );
}

/** The characters a branch can start with, or "any" when not a small known set. */
function firstChars(branch: Item[]): Set<string> | "any" {
  for (const it of branch) {
    if (it.atom.t === "assert") continue;
    if (it.min === 0) return "any";
    if (it.atom.t === "char") return new Set([it.atom.c]);
    if (it.atom.t === "set") return "any";
    const out = new Set<string>();
    for (const b of it.atom.alt.branches) {
      const f = firstChars(b);
      if (f === "any") return "any";
      for (const c of f) out.add(c);
    }
    return out;
  }
  return new Set();
}

/** Unbounded repetitions along the costliest path. */
function degreeOf(alt: Alt): number {
  let worst = 0;
  for (const b of alt.branches) {
    let d = 0;
    for (const it of b) {
      if (it.max > UNBOUNDED_REPEAT) d += 1;
      else if (it.atom.t === "group") d += degreeOf(it.atom.alt);
    }
    worst = Math.max(worst, d);
  }
  return worst;
}

/** Product of bounded repetition maxima along the costliest path. */
function boundedProduct(alt: Alt): number {
  let worst = 1;
  for (const b of alt.branches) {
    let p = 1;
    for (const it of b) {
      if (it.max > 1 && it.max <= UNBOUNDED_REPEAT) p *= it.max;
      if (it.atom.t === "group") p *= boundedProduct(it.atom.alt);
      if (p > MAX_BOUNDED_PRODUCT) return p;
    }
    worst = Math.max(worst, p);
  }
  return worst;
}
