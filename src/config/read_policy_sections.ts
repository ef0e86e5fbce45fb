/**
 * The rule file's policy sections besides `rules:` — `state`, `lists`, `allowlist`, `blacklist`,
 * `spamtraps`, `quarantine`, `alert`, `thresholds` — validated into `SsgConfig` fields with
 * every problem reported at its `file:line:column`, unknown keys refused.
 *
 * List files (`lists: { bad_words: { file: lists/bad_words.txt } }`) are read here, at load, so
 * that they are re-read on every reload; a relative path is relative to the rule file's
 * directory. A list file that cannot be read is a load error at the line of the reference: a
 * list silently empty would be a filter silently off.
 */
import { isMap, isScalar } from "yaml";
import { dirname, isAbsolute, resolve } from "node:path";
import type {
  AccessList,
  AlertConfig,
  Cidr,
  QuarantineConfig,
  SpamtrapConfig,
  StateConfig,
} from "./config.ts";
import { parseCidr } from "./cidr.ts";
import { parseHostPort } from "./host_port.ts";
import { parseDuration } from "./units.ts";
import { cut, type Fields, type YamlReader, type YNode } from "./yaml_reader.ts";
import { MAX_LIST_FILE_BYTES, parseListText } from "../policy/named_list.ts";
import {
  ADDRESS_RE,
  MAX_BLACKLIST_SECONDS,
  NAME_RE,
  parseAddresses,
  parseBlacklistBlock,
} from "../policy/parse_rules.ts";
import { COUNTABLE_VERDICTS, type Threshold } from "../policy/rule.ts";
import { parseIp } from "../packet/ip_address.ts";

/** The resolved path of an unreadable list file is shown whole (it is the administrator's own
 * path, and a cut path is useless for finding the file); PATH_MAX of Linux bounds it. */
const PATH_MAX = 4096;

/** Where the state database lives when the rule file does not say. */
export const DEFAULT_STATE_FILE = "/var/lib/ssg/state.db";
/** Where quarantined messages go when the rule file does not say. */
export const DEFAULT_QUARANTINE_DIR = "/var/lib/ssg/quarantine";
/** Default bound on the rows of each state table. */
export const DEFAULT_STATE_MAX_ROWS = 100_000;
/** Default spamtrap blacklist duration: 24 hours. */
export const DEFAULT_SPAMTRAP_SECONDS = 86400;
/** Most named lists. */
export const MAX_LISTS = 1000;
/** Most entries of an inline list and of each allowlist/blacklist key. */
export const MAX_STATIC_ENTRIES = 100_000;
/** Most thresholds. */
export const MAX_THRESHOLDS = 1000;

const STATE_KEYS = ["file", "max_rows"] as const;
const LIST_KEYS = ["file"] as const;
const ACCESS_KEYS = ["clients", "senders", "list"] as const;
const SPAMTRAP_KEYS = ["addresses", "blacklist_for"] as const;
const QUARANTINE_KEYS = ["dir", "max_bytes"] as const;
const ALERT_KEYS = ["to", "relay", "from", "rate", "webhook"] as const;
const WEBHOOK_KEYS = ["url", "timeout"] as const;
const THRESHOLD_KEYS = [
  "name",
  "count",
  "key",
  "at_least",
  "within",
  "action",
  "blacklist",
] as const;
const THRESHOLD_ACTIONS = ["blacklist", "alert"] as const;
const SENDER_RE =
  /^@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
// deno-lint-ignore no-control-regex
const PATH_RE = /^[^\x00-\x1f\x7f]+$/;

/** How list files are read (tests substitute one). Returns the text or throws. */
export type ReadTextFile = (path: string) => string;

/** Reads a list file: bounded in size, UTF-8. */
export function readListFileSync(path: string): string {
  const info = Deno.statSync(path);
  if (!info.isFile) throw new Error("not a regular file");
  if (info.size > MAX_LIST_FILE_BYTES) throw new Error(`larger than ${MAX_LIST_FILE_BYTES} bytes`);
  return new TextDecoder("utf-8", { fatal: true }).decode(Deno.readFileSync(path));
}

/** The policy sections, validated (absent sections get their defaults). */
export interface PolicySections {
  /** `state:`, with defaults when absent. */
  state: StateConfig;
  /** `lists:` — named lists: name → entries (empty when absent). */
  lists: Record<string, string[]>;
  /** `allowlist:`, with named lists merged in. */
  allowlist: AccessList;
  /** `blacklist:`, with named lists merged in. */
  blacklist: AccessList;
  /** `spamtraps:` (absent when the section is). */
  spamtraps?: SpamtrapConfig;
  /** `quarantine:`, with defaults when absent. */
  quarantine: QuarantineConfig;
  /** `alert:` (absent when the section is: alerts are then logged only). */
  alert?: AlertConfig;
}

