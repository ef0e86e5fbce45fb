/**
 * Helpers for end-to-end tests against the built `dist/ssg`: real peers only — swaks as the
 * client, smtp-sink (postfix) or aiosmtpd as the internal server, `dist/ssg run` in the gateway
 * namespace of a {@linkcode Topology}.
 *
 * What they limit: every wait is bounded (SSG readiness 45 s, swaks 60 s, process exits 15 s);
 * captured output is capped (1 MiB per stream) so a chatty process can never fill a pipe or memory.
 *
 * @module
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { canRunNetns, createTopology, run, type Topology } from "./topology.ts";

/** The repository root (this file lives in test/netns/). */
export const REPO_ROOT: string = fileURLToPath(new URL("../../", import.meta.url));

/** Where `./build.sh` puts the executable. */
export const SSG_BINARY: string = join(REPO_ROOT, "dist", "ssg");

/** Raised when an end-to-end step fails in a way the test cannot go on from. */
export class E2eError extends Error {
  /** Creates the error; `cause` keeps the underlying failure. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "E2eError";
  }
}

/** The path of dist/ssg, or a clear error when it has not been built. */
export function requireSsgBinary(): string {
  try {
    const st = Deno.statSync(SSG_BINARY);
    if (st.isFile && (st.mode ?? 0o111) & 0o111) return SSG_BINARY;
  } catch { /* reported below */ }
  throw new E2eError(
    `${SSG_BINARY} is missing or not executable: run ./build.sh first ` +
      `(./scripts/test.sh builds before testing)`,
  );
}

const MAX_CAPTURE = 1 << 20;

/** Accumulates a process stream in the background, bounded to 1 MiB. */
class Capture {
  #chunks: string[] = [];
  #size = 0;
  readonly done: Promise<void>;
  constructor(stream: ReadableStream<Uint8Array> | null) {
    this.done = stream ? this.#pump(stream) : Promise.resolve();
  }
  async #pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    const dec = new TextDecoder();
    try {
      for await (const chunk of stream) {
        if (this.#size >= MAX_CAPTURE) continue; // keep draining so the writer never blocks
        const s = dec.decode(chunk, { stream: true });
        this.#chunks.push(s);
        this.#size += s.length;
      }
    } catch { /* the process was killed */ }
  }
  text(): string {
    return this.#chunks.join("") +
      (this.#size >= MAX_CAPTURE ? "\n[capture truncated at 1 MiB]" : "");
  }
}

/** A temporary directory removed by `[Symbol.asyncDispose]`. */
export interface TempDir extends AsyncDisposable {
  readonly path: string;
}

/** Creates a temporary directory for one test (rule file, log, server dumps). */
export async function tempDir(prefix = "ssg-e2e-"): Promise<TempDir> {
  const path = await Deno.makeTempDir({ prefix });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true }).catch(() => {});
    },
  };
}

/** Options of the rule file the tests write. */
export interface RuleFileOptions {
  /** Log file path (required: readiness is read from it). */
  logFile: string;
  /** Relay connect timeout in seconds (default 5). */
  connectTimeout?: number;
  /** Extra YAML appended under `rules:` (already indented by 2). */
  extraRules?: string;
  /** Extra top-level YAML sections (alert, spamtraps, thresholds, blacklist, ...). */
  extraSections?: string;
  /** Log level (default debug: tests read flow events). */
  level?: "debug" | "info" | "warning" | "error";
}

/** The subject keyword rule's action is discard; the body keyword rule rejects with this text. */
export const REJECT_TEXT = "Pill spam is not accepted here (ssg e2e test rule)";

/**
 * A rule file of the same shape as rules/default.yaml, with the responder pinned to the
 * gateway's client-side addresses so the test does not depend on "auto" picking order.
 */
