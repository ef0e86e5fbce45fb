/**
 * The human summary `ssg check FILE` prints for a valid rule file: what is protected, which
 * ports, where diverted flows are answered, the limits in force, and the rules in order.
 */
import type { RelayConfig, SsgConfig } from "./config.ts";
import { GREYLIST_DEFAULTS, reuseLimits } from "./defaults.ts";
import { describeAuthLeaf } from "../policy/auth_condition.ts";
import { describeRspamdLeaf } from "../policy/compile_condition.ts";
import {
  type Action,
  authLeaves,
  type Condition,
  dnsblLeaves,
  greylists,
  rspamdLeaves,
  type Rule,
  virusLeaves,
} from "../policy/rule.ts";
import { formatDuration, formatSize } from "./units.ts";
import { RELOADABLE, RESTART_ONLY } from "./reload_plan.ts";
import { type RelaySourceSettings, relaySourceSettings } from "./relay_source.ts";

/** The `relay source:` summary line (relay_source.ts). */
function describeRelaySource(rs: RelaySourceSettings): string {
  return rs.mode === "client"
    ? `relay source: client (servers see the client's address; ports ${rs.ports.first}-${rs.ports.last}, ` +
      `probe ${formatDuration(rs.probeTimeout)}, fallback to the gateway for ${
        formatDuration(rs.fallbackTtl)
      }; ` +
      `needs the servers' route to the clients through this gateway)`
    : `relay source: gateway (servers see the gateway; the client is announced by XCLIENT/XFORWARD when offered)`;
}