/** Reads every section but `thresholds` (which needs the rule names: `readThresholds`). */
export function readPolicySections(
  top: Fields,
  r: YamlReader,
  file: string,
  readText: ReadTextFile,
  hostname: string,
): PolicySections {
  const lists = readLists(top, r, file, readText);
  return {
    state: readState(top, r),
    lists,
    allowlist: readAccess(top, "allowlist", r, lists),
    blacklist: readAccess(top, "blacklist", r, lists),
    spamtraps: readSpamtraps(top, r),
    quarantine: readQuarantine(top, r),
    alert: readAlert(top, r, hostname),
  };
}

function present(f: Fields, key: string): boolean {
  const n = f.get(key);
  return f.has(key) && !(n === null || n === undefined || (isScalar(n) && n.value === null));
}

function readPath(f: Fields, key: string, label: string, r: YamlReader): string | undefined {
  return r.string(f.get(key), label, {
    max: 4096,
    pattern: PATH_RE,
    patternText: "a path without control characters",
  }, f.key(key));
}

function readState(top: Fields, r: YamlReader): StateConfig {
  const c: StateConfig = { file: DEFAULT_STATE_FILE, maxRows: DEFAULT_STATE_MAX_ROWS };
  if (!present(top, "state")) return c;
  const f = r.fields(top.get("state"), `"state"`, STATE_KEYS, `in "state"`, top.key("state"));
  if (!f) return c;
  if (f.has("file")) {
    const p = readPath(f, "file", `"state.file"`, r);
    if (p !== undefined) c.file = p;
  }
  if (f.has("max_rows")) {
    c.maxRows = r.int(f.get("max_rows"), `"state.max_rows"`, 100, 10_000_000, f.key("max_rows")) ??
      c.maxRows;
  }
  return c;
}

function readLists(
  top: Fields,
  r: YamlReader,
  file: string,
  readText: ReadTextFile,
): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  if (!present(top, "lists")) return out;
  const node = r.resolve(top.get("lists"));
  // Names are user-chosen keys: read the mapping with every key allowed, then check names.
  const pairs = mappingPairs(node);
  if (!pairs) {
    r.report(node, `"lists" must be a mapping of list names to entries`, top.key("lists"));
    return out;
  }
  if (pairs.length > MAX_LISTS) {
    r.report(node, `"lists" defines ${pairs.length} lists; at most ${MAX_LISTS}`);
    return out;
  }
  for (const { key, value } of pairs) {
    const name = isScalar(key) && typeof key.value === "string" ? key.value : undefined;
    if (name === undefined || !NAME_RE.test(name) || name.length > 64) {
      r.report(
        key,
        `list names must be letters, digits, '_', '.', '-', got ${
          isScalar(key) ? `"${cut(String(key.value))}"` : "a non-name"
        }`,
      );
      continue;
    }
    const v = r.resolve(value);
    if (isMap(v)) {
      const f = r.fields(v, `list "${name}"`, LIST_KEYS, `in list "${name}"`, key);
      if (!f) continue;
      if (!f.has("file")) {
        r.report(f.node, `list "${name}" needs "file" (or write the entries as a list)`);
        continue;
      }
      const rel = readPath(f, "file", `list "${name}" file`, r);
      if (rel === undefined) continue;
      const path = isAbsolute(rel) ? rel : resolve(dirname(file), rel);
      let text: string;
      try {
        text = readText(path);
      } catch (e) {
        const why = e instanceof TypeError ? "not valid UTF-8" : (e as Error).message;
        r.report(
          f.get("file"),
          `cannot read list file "${cut(rel)}" (${cut(path, PATH_MAX)}): ${why}`,
        );
        continue;
      }
      const parsed = parseListText(text);
      for (const issue of parsed.issues) {
        r.report(f.get("file"), `list file "${cut(rel)}" line ${issue.line}: ${issue.message}`);
      }
      out[name] = parsed.entries;
    } else {
      const items = r.list(v, `list "${name}"`, key, true);
      if (!items) continue;
      const entries: string[] = [];
      for (const item of items) {
        const s = r.string(item, `list "${name}" entry`, { max: 1000 }, v);
        if (s !== undefined) entries.push(s.trim());
      }
      if (entries.length > MAX_STATIC_ENTRIES) {
        r.report(v, `list "${name}" has more than ${MAX_STATIC_ENTRIES} entries`);
        continue;
      }
      out[name] = entries;
    }
  }
  return out;
}