export function ruleFileText(opts: RuleFileOptions): string {
  return `# Written by test/netns/gateway_test.ts
gateway:
  protect: [198.51.100.0/24, "2001:db8:25::/64"]
  ports: [25]
  hostname: ssg.gateway.test
  responder:
    ipv4: 192.0.2.1
    ipv6: "2001:db8:1::1"
    port: 10025
relay:
  connect_timeout: ${opts.connectTimeout ?? 5}
log:
  file: ${JSON.stringify(opts.logFile)}
  level: ${opts.level ?? "debug"}
state:
  file: ${JSON.stringify(join(dirname(opts.logFile), "state.db"))}
quarantine:
  dir: ${JSON.stringify(join(dirname(opts.logFile), "quarantine"))}
${opts.extraSections ?? ""}
rules:
  - name: lottery
    when:
      subject: { contains: ["lottery", "당첨"] }
    action: discard
  - name: pills
    when:
      body: { contains: ["cheap pills"] }
    action: reject
    reply: { code: 550, enhanced: "5.7.1", text: ${JSON.stringify(REJECT_TEXT)} }
${opts.extraRules ?? ""}`;
}

/** The firewall state of a namespace, as the three tools print it. */
export async function firewallDump(t: Topology, ns: string): Promise<string> {
  const parts: string[] = [];
  for (
    const cmd of [
      ["iptables-save"],
      ["ip6tables-save"],
      ["nft", "list", "ruleset"],
    ]
  ) {
    const r = await t.exec(ns, cmd, { timeoutMs: 10_000 });
    parts.push(`### ${cmd.join(" ")} (exit ${r.code})\n${r.stdout}${r.stderr}`);
  }
  return parts.join("\n");
}

/** Lines of a firewall dump that belong to SSG: named ssg, or queueing packets. */
export function ssgRuleLines(dump: string): string[] {
  return dump.split("\n").filter((l) =>
    !l.startsWith("###") && !l.startsWith("#") && /ssg|NFQUEUE|\bqueue\b/i.test(l)
  );
}

