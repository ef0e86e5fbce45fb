/**
 * Reads the rule file — SSG's one configuration file — into a validated `SsgConfig`.
 *
 * What it trusts: nothing in the file. Every key is checked against the list of keys its section
 * may have (unknown keys are errors: a misspelt limit silently left at its default is worse than
 * a refusal), every value against its type and range, every network against CIDR syntax with
 * host bits zero, and every rule against the rule language (`../policy/parse_rules.ts`).
 *
 * How it reports: all problems at once, each with `file:line:column`, in one `ConfigError`.
 * Positions come from npm `yaml`'s `LineCounter`; the syntax tree is walked directly (not
 * `toJS()`) so that every value keeps its position. YAML syntax errors stop the walk (the tree
 * is not to be trusted after them) and are reported with their own positions.
 *
 * Rejected alternatives: a JSON-Schema validator (another dependency, and its messages point at
 * JSON paths, not at lines); `toJS()` plus checks (loses positions).
 *
 * In the file keys are snake_case (`max_message_bytes`); in `SsgConfig` they are camelCase.
 * Sizes may be written "25M"/"512k", durations "5m"/"30s" (see `units.ts`).
 */
import { readContent } from "./read_content.ts";
import { readAuth } from "./read_auth.ts";
import { readClamav } from "./read_clamav.ts";
import { readGreylist } from "./read_greylist.ts";
import { readRspamd } from "./read_rspamd.ts";
import { readDns } from "./read_dns.ts";
import { readDnsbl } from "./read_dnsbl.ts";
import { authLeaves, dnsblLeaves, rspamdLeaves, virusLeaves } from "../policy/rule.ts";
import { isScalar, LineCounter, parseDocument } from "yaml";
import type {
  Cidr,
  GatewayConfig,
  LogConfig,
  RelayConfig,
  SmtpConfig,
  SsgConfig,
} from "./config.ts";
import { ConfigError } from "./config_error.ts";
import { CidrError, cidrOverlaps, parseCidr } from "./cidr.ts";
import {
  defaultHostname,
  GATEWAY_DEFAULTS,
  LOG_DEFAULTS,
  RELAY_DEFAULTS,
  SMTP_DEFAULTS,
} from "./defaults.ts";
import { type Fields, YamlReader, type YNode } from "./yaml_reader.ts";
import { parseIpv4, parseIpv6 } from "../packet/ip_address.ts";
import { parseRules } from "../policy/parse_rules.ts";
import { readTlsIdentity, TLS_KEYS } from "./read_tls_identity.ts";
import { MAX_RELAY_PORTS } from "./relay_source.ts";
import {
  readListFileSync,
  readPolicySections,
  type ReadTextFile,
  readThresholds,
} from "./read_policy_sections.ts";

/** Options of `parseConfig`. */
export interface ParseConfigOptions {
  /** How list files (`lists:`) and TLS files (`smtp.tls`) are read (default: from disk, bounded). */
  readTextFile?: ReadTextFile;
}

/** Largest rule file read, in bytes. */
export const MAX_RULE_FILE_BYTES = 8 * 1024 * 1024;

const TOP_KEYS = [
  "gateway",
  "smtp",
  "relay",
  "log",
  "state",
  "lists",
  "allowlist",
  "blacklist",
  "spamtraps",
  "quarantine",
  "alert",
  "rules",
  "thresholds",
  "content",
  "clamav",
  "greylist",
  "rspamd",
  "dns",
  "dnsbl",
  "auth",
] as const;
const GATEWAY_KEYS = [
  "protect",
  "ports",
  "interfaces",
  "hostname",
  "responder",
  "queue",
  "flows",
] as const;
const RESPONDER_KEYS = ["ipv4", "ipv6", "port"] as const;
const QUEUE_KEYS = ["num", "maxlen", "rcvbuf", "fail_open"] as const;
const FLOWS_KEYS = ["max", "idle_seconds"] as const;
const SMTP_KEYS = [
  "max_message_bytes",
  "max_inflight_bytes",
  "max_recipients",
  "recipient_overshoot_limit",
  "max_command_line",
  "max_text_line",
  "bare_line_endings",
  "long_lines",
  "max_errors",
  "max_transactions",
  "max_sessions",
  "max_sessions_per_client",
  "max_sessions_per_network",
  "network_prefix",
  "min_data_rate",
  "timeouts",
  "pipelining",
  "tls",
  "banner_hostname",
  "server_profile_ttl",
  "server_profile_max",
] as const;
const TIMEOUT_KEYS = ["command", "data", "session"] as const;
const NETWORK_PREFIX_KEYS = ["ipv4", "ipv6"] as const;
const RELAY_KEYS = [
  "connect_timeout",
  "reply_timeout",
  "data_timeout",
  "starttls",
  "source",
  "source_ports",
  "source_probe_timeout",
  "source_fallback_ttl",
  "reuse_idle",
  "reuse_sessions",
  "reuse_time",
] as const;
const LOG_KEYS = ["file", "level"] as const;

