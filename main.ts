/**
 * SSG — the Secured SMTP Gateway. Command line and wiring only.
 *
 *   ssg run FILE.yaml     divert SMTP to the protected servers, judge every message, relay clean mail
 *   ssg check FILE.yaml   validate a rule file and summarise it (exit 0 valid, 2 invalid)
 *   ssg explain FILE.yaml MESSAGE.eml [...]   show rule by rule what matched and the verdict
 *   ssg quarantine list|show|release|delete ... --rules FILE.yaml
 *
 * Data flow (one stage per directory): ffi/ (NFQUEUE in a Worker) → src/divert/ (rewrite, flow
 * table) → src/smtp/ (responder, relay) → src/policy/ (verdict) → the server. This file builds the
 * parts from the rule file, installs and removes the firewall rules, and handles signals:
 * SIGTERM/SIGINT stop cleanly (sessions get 421, rules removed), SIGHUP reloads the rule file (a bad
 * file is refused and the old rules stay), SIGUSR1 re-opens the log file.
 */
import { ConfigError } from "./src/config/config_error.ts";
import type { SsgConfig } from "./src/config/config.ts";
import { loadConfig } from "./src/config/load_config.ts";
import { RELOADABLE, reloadPlan } from "./src/config/reload_plan.ts";
import { summarizeConfig } from "./src/config/summarize_config.ts";
import { AppLog, type EventLog } from "./src/log/log.ts";
import { PolicyEngine } from "./src/policy/policy_engine.ts";
import { DecodePool, decodeWorkerCount, type FactsDecoder } from "./src/policy/decode_pool.ts";
import type { Judge, RecipientCheck, StartChecks } from "./src/policy/verdict.ts";
import { checkPrivileges } from "./src/divert/privileges.ts";
import { Firewall } from "./src/divert/firewall.ts";
import { pickResponderAddresses } from "./src/divert/responder_address.ts";
import { Acceptor } from "./src/smtp/acceptor.ts";
import { VERSION } from "./src/version.ts";
import { explainCommand } from "./src/policy/explain.ts";
import { StateStore } from "./src/state/state_store.ts";
import { GatewayActions } from "./src/action/action_runner.ts";
import { quarantineCommand } from "./src/action/quarantine_command.ts";
import { denoConnect } from "./src/action/send_message.ts";
import { DivertService } from "./ffi/divert_service.ts";
import { relaySourceSettings } from "./src/config/relay_source.ts";
import { RelayRegistry } from "./src/flow/relay_registry.ts";
import { RelayConnector } from "./src/smtp/relay_connector.ts";
import type { EarlyFacts } from "./src/smtp/session_context.ts";
import { probeLibrary } from "./ffi/probe.ts";

const USAGE = `SSG ${VERSION} — the Secured SMTP Gateway

Usage:
  ssg run FILE.yaml     Divert SMTP for the protected servers in FILE, judge every message with
                        its rules, relay clean mail. Runs in the foreground; SIGTERM/SIGINT stop
                        it cleanly, SIGHUP reloads FILE (and re-opens the log), SIGUSR1 re-opens
                        the log file.
  ssg check FILE.yaml   Validate FILE and print a summary. Exit 0 if valid, 2 with
                        "file:line:column: what is wrong" lines otherwise.
  ssg explain FILE.yaml MESSAGE.eml [--client IP] [--from ADDR] [--to ADDR]...
                        [--helo NAME] [--server IP] [--tls] [--auth]
                        Show, rule by rule, what matched in MESSAGE and why, and the verdict.
                        Needs no root and changes nothing.
  ssg quarantine list [--json] | show ID [--raw] | release ID | delete ID  --rules FILE.yaml
                        Inspect the quarantine; release delivers the original message to its
                        original server and removes it once that server said 250.
  ssg --help            This text.
  ssg --version         The version.

Needs root (CAP_NET_ADMIN) and libnetfilter_queue.so.1 for "run". See README.md.`;

const EXIT_USAGE = 64;
const EXIT_CONFIG = 2;
const EXIT_RUNTIME = 1;