function mappingPairs(node: YNode): { key: YNode; value: YNode }[] | undefined {
  if (!isMap(node)) return undefined;
  return node.items.map((p) => ({ key: p.key as YNode, value: p.value as YNode }));
}

function readAccess(
  top: Fields,
  section: "allowlist" | "blacklist",
  r: YamlReader,
  lists: Record<string, string[]>,
): AccessList {
  const out: AccessList = { clients: [], senders: [] };
  if (!present(top, section)) return out;
  const f = r.fields(
    top.get(section),
    `"${section}"`,
    ACCESS_KEYS,
    `in "${section}"`,
    top.key(section),
  );
  if (!f) return out;
  if (f.has("clients")) {
    out.clients = readNetworks(f.get("clients"), `"${section}.clients"`, r, f.key("clients"));
  }
  if (f.has("senders")) {
    out.senders = readSenders(f.get("senders"), `"${section}.senders"`, r, f.key("senders"));
  }
  if (f.has("list")) {
    const name = r.string(f.get("list"), `"${section}.list"`, { max: 64 }, f.key("list"));
    if (name !== undefined) {
      const entries = lists[name];
      if (!entries) {
        const known = Object.keys(lists).join(", ");
        r.report(
          f.get("list"),
          `unknown list "${cut(name)}"; ${
            known ? `defined lists: ${known}` : `no list is defined in "lists"`
          }`,
        );
      } else {
        out.list = name;
        for (const e of entries) {
          const addr = e.includes("/") ? e.slice(0, e.indexOf("/")) : e;
          if (parseIp(addr)) {
            try {
              out.clients.push(parseCidr(e));
            } catch (err) {
              r.report(f.get("list"), `list "${name}" entry: ${(err as Error).message}`);
            }
          } else if (ADDRESS_RE.test(e)) out.senders.push(e.toLowerCase());
          else if (SENDER_RE.test(e)) out.senders.push(e.toLowerCase());
          else if (SENDER_RE.test("@" + e)) out.senders.push("@" + e.toLowerCase());
          else {
            r.report(
              f.get("list"),
              `list "${name}" entry "${cut(e)}" is not an IP, network, address or domain`,
            );
          }
        }
      }
    }
  }
  return out;
}

function readNetworks(node: YNode, label: string, r: YamlReader, keyNode: YNode): Cidr[] {
  const out: Cidr[] = [];
  const items = r.list(node, label, keyNode, true) ?? [];
  if (items.length > MAX_STATIC_ENTRIES) {
    r.report(node, `${label} has more than ${MAX_STATIC_ENTRIES} entries`);
    return out;
  }
  for (const item of items) {
    const t = r.string(item, `${label} entry`, { max: 64 }, node);
    if (t === undefined) continue;
    try {
      out.push(parseCidr(t));
    } catch (e) {
      r.report(item, (e as Error).message, node);
    }
  }
  return out;
}

function readSenders(node: YNode, label: string, r: YamlReader, keyNode: YNode): string[] {
  const out: string[] = [];
  const items = r.list(node, label, keyNode, true) ?? [];
  if (items.length > MAX_STATIC_ENTRIES) {
    r.report(node, `${label} has more than ${MAX_STATIC_ENTRIES} entries`);
    return out;
  }
  for (const item of items) {
    const t = r.string(item, `${label} entry`, { max: 254 }, node);
    if (t === undefined) continue;
    if (ADDRESS_RE.test(t) || SENDER_RE.test(t)) out.push(t.toLowerCase());
    else r.report(item, `${label} entry must be an address or "@domain", got "${cut(t)}"`, node);
  }
  return out;
}

function readSpamtraps(top: Fields, r: YamlReader): SpamtrapConfig | undefined {
  if (!present(top, "spamtraps")) return undefined;
  const f = r.fields(
    top.get("spamtraps"),
    `"spamtraps"`,
    SPAMTRAP_KEYS,
    `in "spamtraps"`,
    top.key("spamtraps"),
  );
  if (!f) return undefined;
  let addresses: string[] | undefined;
  if (!f.has("addresses")) r.report(f.node, `"spamtraps" needs "addresses"`);
  else {addresses = parseAddresses(
      f.get("addresses"),
      `"spamtraps.addresses"`,
      r,
      f.key("addresses"),
    );}
  let blacklistSeconds = DEFAULT_SPAMTRAP_SECONDS;
  if (f.has("blacklist_for")) {
    blacklistSeconds = r.duration(
      f.get("blacklist_for"),
      `"spamtraps.blacklist_for"`,
      1,
      MAX_BLACKLIST_SECONDS,
      f.key("blacklist_for"),
    ) ?? blacklistSeconds;
  }
  if (!addresses) return undefined;
  return { addresses: addresses.map((a) => a.toLowerCase()), blacklistSeconds };
}

