/**
 * Typed, position-aware reading of a parsed YAML document (npm `yaml`), for the rule file.
 *
 * The loader walks the YAML syntax tree itself instead of `toJS()`, so that every value still
 * knows where it came from: each getter checks one value and, when it is wrong, records an issue
 * at that value's line and column and returns undefined, so the walk goes on and every problem
 * in the file is reported at once.
 *
 * Security: the rule file is trusted to be the administrator's, but it is still text: aliases
 * (`*x`) are followed through a visit budget so that a "billion laughs" file fails with a message
 * instead of exhausting memory, and values quoted back in messages are cut short.
 */
import {
  type Document,
  isAlias,
  isMap,
  isScalar,
  isSeq,
  type LineCounter,
  type Node,
  type Scalar,
  type YAMLMap,
} from "yaml";
import type { ConfigIssue } from "./config_error.ts";
import { parseDuration, parseSize } from "./units.ts";

/** A node of the YAML tree, or nothing (an absent or empty value). */
export type YNode = Node | null | undefined;

/** Most nodes one walk may visit, aliases included (a guard against alias bombs). */
export const MAX_VISITS = 200_000;

/** The entries of one checked mapping, by key. */
export class Fields {
  /** The mapping itself, for positions of "missing key" issues. */
  readonly node: YAMLMap;
  readonly #entries: Map<string, { key: Scalar; value: YNode }>;
  /** Wraps a checked mapping and its entries by key (built by the reader, not by callers). */
  constructor(node: YAMLMap, entries: Map<string, { key: Scalar; value: YNode }>) {
    this.node = node;
    this.#entries = entries;
  }
  /** The value under `name`, if the key is present (it may still be an empty value). */
  get(name: string): YNode {
    return this.#entries.get(name)?.value;
  }
  /** Whether the key is present. */
  has(name: string): boolean {
    return this.#entries.has(name);
  }
  /** The key node of `name`, for positions. */
  key(name: string): Scalar | undefined {
    return this.#entries.get(name)?.key;
  }
  /** Present keys in file order. */
  names(): string[] {
    return [...this.#entries.keys()];
  }
}

/** Reads values out of one YAML document, collecting issues with their positions. */
export class YamlReader {
  /** Every issue found so far. */
  readonly issues: ConfigIssue[] = [];
  readonly #lc: LineCounter;
  readonly #doc: Document | undefined;
  #visits = 0;
  #budgetReported = false;
  readonly #aliases = new Map<object, YNode>();

  /** `doc` is the document aliases are resolved against. */
  constructor(lineCounter: LineCounter, doc?: Document) {
    this.#lc = lineCounter;
    this.#doc = doc;
  }

  /** 1-based line and column of `node`, else of `fallback`, else 1:1. */
  pos(node: YNode, fallback?: YNode): { line: number; column: number } {
    for (const n of [node, fallback]) {
      const r = n?.range;
      if (r) {
        const p = this.#lc.linePos(r[0]);
        return { line: p.line, column: p.col };
      }
    }
    return { line: 1, column: 1 };
  }

  /** Records an issue at `node` (or at `fallback` when `node` has no position). */
  report(node: YNode, message: string, fallback?: YNode): void {
    this.issues.push({ ...this.pos(node, fallback), message });
  }

  /** Records an issue at an absolute offset in the source. */
  reportAt(offset: number, message: string): void {
    const p = this.#lc.linePos(offset);
    this.issues.push({ line: p.line, column: p.col, message });
  }

  /** True once the visit budget is spent: callers stop walking (the issue is already reported). */
  get exhausted(): boolean {
    return this.#visits > MAX_VISITS;
  }

