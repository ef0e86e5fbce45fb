/**
 * `ssg explain FILE MESSAGE.eml [--client IP --from A --to B --helo H --server IP --tls --auth]`: shows,
 * step by step and rule by rule, what the policy in FILE would do with a message and why — which
 * leaf matched which text, which failed and what the field was, which rules are observe-only —
 * and the final verdict, so that an administrator can try a rule before deploying it.
 *
 * It needs no privileges and never touches the live state database: the engine gets a private
 * in-memory store, so `bulk` sees only this message, `listed` only the static lists, and
 * thresholds (which depend on history) are listed but not evaluated. The envelope defaults to
 * what the message's own headers say (From → sender, To/Cc → recipients) when not given.
 * When a rule tests `virus`, the message is scanned by the clamd of the `clamav:` section, as
 * the gateway would, and the result is shown (a failed scan gives `clamav.on_failure`).
 * A `greylist` rule only peeks at that private store, where every triplet is new: it shows the
 * 451 a first sighting gets (`--auth` shows an authenticated session, never greylisted).
 * Likewise a rule that tests `rspamd` makes it ask the Rspamd of the `rspamd:` section (with the envelope
 * below) and show the score, action and symbols (a failed check gives `rspamd.on_failure`).
 * When a rule tests `dnsbl`, the client IP, sender domain and HELO name are looked up in the
 * `dnsbl:` lists through the `dns:` resolver, as the gateway would, and every answer is shown.
 */
import { ConfigError } from "../config/config_error.ts";
import type { SsgConfig } from "../config/config.ts";
import { loadConfig } from "../config/load_config.ts";
import { formatDuration } from "../config/units.ts";
import { MemoryLog } from "../log/log.ts";
import type { Trace } from "./compile_condition.ts";
import { decodeMessage, type MessageFacts } from "./message.ts";
import { decodeLimitsOf, PolicyEngine, type RuleResult, type StepResult } from "./policy_engine.ts";
import { CONTENT_DEFAULTS } from "../config/defaults.ts";
import type { Envelope, Verdict } from "./verdict.ts";
import type { ScanResult } from "../engines/clamd_client.ts";
import { describeResult, type RspamdResult } from "../engines/rspamd_client.ts";
import { describeLookup, type DnsblResult } from "../engines/dns/dnsbl_checker.ts";
import type { DnsResolver } from "../engines/dns/resolver.ts";
import type { AuthResults } from "../engines/auth/mail_authenticator.ts";
import type { AuthDns } from "../engines/auth/mailauth_resolver.ts";
import { formatAuthResults } from "../action/authentication_results.ts";

/** Everything `ssg explain` found, as data (`--json` prints it). */
export interface Explanation {
  /** The rule file. */
  file: string;
  /** The envelope the message was judged with. */
  envelope: Envelope;
  /** What was decoded. */
  facts: {
    subject: string;
    size: number;
    decoder: MessageFacts["decoder"];
    problems: string[];
    /** Every reading of every Subject (duplicates, attached messages, charsets). */
    subjects: string[];
    /** How many plain-text and HTML readings the body rules judged. */
    readings: { texts: number; htmls: number };
    /** What `content.undecodable` does with a message that was not fully read. */
    undecodable: string;
    from: string[];
    to: string[];
    attachments: string[];
  };
  /** Allowlist, blacklist, spamtrap — before the rules. */
  steps: StepResult[];
  /** What clamd said (absent when no rule tests `virus`: nothing was scanned). */
  scan?: ScanResult & { onFailure: string };
  /** What Rspamd said (absent when no rule tests `rspamd`: nothing was asked). */
  rspamd?: RspamdResult & { onFailure: string };
  /** What the DNS lists said (absent when no rule tests `dnsbl`: nothing was looked up). */
  dnsbl?: DnsblResult & { onFailure: string };
  /** SPF/DKIM/DMARC/ARC results (absent when nothing asks for them: nothing was verified). */
  auth?: AuthResults & { onFailure: string };
  /** Every rule, in order, with its trace. */
  rules: RuleResult[];
  /** Thresholds in force (not evaluated: they depend on history). */
  thresholds: string[];
  /** The verdict. */
  verdict: Verdict;
}

/** Options of `explainMessage`: the envelope fields given on the command line. */
export interface ExplainEnvelope {
  /** Client IP (default 0.0.0.0). */
  client?: string;
  /** Envelope sender (default: the From header's address). */
  from?: string;
  /** Envelope recipients (default: the To and Cc addresses). */
  to?: string[];
  /** HELO/EHLO name (default empty). */
  helo?: string;
  /** The protected server the mail was for (default: the first protected network's address). */
  server?: string;
  /** Whether the session used STARTTLS (default false). */
  tls?: boolean;
  /** Whether the server accepted the client's AUTH (default false). */
  authenticated?: boolean;
}