const HOSTNAME_RE =
  /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
// Linux IFNAMSIZ is 16 including the NUL; a trailing "+" is iptables' wildcard.
const INTERFACE_RE = /^[A-Za-z0-9_.:@-]{1,15}\+?$/;

/**
 * Reads and validates the rule file at `path`. Throws `ConfigError` listing every problem (or
 * the reason the file could not be read).
 */
export async function loadConfig(path: string): Promise<SsgConfig> {
  let text: string;
  try {
    const info = await Deno.stat(path);
    if (!info.isFile) throw new Error("not a regular file");
    if (info.size > MAX_RULE_FILE_BYTES) {
      throw new Error(`larger than ${MAX_RULE_FILE_BYTES} bytes`);
    }
    const bytes = await Deno.readFile(path);
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (cause) {
    const why = cause instanceof TypeError ? "not valid UTF-8" : (cause as Error).message;
    throw new ConfigError(path, [{ line: 0, column: 0, message: `cannot read: ${why}` }], {
      cause,
    });
  }
  return parseConfig(text, path);
}

/**
 * Validates rule-file text; `file` is used in messages and kept as `SsgConfig.file`, and list
 * files named in `lists:` and the PEM files named in `smtp.tls` are read relative to its
 * directory (the only I/O; see `options`).
 */
export function parseConfig(
  text: string,
  file: string,
  options: ParseConfigOptions = {},
): SsgConfig {
  if (text.length > MAX_RULE_FILE_BYTES) {
    throw new ConfigError(file, [{
      line: 0,
      column: 0,
      message: `larger than ${MAX_RULE_FILE_BYTES} bytes`,
    }]);
  }
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, {
    lineCounter,
    prettyErrors: false,
    uniqueKeys: true,
    version: "1.2",
  });
  const reader = new YamlReader(lineCounter, doc);
  if (doc.errors.length > 0) {
    for (const e of doc.errors) reader.reportAt(e.pos[0], `YAML syntax: ${e.message}`);
    throw new ConfigError(file, reader.issues);
  }
  // Warnings (e.g. an unknown "!tag", silently read as a string) are refused like errors: the
  // file would not mean what its author wrote.
  for (const w of doc.warnings) reader.reportAt(w.pos[0], `YAML: ${w.message}`);
  const root = doc.contents as YNode;
  if (root === null || root === undefined || (isScalar(root) && root.value === null)) {
    throw new ConfigError(file, [{
      line: 1,
      column: 1,
      message: `the rule file is empty; it needs at least "gateway" with "protect"`,
    }]);
  }

  const top = reader.fields(root, "the rule file", TOP_KEYS, "at top level");
  if (!top) throw new ConfigError(file, reader.issues);

  let gateway: GatewayConfig | undefined;
  if (!top.has("gateway")) {
    reader.report(top.node, `"gateway" is missing; it must say which networks to "protect"`);
  } else {
    gateway = readGateway(top.get("gateway"), reader, top.key("gateway"));
  }
  const readText = options.readTextFile ?? readListFileSync;
  const smtp = readSmtp(top.get("smtp"), top.has("smtp"), reader, top.key("smtp"), file, readText);
  const relay = readRelay(top.get("relay"), top.has("relay"), reader, top.key("relay"));
  const log = readLog(top.get("log"), top.has("log"), reader, top.key("log"));
  const sections = readPolicySections(
    top,
    reader,
    file,
    readText,
    gateway?.hostname ?? defaultHostname(),
  );
  const rules = parseRules(top.get("rules"), reader, top.key("rules"), {
    lists: new Set(Object.keys(sections.lists)),
  });
  const thresholds = readThresholds(top, reader, new Set(rules.map((r) => r.name)));
  const content = readContent(top.get("content"), top.has("content"), reader, top.key("content"));
  const clamav = readClamav(top.get("clamav"), top.has("clamav"), reader, top.key("clamav"));
  if (!top.has("clamav")) {
    // A virus test with no scanner would never hold: mail would pass as clean, silently.
    for (const leaf of virusLeaves(rules)) {
      reader.issues.push({
        line: leaf.at?.line ?? 1,
        column: leaf.at?.column ?? 1,
        message:
          `"virus" needs a "clamav" section saying where clamd listens (e.g. "clamav: { socket: /run/clamav/clamd.ctl }")`,
      });
    }
  }
  const rspamd = readRspamd(top.get("rspamd"), top.has("rspamd"), reader, top.key("rspamd"));
  if (!top.has("rspamd")) {
    // An rspamd test with nothing to ask would never hold: mail would pass as unscored, silently.
    for (const leaf of rspamdLeaves(rules)) {
      reader.issues.push({
        line: leaf.at?.line ?? 1,
        column: leaf.at?.column ?? 1,
        message:
          `"rspamd" needs an "rspamd" section saying where Rspamd listens (e.g. "rspamd: { address: 127.0.0.1:11333 }")`,
      });
    }
  }

  const greylist = readGreylist(
    top.get("greylist"),
    top.has("greylist"),
    reader,
    top.key("greylist"),
  );
  const dns = readDns(top.get("dns"), top.has("dns"), reader, top.key("dns"));
  const dnsbl = readDnsbl(top.get("dnsbl"), top.has("dnsbl"), reader, top.key("dnsbl"));
  if (top.has("dnsbl") && !top.has("dns")) {
    reader.report(
      top.key("dnsbl"),
      `"dnsbl" needs a "dns" section saying which resolver to ask (e.g. "dns: { servers: [127.0.0.1] }")`,
    );
  }
  for (const leaf of dnsblLeaves(rules)) {
    // A DNS-list test with no lists would never hold: mail would pass as not listed, silently.
    const at = { line: leaf.at?.line ?? 1, column: leaf.at?.column ?? 1 };
    if (!top.has("dnsbl")) {
      reader.issues.push({
        ...at,
        message:
          `"dnsbl" needs a "dnsbl" section listing the zones (e.g. "dnsbl: { client: [zen.example.org*3] }")`,
      });
    } else if (dnsbl && leaf.listedIn) {
      const zones = new Set(
        [...dnsbl.client, ...dnsbl.senderDomain, ...dnsbl.helo].map((s) => s.zone),
      );
      for (const z of leaf.listedIn.filter((z) => !zones.has(z))) {
        reader.issues.push({
          ...at,
          message: `"dnsbl.listed_in": "${z}" is not a zone of the "dnsbl" section (${
            [...zones].join(", ")
          })`,
        });
      }
    }
  }
  // Sender authentication needs no daemon, only the resolver: a rule testing spf/dkim/dmarc/arc
  // without an "auth" section gets the defaults (authserv-id = gateway.hostname).
  const auth = top.has("auth") || authLeaves(rules).length > 0
    ? readAuth(
      top.get("auth"),
      true,
      reader,
      top.key("auth"),
      gateway?.hostname ?? defaultHostname(),
    )
    : undefined;
  if (auth && !top.has("dns")) {
    // Without a resolver every check would be a temperror: say so now, not at the first message.
    const leaf = authLeaves(rules)[0];
    const message =
      `sender authentication needs a "dns" section saying which resolver to ask (e.g. "dns: { servers: [127.0.0.1] }")`;
    if (top.has("auth")) reader.report(top.key("auth"), `"auth": ${message}`);
    else {
      reader.issues.push({
        line: leaf?.at?.line ?? 1,
        column: leaf?.at?.column ?? 1,
        message: `"${leaf?.check}": ${message}`,
      });
    }
  }

  if (gateway && smtp) {
    // A flow forgotten while its session legitimately waits would cut the session: the flow
    // idle timeout must outlast the responder's own waits.
    const longest = Math.max(smtp.timeouts.command, smtp.timeouts.data);
    if (gateway.flows.idleSeconds < longest) {
      reader.report(
        flowsIdleNode(top.get("gateway")) ?? top.key("gateway"),
        `"gateway.flows.idle_seconds" (${gateway.flows.idleSeconds}) must be at least the longest smtp timeout (${longest})`,
      );
    }
  }

  if (reader.issues.length > 0 || !gateway || !smtp || !relay || !log || !content) {
    throw new ConfigError(file, reader.issues);
  }
  const config: SsgConfig = {
    file,
    gateway,
    smtp,
    relay,
    log,
    rules,
    state: sections.state,
    lists: sections.lists,
    allowlist: sections.allowlist,
    blacklist: sections.blacklist,
    quarantine: sections.quarantine,
    thresholds,
    content,
  };
  if (sections.spamtraps) config.spamtraps = sections.spamtraps;
  if (sections.alert) config.alert = sections.alert;
  if (clamav) config.clamav = clamav;
  if (greylist) config.greylist = greylist;
  if (rspamd) config.rspamd = rspamd;
  if (dns) config.dns = dns;
  if (auth) config.auth = auth;
  if (dnsbl) config.dnsbl = dnsbl;
  return config;
}