/** Multi-line summary of a validated configuration. */
export function summarizeConfig(cfg: SsgConfig): string {
  const g = cfg.gateway;
  const s = cfg.smtp;
  const r = cfg.relay;
  const lines = [
    `rule file: ${cfg.file}`,
    `protect: ${g.protect.map((c) => c.text).join(", ")} (TCP ports ${g.ports.join(", ")})`,
    `interfaces: ${g.interfaces.length ? g.interfaces.join(", ") : "any"}`,
    `responder: ipv4 ${g.responder.ipv4}, ipv6 ${g.responder.ipv6}, port ${g.responder.port}; hostname ${g.hostname}`,
    `queue: num ${g.queue.num}, maxlen ${g.queue.maxlen}, rcvbuf ${formatSize(g.queue.rcvbuf)}, ` +
    `${g.queue.failOpen ? "fail-open" : "fail-closed"}; ` +
    `flows: max ${g.flows.max}, idle ${formatDuration(g.flows.idleSeconds)}`,
    `smtp: message ${formatSize(s.maxMessageBytes)} (${
      formatSize(s.maxInflightBytes)
    } in memory in all), ${s.maxRecipients} recipients, ` +
    `command line ${s.maxCommandLine}, text line ${s.maxTextLine} (long lines ${
      s.longLines ?? "reject"
    }), bare line endings ${s.bareLineEndings}, ` +
    `pipelining ${s.pipelining ? "on" : "off"}, banner host name ${s.bannerHostname ?? "server"} ` +
    `(server profiles: ${s.serverProfileMax ?? 4096}, fresh ${
      formatDuration(s.serverProfileTtl ?? 3600)
    })`,
    `smtp sessions: ${s.maxSessions} (${s.maxSessionsPerClient} per client), ` +
    `${s.maxTransactions} transactions and ${s.maxErrors} errors per session; timeouts command ` +
    `${formatDuration(s.timeouts.command)}, data ${formatDuration(s.timeouts.data)}, session ` +
    `${formatDuration(s.timeouts.session)}`,
    `relay: connect ${formatDuration(r.connectTimeout)}, reply ${
      formatDuration(r.replyTimeout)
    }, ` +
    `end of data ${formatDuration(r.dataTimeout)}; starttls ${r.starttls ?? "opportunistic"}` +
    `${
      (r.starttls ?? "opportunistic") === "opportunistic"
        ? " (server certificate not verified)"
        : ""
    }`,
    describeRelaySource(relaySourceSettings(r)),
    describeReuse(r),
    s.tls
      ? `smtp tls: STARTTLS offered; cert ${s.tls.certFile} (${s.tls.subject}, valid to ${s.tls.validTo}), key ${s.tls.keyFile}`
      : `smtp tls: off (STARTTLS not offered: set smtp.tls.cert and smtp.tls.key)`,
    `log: ${cfg.log.file ?? "stderr only"}, level ${cfg.log.level}`,
    ...describePolicySections(cfg),
    `rules: ${cfg.rules.length}${cfg.rules.length ? "" : " (every message is forwarded)"}`,
  ];
  cfg.rules.forEach((rule, i) => lines.push(`  ${i + 1}. ${describeRule(rule)}`));
  const thresholds = cfg.thresholds ?? [];
  if (thresholds.length) lines.push(`thresholds: ${thresholds.length}`);
  thresholds.forEach((t, i) => {
    const bl = t.blacklistSeconds ? ` (blacklist ${formatDuration(t.blacklistSeconds)})` : "";
    lines.push(
      `  ${i + 1}. ${t.name}: ${t.atLeast} × ${t.count.join("/")} per ${t.key} within ${
        formatDuration(t.withinSeconds)
      } → ${t.actions.join(" + ") || "count only"}${bl}`,
    );
  });
  if (cfg.content) {
    const c = cfg.content;
    lines.push(
      `content: a message not fully read → ${c.undecodable}; at most ${c.maxParts} MIME parts, ${c.maxDepth} levels, ${c.maxHeaderBytes}-byte header sections of ${c.maxHeaders} fields, ${c.maxTextChars} characters per text, ${
        formatDuration(c.timeoutSeconds)
      } to parse`,
    );
  }
  if (cfg.clamav) {
    const v = cfg.clamav;
    const where = "path" in v.address ? v.address.path : `${v.address.hostname}:${v.address.port}`;
    lines.push(
      `clamav: clamd at ${where}, ${
        formatDuration(v.timeoutSeconds)
      } per scan, messages up to ${v.maxBytes} bytes scanned; scan failed → ${v.onFailure}${
        virusLeaves(cfg.rules).length ? "" : " (no rule tests virus: nothing is scanned)"
      }${
        v.maxBytes < cfg.smtp.maxMessageBytes
          ? `; messages of ${
            v.maxBytes + 1
          } to ${cfg.smtp.maxMessageBytes} bytes (smtp.max_message_bytes) are not scanned → ${v.onFailure}`
          : ""
      }`,
    );
  }
  if (cfg.rules.some(greylists)) {
    const g = cfg.greylist ?? GREYLIST_DEFAULTS;
    lines.push(
      `greylist: a new (client /${g.networkPrefix.ipv4} or /${g.networkPrefix.ipv6}, sender, recipient) gets 451 4.7.1; a retry after ${
        formatDuration(g.delaySeconds)
      } and within ${formatDuration(g.retryWindowSeconds)} passes and is remembered ${
        formatDuration(g.passLifetimeSeconds)
      } after its last use; ${
        g.autoAllowAfter
          ? `a client network with ${g.autoAllowAfter} passed triplets is allowed outright`
          : "no automatic allowing"
      }; at most ${g.maxEntries} triplets`,
    );
  }
  if (cfg.rspamd) {
    const v = cfg.rspamd;
    const host = v.address.hostname.includes(":") ? `[${v.address.hostname}]` : v.address.hostname;
    lines.push(
      `rspamd: http://${host}:${v.address.port}${v.pathPrefix}/checkv2, ${
        formatDuration(v.timeoutSeconds)
      } per message, messages up to ${v.maxBytes} bytes scored${
        v.password === undefined ? "" : ", with a password"
      }; not scored → ${v.onFailure}${
        v.onFailure === "ignore" ? " (judged without rspamd, logged policy.rspamd_ignored)" : ""
      }${rspamdLeaves(cfg.rules).length ? "" : " (no rule tests rspamd: nothing is sent)"}${
        v.maxBytes < cfg.smtp.maxMessageBytes
          ? `; messages of ${
            v.maxBytes + 1
          } to ${cfg.smtp.maxMessageBytes} bytes (smtp.max_message_bytes) are not scored → ${v.onFailure}`
          : ""
      }`,
    );
  }
  if (cfg.dns) {
    const d = cfg.dns;
    lines.push(
      `dns: ask ${d.servers.join(", ")}, ${formatDuration(d.timeoutSeconds)} per try, ${
        d.retries + 1
      } round(s); cache ${d.cacheEntries} answers for at most ${
        formatDuration(d.cacheMaxTtlSeconds)
      } (negative without SOA: ${formatDuration(d.negativeTtlSeconds)})`,
    );
  }
  if (cfg.dnsbl) {
    const b = cfg.dnsbl;
    const show = (what: string, sites: { text: string }[]) =>
      sites.length ? [`${what} in ${sites.map((s) => s.text).join(", ")}`] : [];
    lines.push(
      `dnsbl: ${
        [
          ...show("client IP", b.client),
          ...show("sender domain", b.senderDomain),
          ...show("HELO name", b.helo),
        ].join("; ")
      }; ${formatDuration(b.timeoutSeconds)} per message; look-up failed → ${
        b.onFailure === "ignore" ? "not listed (logged)" : "tempfail 451 4.4.3"
      }${dnsblLeaves(cfg.rules).length ? "" : " (no rule tests dnsbl: nothing is looked up)"}`,
    );
  }
  if (cfg.auth) {
    const a = cfg.auth;
    const tested = authLeaves(cfg.rules).length;
    lines.push(
      `auth: ${a.checks.join(", ")} as ${a.authservId}, ${
        formatDuration(a.timeoutSeconds)
      } per phase (SPF from MAIL FROM, the rest at end of data); Authentication-Results ${
        a.addHeader ? "added" : "not added (forged ones with our id still removed)"
      }; a tested check's temperror → ${a.onFailure}${
        tested || a.addHeader ? "" : " (no rule tests spf/dkim/dmarc/arc: nothing is verified)"
      }`,
    );
  }
  lines.push(
    `reload (SIGHUP) applies: ${RELOADABLE.join(", ")}`,
    `restart needed for: ${
      RESTART_ONLY.join(", ")
    } (a reload names each changed one in config.reload.partial)`,
  );
  return lines.join("\n");
}