/** Judges `message` under `config` with an in-memory state store; pure apart from that store. */
export async function explainMessage(
  config: SsgConfig,
  message: Uint8Array,
  given: ExplainEnvelope = {},
  options: { resolver?: AuthDns & DnsResolver } = {},
): Promise<Explanation> {
  const engine = new PolicyEngine(config, new MemoryLog(), { resolver: options.resolver });
  const scanning = engine.scan(message);
  const facts = await decodeMessage(message, decodeLimitsOf(config.content));
  const scan = await scanning;
  const firstProtected = config.gateway.protect[0]?.text.split("/")[0] ?? "0.0.0.0";
  const headerTo = [...facts.to, ...facts.cc].map((m) => m.address).filter((a) => a !== "");
  const envelope: Envelope = {
    mailFrom: given.from ?? facts.from[0]?.address ?? "",
    rcptTo: given.to?.length ? given.to : headerTo,
    client: { ip: given.client ?? "0.0.0.0", port: 0 },
    server: { ip: given.server ?? firstProtected, port: 25 },
    helo: given.helo ?? "",
    tls: given.tls ?? false,
    authenticated: given.authenticated ?? false,
    sessionId: "explain",
    transactionId: "explain.1",
  };
  try {
    const scored = await engine.score(message, envelope);
    const dnsbl = await engine.dnsblCheck(envelope);
    // As the gateway would: SPF of the envelope given, DKIM/DMARC/ARC of the message.
    const auth = await engine.authenticate(message, envelope);
    const { verdict, steps, results } = engine.evaluate(
      facts,
      envelope,
      true,
      Date.now(),
      scan,
      scored,
      dnsbl,
      auth,
    );
    const authResults = engine.authResultsOf(auth);
    if (authResults) verdict.authResults = authResults;
    return {
      file: config.file,
      envelope,
      facts: {
        subject: facts.subject,
        size: facts.size,
        decoder: facts.decoder,
        problems: facts.problems,
        subjects: [...new Set([facts.subject, ...facts.subjects])],
        readings: {
          texts: new Set([facts.text, ...facts.texts].filter((t) => t !== "")).size,
          htmls: new Set([facts.html, ...facts.htmls].filter((t) => t !== "")).size,
        },
        undecodable: (config.content ?? CONTENT_DEFAULTS).undecodable,
        from: facts.from.map((m) => (m.name ? `${m.name} <${m.address}>` : m.address)),
        to: facts.to.map((m) => (m.name ? `${m.name} <${m.address}>` : m.address)),
        attachments: facts.attachments.map((a) => `${a.filename || "(no name)"} ${a.contentType}`),
      },
      ...(scan ? { scan: { ...scan, onFailure: config.clamav?.onFailure ?? "tempfail" } } : {}),
      ...(scored
        ? { rspamd: { ...scored, onFailure: config.rspamd?.onFailure ?? "tempfail" } }
        : {}),
      ...(dnsbl ? { dnsbl: { ...dnsbl, onFailure: config.dnsbl?.onFailure ?? "ignore" } } : {}),
      ...(auth ? { auth: { ...auth, onFailure: config.auth?.onFailure ?? "tempfail" } } : {}),
      steps,
      rules: results,
      thresholds: (config.thresholds ?? []).map((t) =>
        `${t.name}: ${t.atLeast} × ${t.count.join("/")} per ${t.key} within ${
          formatDuration(t.withinSeconds)
        } → ${t.actions.join(" + ")}`
      ),
      verdict,
    };
  } finally {
    engine.close();
  }
}

