/**
 * Named lists (`lists:` in the rule file): entries written inline or kept in a file (one entry
 * per line, `#` starts a comment line, blank lines ignored), read when the rules are loaded and
 * so re-read on every reload. Conditions refer to a list by name (`in_list: bad_words`), and the
 * allowlist/blacklist may include one.
 *
 * An entry means what it looks like: an IP address or CIDR network is a network
 * ("192.0.2.0/28"), "user@domain" an address, "@domain" (or a bare domain on address fields) a
 * whole domain, anything else a word or phrase. `compileList` sorts them once so that a lookup
 * is a Set probe, a network scan, or a substring scan over the words.
 *
 * Security: a list file is the administrator's, but may be large: bounded by `MAX_LIST_ENTRIES`
 * entries of at most `MAX_ENTRY_LENGTH` characters, and `MAX_LIST_FILE_BYTES` bytes.
 */
import type { Cidr } from "../config/config.ts";
import { cidrContains, parseCidr } from "../config/cidr.ts";
import { parseIp } from "../packet/ip_address.ts";
import { foldText } from "./fold_text.ts";

/** Most entries of one list. */
export const MAX_LIST_ENTRIES = 100_000;
/** Longest entry, in characters. */
export const MAX_ENTRY_LENGTH = 1000;
/** Largest list file, in bytes. */
export const MAX_LIST_FILE_BYTES = 16 * 1024 * 1024;

/** A problem in a list file, with its 1-based line. */
export interface ListFileIssue {
  /** 1-based line of the list file. */
  line: number;
  /** What is wrong with the line. */
  message: string;
}

/** Splits list-file text into entries; problems (too long, too many) are returned, not thrown. */
export function parseListText(text: string): { entries: string[]; issues: ListFileIssue[] } {
  const entries: string[] = [];
  const issues: ListFileIssue[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const t = lines[i].trim();
    if (t === "" || t.startsWith("#")) continue;
    if (t.length > MAX_ENTRY_LENGTH) {
      issues.push({ line: i + 1, message: `entry longer than ${MAX_ENTRY_LENGTH} characters` });
      continue;
    }
    if (entries.length >= MAX_LIST_ENTRIES) {
      issues.push({ line: i + 1, message: `more than ${MAX_LIST_ENTRIES} entries` });
      break;
    }
    entries.push(t);
  }
  return { entries, issues };
}

/** A list sorted for lookups. */
export interface CompiledList {
  /** The list's name in `lists:`. */
  name: string;
  /** Every entry folded (NFKC + case fold), for substring tests on free text. */
  words: string[];
  /** Folded entries that are addresses or other exact values. */
  exact: Set<string>;
  /** Domains, from "@domain" entries and bare domain-looking entries (folded, no "@"). */
  domains: Set<string>;
  /** Networks, from IP and CIDR entries. */
  networks: Cidr[];
}

const DOMAIN_RE = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+\.?$/;

/** Sorts `entries` for lookups. */
export function compileList(name: string, entries: readonly string[]): CompiledList {
  const out: CompiledList = {
    name,
    words: [],
    exact: new Set(),
    domains: new Set(),
    networks: [],
  };
  for (const raw of entries) {
    const e = raw.trim();
    if (e === "") continue;
    const net = asNetwork(e);
    if (net) {
      out.networks.push(net);
      continue;
    }
    const f = foldText(e).trim();
    out.words.push(f);
    out.exact.add(f);
    if (f.startsWith("@") && f.length > 1) out.domains.add(f.slice(1).replace(/\.$/, ""));
    else if (DOMAIN_RE.test(f)) out.domains.add(f.replace(/\.$/, ""));
  }
  return out;
}

/** The entry as a network, if it is an IP address or CIDR (host bits tolerated: it is a list). */
function asNetwork(e: string): Cidr | undefined {
  const addr = e.includes("/") ? e.slice(0, e.indexOf("/")) : e;
  if (!parseIp(addr)) return undefined;
  try {
    return parseCidr(e);
  } catch {
    return undefined;
  }
}