/** The lines for state, lists, allowlist, blacklist, spamtraps, quarantine and alert. */
function describePolicySections(cfg: SsgConfig): string[] {
  const out: string[] = [];
  if (cfg.state) out.push(`state: ${cfg.state.file} (at most ${cfg.state.maxRows} rows per table)`);
  const lists = Object.entries(cfg.lists ?? {});
  if (lists.length) {
    out.push(`lists: ${lists.map(([n, e]) => `${n} (${e.length})`).join(", ")}`);
  }
  for (const [name, a] of [["allowlist", cfg.allowlist], ["blacklist", cfg.blacklist]] as const) {
    if (!a || (a.clients.length === 0 && a.senders.length === 0)) continue;
    out.push(
      `${name}: ${a.clients.length} client networks, ${a.senders.length} senders${
        a.list ? ` (with list ${a.list})` : ""
      }`,
    );
  }
  if (cfg.spamtraps) {
    out.push(
      `spamtraps: ${cfg.spamtraps.addresses.length} addresses; blacklist for ${
        formatDuration(cfg.spamtraps.blacklistSeconds)
      }`,
    );
  }
  if (cfg.quarantine) {
    out.push(
      `quarantine: ${cfg.quarantine.dir}${
        cfg.quarantine.maxBytes ? ` (at most ${formatSize(cfg.quarantine.maxBytes)})` : ""
      }`,
    );
  }
  if (cfg.alert) {
    const a = cfg.alert;
    out.push(
      `alert: to ${a.to.join(", ")} via ${a.relay.host}:${a.relay.port}, from ${a.from}, ` +
        `at most ${a.rate.count} per ${formatDuration(a.rate.seconds)} per rule` +
        (a.webhook ? `; webhook ${a.webhook.url}` : ""),
    );
  }
  return out;
}

/** One line for a rule: `lottery: subject contains "lottery", "당첨" → discard`. */
export function describeRule(rule: Rule): string {
  const actions = rule.actions.map(describeAction).join(" + ");
  const mode = rule.mode === "observe" ? " (observe only)" : "";
  return `${rule.name}: ${describeCondition(rule.when)} → ${actions}${mode}`;
}