async function main(args: string[]): Promise<number> {
  const [cmd, ...rest] = args;
  if (cmd === undefined || cmd === "--help" || cmd === "-h" || cmd === "help") {
    console.log(USAGE);
    return cmd === undefined ? EXIT_USAGE : 0;
  }
  if (cmd === "--version" || cmd === "-V" || cmd === "version") {
    console.log(`ssg ${VERSION}`);
    return 0;
  }
  if (cmd === "explain") return await explainCommand(rest);
  if (cmd === "quarantine") return await quarantineCommand(rest);
  if (cmd === "check" || cmd === "run") {
    if (rest.length !== 1) {
      console.error(`ssg ${cmd}: expected exactly one rule file\n\n${USAGE}`);
      return EXIT_USAGE;
    }
    const config = await readConfig(rest[0]);
    if (!config) return EXIT_CONFIG;
    if (cmd === "check") {
      console.log(summarizeConfig(config));
      return 0;
    }
    return await run(config);
  }
  console.error(`ssg: unknown command "${cmd}"\n\n${USAGE}`);
  return EXIT_USAGE;
}

/** Loads the rule file, printing every problem as file:line:column; undefined when invalid. */
async function readConfig(path: string): Promise<SsgConfig | undefined> {
  try {
    return await loadConfig(path);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.format());
      return undefined;
    }
    if (err instanceof Deno.errors.NotFound) {
      console.error(`${path}: cannot read rule file: no such file`);
      return undefined;
    }
    console.error(`${path}: cannot load rule file: ${(err as Error).message}`);
    return undefined;
  }
}