function readQuarantine(top: Fields, r: YamlReader): QuarantineConfig {
  const c: QuarantineConfig = { dir: DEFAULT_QUARANTINE_DIR };
  if (!present(top, "quarantine")) return c;
  const f = r.fields(
    top.get("quarantine"),
    `"quarantine"`,
    QUARANTINE_KEYS,
    `in "quarantine"`,
    top.key("quarantine"),
  );
  if (!f) return c;
  if (f.has("dir")) {
    const p = readPath(f, "dir", `"quarantine.dir"`, r);
    if (p !== undefined) c.dir = p;
  }
  if (f.has("max_bytes")) {
    const n = r.size(
      f.get("max_bytes"),
      `"quarantine.max_bytes"`,
      1024 * 1024,
      2 ** 50,
      f.key("max_bytes"),
    );
    if (n !== undefined) c.maxBytes = n;
  }
  return c;
}

function readAlert(top: Fields, r: YamlReader, hostname: string): AlertConfig | undefined {
  if (!present(top, "alert")) return undefined;
  const before = r.issues.length;
  const f = r.fields(top.get("alert"), `"alert"`, ALERT_KEYS, `in "alert"`, top.key("alert"));
  if (!f) return undefined;
  let to: string[] | undefined;
  if (!f.has("to")) r.report(f.node, `"alert" needs "to": the administrator's address(es)`);
  else to = parseAddresses(f.get("to"), `"alert.to"`, r, f.key("to"));
  let relay: { host: string; port: number } | undefined;
  if (!f.has("relay")) {
    r.report(
      f.node,
      `"alert" needs "relay": the SMTP server that delivers alerts, e.g. "198.51.100.25:25"`,
    );
  } else {
    const t = r.string(f.get("relay"), `"alert.relay"`, { max: 300 }, f.key("relay"));
    if (t !== undefined) {
      const hp = parseHostPort(t);
      if (typeof hp === "string") r.report(f.get("relay"), `"alert.relay": ${hp}`);
      else relay = hp;
    }
  }
  let from = `ssg@${hostname.includes(".") ? hostname : hostname + ".invalid"}`;
  if (f.has("from")) {
    from = r.string(f.get("from"), `"alert.from"`, {
      max: 254,
      pattern: ADDRESS_RE,
      patternText: "a mail address like ssg@gateway.example",
    }, f.key("from")) ?? from;
  }
  let rate = { count: 10, seconds: 3600 };
  if (f.has("rate")) {
    const t = r.string(f.get("rate"), `"alert.rate"`, { max: 40 }, f.key("rate"));
    const m = t === undefined ? null : /^\s*(\d{1,6})\s*\/\s*(\S+)\s*$/.exec(t);
    const seconds = m ? parseDuration(m[2]) : undefined;
    if (t !== undefined && (!m || seconds === undefined || seconds < 1 || Number(m[1]) < 1)) {
      r.report(f.get("rate"), `"alert.rate" must be COUNT/DURATION like "10/1h", got "${cut(t)}"`);
    } else if (m && seconds !== undefined) {
      rate = { count: Number(m[1]), seconds };
    }
  }
  let webhook: AlertConfig["webhook"];
  if (f.has("webhook")) {
    const w = r.fields(
      f.get("webhook"),
      `"alert.webhook"`,
      WEBHOOK_KEYS,
      `in "alert.webhook"`,
      f.key("webhook"),
    );
    if (w) {
      let url: string | undefined;
      if (!w.has("url")) r.report(w.node, `"alert.webhook" needs "url"`);
      else {
        url = r.string(w.get("url"), `"alert.webhook.url"`, { max: 2000 }, w.key("url"));
        if (url !== undefined) {
          let ok = false;
          try {
            const u = new URL(url);
            ok = u.protocol === "http:" || u.protocol === "https:";
          } catch { /* reported below */ }
          if (!ok) {
            r.report(w.get("url"), `"alert.webhook.url" must be an http: or https: URL`);
            url = undefined;
          }
        }
      }
      const timeoutSeconds = w.has("timeout")
        ? r.duration(w.get("timeout"), `"alert.webhook.timeout"`, 0.1, 120, w.key("timeout"))
        : 5;
      if (url && timeoutSeconds !== undefined) webhook = { url, timeoutSeconds };
    }
  }
  if (r.issues.length !== before || !to || !relay) return undefined;
  const out: AlertConfig = { to, relay, from, rate };
  if (webhook) out.webhook = webhook;
  return out;
}