/** One action as text: `reject 550 5.7.1 text`, `bcc archive@corp.example`. */
export function describeAction(a: Action): string {
  switch (a.type) {
    case "reject":
    case "tempfail":
      return `${a.type} ${a.reply.code} ${a.reply.enhanced} ${a.reply.text}`;
    case "redirect":
    case "bcc":
      return `${a.type} ${a.to.join(", ")}${
        a.server ? ` via ${a.server.host}:${a.server.port}` : ""
      }`;
    case "tag":
      return `tag ${
        [
          ...a.tag.headers.map((h) => `${h.name}: ${h.value}`),
          ...(a.tag.subjectPrefix ? [`subject prefix ${JSON.stringify(a.tag.subjectPrefix)}`] : []),
        ].join(", ")
      }`;
    case "blacklist":
      return `blacklist ${a.key} for ${formatDuration(a.seconds)}`;
    default:
      return a.type;
  }
}

/** A condition tree as text: `subject contains "a" and not(body contains "b")`. */
export function describeCondition(c: Condition): string {
  switch (c.kind) {
    case "field": {
      const shown = c.values.slice(0, 5).map((v) => JSON.stringify(v)).join(", ");
      const more = c.values.length > 5 ? `, … (${c.values.length} values)` : "";
      const field = c.field === "header" ? `header ${c.header}` : c.field;
      return c.operator === "in_list"
        ? `${field} in_list ${c.values[0]}`
        : `${field} ${c.operator} ${shown}${more}`;
    }
    case "number":
      return `${c.field} ${c.operator.replace("_", " ")} ${
        c.field === "size" ? formatSize(c.value) : c.value
      }`;
    case "ip": {
      const parts = [...c.networks];
      if (c.list) parts.push(`list ${c.list}`);
      return `${c.field} in ${parts.join(", ")}`;
    }
    case "flag":
      return c.value ? c.field : `not ${c.field}`;
    case "bulk": {
      const parts: string[] = [];
      if (c.servers !== undefined) parts.push(`${c.servers} servers`);
      if (c.recipients !== undefined) parts.push(`${c.recipients} recipients`);
      return `bulk ≥ ${parts.join(" or ")} within ${formatDuration(c.withinSeconds)}`;
    }
    case "listed":
      return `listed on ${c.list}`;
    case "auth":
      return describeAuthLeaf(c);
    case "virus":
      return c.signatures
        ? `virus contains ${c.signatures.map((v) => JSON.stringify(v)).join(", ")}`
        : c.value
        ? "virus"
        : "no virus";
    case "rspamd":
      return describeRspamdLeaf(c);
    case "dnsbl": {
      const parts: string[] = [];
      if (c.scoreAtLeast !== undefined) parts.push(`dnsbl score ≥ ${c.scoreAtLeast}`);
      if (c.scoreAtMost !== undefined) parts.push(`dnsbl score ≤ ${c.scoreAtMost}`);
      if (c.listedIn) parts.push(`listed in ${c.listedIn.join(" or ")}`);
      return parts.join(" and ");
    }
    case "all":
      return c.conditions.map((x) => wrap(x, "all")).join(" and ");
    case "any":
      return c.conditions.map((x) => wrap(x, "any")).join(" or ");
    case "not":
      return `not(${describeCondition(c.condition)})`;
  }
}

function wrap(c: Condition, parent: "all" | "any"): string {
  const text = describeCondition(c);
  return (c.kind === "all" || c.kind === "any") && c.kind !== parent && c.conditions.length > 1
    ? `(${text})`
    : text;
}

/** The `relay.reuse_*` line of the summary. */
function describeReuse(r: RelayConfig): string {
  const l = reuseLimits(r);
  if (l.idle <= 0) return "relay reuse: off (one connection to the server per session)";
  const applies = r.source === "gateway"
    ? ""
    : " (applies with relay.source: gateway only; now every session opens its own)";
  return `relay reuse: idle connections kept ${formatDuration(l.idle)} for the next session, ` +
    `at most ${l.sessions} sessions and ${formatDuration(l.time)} each${applies}`;
}
