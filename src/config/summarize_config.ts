/**
 * The human summary `ssg check FILE` prints for a valid rule file: what is protected, which
 * ports, where diverted flows are answered, the limits in force, and the rules in order.
 */
import type { SsgConfig } from "./config.ts";
import type { Condition, Rule } from "../policy/rule.ts";
import { formatDuration, formatSize } from "./units.ts";

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
    `smtp: message ${formatSize(s.maxMessageBytes)}, ${s.maxRecipients} recipients, ` +
    `command line ${s.maxCommandLine}, text line ${s.maxTextLine}, bare line endings ${s.bareLineEndings}, ` +
    `pipelining ${s.pipelining ? "on" : "off"}`,
    `smtp sessions: ${s.maxSessions} (${s.maxSessionsPerClient} per client), ` +
    `${s.maxTransactions} transactions and ${s.maxErrors} errors per session; timeouts command ` +
    `${formatDuration(s.timeouts.command)}, data ${formatDuration(s.timeouts.data)}, session ` +
    `${formatDuration(s.timeouts.session)}`,
    `relay: connect ${formatDuration(r.connectTimeout)}, reply ${
      formatDuration(r.replyTimeout)
    }, ` +
    `end of data ${formatDuration(r.dataTimeout)}`,
    `log: ${cfg.log.file ?? "stderr only"}, level ${cfg.log.level}`,
    `rules: ${cfg.rules.length}${cfg.rules.length ? "" : " (every message is forwarded)"}`,
  ];
  cfg.rules.forEach((rule, i) => lines.push(`  ${i + 1}. ${describeRule(rule)}`));
  return lines.join("\n");
}

/** One line for a rule: `lottery: subject contains "lottery", "당첨" → discard`. */
export function describeRule(rule: Rule): string {
  const actions = rule.actions.map((a) =>
    a.type === "reject" ? `reject ${a.reply.code} ${a.reply.enhanced} ${a.reply.text}` : a.type
  ).join(" + ");
  const mode = rule.mode === "observe" ? " (observe only)" : "";
  return `${rule.name}: ${describeCondition(rule.when)} → ${actions}${mode}`;
}

/** A condition tree as text: `subject contains "a" and not(body contains "b")`. */
export function describeCondition(c: Condition): string {
  switch (c.kind) {
    case "field": {
      const shown = c.values.slice(0, 5).map((v) => JSON.stringify(v)).join(", ");
      const more = c.values.length > 5 ? `, … (${c.values.length} values)` : "";
      return `${c.field} ${c.operator} ${shown}${more}`;
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