/** A running `dist/ssg run FILE` inside the gateway namespace. */
export class SsgProcess implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  readonly logFile: string;
  #out: Capture;
  #err: Capture;
  #status: Deno.CommandStatus | undefined;
  readonly exited: Promise<Deno.CommandStatus>;

  /** Size of the log file when this process started: earlier lines belong to earlier runs. */
  readonly logOffset: number;

  constructor(child: Deno.ChildProcess, logFile: string, logOffset = 0) {
    this.child = child;
    this.logFile = logFile;
    this.logOffset = logOffset;
    this.#out = new Capture(child.stdout);
    this.#err = new Capture(child.stderr);
    this.exited = child.status.then((s) => this.#status = s);
  }

  /** Exit status once exited, else undefined. */
  get status(): Deno.CommandStatus | undefined {
    return this.#status;
  }

  /** This run's part of the log file ("" while it does not exist). */
  log(): string {
    try {
      return new TextDecoder().decode(Deno.readFileSync(this.logFile).subarray(this.logOffset));
    } catch {
      return "";
    }
  }

  /**
   * Asserts that this run's log matches `re`, polling for up to `ms` (default 5 s): SSG writes
   * its log in batches a few ms after the events (`LOG_FLUSH_MS`), so a line may not be in the
   * file yet right after the client got its reply. Returns the log text.
   */
  async assertLog(re: RegExp, message?: string, ms = 5_000): Promise<string> {
    const deadline = Date.now() + ms;
    let text = this.log();
    while (!re.test(text) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
      text = this.log();
    }
    assert.match(text, re, message);
    return text;
  }

  /** Everything SSG said: stdout, stderr and its log file. */
  transcript(): string {
    return `--- ssg stdout ---\n${this.#out.text()}\n--- ssg stderr ---\n${this.#err.text()}\n` +
      `--- ssg log file ${this.logFile} (from byte ${this.logOffset}) ---\n${this.log()}`;
  }

  /** Sends `signal` and waits (bounded) for the exit; SIGKILL after the bound. */
  async stop(signal: Deno.Signal = "SIGTERM", timeoutMs = 15_000): Promise<Deno.CommandStatus> {
    if (!this.#status) {
      try {
        this.child.kill(signal);
      } catch { /* already exited */ }
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = await Promise.race([
      this.exited.then(() => false),
      new Promise<boolean>((r) => timer = setTimeout(() => r(true), timeoutMs)),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      try {
        this.child.kill("SIGKILL");
      } catch { /* exited meanwhile */ }
      await this.exited;
      throw new E2eError(`ssg did not exit within ${timeoutMs} ms of ${signal}; killed`);
    }
    await Promise.all([this.#out.done, this.#err.done]);
    return this.#status!;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (!this.#status) await this.stop("SIGKILL").catch(() => {});
  }
}

/**
 * Starts `dist/ssg run ruleFile` in the gateway namespace and waits until it is ready: an
 * `ssg.ready` event in its log and SSG's diversion rules in the firewall. Bounded (default 45 s:
 * the first start of a self-extracting build unpacks itself).
 */
export async function startSsg(
  t: Topology,
  ruleFile: string,
  logFile: string,
  timeoutMs = 45_000,
  bin: string = requireSsgBinary(),
): Promise<SsgProcess> {
  let offset = 0;
  try {
    offset = Deno.statSync(logFile).size;
  } catch { /* not written yet */ }
  const child = t.spawn(t.ns.gateway, [bin, "run", ruleFile]);
  const ssg = new SsgProcess(child, logFile, offset);
  const deadline = Date.now() + timeoutMs;
  // Bounded: until the deadline, one check per 100 ms.
  while (Date.now() < deadline) {
    if (ssg.status) {
      throw new E2eError(
        `ssg exited with code ${ssg.status.code} before it was ready\n${ssg.transcript()}`,
      );
    }
    if (/\bssg\.ready\b/.test(ssg.log())) {
      const fw = await firewallDump(t, t.ns.gateway);
      if (ssgRuleLines(fw).length > 0) return ssg;
      await ssg.stop("SIGKILL").catch(() => {});
      throw new E2eError(
        `ssg logged ssg.ready but installed no diversion rule\n${fw}\n${ssg.transcript()}`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  await ssg.stop("SIGKILL").catch(() => {});
  throw new E2eError(`ssg was not ready within ${timeoutMs} ms\n${ssg.transcript()}`);
}

/** An smtp-sink internal server saving every message under `dir`. */
export interface Sink {
  readonly dir: string;
  readonly child: Deno.ChildProcess;
  /** Stops the sink (SIGTERM; bounded). */
  stop(): Promise<void>;
}

/** `[ip]:port` for IPv6 literals, `ip:port` otherwise. */
export function hostPort(ip: string, port: number): string {
  return ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/**
 * Starts smtp-sink on `ip`:25 in the server namespace, dumping each transaction to one file
 * in `dir` (`-d`, see smtp-sink(1) "DUMP FILE FORMAT"), and waits until it accepts connections.
 */
export async function startSink(
  t: Topology,
  ip: string,
  dir: string,
  extra: string[] = [],
): Promise<Sink> {
  await Deno.mkdir(dir, { recursive: true });
  const child = t.spawn(t.ns.server, [
    "/usr/sbin/smtp-sink",
    "-u",
    "root",
    "-h",
    "internal.server.test",
    ...extra,
    "-d",
    `${dir}/%Y%m%d%H%M%S.`,
    hostPort(ip, 25),
    "128",
  ], { stdout: "null", stderr: "null" });
  await t.waitForPort(t.ns.server, ip, 25, 10_000);
  return {
    dir,
    child,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* already exited */ }
      await child.status;
    },
  };
}

/** One transaction as smtp-sink dumped it. */
export interface SinkDump {
  file: string;
  clientAddr: string;
  helo: string;
  mailFrom: string;
  rcpts: string[];
  /** The message as received (header and body), LF line endings as smtp-sink writes them. */
  message: string;
}

/** Parses one smtp-sink `-d` dump file (format in smtp-sink(1)). */
export function parseSinkDump(file: string, text: string): SinkDump {
  const lines = text.split("\n");
  const d: SinkDump = { file, clientAddr: "", helo: "", mailFrom: "", rcpts: [], message: "" };
  let i = 0;
  for (; i < lines.length; i++) {
    const l = lines[i];
    if (l.startsWith("X-Client-Addr: ")) d.clientAddr = l.slice(15);
    else if (l.startsWith("X-Helo-Args: ")) d.helo = l.slice(13);
    else if (l.startsWith("X-Mail-Args: ")) d.mailFrom = l.slice(13);
    else if (l.startsWith("X-Rcpt-Args: ")) d.rcpts.push(l.slice(13));
    else if (l.startsWith("Received: from ")) break;
  }
  if (i >= lines.length) throw new E2eError(`${file} is not an smtp-sink dump:\n${text}`);
  i += 3; // smtp-sink's own Received header is always three lines
  // The dump ends with the message followed by one empty line of smtp-sink's own.
  const rest = lines.slice(i).join("\n");
  if (!rest.endsWith("\n\n") && rest !== "\n") {
    throw new E2eError(`${file}: dump does not end with smtp-sink's empty line`);
  }
  d.message = rest.slice(0, -1);
  return d;
}

/**
 * Every dump in `dir`, in no meaningful order. Caution: smtp-sink names its dumps by a timestamp
 * of one-second resolution, so two messages in the same second sort at random; find a message by
 * its content (`dumpWith`), never by its place in this list.
 */
export async function readSinkDumps(dir: string): Promise<SinkDump[]> {
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) if (e.isFile) names.push(e.name);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  const out: SinkDump[] = [];
  for (const n of names) {
    const p = join(dir, n);
    out.push(parseSinkDump(p, await Deno.readTextFile(p)));
  }
  return out;
}

/**
 * The one dump whose message contains `marker` (a per-send text such as a Message-ID); fails
 * the test when none or several do.
 */
export function dumpWith(dumps: SinkDump[], marker: string): SinkDump {
  const found = dumps.filter((d) => d.message.includes(marker));
  if (found.length !== 1) {
    throw new E2eError(
      `expected exactly one message containing ${
        JSON.stringify(marker)
      }, found ${found.length} of ${dumps.length}`,
    );
  }
  return found[0];
}

/** VmRSS and VmHWM (peak) of a process, in MB; 0 when unreadable. */
export function processMemoryMb(pid: number): { rss: number; hwm: number } {
  try {
    const s = Deno.readTextFileSync(`/proc/${pid}/status`);
    const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(s)?.[1] ?? 0);
    return { rss: Math.round(kb("VmRSS") / 1024), hwm: Math.round(kb("VmHWM") / 1024) };
  } catch {
    return { rss: 0, hwm: 0 };
  }
}

/** Options of {@linkcode swaks}. */
export interface SwaksOptions {
  server: string;
  port?: number;
  from?: string;
  to: string[];
  /** Path of the message file sent with `--data @file`. */
  dataFile?: string;
  helo?: string;
  /** Per-step swaks timeout in seconds (default 30). */
  timeoutS?: number;
  extra?: string[];
}

/** What swaks printed and how it exited. */
export interface SwaksResult {
  code: number;
  transcript: string;
}

/** Runs swaks in the client namespace (bounded). */
export async function swaks(t: Topology, o: SwaksOptions): Promise<SwaksResult> {
  const timeoutS = o.timeoutS ?? 30;
  const args = [
    "swaks",
    "--server",
    o.server,
    "--port",
    String(o.port ?? 25),
    "--from",
    o.from ?? "sender@example.org",
    "--to",
    o.to.join(","),
    "--helo",
    o.helo ?? "client.example.org",
    "--timeout",
    `${timeoutS}s`,
  ];
  if (o.dataFile) args.push("--data", `@${o.dataFile}`);
  args.push(...(o.extra ?? []));
  const r = await t.exec(t.ns.client, args, { timeoutMs: timeoutS * 2_000 + 5_000 });
  return { code: r.code, transcript: r.stdout + r.stderr };
}

/** One server reply in a swaks transcript, with the command it answered. */
export interface SwaksReply {
  /** The command line swaks sent just before ("" for the greeting). */
  after: string;
  code: number;
  /** Reply text lines without the code, joined with "\n". */
  text: string;
  /** True when swaks marked it as an error ("<**"). */
  error: boolean;
}

/** Parses swaks's transcript (" -> " sent, "<- " / "<** " received) into replies. */
export function swaksReplies(transcript: string): SwaksReply[] {
  const out: SwaksReply[] = [];
  let last = "";
  let cur: SwaksReply | undefined;
  for (const line of transcript.split("\n")) {
    const sent = /^ {1,2}-> (.*)$/.exec(line);
    if (sent) {
      cur = undefined;
      last = sent[1];
      continue;
    }
    const got = /^<(-|\*\*) +(\d{3})([ -])(.*)$/.exec(line);
    if (got) {
      if (!cur) {
        cur = { after: last, code: Number(got[2]), text: got[4], error: got[1] === "**" };
        out.push(cur);
      } else cur.text += "\n" + got[4];
      if (got[3] === " ") cur = undefined;
    }
  }
  return out;
}

/** The reply to end-of-data ("."), if swaks got that far. */
export function finalReply(transcript: string): SwaksReply | undefined {
  return swaksReplies(transcript).find((r) => r.after === ".");
}

/**
 * The message swaks sends for `--data @file`: the file plus one CRLF (swaks then sends "." CRLF),
 * whether or not the file ends with CRLF itself (checked against smtp-sink with swaks 20201014).
 */
export function asSent(fileText: string): string {
  return fileText + "\r\n";
}

/** CRLF → LF, as smtp-sink writes its dumps. */
export function lf(s: string): string {
  return s.replaceAll("\r\n", "\n");
}

/**
 * Splits the first header field off a message (with its folded continuation lines).
 * Returns [field, rest]. Works on LF or CRLF text.
 */
export function splitFirstHeader(message: string): [string, string] {
  const nl = message.includes("\r\n") ? "\r\n" : "\n";
  let end = message.indexOf(nl);
  while (end >= 0 && (message[end + nl.length] === " " || message[end + nl.length] === "\t")) {
    end = message.indexOf(nl, end + nl.length);
  }
  if (end < 0) return [message, ""];
  return [message.slice(0, end), message.slice(end + nl.length)];
}

/** Runs a host command (bounded) and returns stdout, throwing on failure. */
export async function hostOutput(cmd: string[], timeoutMs = 10_000): Promise<string> {
  const r = await run(cmd, { timeoutMs });
  if (r.code !== 0) throw new E2eError(`${cmd.join(" ")} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

/** Polls `fn` until it returns true (bounded); returns whether it did. */
export async function eventually(
  fn: () => boolean | Promise<boolean>,
  timeoutMs = 5_000,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await fn()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return await fn();
}

// ---- shared by the end-to-end test files ----

const CRLF = "\r\n";

/** Base64 of the UTF-8 bytes of `s` (for RFC 2047 encoded words in test messages). */
export function utf8Base64(s: string): string {
  return btoa(String.fromCharCode(...new TextEncoder().encode(s)));
}

/** A small text/plain message from sender@example.org with the given subject, body and id. */
export function simpleMessage(
  subject: string,
  body: string,
  id: string,
  to = "b@example.net",
): string {
  return [
    `From: <sender@example.org>`,
    `To: <${to}>`,
    `Subject: ${subject}`,
    `Date: Fri, 27 Nov 2026 10:00:00 +0000`,
    `Message-ID: <${id}@example.org>`,
    `MIME-Version: 1.0`,
    `Content-Type: text/plain; charset=UTF-8`,
    ``,
    body,
  ].join(CRLF);
}

/** What an address looks like inside a Received header: [192.0.2.10] or [IPv6:2001:db8:1::10]. */
export function addressLiteral(ip: string): RegExp {
  const esc = ip.replaceAll(".", "\\.");
  return ip.includes(":") ? new RegExp(`\\[(IPv6:)?${esc}\\]`, "i") : new RegExp(`\\[${esc}\\]`);
}

/** The dump is the sent message with exactly one header added in front: SSG's Received. */
export function assertForwardedIntact(
  d: SinkDump,
  sentFile: string,
  clientIp: string,
  mailFrom: string | RegExp = "<sender@example.org>",
): void {
  const [received, rest] = splitFirstHeader(d.message);
  assert.match(received, /^Received: from client\.example\.org /, "SSG's Received comes first");
  assert.match(received, addressLiteral(clientIp), "Received records the real client address");
  assert.match(received, /\bby ssg\.gateway\.test\b/, "Received names the gateway");
  assert.equal(rest, lf(asSent(sentFile)), "the rest of the message is byte-identical");
  if (typeof mailFrom === "string") assert.equal(d.mailFrom, mailFrom);
  else assert.match(d.mailFrom, mailFrom);
  assert.deepEqual(d.rcpts, ["<b@example.net>"]);
}

/** One test's world: a topology, a temp dir with the rule file, and the SSG processes started. */
export interface World {
  t: Topology;
  dir: string;
  ruleFile: string;
  logFile: string;
  /** Rule-file options this test started with (to write edited versions). */
  ruleOptions: RuleFileOptions;
  /** Starts dist/ssg in the gateway and waits until ready; remembered for failure output. */
  startSsg(): Promise<SsgProcess>;
  /** Writes a file in the temp dir and returns its path. */
  message(name: string, text: string | Uint8Array): Promise<string>;
}

/** Runs `fn` in a fresh world; on failure prints everything SSG said and the gateway's firewall. */
export function e2e(
  name: string,
  rules: Omit<RuleFileOptions, "logFile">,
  fn: (w: World) => Promise<void>,
): void {
  Deno.test({
    name,
    ignore: !canRunNetns(),
    // Child processes are reaped by the topology's dispose; their stream readers finish after it.
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      await using t = await createTopology();
      await using tmp = await tempDir();
      const logFile = join(tmp.path, "ssg.log");
      const ruleFile = join(tmp.path, "rules.yaml");
      const ruleOptions: RuleFileOptions = { ...rules, logFile };
      await Deno.writeTextFile(ruleFile, ruleFileText(ruleOptions));
      const started: SsgProcess[] = [];
      const w: World = {
        t,
        dir: tmp.path,
        ruleFile,
        logFile,
        ruleOptions,
        async startSsg() {
          const p = await startSsg(t, ruleFile, logFile);
          started.push(p);
          return p;
        },
        async message(n, text) {
          const p = join(tmp.path, n);
          if (typeof text === "string") await Deno.writeTextFile(p, text);
          else await Deno.writeFile(p, text);
          return p;
        },
      };
      try {
        await fn(w);
      } catch (e) {
        console.error(`\n===== ${name}: FAILED; what SSG said =====`);
        for (const p of started) console.error(p.transcript());
        if (started.length === 0) {
          try {
            console.error(`--- ssg log file ---\n${await Deno.readTextFile(logFile)}`);
          } catch { /* never written */ }
        }
        console.error(await firewallDump(t, t.ns.gateway).catch((x) => String(x)));
        throw e;
      } finally {
        for (const p of started) await p[Symbol.asyncDispose]();
      }
    },
  });
}