function flowsIdleNode(gatewayNode: YNode): YNode {
  // Only used for positioning an issue; walks without reporting.
  const g = gatewayNode as { get?: (k: string, keep: boolean) => unknown } | null | undefined;
  const flows = g?.get?.("flows", true) as { get?: (k: string, keep: boolean) => unknown };
  return (flows?.get?.("idle_seconds", true) as YNode) ?? (g?.get?.("flows", true) as YNode);
}

/** A present-but-empty section (`smtp:` with nothing under it) reads as all defaults. */
function isEmpty(node: YNode): boolean {
  return node === undefined || node === null || (isScalar(node) && node.value === null);
}

function readGateway(node: YNode, r: YamlReader, keyNode: YNode): GatewayConfig | undefined {
  if (isEmpty(node)) {
    r.report(keyNode, `"gateway" is empty; it must say which networks to "protect"`);
    return undefined;
  }
  const f = r.fields(node, `"gateway"`, GATEWAY_KEYS, `in "gateway"`, keyNode);
  if (!f) return undefined;
  const before = r.issues.length;
  const d = structuredClone(GATEWAY_DEFAULTS) as Omit<GatewayConfig, "protect" | "hostname">;

  const protect: Cidr[] = [];
  if (!f.has("protect")) {
    r.report(f.node, `"gateway.protect" is missing; list the internal mail servers' networks`);
  } else {
    const items = r.list(f.get("protect"), `"gateway.protect"`, f.key("protect"), true);
    if (items && items.length === 0) {
      r.report(f.get("protect"), `"gateway.protect" must list at least one network`);
    }
    for (const item of items ?? []) {
      const t = r.string(item, `"gateway.protect" entry`, { max: 64 }, f.get("protect"));
      if (t === undefined) continue;
      try {
        const c = parseCidr(t);
        const clash = protect.find((p) => cidrOverlaps(p, c));
        if (clash) {
          r.report(item, `"gateway.protect" entry ${c.text} overlaps ${clash.text}`);
        } else {
          protect.push(c);
        }
      } catch (e) {
        if (!(e instanceof CidrError)) throw e;
        r.report(item, `"gateway.protect" entry ${e.message}`);
      }
    }
  }

  let ports = d.ports;
  if (f.has("ports")) {
    const items = r.list(f.get("ports"), `"gateway.ports"`, f.key("ports"), true) ?? [];
    if (f.get("ports") && items.length === 0) {
      r.report(f.get("ports"), `"gateway.ports" must list at least one port`);
    }
    ports = [];
    for (const item of items) {
      const p = r.int(item, `"gateway.ports" entry`, 1, 65535, f.get("ports"));
      if (p === undefined) continue;
      if (ports.includes(p)) r.report(item, `"gateway.ports" lists ${p} twice`);
      else ports.push(p);
    }
  }

  let interfaces = d.interfaces;
  if (f.has("interfaces")) {
    const items = r.list(f.get("interfaces"), `"gateway.interfaces"`, f.key("interfaces"), true);
    interfaces = [];
    for (const item of items ?? []) {
      const name = r.string(item, `"gateway.interfaces" entry`, {
        max: 16,
        pattern: INTERFACE_RE,
        patternText: "an interface name (at most 15 characters, optional trailing +)",
      }, f.get("interfaces"));
      if (name !== undefined) interfaces.push(name);
    }
  }

  let hostname = defaultHostname();
  if (f.has("hostname")) {
    hostname = r.string(f.get("hostname"), `"gateway.hostname"`, {
      max: 253,
      pattern: HOSTNAME_RE,
      patternText: "a host name (letters, digits, '-', dots)",
    }, f.key("hostname")) ?? hostname;
  }

  const responder = d.responder;
  const rf = optionalSection(f, "responder", `"gateway.responder"`, RESPONDER_KEYS, r);
  if (rf) {
    if (rf.has("ipv4")) {
      const v = r.string(rf.get("ipv4"), `"gateway.responder.ipv4"`, { max: 64 }, rf.key("ipv4"));
      if (v !== undefined && v !== "auto" && !parseIpv4(v)) {
        r.report(rf.get("ipv4"), `"gateway.responder.ipv4" must be "auto" or an IPv4 address`);
      } else if (v !== undefined) responder.ipv4 = v;
    }
    if (rf.has("ipv6")) {
      const v = r.string(rf.get("ipv6"), `"gateway.responder.ipv6"`, { max: 64 }, rf.key("ipv6"));
      if (v !== undefined && v !== "auto" && !parseIpv6(v)) {
        r.report(rf.get("ipv6"), `"gateway.responder.ipv6" must be "auto" or an IPv6 address`);
      } else if (v !== undefined) responder.ipv6 = v;
    }
    if (rf.has("port")) {
      responder.port =
        r.int(rf.get("port"), `"gateway.responder.port"`, 1, 65535, rf.key("port")) ??
          responder.port;
    }
  }

  const queue = d.queue;
  const qf = optionalSection(f, "queue", `"gateway.queue"`, QUEUE_KEYS, r);
  if (qf) {
    if (qf.has("num")) {
      queue.num = r.int(qf.get("num"), `"gateway.queue.num"`, 0, 65535, qf.key("num")) ??
        queue.num;
    }
    if (qf.has("maxlen")) {
      queue.maxlen =
        r.int(qf.get("maxlen"), `"gateway.queue.maxlen"`, 1, 1 << 20, qf.key("maxlen")) ??
          queue.maxlen;
    }
    if (qf.has("rcvbuf")) {
      queue.rcvbuf =
        r.size(qf.get("rcvbuf"), `"gateway.queue.rcvbuf"`, 65536, 1 << 30, qf.key("rcvbuf")) ??
          queue.rcvbuf;
    }
  }

  if (qf?.has("fail_open")) {
    queue.failOpen =
      r.bool(qf.get("fail_open"), `"gateway.queue.fail_open"`, qf.key("fail_open")) ??
        queue.failOpen;
  }

  const flows = d.flows;
  const ff = optionalSection(f, "flows", `"gateway.flows"`, FLOWS_KEYS, r);
  if (ff) {
    if (ff.has("max")) {
      flows.max = r.int(ff.get("max"), `"gateway.flows.max"`, 1, 1 << 24, ff.key("max")) ??
        flows.max;
    }
    if (ff.has("idle_seconds")) {
      flows.idleSeconds = r.duration(
        ff.get("idle_seconds"),
        `"gateway.flows.idle_seconds"`,
        1,
        86400,
        ff.key("idle_seconds"),
      ) ?? flows.idleSeconds;
    }
  }

  if (r.issues.length !== before) return undefined;
  return { protect, ports, interfaces, hostname, responder, queue, flows };
}