/** `ssg run`: the gateway until a signal ends it. */
async function run(config: SsgConfig): Promise<number> {
  // Refuse to start half-configured: privileges and the library first, before touching anything.
  const privilegeProblem = checkPrivileges();
  if (privilegeProblem) {
    console.error(`ssg: ${privilegeProblem}`);
    return EXIT_RUNTIME;
  }
  const libraryProblem = probeLibrary();
  if (libraryProblem) {
    console.error(`ssg: ${libraryProblem}`);
    return EXIT_RUNTIME;
  }
  let responder: { ipv4?: string; ipv6?: string };
  try {
    responder = pickResponderAddresses(config.gateway, Deno.networkInterfaces());
  } catch (err) {
    console.error(`ssg: ${describe(err)}`);
    return EXIT_RUNTIME;
  }
  if (!responder.ipv4 && !responder.ipv6) {
    console.error(
      "ssg: no local address to answer diverted connections on: set gateway.responder.ipv4/ipv6",
    );
    return EXIT_RUNTIME;
  }

  // relay.source: client needs a port range of its own for the relay sockets (relay_source.ts).
  const relaySource = relaySourceSettings(config.relay);
  const { first, last } = relaySource.ports;
  const responderPort = config.gateway.responder.port;
  if (relaySource.mode === "client" && responderPort >= first && responderPort <= last) {
    console.error(
      `ssg: gateway.responder.port ${responderPort} lies in relay.source_ports ${first}-${last}`,
    );
    return EXIT_RUNTIME;
  }
  const registry = relaySource.mode === "client" ? new RelayRegistry(first, last) : undefined;

  const log = await AppLog.open({ file: config.log.file, level: config.log.level });
  log.event("ssg.start", {
    version: VERSION,
    file: config.file,
    pid: Deno.pid,
    protect: config.gateway.protect.map((c) => c.text),
    ports: config.gateway.ports.map(String),
    responder4: responder.ipv4,
    responder6: responder.ipv6,
    responder_port: config.gateway.responder.port,
    rules: config.rules.length,
    relay_source: relaySource.mode,
    relay_source_ports: registry ? `${first}-${last}` : undefined,
  });
  if (registry) {
    warnEphemeralOverlap(first, last, log);
    if (registry.size < config.smtp.maxSessions) {
      // Each session holds at most one relay connection: past the range, sessions use the
      // gateway's address (logged per connection as relay.source_ports_exhausted).
      log.event("relay.source_ports_small", {
        ports: registry.size,
        max_sessions: config.smtp.maxSessions,
      }, "warning");
    }
  }

  const firewall = new Firewall(config.gateway, responder, log, {
    relaySource: registry ? { first, last } : undefined,
  });
  const connector = new RelayConnector({ settings: relaySource, registry, log });
  let divert: DivertService | undefined;
  let acceptor: Acceptor | undefined;
  let actions: GatewayActions | undefined;
  let state: StateStore | undefined;
  let decode: FactsDecoder | undefined;
  let stopping: Promise<void> | undefined;
  const stopHooks: (() => Promise<void>)[] = [];
  const stop = (reason: string): Promise<void> => {
    stopping ??= (async () => {
      log.event("ssg.stop", { reason });
      await acceptor?.close();
      for (const hook of stopHooks) await hook().catch(() => {});
      await firewall.remove().catch((e) =>
        log.event("firewall.error", { op: "remove", error: String(e) }, "error")
      );
      await divert?.close();
      await actions?.settled();
      state?.close();
      log.event("ssg.stopped", { reason });
    })();
    return stopping;
  };

  try {
    let failed = false;
    divert = await DivertService.start({
      config: config.gateway,
      responder4: responder.ipv4,
      responder6: responder.ipv6,
      log,
      relayRegistry: registry,
      // A relay leg is silent while its client sends a slow message or the server works on
      // end-of-data: its flow must outlive the longest of those waits (plus a margin).
      relayIdleSeconds: Math.max(
        config.gateway.flows.idleSeconds,
        config.smtp.timeouts.session,
        config.relay.dataTimeout,
        config.relay.replyTimeout,
      ) + 60,
      // The packet Worker died: nothing rewrites diverted packets any more. Stop (rules removed,
      // so new connections reach the servers directly through queue bypass) and exit non-zero so
      // a supervisor restarts us.
      onFailure: (err) => {
        failed = true;
        log.event("divert.failure", { error: describe(err) }, "error");
        void stop("packet worker failed");
      },
    });
    const d = divert;
    // Memory across messages (counters, dynamic lists, bulk fingerprints), persisted. A client IP
    // blacklisted there — by a rule, a threshold or a spamtrap — is dropped at the packet level.
    const store = state = StateStore.open(config.state?.file ?? ":memory:", {
      maxRows: config.state?.maxRows,
      onBlockClient: (ip, untilMs) => blockClient(ip, untilMs),
    });
    // Decoding on the other cores (judging and the state stay on this thread).
    const workers = decodeWorkerCount(
      navigator.hardwareConcurrency,
      Deno.env.get("SSG_DECODE_WORKERS"),
    );
    // A lone session decodes here (lowest latency); with several, decoding goes to the workers.
    const pool = workers > 0
      ? new DecodePool(workers, { offload: () => (acceptor?.activeSessions ?? 0) > 1 })
      : undefined;
    if (pool) stopHooks.push(() => Promise.resolve(pool.close()));
    decode = pool?.decode;
    const policy = new PolicyHolder(new PolicyEngine(config, log, { state: store, decode }));
    const blockClient = (ip: string, untilMs: number) => {
      if (policy.isAllowlisted("client_ip", ip)) return; // allowlists win over blacklists
      d.block(ip, untilMs);
      log.event("divert.block", { client: ip, until: new Date(untilMs).toISOString() });
    };
    for (const b of store.activeClientBlocks(Date.now())) blockClient(b.ip, b.untilMs);
    d.blockNetworks(policy.staticBlockedClients());
    actions = new GatewayActions({
      hostname: config.gateway.hostname,
      relay: config.relay,
      connect: denoConnect,
      log,
      quarantine: config.quarantine,
      alert: config.alert,
      record: (v, e, m) => policy.record(v, e, m),
      addBlacklist: (entry) => store.addBlacklist(entry),
      isAllowlisted: (k, v) => policy.isAllowlisted(k, v),
    });
    const recovered = await actions.store?.recover();
    if (recovered) log.event("quarantine.recover", { removed_partial: recovered });
    acceptor = new Acceptor({
      addresses: [responder.ipv4, responder.ipv6].filter((a): a is string => !!a),
      port: config.gateway.responder.port,
      config,
      judge: policy.judge,
      checkRecipient: policy.checkRecipient,
      prefetch: policy.prefetch,
      startChecks: policy.startChecks,
      actions,
      log,
      originalDestination: (ip, port) => d.waitFor(ip, port, 500),
      // The relay leg leaves with the client's or the gateway's address (relay.source).
      connect: connector.connect,
    });
    acceptor.start();
    // Only now divert packets: the queue is bound and the responder listens. install() first
    // removes whatever a killed SSG left behind.
    await firewall.install();
    installSignals(
      config,
      log,
      policy,
      store,
      d,
      acceptor,
      actions,
      (why) => void stop(why),
      decode,
    );
    // One summary line every STATS_INTERVAL_MS, and one at stop: what an administrator graphs.
    const logStats = async () => {
      log.event("ssg.stats", {
        ...acceptor!.stats(),
        ...connector.stats(),
        ...pick(await d.stats(), STATS_PACKET),
      });
    };
    const statsTimer = setInterval(() => void logStats(), STATS_INTERVAL_MS);
    Deno.unrefTimer(statsTimer as unknown as number);
    stopHooks.push(async () => {
      clearInterval(statsTimer);
      await logStats();
    });
    log.event("ssg.ready", {
      backend: firewall.backend,
      queue: config.gateway.queue.num,
      responder4: responder.ipv4,
      responder6: responder.ipv6,
      port: config.gateway.responder.port,
    });
    await acceptor.closed;
    await stop("acceptor closed");
    return failed ? EXIT_RUNTIME : 0;
  } catch (err) {
    log.event("ssg.error", { error: describe(err) }, "error");
    console.error(`ssg: ${describe(err)}`);
    await stop("start-up failed");
    return EXIT_RUNTIME;
  } finally {
    await log.close();
  }
}