/**
 * `thresholds:` — a list of counters over recorded verdicts. Names must be unique and differ
 * from rule names (both name the source of an alert or a blacklist entry).
 */
export function readThresholds(
  top: Fields,
  r: YamlReader,
  ruleNames: ReadonlySet<string>,
): Threshold[] {
  const out: Threshold[] = [];
  if (!present(top, "thresholds")) return out;
  const items = r.list(top.get("thresholds"), `"thresholds"`, top.key("thresholds"));
  if (!items) return out;
  if (items.length > MAX_THRESHOLDS) {
    r.report(
      top.get("thresholds"),
      `"thresholds" has ${items.length} entries; at most ${MAX_THRESHOLDS}`,
    );
    return out;
  }
  const seen = new Set<string>();
  items.forEach((item, i) => {
    const before = r.issues.length;
    const label = `threshold #${i + 1}`;
    const f = r.fields(item, label, THRESHOLD_KEYS, `in ${label}`);
    if (!f) return;
    const need = (k: string, what: string) => {
      if (!f.has(k)) r.report(f.node, `${label} needs "${k}": ${what}`);
      return f.has(k);
    };
    let name: string | undefined;
    if (need("name", "a unique name")) {
      name = r.string(f.get("name"), `"name"`, {
        max: 64,
        pattern: NAME_RE,
        patternText: "letters, digits, '_', '.', '-' (starting with a letter or digit)",
      }, f.key("name"));
      if (name !== undefined && (seen.has(name) || ruleNames.has(name))) {
        r.report(
          f.get("name"),
          `threshold name "${name}" is already used by a ${seen.has(name) ? "threshold" : "rule"}`,
        );
      }
      if (name !== undefined) seen.add(name);
    }
    const count: Threshold["count"] = [];
    if (need("count", `the verdicts counted, e.g. [discard, reject]`)) {
      for (const c of r.list(f.get("count"), `"count"`, f.key("count"), true) ?? []) {
        const v = r.oneOf(c, `"count"`, COUNTABLE_VERDICTS, f.key("count"));
        if (v !== undefined && !count.includes(v)) count.push(v);
      }
    }
    let key: Threshold["key"] | undefined;
    if (need("key", "client_ip, sender or sender_domain")) {
      key = r.oneOf(
        f.get("key"),
        `"key"`,
        ["client_ip", "sender", "sender_domain"] as const,
        f.key("key"),
      );
    }
    const atLeast = need("at_least", "how many verdicts fire it")
      ? r.int(f.get("at_least"), `"at_least"`, 1, 1_000_000, f.key("at_least"))
      : undefined;
    const within = need("within", "the sliding window, e.g. 1h")
      ? r.duration(f.get("within"), `"within"`, 1, 30 * 86400, f.key("within"))
      : undefined;
    const actions: Threshold["actions"] = [];
    if (need("action", "blacklist and/or alert")) {
      for (const a of r.list(f.get("action"), `"action"`, f.key("action"), true) ?? []) {
        const v = r.oneOf(a, `"action"`, THRESHOLD_ACTIONS, f.key("action"));
        if (v !== undefined && !actions.includes(v)) actions.push(v);
      }
    }
    let blacklistSeconds: number | undefined;
    if (actions.includes("blacklist")) {
      blacklistSeconds = parseBlacklistBlock(
        f.has("blacklist") ? f.get("blacklist") : undefined,
        r,
        f.key("blacklist") ?? f.key("action"),
        ["for"],
      )?.seconds;
    } else if (f.has("blacklist")) {
      r.report(f.key("blacklist"), `"blacklist" applies only to action blacklist`);
    }
    if (
      r.issues.length !== before || !name || !key || atLeast === undefined || within === undefined
    ) {
      return;
    }
    const t: Threshold = {
      name,
      count,
      key,
      atLeast,
      withinSeconds: within,
      actions,
      at: r.pos(f.node),
    };
    if (blacklistSeconds !== undefined) t.blacklistSeconds = blacklistSeconds;
    out.push(t);
  });
  return out;
}
