/**
 * SSG — the Secured SMTP Gateway. Command line and wiring only.
 *
 *   ssg run FILE.yaml     divert SMTP to the protected servers, judge every message, relay clean mail
 *   ssg check FILE.yaml   validate a rule file and summarise it (exit 0 valid, 2 invalid)
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
import { summarizeConfig } from "./src/config/summarize_config.ts";
import { AppLog, type EventLog } from "./src/log/log.ts";
import { PolicyEngine } from "./src/policy/policy_engine.ts";
import type { Judge } from "./src/policy/verdict.ts";
import { checkPrivileges } from "./src/divert/privileges.ts";
import { Firewall } from "./src/divert/firewall.ts";
import { pickResponderAddresses } from "./src/divert/responder_address.ts";
import { Acceptor } from "./src/smtp/acceptor.ts";
import { VERSION } from "./src/version.ts";
import { DivertService } from "./ffi/divert_service.ts";
import { probeLibrary } from "./ffi/probe.ts";

const USAGE = `SSG ${VERSION} — the Secured SMTP Gateway

Usage:
  ssg run FILE.yaml     Divert SMTP for the protected servers in FILE, judge every message with
                        its rules, relay clean mail. Runs in the foreground; SIGTERM/SIGINT stop
                        it cleanly, SIGHUP reloads FILE, SIGUSR1 re-opens the log file.
  ssg check FILE.yaml   Validate FILE and print a summary. Exit 0 if valid, 2 with
                        "file:line:column: what is wrong" lines otherwise.
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
  });

  const firewall = new Firewall(config.gateway, responder, log);
  let divert: DivertService | undefined;
  let acceptor: Acceptor | undefined;
  let stopping: Promise<void> | undefined;
  const stop = (reason: string): Promise<void> => {
    stopping ??= (async () => {
      log.event("ssg.stop", { reason });
      await acceptor?.close();
      await firewall.remove().catch((e) =>
        log.event("firewall.error", { op: "remove", error: String(e) }, "error")
      );
      await divert?.close();
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
      // The packet Worker died: nothing rewrites diverted packets any more. Stop (rules removed,
      // so new connections reach the servers directly through queue bypass) and exit non-zero so
      // a supervisor restarts us.
      onFailure: (err) => {
        failed = true;
        log.event("divert.failure", { error: describe(err) }, "error");
        void stop("packet worker failed");
      },
    });
    const policy = new PolicyHolder(new PolicyEngine(config.rules, log));
    const d = divert;
    acceptor = new Acceptor({
      addresses: [responder.ipv4, responder.ipv6].filter((a): a is string => !!a),
      port: config.gateway.responder.port,
      config,
      judge: policy.judge,
      log,
      originalDestination: (ip, port) => d.waitFor(ip, port, 500),
    });
    acceptor.start();
    // Only now divert packets: the queue is bound and the responder listens. install() first
    // removes whatever a killed SSG left behind.
    await firewall.install();
    installSignals(config, log, policy, (why) => void stop(why));
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

/** Holds the live policy so that SIGHUP can swap it without touching running sessions. */
class PolicyHolder {
  #engine: PolicyEngine;
  constructor(engine: PolicyEngine) {
    this.#engine = engine;
  }
  /** The judge sessions call; always the current engine. */
  readonly judge: Judge = (message, envelope) => this.#engine.judge(message, envelope);
  /** Replaces the engine (after a successful reload). */
  replace(engine: PolicyEngine): void {
    this.#engine = engine;
  }
}

function installSignals(
  config: SsgConfig,
  log: AppLog,
  policy: PolicyHolder,
  stop: (why: string) => void,
): void {
  Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
  Deno.addSignalListener("SIGINT", () => stop("SIGINT"));
  Deno.addSignalListener("SIGUSR1", () => {
    log.reopen();
    log.event("log.reopen", {});
  });
  Deno.addSignalListener("SIGHUP", () => void reload(config, log, policy));
}

/**
 * Re-reads the rule file. Only the policy (the `rules:` section) changes on reload; gateway,
 * limits and log settings need a restart, and a change to them is logged as ignored.
 * A bad file is refused with its reasons logged and the old rules stay in force.
 */
async function reload(config: SsgConfig, log: EventLog, policy: PolicyHolder): Promise<void> {
  try {
    const next = await loadConfig(config.file);
    policy.replace(new PolicyEngine(next.rules, log));
    if (JSON.stringify(next.gateway) !== JSON.stringify(config.gateway)) {
      log.event("config.reload.partial", {
        file: config.file,
        note: "gateway section changed; restart to apply it",
      }, "warning");
    }
    log.event("config.reload", { file: config.file, rules: next.rules.length });
  } catch (err) {
    const reason = err instanceof ConfigError ? err.format() : describe(err);
    log.event("config.reload.refused", { file: config.file, reason, kept: "old rules" }, "error");
  }
}

function describe(err: unknown): string {
  if (err instanceof Error) return err.cause ? `${err.message} (${describe(err.cause)})` : err.message;
  return String(err);
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
