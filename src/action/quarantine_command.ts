/**
 * `ssg quarantine list|show ID|release ID|delete ID --rules FILE.yaml` — the administrator's view
 * of the quarantine. The rule file says where the quarantine is (`quarantine.dir`) and how to
 * reach servers (`relay:` timeouts, `gateway.hostname` for EHLO).
 *
 * - `list [--json]`: one line per entry (id, time, size, rule, sender, recipients, subject),
 *   oldest first; `--json` prints the metadata as a JSON array.
 * - `show ID [--raw]`: the metadata, then the message. Security: untrusted bytes — without
 *   `--raw` every control character except TAB and line ends is shown as "?" (an ESC sequence in
 *   a spam message must not drive the admin's terminal); `--raw` writes the exact stored bytes
 *   (for `> file.eml`).
 * - `release ID`: delivers the original bytes with the original envelope to the original server
 *   and removes the entry only after the server said 250.
 * - `delete ID`: removes the entry.
 *
 * Exit codes: 0 done; 1 failed (no such entry, I/O error, server refused permanently);
 * 2 usage or rule-file error; 75 release failed temporarily (sysexits EX_TEMPFAIL: try again).
 * IDs are validated before they touch a path (no traversal from the command line).
 */
import type { QuarantineConfig, RelayConfig } from "../config/config.ts";
import { loadConfig } from "../config/load_config.ts";
import { cleanText } from "./clean_text.ts";
import { QuarantineError, type QuarantineMeta, QuarantineStore } from "./quarantine_store.ts";
import { type Connect, denoConnect, sendMessage } from "./send_message.ts";
import { writeAllSync } from "../log/log.ts";

/** Exit code: temporary failure, try again later (sysexits.h EX_TEMPFAIL). */
export const EXIT_TEMPFAIL = 75;

/** The parts of the rule file the command needs. */
export interface QuarantineSettings {
  /** The `quarantine:` section (absent: the command refuses with exit 2). */
  quarantine?: QuarantineConfig;
  /** Timeouts for release. */
  relay: RelayConfig;
  /** Our name for EHLO on release. */
  hostname: string;
}

/** What the command talks to (tests replace them). */
export interface QuarantineCommandIo {
  /** Reads the rule file (default: `loadConfig`, then its `quarantine` section). */
  loadSettings?: (file: string) => Promise<QuarantineSettings>;
  /** Opens SMTP connections for release (default `Deno.connect`). */
  connect?: Connect;
  /** Output (default Deno.stdout / Deno.stderr). */
  stdout?: (bytes: Uint8Array) => void;
  /** Error output (default Deno.stderr). */
  stderr?: (bytes: Uint8Array) => void;
}

const USAGE = `Usage:
  ssg quarantine list [--json]    --rules FILE.yaml
  ssg quarantine show ID [--raw]  --rules FILE.yaml
  ssg quarantine release ID       --rules FILE.yaml
  ssg quarantine delete ID        --rules FILE.yaml
Exit: 0 done, 1 failed, 2 usage or rule-file error, 75 release failed temporarily.
`;

const encoder = new TextEncoder();

/** Reads the settings from the rule file through the shared loader. */
export async function loadQuarantineSettings(file: string): Promise<QuarantineSettings> {
  const cfg = await loadConfig(file);
  return { quarantine: cfg.quarantine, relay: cfg.relay, hostname: cfg.gateway.hostname };
}