/** The fields of an optional sub-section, or undefined when it is absent, empty or wrong. */
function optionalSection(
  parent: Fields,
  key: string,
  label: string,
  keys: readonly string[],
  r: YamlReader,
): Fields | undefined {
  if (!parent.has(key) || isEmpty(parent.get(key))) return undefined;
  return r.fields(parent.get(key), label, keys, `in ${label}`, parent.key(key));
}

function readSmtp(
  node: YNode,
  present: boolean,
  r: YamlReader,
  keyNode: YNode,
  file: string,
  readText: ReadTextFile,
) {
  const s = structuredClone(SMTP_DEFAULTS) as SmtpConfig;
  if (!present || isEmpty(node)) return s;
  const f = r.fields(node, `"smtp"`, SMTP_KEYS, `in "smtp"`, keyNode);
  if (!f) return undefined;
  const before = r.issues.length;
  const int = (key: string, min: number, max: number, dflt: number) =>
    f.has(key) ? r.int(f.get(key), `"smtp.${key}"`, min, max, f.key(key)) ?? dflt : dflt;

  if (f.has("max_message_bytes")) {
    // Whole messages are held in memory for judging, hence the 1 GiB ceiling.
    s.maxMessageBytes = r.size(
      f.get("max_message_bytes"),
      `"smtp.max_message_bytes"`,
      1024,
      1 << 30,
      f.key("max_message_bytes"),
    ) ?? s.maxMessageBytes;
  }
  if (f.has("max_inflight_bytes")) {
    s.maxInflightBytes = r.size(
      f.get("max_inflight_bytes"),
      `"smtp.max_inflight_bytes"`,
      1024,
      64 * (1 << 30),
      f.key("max_inflight_bytes"),
    ) ?? s.maxInflightBytes;
  }
  if (s.maxInflightBytes < s.maxMessageBytes) {
    r.report(
      f.get("max_inflight_bytes") ?? f.get("max_message_bytes") ?? f.node,
      `"smtp.max_inflight_bytes" (${s.maxInflightBytes}) must be at least "smtp.max_message_bytes" (${s.maxMessageBytes}), or no message of the largest size could ever be accepted`,
    );
  }
  // RFC 5321 §4.5.3.1: these are minimums a server must accept; lower values break the RFC.
  s.maxRecipients = int("max_recipients", 100, 100_000, s.maxRecipients);
  s.recipientOvershootLimit = int(
    "recipient_overshoot_limit",
    0,
    1_000_000,
    s.recipientOvershootLimit,
  );
  s.maxCommandLine = int("max_command_line", 512, 65_536, s.maxCommandLine);
  s.maxTextLine = int("max_text_line", 1000, 1_000_000, s.maxTextLine);
  if (f.has("bare_line_endings")) {
    s.bareLineEndings = r.oneOf(
      f.get("bare_line_endings"),
      `"smtp.bare_line_endings"`,
      ["reject", "normalize"] as const,
      f.key("bare_line_endings"),
    ) ?? s.bareLineEndings;
  }
  if (f.has("long_lines")) {
    s.longLines = r.oneOf(
      f.get("long_lines"),
      `"smtp.long_lines"`,
      ["pass", "reject"] as const,
      f.key("long_lines"),
    ) ?? s.longLines;
  }
  s.maxErrors = int("max_errors", 1, 10_000, s.maxErrors);
  s.maxTransactions = int("max_transactions", 1, 100_000, s.maxTransactions);
  s.maxSessions = int("max_sessions", 1, 1_000_000, s.maxSessions);
  s.maxSessionsPerClient = int("max_sessions_per_client", 1, 1_000_000, s.maxSessionsPerClient);
  if (s.maxSessionsPerClient > s.maxSessions) {
    r.report(
      f.get("max_sessions_per_client") ?? f.get("max_sessions") ?? f.node,
      `"smtp.max_sessions_per_client" (${s.maxSessionsPerClient}) must not exceed "smtp.max_sessions" (${s.maxSessions})`,
    );
  }
  s.maxSessionsPerNetwork = int(
    "max_sessions_per_network",
    1,
    1_000_000,
    s.maxSessionsPerNetwork,
  );
  if (s.maxSessionsPerNetwork < s.maxSessionsPerClient) {
    r.report(
      f.get("max_sessions_per_network") ?? f.get("max_sessions_per_client") ?? f.node,
      `"smtp.max_sessions_per_network" (${s.maxSessionsPerNetwork}) must be at least "smtp.max_sessions_per_client" (${s.maxSessionsPerClient})`,
    );
  }
  const pf = optionalSection(f, "network_prefix", `"smtp.network_prefix"`, NETWORK_PREFIX_KEYS, r);
  if (pf) {
    if (pf.has("ipv4")) {
      s.networkPrefix.ipv4 =
        r.int(pf.get("ipv4"), `"smtp.network_prefix.ipv4"`, 8, 32, pf.key("ipv4")) ??
          s.networkPrefix.ipv4;
    }
    if (pf.has("ipv6")) {
      s.networkPrefix.ipv6 =
        r.int(pf.get("ipv6"), `"smtp.network_prefix.ipv6"`, 16, 128, pf.key("ipv6")) ??
          s.networkPrefix.ipv6;
    }
  }
  s.minDataRate = int("min_data_rate", 0, 1 << 30, s.minDataRate);
  const tf = optionalSection(f, "timeouts", `"smtp.timeouts"`, TIMEOUT_KEYS, r);
  if (tf) {
    for (const key of TIMEOUT_KEYS) {
      if (!tf.has(key)) continue;
      s.timeouts[key] = r.duration(
        tf.get(key),
        `"smtp.timeouts.${key}"`,
        0.001,
        7 * 86400,
        tf.key(key),
      ) ?? s.timeouts[key];
    }
  }
  if (f.has("pipelining")) {
    s.pipelining = r.bool(f.get("pipelining"), `"smtp.pipelining"`, f.key("pipelining")) ??
      s.pipelining;
  }
  if (f.has("banner_hostname")) {
    s.bannerHostname = r.oneOf(
      f.get("banner_hostname"),
      `"smtp.banner_hostname"`,
      ["server", "gateway"] as const,
      f.key("banner_hostname"),
    ) ?? s.bannerHostname;
  }
  if (f.has("server_profile_ttl")) {
    s.serverProfileTtl = r.duration(
      f.get("server_profile_ttl"),
      `"smtp.server_profile_ttl"`,
      1,
      7 * 86400,
      f.key("server_profile_ttl"),
    ) ?? s.serverProfileTtl;
  }
  s.serverProfileMax = int("server_profile_max", 1, 1_000_000, s.serverProfileMax ?? 4096);
  const tlsFields = optionalSection(f, "tls", `"smtp.tls"`, TLS_KEYS, r);
  if (tlsFields) {
    const identity = readTlsIdentity(tlsFields, r, file, readText);
    if (identity) s.tls = identity;
  } else if (f.has("tls") && isEmpty(f.get("tls"))) {
    r.report(f.key("tls"), `"smtp.tls" is empty; give "cert" and "key" (PEM files) or remove it`);
  }
  return r.issues.length === before ? s : undefined;
}