/** The explanation as text for a terminal. Untrusted text is quoted with JSON escapes. */
export function renderExplanation(e: Explanation): string {
  const q = (s: string) => JSON.stringify(s);
  const env = e.envelope;
  const lines: string[] = [
    `rule file: ${e.file}`,
    `envelope: client ${env.client.ip}, helo ${q(env.helo)}, mail from ${
      q(env.mailFrom)
    }, rcpt to ${env.rcptTo.map(q).join(", ") || "(none)"}, server ${env.server.ip}, ${
      env.tls ? "TLS" : "no TLS"
    }${env.authenticated ? ", authenticated" : ""}`,
    `message: ${e.facts.size} bytes, subject ${q(e.facts.subject)}, decoded by ${e.facts.decoder}${
      e.facts.attachments.length ? `, attachments: ${e.facts.attachments.map(q).join(", ")}` : ""
    }`,
  ];
  if (e.facts.subjects.length > 1) {
    lines.push(`  every subject judged: ${e.facts.subjects.map((x) => q(x)).join(", ")}`);
  }
  lines.push(
    `  body readings judged: ${e.facts.readings.texts} text, ${e.facts.readings.htmls} HTML`,
  );
  for (const p of e.facts.problems) {
    lines.push(`  NOT FULLY READ: ${p} (content.undecodable: ${e.facts.undecodable})`);
  }
  if (e.scan) {
    const s = e.scan;
    lines.push(
      s.status === "clean"
        ? "virus scan: clean (clamd found no signature)"
        : s.status === "infected"
        ? `virus scan: INFECTED: ${q(s.signature)}`
        : `virus scan: FAILED: ${oneLine(s.reason)} (clamav.on_failure: ${s.onFailure})`,
    );
  }
  if (e.rspamd) {
    const r = e.rspamd;
    lines.push(
      r.status === "scored"
        ? `rspamd: ${describeResult(r, 10)}`
        : `rspamd: FAILED: ${oneLine(r.reason)} (rspamd.on_failure: ${r.onFailure})`,
    );
  }
  if (e.dnsbl) {
    const d = e.dnsbl;
    lines.push(
      `dns lists: score ${d.score}${
        d.failures.length ? ` (${d.failures.length} failed; dnsbl.on_failure: ${d.onFailure})` : ""
      }`,
    );
    for (const l of d.lookups) lines.push(`  ${oneLine(describeLookup(l))} [${l.query}]`);
  }
  if (e.auth) {
    const a = e.auth;
    lines.push(`sender authentication (auth.on_failure for a tested temperror: ${a.onFailure}):`);
    if (a.spf) {
      lines.push(
        `  spf: ${a.spf.result} for ${q(a.spf.domain)}${
          a.spf.comment ? ` (${oneLine(a.spf.comment)})` : ""
        }`,
      );
    }
    for (const d of a.dkim ?? []) {
      lines.push(
        `  dkim: ${d.result}${d.domain ? ` d=${q(d.domain)}` : ""}${
          d.selector ? ` s=${q(d.selector)}` : ""
        }${d.aligned ? " (aligned)" : ""}${d.comment ? ` (${oneLine(d.comment)})` : ""}`,
      );
    }
    if (a.dmarc) {
      lines.push(
        `  dmarc: ${a.dmarc.result} for ${q(a.dmarc.domain)}${
          a.dmarc.policy ? `, policy ${a.dmarc.policy}` : ""
        }${a.dmarc.comment ? ` (${oneLine(a.dmarc.comment)})` : ""}`,
      );
    }
    if (a.arc) {
      lines.push(`  arc: ${a.arc.result}${a.arc.comment ? ` (${oneLine(a.arc.comment)})` : ""}`);
    }
  }
  lines.push("", "before the rules:");
  for (const s of e.steps) lines.push(`  ${s.holds ? "HOLDS" : "no   "} ${s.step}: ${s.detail}`);
  lines.push("", "rules, in order:");
  if (e.rules.length === 0) lines.push("  (none)");
  e.rules.forEach((r, i) => {
    const mode = r.mode === "observe" ? " [observe only]" : "";
    const verdictWord = r.matched ? `MATCHED → ${r.outcome}` : "no match";
    lines.push(`  ${i + 1}. ${r.rule} (${r.actions.join(", ")})${mode}: ${verdictWord}`);
    if (r.trace) renderTrace(r.trace, "       ", lines);
  });
  if (e.thresholds.length) {
    lines.push("", "thresholds (not evaluated here: they count verdicts over time):");
    for (const t of e.thresholds) lines.push(`  ${t}`);
  }
  const v = e.verdict;
  lines.push("", `verdict: ${v.action}${v.rule ? ` by ${v.rule}` : ""}`);
  if (v.action === "reject" || v.action === "tempfail") {
    lines.push(`  reply: ${v.reply.code} ${v.reply.enhanced} ${v.reply.text}`);
  }
  if (v.evidence) lines.push(`  evidence: ${v.evidence}`);
  if (v.tag) {
    for (const h of v.tag.headers) lines.push(`  tag: add header ${h.name}: ${h.value}`);
    if (v.tag.subjectPrefix !== undefined) {
      lines.push(`  tag: subject prefix ${q(v.tag.subjectPrefix)}`);
    }
  }
  for (const d of v.deliveries ?? []) {
    lines.push(
      `  ${d.kind}: to ${d.to.join(", ")}${
        d.server ? ` via ${d.server.host}:${d.server.port}` : ""
      }`,
    );
  }
  for (const x of v.effects ?? []) {
    lines.push(
      x.type === "alert"
        ? `  after the reply: alert (${x.rule})`
        : `  after the reply: blacklist ${x.key} ${x.value} for ${
          formatDuration(x.seconds)
        } (${x.rule})`,
    );
  }
  if (v.observed?.length) lines.push(`  observed (logged only): ${v.observed.join(", ")}`);
  if (v.authResults?.value !== undefined && (v.action === "forward" || v.action === "quarantine")) {
    const field = formatAuthResults(v.authResults.value).trimEnd();
    lines.push(`  header added: ${field.replace(/\r\n/g, "\n    ")}`);
  }
  return lines.join("\n");
}