  /** Follows an alias to its anchor and counts the visit against the budget. */
  resolve(node: YNode): YNode {
    this.#visits++;
    if (this.#visits > MAX_VISITS) {
      if (!this.#budgetReported) {
        this.#budgetReported = true;
        this.report(node, `the file expands to more than ${MAX_VISITS} values (alias loop?)`);
      }
      return undefined;
    }
    if (isAlias(node)) {
      // yaml's resolve() searches the document each time; an alias met again (through a shared
      // anchor) is answered from the cache.
      let target: YNode = this.#aliases.get(node);
      if (target === undefined && this.#doc) {
        target = node.resolve(this.#doc) as YNode;
        if (target) this.#aliases.set(node, target);
      }
      if (!target) {
        this.report(node, `alias "*${node.source}" refers to no anchor before it`);
        return undefined;
      }
      return target as Node;
    }
    return node;
  }

  /**
   * Checks that `node` is a mapping whose keys are all in `allowed`, and returns its entries.
   * `label` names the mapping in messages (`"gateway"`, `rule "lottery"`); `where` is how an
   * unknown key is placed (`in "gateway"`, `at top level`).
   */
  fields(
    raw: YNode,
    label: string,
    allowed: readonly string[],
    where: string,
    fallback?: YNode,
  ): Fields | undefined {
    const node = this.resolve(raw);
    if (this.exhausted) return undefined;
    if (!isMap(node)) {
      this.report(node, `${label} must be a mapping (key: value), got ${describe(node)}`, fallback);
      return undefined;
    }
    const entries = new Map<string, { key: Scalar; value: YNode }>();
    for (const pair of node.items) {
      const key = pair.key as YNode;
      if (!isScalar(key) || typeof key.value !== "string") {
        this.report(key, `keys ${where} must be plain names, got ${describe(key)}`, node);
        continue;
      }
      if (!allowed.includes(key.value)) {
        this.report(
          key,
          `unknown key "${cut(key.value)}" ${where}; expected one of ${allowed.join(", ")}`,
        );
        continue;
      }
      // Duplicate keys are already a YAML error ("Map keys must be unique").
      entries.set(key.value, { key, value: pair.value as YNode });
    }
    return new Fields(node, entries);
  }

  /** Items of a list; a single scalar is accepted as a one-item list when `single` is true. */
  list(raw: YNode, label: string, fallback?: YNode, single = false): YNode[] | undefined {
    const node = this.resolve(raw);
    if (this.exhausted) return undefined;
    if (isSeq(node)) return node.items.map((i) => this.resolve(i as YNode));
    if (single && isScalar(node) && node.value !== null) return [node];
    this.report(node, `${label} must be a list, got ${describe(node)}`, fallback);
    return undefined;
  }

  /** A non-empty string of at most `max` characters matching `pattern` (if given). */
  string(
    raw: YNode,
    label: string,
    opts: { max?: number; pattern?: RegExp; patternText?: string; empty?: boolean } = {},
    fallback?: YNode,
  ): string | undefined {
    const node = this.resolve(raw);
    const v = isScalar(node) ? node.value : undefined;
    if (typeof v !== "string") {
      this.report(node, `${label} must be a string, got ${describe(node)}`, fallback);
      return undefined;
    }
    const max = opts.max ?? 1000;
    if (v === "" && !opts.empty) {
      this.report(node, `${label} must not be empty`, fallback);
      return undefined;
    }
    if (v.length > max) {
      this.report(node, `${label} is longer than ${max} characters`, fallback);
      return undefined;
    }
    if (opts.pattern && !opts.pattern.test(v)) {
      this.report(node, `${label} must be ${opts.patternText ?? opts.pattern}, got "${cut(v)}"`);
      return undefined;
    }
    return v;
  }

  /** An integer in [min, max]. */
  int(raw: YNode, label: string, min: number, max: number, fallback?: YNode): number | undefined {
    const node = this.resolve(raw);
    const v = isScalar(node) ? node.value : undefined;
    if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
      this.report(
        node,
        `${label} must be an integer from ${min} to ${max}, got ${describe(node)}`,
        fallback,
      );
      return undefined;
    }
    return v;
  }

  /** true or false (YAML 1.2: only `true`/`false`, not `yes`/`on`). */
  bool(raw: YNode, label: string, fallback?: YNode): boolean | undefined {
    const node = this.resolve(raw);
    const v = isScalar(node) ? node.value : undefined;
    if (typeof v !== "boolean") {
      this.report(node, `${label} must be true or false, got ${describe(node)}`, fallback);
      return undefined;
    }
    return v;
  }

  /** One of the given words. */
  oneOf<T extends string>(
    raw: YNode,
    label: string,
    choices: readonly T[],
    fallback?: YNode,
  ): T | undefined {
    const node = this.resolve(raw);
    const v = isScalar(node) ? node.value : undefined;
    if (typeof v !== "string" || !(choices as readonly string[]).includes(v)) {
      this.report(node, `${label} must be one of ${choices.join(", ")}`, fallback);
      return undefined;
    }
    return v as T;
  }

  /** A size in bytes ("25M", "512k", 1048576) in [min, max]. */
  size(raw: YNode, label: string, min: number, max: number, fallback?: YNode): number | undefined {
    const node = this.resolve(raw);
    const v = isScalar(node) ? node.value : undefined;
    const n = typeof v === "string" || typeof v === "number" ? parseSize(v) : undefined;
    if (n === undefined) {
      this.report(
        node,
        `${label} must be a size in bytes (e.g. 1048576, "512k", "25M"), got ${describe(node)}`,
        fallback,
      );
      return undefined;
    }
    if (n < min || n > max) {
      this.report(node, `${label} must be from ${min} to ${max} bytes, got ${n}`, fallback);
      return undefined;
    }
    return n;
  }

  /** A duration in seconds (300, "30s", "5m", "1h30m", "250ms") in [min, max] seconds. */
  duration(
    raw: YNode,
    label: string,
    min: number,
    max: number,
    fallback?: YNode,
  ): number | undefined {
    const node = this.resolve(raw);
    const v = isScalar(node) ? node.value : undefined;
    const n = typeof v === "string" || typeof v === "number" ? parseDuration(v) : undefined;
    if (n === undefined) {
      this.report(
        node,
        `${label} must be a duration (seconds, or e.g. "30s", "5m", "1h"), got ${describe(node)}`,
        fallback,
      );
      return undefined;
    }
    if (n < min || n > max) {
      this.report(node, `${label} must be from ${min} to ${max} seconds, got ${n}`, fallback);
      return undefined;
    }
    return n;
  }
}

/** How a value looks, for messages: `"abc"`, `12`, `true`, `a list`, `a mapping`, `nothing`. */
export function describe(node: YNode): string {
  if (node === null || node === undefined) return "nothing";
  if (isMap(node)) return "a mapping";
  if (isSeq(node)) return "a list";
  if (isAlias(node)) return `alias *${node.source}`;
  if (isScalar(node)) {
    const v = node.value;
    if (v === null) return "nothing";
    if (typeof v === "string") return `"${cut(v)}"`;
    return String(v);
  }
  return "an unexpected value";
}

/** Cuts a quoted value to `max` characters (default 40) and escapes control characters. */
export function cut(s: string, max = 40): string {
  // deno-lint-ignore no-control-regex
  const clean = s.replace(/[\x00-\x1f\x7f"\\]/g, (c) => "\\x" + c.charCodeAt(0).toString(16));
  return clean.length > max ? clean.slice(0, max) + "…" : clean;
}