function readRelay(node: YNode, present: boolean, r: YamlReader, keyNode: YNode) {
  const c = structuredClone(RELAY_DEFAULTS) as RelayConfig;
  if (!present || isEmpty(node)) return c;
  const f = r.fields(node, `"relay"`, RELAY_KEYS, `in "relay"`, keyNode);
  if (!f) return undefined;
  const before = r.issues.length;
  const fields = [
    ["connect_timeout", "connectTimeout"],
    ["reply_timeout", "replyTimeout"],
    ["data_timeout", "dataTimeout"],
  ] as const;
  for (const [key, prop] of fields) {
    if (!f.has(key)) continue;
    c[prop] = r.duration(f.get(key), `"relay.${key}"`, 0.001, 86400, f.key(key)) ?? c[prop];
  }
  if (f.has("starttls")) {
    c.starttls = r.oneOf(
      f.get("starttls"),
      `"relay.starttls"`,
      ["opportunistic", "off"] as const,
      f.key("starttls"),
    ) ?? c.starttls;
  }
  readRelaySource(f, c, r);
  if (f.has("reuse_idle")) {
    const v = r.duration(f.get("reuse_idle"), `"relay.reuse_idle"`, 0, 300, f.key("reuse_idle"));
    if (v !== undefined) c.reuseIdle = v;
  }
  if (f.has("reuse_sessions")) {
    const v = r.int(
      f.get("reuse_sessions"),
      `"relay.reuse_sessions"`,
      1,
      100_000,
      f.key("reuse_sessions"),
    );
    if (v !== undefined) c.reuseSessions = v;
  }
  if (f.has("reuse_time")) {
    const v = r.duration(f.get("reuse_time"), `"relay.reuse_time"`, 1, 86400, f.key("reuse_time"));
    if (v !== undefined) c.reuseTime = v;
  }
  return r.issues.length === before ? c : undefined;
}