function renderTrace(t: Trace, indent: string, out: string[]): void {
  const mark = t.holds ? "✓" : "✗";
  out.push(`${indent}${mark} ${t.test}${t.detail ? ` — ${oneLine(t.detail)}` : ""}`);
  for (const c of t.children ?? []) renderTrace(c, indent + "  ", out);
}

/** Untrusted text on one line: control characters shown as escapes. */
function oneLine(s: string): string {
  return s.replace(
    // deno-lint-ignore no-control-regex
    /[\x00-\x1f\x7f]/g,
    (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`,
  );
}

const USAGE = `Usage: ssg explain FILE.yaml MESSAGE.eml [options]
  --client IP     the connecting client (default 0.0.0.0)
  --from ADDR     envelope sender (default: the From header's address)
  --to ADDR       envelope recipient; repeat for several (default: the To and Cc addresses)
  --helo NAME     HELO/EHLO name (default empty)
  --server IP     the protected server the mail was for (default: the first protected network)
  --tls           the session used STARTTLS
  --auth          the client authenticated (AUTH accepted by the server)
  --json          print the explanation as JSON
Exit: 0 explained, 1 message unreadable, 2 rule-file error, 64 usage error.
`;

/** Output channels of the command (tests capture them). */
export interface ExplainIo {
  /** Where the explanation goes (default console.log). */
  stdout?: (text: string) => void;
  /** Where errors and usage go (default console.error). */
  stderr?: (text: string) => void;
}

/** Runs `ssg explain ARGS...` (the words after "explain"); resolves with the exit code. */
export async function explainCommand(args: string[], io: ExplainIo = {}): Promise<number> {
  const out = io.stdout ?? ((s: string) => console.log(s));
  const err = io.stderr ?? ((s: string) => console.error(s));
  const positional: string[] = [];
  const given: ExplainEnvelope = {};
  let json = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const value = () => {
      const v = args[++i];
      if (v === undefined || v.startsWith("--")) throw new UsageError(`${a} needs a value`);
      return v;
    };
    try {
      switch (a) {
        case "--client":
          given.client = value();
          break;
        case "--from":
          given.from = value();
          break;
        case "--to":
          (given.to ??= []).push(value());
          break;
        case "--helo":
          given.helo = value();
          break;
        case "--server":
          given.server = value();
          break;
        case "--tls":
          given.tls = true;
          break;
        case "--auth":
          given.authenticated = true;
          break;
        case "--json":
          json = true;
          break;
        case "--help":
        case "-h":
          out(USAGE);
          return 0;
        default:
          if (a.startsWith("--")) throw new UsageError(`unknown option ${a}`);
          positional.push(a);
      }
    } catch (e) {
      err(`ssg explain: ${(e as Error).message}\n${USAGE}`);
      return 64;
    }
  }
  if (positional.length !== 2) {
    err(`ssg explain: expected FILE.yaml and MESSAGE.eml\n${USAGE}`);
    return 64;
  }
  const [file, messagePath] = positional;
  let config: SsgConfig;
  try {
    config = await loadConfig(file);
  } catch (e) {
    if (e instanceof ConfigError) {
      err(e.format());
      return 2;
    }
    throw e;
  }
  let message: Uint8Array;
  try {
    message = await Deno.readFile(messagePath);
  } catch (e) {
    err(`ssg explain: cannot read message "${messagePath}": ${(e as Error).message}`);
    return 1;
  }
  const explanation = await explainMessage(config, message, given);
  out(json ? JSON.stringify(explanation, null, 2) : renderExplanation(explanation));
  return 0;
}

/** A command-line mistake. */
class UsageError extends Error {
  override name = "UsageError";
}