/** How often `ssg.stats` is logged. */
const STATS_INTERVAL_MS = 5 * 60_000;
/** The packet counters worth a line every few minutes (the full set is logged at stop). */
const STATS_PACKET = [
  "nfqPackets",
  "nfqEnobufs",
  "verdictErrors",
  "flowsActive",
  "flowsCreated",
  "flowsHalfOpen",
  "synsSeen",
  "droppedBlocked",
  "droppedTableFull",
  "droppedInvalid",
  "droppedUnreadableInbound",
  "dropped",
];

/**
 * Warns when relay.source_ports overlaps the kernel's ephemeral range: a port the kernel gave
 * another socket is then skipped (EADDRINUSE), and that socket's SMTP to a server is queued.
 */
function warnEphemeralOverlap(first: number, last: number, log: EventLog): void {
  try {
    const [lo, hi] = Deno.readTextFileSync("/proc/sys/net/ipv4/ip_local_port_range").trim()
      .split(/\s+/).map(Number);
    if (first <= hi && last >= lo) {
      log.event("relay.source_ports_overlap", {
        ports: `${first}-${last}`,
        ephemeral: `${lo}-${hi}`,
        hint: "choose relay.source_ports outside net.ipv4.ip_local_port_range",
      }, "warning");
    }
  } catch { /* not Linux, or no /proc: nothing to compare */ }
}

function pick(all: Record<string, number>, keys: string[]): Record<string, number> {
  return Object.fromEntries(keys.filter((k) => k in all).map((k) => [k, all[k]]));
}