/** True when `ip` (text) lies in one of the list's networks. */
export function listHasIp(list: CompiledList, ip: string): boolean {
  return list.networks.some((n) => cidrContains(n, ip));
}

/** True when the folded `address` is an entry or lies in one of the list's domains. */
export function listHasAddress(list: CompiledList, address: string): boolean {
  if (address === "") return false;
  if (list.exact.has(address)) return true;
  const at = address.lastIndexOf("@");
  return at >= 0 && list.domains.has(address.slice(at + 1).replace(/\.$/, ""));
}

/** True when the folded `domain` is one of the list's domains (or an exact entry). */
export function listHasDomain(list: CompiledList, domain: string): boolean {
  const d = domain.replace(/\.$/, "");
  return d !== "" && (list.domains.has(d) || list.exact.has(d));
}

/**
 * The first entry (in list order) that the folded `text` contains, if any. Lists of a few
 * entries are scanned with `includes`; longer ones with an Aho–Corasick automaton built once per
 * list (Aho & Corasick 1975), so that a 100 000-word list costs one pass over the text, not one
 * scan of the text per word.
 */
export function listWordIn(list: CompiledList, text: string): string | undefined {
  if (list.words.length <= SMALL_LIST) {
    for (const w of list.words) if (w !== "" && text.includes(w)) return w;
    return undefined;
  }
  const ac = automaton(list);
  let node = 0;
  let best = NONE;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    let next = ac.goto.get(node * CODE_UNITS + ch);
    while (next === undefined && node !== 0) {
      node = ac.fail[node];
      next = ac.goto.get(node * CODE_UNITS + ch);
    }
    node = next ?? 0;
    if (ac.best[node] < best) {
      best = ac.best[node];
      if (best === 0) break;
    }
  }
  return best === NONE ? undefined : list.words[best];
}

/** Lists up to this many words are scanned word by word. */
const SMALL_LIST = 16;
const CODE_UNITS = 0x10000;
const NONE = Number.MAX_SAFE_INTEGER;

/** An Aho–Corasick automaton over UTF-16 code units; node 0 is the root. */
interface Automaton {
  /** (node × 65536 + code unit) → child node. */
  goto: Map<number, number>;
  /** Failure link of each node. */
  fail: number[];
  /** Smallest index of a word ending at this node or at any node on its failure chain. */
  best: number[];
}

const automata = new WeakMap<CompiledList, Automaton>();

function automaton(list: CompiledList): Automaton {
  const cached = automata.get(list);
  if (cached) return cached;
  const ac: Automaton = { goto: new Map(), fail: [0], best: [NONE] };
  const children: number[][] = [[]];
  list.words.forEach((w, k) => {
    if (w === "") return;
    let node = 0;
    for (let i = 0; i < w.length; i++) {
      const key = node * CODE_UNITS + w.charCodeAt(i);
      let child = ac.goto.get(key);
      if (child === undefined) {
        child = ac.fail.length;
        ac.goto.set(key, child);
        ac.fail.push(0);
        ac.best.push(NONE);
        children.push([]);
        children[node].push(w.charCodeAt(i));
      }
      node = child;
    }
    if (k < ac.best[node]) ac.best[node] = k;
  });
  // Breadth-first: a node's failure link is the longest proper suffix that is also a prefix.
  const queue: number[] = [];
  for (const ch of children[0]) queue.push(ac.goto.get(ch)!);
  for (let q = 0; q < queue.length; q++) {
    const u = queue[q];
    for (const ch of children[u]) {
      const v = ac.goto.get(u * CODE_UNITS + ch)!;
      let f = ac.fail[u];
      let target = ac.goto.get(f * CODE_UNITS + ch);
      while (target === undefined && f !== 0) {
        f = ac.fail[f];
        target = ac.goto.get(f * CODE_UNITS + ch);
      }
      ac.fail[v] = target !== undefined && target !== v ? target : 0;
      ac.best[v] = Math.min(ac.best[v], ac.best[ac.fail[v]]);
      queue.push(v);
    }
  }
  automata.set(list, ac);
  return ac;
}