/** `relay.source*` keys (see relay_source.ts); set only when present. */
function readRelaySource(f: Fields, c: RelayConfig, r: YamlReader): void {
  if (f.has("source")) {
    const v = r.oneOf(
      f.get("source"),
      `"relay.source"`,
      ["client", "gateway"] as const,
      f.key("source"),
    );
    if (v !== undefined) c.source = v;
  }
  if (f.has("source_ports")) {
    const text = r.string(f.get("source_ports"), `"relay.source_ports"`, {
      max: 11,
      pattern: /^[0-9]{1,5}-[0-9]{1,5}$/,
      patternText: 'a port range "FIRST-LAST", e.g. "61000-61999"',
    }, f.key("source_ports"));
    if (text !== undefined) {
      const [first, last] = text.split("-").map(Number);
      if (first < 1024 || last > 65535 || last < first || last - first + 1 > MAX_RELAY_PORTS) {
        r.report(
          f.get("source_ports"),
          `"relay.source_ports" must be a range within 1024-65535 of at most ${MAX_RELAY_PORTS} ` +
            `ports, got "${text}"`,
          f.key("source_ports"),
        );
      } else c.sourcePorts = { first, last };
    }
  }
  if (f.has("source_probe_timeout")) {
    const v = r.duration(
      f.get("source_probe_timeout"),
      `"relay.source_probe_timeout"`,
      0.05,
      60,
      f.key("source_probe_timeout"),
    );
    if (v !== undefined) c.sourceProbeTimeout = v;
  }
  if (f.has("source_fallback_ttl")) {
    const v = r.duration(
      f.get("source_fallback_ttl"),
      `"relay.source_fallback_ttl"`,
      1,
      7 * 86400,
      f.key("source_fallback_ttl"),
    );
    if (v !== undefined) c.sourceFallbackTtl = v;
  }
}

function readLog(node: YNode, present: boolean, r: YamlReader, keyNode: YNode) {
  const c = structuredClone(LOG_DEFAULTS) as LogConfig;
  if (!present || isEmpty(node)) return c;
  const f = r.fields(node, `"log"`, LOG_KEYS, `in "log"`, keyNode);
  if (!f) return undefined;
  const before = r.issues.length;
  if (f.has("file")) {
    const file = r.string(f.get("file"), `"log.file"`, {
      max: 4096,
      // deno-lint-ignore no-control-regex
      pattern: /^[^\x00-\x1f\x7f]+$/,
      patternText: "a path without control characters",
    }, f.key("file"));
    if (file !== undefined) c.file = file;
  }
  if (f.has("level")) {
    c.level = r.oneOf(
      f.get("level"),
      `"log.level"`,
      ["debug", "info", "warning", "error"] as const,
      f.key("level"),
    ) ?? c.level;
  }
  return r.issues.length === before ? c : undefined;
}

export { summarizeConfig } from "./summarize_config.ts";