/** Holds the live policy so that SIGHUP can swap it without touching running sessions. */
class PolicyHolder {
  #engine: PolicyEngine;
  constructor(engine: PolicyEngine) {
    this.#engine = engine;
  }
  /** The judge sessions call; always the current engine. */
  readonly judge: Judge = (message, envelope) => this.#engine.judge(message, envelope);
  /** The RCPT-time check (greylisting); always the current engine. */
  readonly checkRecipient: RecipientCheck = (envelope) =>
    this.#engine.checksRecipients ? this.#engine.checkRecipient(envelope) : undefined;
  /** Starts early DNS-list look-ups (current engine; a no-op when no rule tests dnsbl). */
  readonly prefetch = (known: EarlyFacts): void => this.#engine.prefetch(known);
  /** The checks started at MAIL FROM (SPF); always the current engine. */
  readonly startChecks: StartChecks = (start) => this.#engine.startChecks(start);
  /** Records a verdict and returns the thresholds' effects (current engine). */
  record(...args: Parameters<PolicyEngine["record"]>): ReturnType<PolicyEngine["record"]> {
    return this.#engine.record(...args);
  }
  /** Whether a client/sender is on the static allowlist (current engine). */
  isAllowlisted(...args: Parameters<PolicyEngine["isAllowlisted"]>): boolean {
    return this.#engine.isAllowlisted(...args);
  }
  /** The static blacklist's client networks (current engine). */
  staticBlockedClients(): string[] {
    return this.#engine.staticBlockedClients();
  }
  /** Replaces the engine (after a successful reload). */
  replace(engine: PolicyEngine): void {
    this.#engine = engine;
  }
}

function installSignals(
  config: SsgConfig,
  log: AppLog,
  policy: PolicyHolder,
  state: StateStore,
  divert: DivertService,
  acceptor: Acceptor,
  actions: GatewayActions,
  stop: (why: string) => void,
  decode?: FactsDecoder,
): void {
  // What runs now: the start-up file, then each reload's result with the restart-only parts kept.
  let running = config;
  Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
  Deno.addSignalListener("SIGINT", () => stop("SIGINT"));
  Deno.addSignalListener("SIGUSR1", () => {
    log.reopen();
    log.event("log.reopen", {});
  });
  Deno.addSignalListener("SIGHUP", () => {
    log.reopen();
    void reload(running, log, policy, state, divert, decode).then((applied) => {
      if (!applied) return;
      running = applied;
      acceptor.reconfigure(applied);
      actions.reconfigure({ relay: applied.relay });
      log.setLevel(applied.log.level);
    });
  });
}

/**
 * Re-reads the rule file and returns the configuration to run on from now on (undefined when the
 * file was refused). What a reload applies and what needs a restart is `reload_plan.ts`'s: the
 * policy here, smtp/relay/log.level by the caller; every changed restart-only key is named in a
 * `config.reload.partial` warning. A bad file is refused with its reasons logged and the old
 * configuration stays in force, all of it.
 */
async function reload(
  running: SsgConfig,
  log: EventLog,
  policy: PolicyHolder,
  state: StateStore,
  divert: DivertService,
  decode?: FactsDecoder,
): Promise<SsgConfig | undefined> {
  const config = running;
  try {
    const next = await loadConfig(config.file);
    const plan = reloadPlan(running, next);
    policy.replace(new PolicyEngine(next, log, { state, decode }));
    divert.blockNetworks(policy.staticBlockedClients());
    // Allowlists win over blacklists, also at the packet level: a client the new file allowlists
    // is unblocked now (its dynamic entry stays recorded, but no longer takes effect). This is
    // how an administrator lifts a wrong block: add the client to allowlist.clients, SIGHUP.
    for (const b of state.activeClientBlocks(Date.now())) {
      if (!policy.isAllowlisted("client_ip", b.ip)) continue;
      divert.block(b.ip, 0);
      log.event("divert.unblock", { client: b.ip, why: "allowlisted" });
    }
    if (plan.ignored.length > 0) {
      log.event("config.reload.partial", {
        file: config.file,
        ignored: plan.ignored,
        note: "these settings need a restart; the running values stay in force",
      }, "warning");
    }
    log.event("config.reload", {
      file: config.file,
      rules: next.rules.length,
      applied: RELOADABLE.join(","),
    });
    return plan.config;
  } catch (err) {
    const reason = err instanceof ConfigError ? err.format() : describe(err);
    log.event("config.reload.refused", {
      file: config.file,
      reason,
      kept: "the running configuration",
    }, "error");
    return undefined;
  }
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    return err.cause ? `${err.message} (${describe(err.cause)})` : err.message;
  }
  return String(err);
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