/** Runs `ssg quarantine ARGS...` (the words after "quarantine"); resolves with the exit code. */
export async function quarantineCommand(
  args: string[],
  io: QuarantineCommandIo = {},
): Promise<number> {
  const out = io.stdout ?? ((b: Uint8Array) => writeAllSync(Deno.stdout, b));
  const err = io.stderr ?? ((b: Uint8Array) => writeAllSync(Deno.stderr, b));
  const say = (s: string) => out(encoder.encode(s));
  const complain = (s: string) => err(encoder.encode(s));

  const parsed = parseArgs(args);
  if (typeof parsed === "string") {
    complain(`ssg quarantine: ${parsed}\n${USAGE}`);
    return 2;
  }
  let settings: QuarantineSettings;
  try {
    settings = await (io.loadSettings ?? loadQuarantineSettings)(parsed.rules);
  } catch (e) {
    complain(`${e instanceof Error ? e.message : String(e)}\n`);
    return 2;
  }
  if (!settings.quarantine) {
    complain(`ssg quarantine: ${parsed.rules} has no "quarantine:" section with "dir"\n`);
    return 2;
  }
  const store = new QuarantineStore(settings.quarantine.dir, {
    maxBytes: settings.quarantine.maxBytes,
  });
  try {
    // A release that crashed long ago must not hide its entry forever.
    await store.restoreStaleClaims();
    switch (parsed.verb) {
      case "list": {
        const entries = await store.list();
        if (parsed.flags.has("--json")) say(JSON.stringify(entries, null, 2) + "\n");
        else say(formatTable(entries));
        return 0;
      }
      case "show": {
        const { meta, message } = await store.show(parsed.id!);
        if (parsed.flags.has("--raw")) {
          out(message);
        } else {
          say(formatMeta(meta) + "\n");
          say(terminalSafe(new TextDecoder("utf-8", { fatal: false }).decode(message)));
        }
        return 0;
      }
      case "release": {
        const connect = io.connect ?? denoConnect;
        const r = await store.release(parsed.id!, (message, envelope, server) =>
          sendMessage(
            {
              server: { host: server.ip, port: server.port },
              hostname: settings.hostname,
              connect,
              relay: settings.relay,
            },
            envelope,
            message,
          ));
        const reply = cleanText(`${r.code} ${r.enhanced ?? ""} ${r.text}`, 300);
        if (r.code === 250) {
          say(`Released ${parsed.id}: server said ${reply}\n`);
          return 0;
        }
        complain(`Not released ${parsed.id} (kept): at ${r.stage}, server said ${reply}\n`);
        return r.code >= 400 && r.code <= 499 ? EXIT_TEMPFAIL : 1;
      }
      case "delete":
        await store.delete(parsed.id!);
        say(`Deleted ${parsed.id}\n`);
        return 0;
    }
  } catch (e) {
    if (e instanceof QuarantineError) {
      complain(`ssg quarantine: ${e.message}\n`);
      return e.kind === "invalid-id" ? 2 : 1;
    }
    complain(`ssg quarantine: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}

type Verb = "list" | "show" | "release" | "delete";
const VERBS: Record<Verb, { id: boolean; flags: string[] }> = {
  list: { id: false, flags: ["--json"] },
  show: { id: true, flags: ["--raw"] },
  release: { id: true, flags: [] },
  delete: { id: true, flags: [] },
};

/** The parsed command line, or a usage problem. */
function parseArgs(
  args: string[],
): { verb: Verb; id?: string; rules: string; flags: Set<string> } | string {
  const rest: string[] = [];
  const flags = new Set<string>();
  let rules: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--rules") {
      if (i + 1 >= args.length) return "--rules needs a file";
      rules = args[++i];
    } else if (a.startsWith("--rules=")) {
      rules = a.slice("--rules=".length);
    } else if (a.startsWith("--")) {
      flags.add(a);
    } else {
      rest.push(a);
    }
  }
  const verb = rest[0] as Verb | undefined;
  if (verb === undefined) return "missing command";
  if (!Object.hasOwn(VERBS, verb)) return `unknown command ${JSON.stringify(verb)}`;
  const spec = VERBS[verb];
  for (const f of flags) {
    if (!spec.flags.includes(f)) return `unknown option ${f} for ${verb}`;
  }
  if (spec.id && rest.length !== 2) return `${verb} needs exactly one ID`;
  if (!spec.id && rest.length !== 1) return `${verb} takes no ID`;
  if (!rules) return "--rules FILE.yaml is required";
  return { verb, id: rest[1], rules, flags };
}

/** The entries as a fixed-width table (all text cleaned; untrusted). */
export function formatTable(entries: QuarantineMeta[]): string {
  if (entries.length === 0) return "Quarantine is empty.\n";
  const rows = entries.map((m) => [
    m.id,
    m.receivedAt.replace(/\.\d+Z$/, "Z"),
    String(m.size),
    cleanText(m.rule ?? "-", 24, { decodeWords: false }),
    cleanText(m.envelope.mailFrom || "<>", 32, { decodeWords: false }),
    cleanText(m.envelope.rcptTo.join(","), 32, { decodeWords: false }),
    cleanText(m.subject ?? "", 50, { decodeWords: false }),
  ]);
  const head = ["ID", "RECEIVED", "SIZE", "RULE", "FROM", "TO", "SUBJECT"];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) =>
    r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join("  ").trimEnd();
  return [line(head), ...rows.map(line)].join("\n") + `\n${entries.length} entries\n`;
}

function formatMeta(m: QuarantineMeta): string {
  const c = (s: string | undefined, n = 300) => cleanText(s ?? "", n, { decodeWords: false });
  const lines = [
    `Id:          ${m.id}`,
    `Received:    ${m.receivedAt}`,
    `Rule:        ${c(m.rule)}`,
    `Evidence:    ${c(m.evidence, 1000)}`,
    `Client:      ${c(m.envelope.client.ip)} port ${m.envelope.client.port}`,
    `HELO:        ${c(m.envelope.helo)}`,
    `Server:      ${c(m.server.ip)} port ${m.server.port}`,
    `Mail from:   ${c(m.envelope.mailFrom) || "<>"}`,
    `Recipients:  ${c(m.envelope.rcptTo.join(", "), 2000)}`,
    `Size:        ${m.size} bytes (sha256 ${m.sha256})`,
  ];
  return lines.join("\n") + "\n";
}

// deno-lint-ignore no-control-regex
const TERMINAL_UNSAFE_RE = new RegExp(
  "[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069]",
  "g",
);

/** Text with every control character except TAB, CR and LF shown as "?" (ESC included). */
export function terminalSafe(text: string): string {
  return text.replace(TERMINAL_UNSAFE_RE, "?");
}
