/**
 * The diversion rules SSG installs at start and removes at exit: TCP to the protected networks
 * and ports goes to the NFQUEUE, and so do the responder's replies; nothing else is queued.
 *
 * Two backends, chosen at start:
 * - nftables, when the kernel has the `queue` statement (CONFIG_NFT_QUEUE; routers usually do):
 *   one table `inet ssg` loaded atomically with `nft -f /dev/stdin`, chains at raw priority (-300) on
 *   prerouting and output, and the guard at mangle priority (-150);
 * - iptables/ip6tables otherwise (this dev kernel lacks `nft queue`, ENVIRONMENT.md): own chains
 *   `SSG-PRE`/`SSG-OUT` in the raw table and `SSG-GUARD` in mangle, each entered by ONE jump rule
 *   commented "ssg" at the top of PREROUTING/OUTPUT, so removal never touches other rules.
 *
 * Each diverted packet is also `notrack`ed: SSG does the address translation itself, and the
 * kernel's conntrack/NAT state for the same packets would fight it (performance-anchors.md §2.3).
 * Inbound diversion hooks PREROUTING only, never OUTPUT: connections the gateway itself makes to
 * a protected server — above all SSG's own relay connections to the real server — must not be
 * diverted back to the responder.
 *
 * The relay source (`relay.source: client`, plan field `relaySource`) adds two rules per family,
 * both `notrack`ed and queued like the others (see diverter.ts for why they never meet the
 * diverted flow): on OUTPUT, TCP from the relay port range to the protected networks and ports
 * (SSG's client-mode relay sockets, bound to that range; SSG's own mail and gateway-mode relay
 * sockets use the kernel's ephemeral ports, are not queued and keep the gateway's address); on
 * PREROUTING, TCP FROM the protected networks and ports (the servers' replies to the clients,
 * routed through the gateway), on any interface: they come from the server side.
 *
 * `bypass` (--queue-bypass) makes the rules act as ACCEPT when no process is bound to the queue:
 * if SSG dies, new connections reach the real server instead of a black hole.
 *
 * The guard (optional, on by default): packets to the responder address and port that did NOT
 * come through SSG's rewrite are dropped. The queue Worker sets `DIVERT_MARK` in the verdict of
 * every rewritten inbound packet; the verdict is applied before the mangle-priority guard runs.
 * Without it anyone could talk to the responder directly, with no flow entry behind the
 * connection. (The responder refuses such connections too; this stops them at the packet level.)
 *
 * What it trusts: the validated configuration. Interface names are checked again here because
 * they are spliced into an nft ruleset text. What it limits: every command runs with a time bound.
 * Alternative rejected: `iptables-restore --noflush` (atomic, but the chain-declaration semantics
 * differ between the legacy and nft variants); per-rule `iptables` calls with the jump rules
 * added LAST give the same effect: traffic only enters complete chains.
 *
 * Stale rules: a killed SSG leaves its rules; with `bypass` they are harmless (nothing bound), but
 * `cleanupStale()` removes both backends' rules at every start, before `install()`.
 */
import type { Cidr, GatewayConfig } from "../config/config.ts";
import type { EventLog } from "../log/log.ts";

/** skb->mark that the queue Worker puts on rewritten inbound packets; the guard checks it. */
export const DIVERT_MARK = 0x53470000;
/** The comment on every iptables jump rule SSG adds. */
export const RULE_COMMENT = "ssg";
/** Chains (iptables backend). */
export const CHAIN_PRE = "SSG-PRE";
/** Chain for locally generated packets (the responder's replies), raw table. */
export const CHAIN_OUT = "SSG-OUT";
/** Chain of the guard, mangle table (drops responder traffic without DIVERT_MARK). */
export const CHAIN_GUARD = "SSG-GUARD";
/** The nftables table (family inet). */
export const NFT_TABLE = "ssg";

/** Which tool installs the rules. */
export type FirewallBackend = "nft" | "iptables";

/** What to divert: the firewall's view of the configuration. */
export interface DiversionPlan {
  /** Protected networks (both families). */
  protect: Cidr[];
  /** Destination ports diverted. */
  ports: number[];
  /** Only packets arriving on these interfaces (empty: any). */
  interfaces: string[];
  /** Responder addresses; required for each family present in `protect`. */
  responder4?: string;
  /** IPv6 counterpart of `responder4`. */
  responder6?: string;
  /** Responder TCP port. */
  responderPort: number;
  /** NFQUEUE number. */
  queueNum: number;
  /** Guard mark (see module doc); 0 or undefined: no guard. */
  guardMark?: number;
  /** The relay source port range (`relay.source: client`); absent: no relay rules. */
  relaySource?: { first: number; last: number };
}

/** One command the firewall runs: argv, optional stdin. */
export interface FirewallCommand {
  /** Program and arguments, e.g. ["nft", "-f", "/dev/stdin"]. */
  argv: string[];
  /** Text piped to the program's stdin (an nft ruleset); absent: stdin is null. */
  stdin?: string;
}

/** Result of running a FirewallCommand. `code` -1: the program is not installed. */
export interface CommandResult {
  /** Exit code; -1: the program is not installed; -2: it could not be run otherwise. */
  code: number;
  /** Captured standard output. */
  stdout: string;
  /** Captured standard error, or why the program could not be run. */
  stderr: string;
}

/** Runs a FirewallCommand; never throws (a missing program gives code -1). */
export type CommandRunner = (cmd: FirewallCommand) => Promise<CommandResult>;

/** Firewall set-up failed: no usable backend, or a rule was refused. */
export class FirewallError extends Error {
  /** The error class name, "FirewallError". */
  override name = "FirewallError";
  /** Creates the error; `options.cause` is kept as `cause`. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

// iptables interface names: 1..15 chars; "+" at the end is iptables' wildcard.
const IFNAME = /^[A-Za-z0-9_.@-]{1,15}\+?$/;

/** The plan for `config`, with responder addresses already resolved from "auto". */
export function planFromConfig(
  config: GatewayConfig,
  responders: { ipv4?: string; ipv6?: string },
  opts: { guard?: boolean; relaySource?: { first: number; last: number } } = {},
): DiversionPlan {
  return {
    ...(opts.relaySource ? { relaySource: opts.relaySource } : {}),
    protect: config.protect,
    ports: config.ports,
    interfaces: config.interfaces,
    responder4: responders.ipv4,
    responder6: responders.ipv6,
    responderPort: config.responder.port,
    queueNum: config.queue.num,
    guardMark: (opts.guard ?? true) ? DIVERT_MARK : 0,
  };
}

function validate(plan: DiversionPlan): void {
  for (const i of plan.interfaces) {
    if (!IFNAME.test(i)) throw new FirewallError(`invalid interface name ${JSON.stringify(i)}`);
  }
  for (const fam of [4, 6] as const) {
    if (plan.protect.some((c) => c.family === fam) && !responder(plan, fam)) {
      throw new FirewallError(
        `IPv${fam} networks are protected but there is no IPv${fam} responder address`,
      );
    }
  }
  const ports = [...plan.ports, plan.responderPort];
  if (ports.some((p) => !Number.isInteger(p) || p < 1 || p > 65535)) {
    throw new FirewallError(`invalid port in ${ports.join(",")}`);
  }
  const rs = plan.relaySource;
  if (
    rs && (!Number.isInteger(rs.first) || !Number.isInteger(rs.last) || rs.first < 1 ||
      rs.last > 65535 || rs.last < rs.first)
  ) {
    throw new FirewallError(`invalid relay source port range ${rs.first}-${rs.last}`);
  }
  if (rs && plan.responderPort >= rs.first && plan.responderPort <= rs.last) {
    throw new FirewallError(
      `the responder port ${plan.responderPort} must not be in the relay source ports`,
    );
  }
  if (plan.ports.includes(plan.responderPort)) {
    // The rewritten packets would match the inbound rule again and be queued twice.
    throw new FirewallError(`the responder port ${plan.responderPort} must not be a diverted port`);
  }
}

function responder(plan: DiversionPlan, fam: 4 | 6): string | undefined {
  return fam === 4 ? plan.responder4 : plan.responder6;
}

function families(plan: DiversionPlan): (4 | 6)[] {
  return ([4, 6] as const).filter((f) => plan.protect.some((c) => c.family === f));
}

/** iptables or ip6tables with the lock wait every call should have. */
function ipt(fam: 4 | 6, ...args: string[]): FirewallCommand {
  return { argv: [fam === 4 ? "iptables" : "ip6tables", "-w", "5", ...args] };
}

/**
 * The iptables/ip6tables commands that install `plan`, in order: chains, their rules, and the
 * jump rules last. Pure; throws FirewallError on an invalid plan.
 */
export function iptablesInstallCommands(plan: DiversionPlan): FirewallCommand[] {
  validate(plan);
  const out: FirewallCommand[] = [];
  const q = ["--queue-num", String(plan.queueNum), "--queue-bypass"];
  for (const fam of families(plan)) {
    const r = responder(plan, fam)!;
    out.push(ipt(fam, "-t", "raw", "-N", CHAIN_PRE), ipt(fam, "-t", "raw", "-N", CHAIN_OUT));
    const ifaces = plan.interfaces.length > 0 ? plan.interfaces : [undefined];
    for (const iface of ifaces) {
      for (const cidr of plan.protect.filter((c) => c.family === fam)) {
        for (const port of plan.ports) {
          const match = [
            ...(iface ? ["-i", iface] : []),
            "-p",
            "tcp",
            "-d",
            cidr.text,
            "--dport",
            String(port),
          ];
          out.push(ipt(fam, "-t", "raw", "-A", CHAIN_PRE, ...match, "-j", "CT", "--notrack"));
          out.push(ipt(fam, "-t", "raw", "-A", CHAIN_PRE, ...match, "-j", "NFQUEUE", ...q));
        }
      }
    }
    const back = ["-p", "tcp", "-s", r, "--sport", String(plan.responderPort)];
    out.push(ipt(fam, "-t", "raw", "-A", CHAIN_OUT, ...back, "-j", "CT", "--notrack"));
    out.push(ipt(fam, "-t", "raw", "-A", CHAIN_OUT, ...back, "-j", "NFQUEUE", ...q));
    if (plan.relaySource) {
      const range = `${plan.relaySource.first}:${plan.relaySource.last}`;
      for (const cidr of plan.protect.filter((c) => c.family === fam)) {
        for (const port of plan.ports) {
          const relayOut = ["-p", "tcp", "-d", cidr.text, "--dport", String(port)];
          relayOut.push("--sport", range);
          const relayIn = ["-p", "tcp", "-s", cidr.text, "--sport", String(port)];
          for (const [chain, match] of [[CHAIN_OUT, relayOut], [CHAIN_PRE, relayIn]] as const) {
            out.push(ipt(fam, "-t", "raw", "-A", chain, ...match, "-j", "CT", "--notrack"));
            out.push(ipt(fam, "-t", "raw", "-A", chain, ...match, "-j", "NFQUEUE", ...q));
          }
        }
      }
    }
    if (plan.guardMark) {
      out.push(ipt(fam, "-t", "mangle", "-N", CHAIN_GUARD));
      out.push(ipt(
        fam,
        ...["-t", "mangle", "-A", CHAIN_GUARD, "-p", "tcp", "-d", r],
        ...[
          "--dport",
          String(plan.responderPort),
          "-m",
          "mark",
          "!",
          "--mark",
          hex(plan.guardMark),
        ],
        ...["-j", "DROP"],
      ));
      out.push(ipt(fam, "-t", "mangle", "-I", "PREROUTING", "1", ...jump(CHAIN_GUARD)));
    }
    out.push(ipt(fam, "-t", "raw", "-I", "PREROUTING", "1", ...jump(CHAIN_PRE)));
    out.push(ipt(fam, "-t", "raw", "-I", "OUTPUT", "1", ...jump(CHAIN_OUT)));
  }
  return out;
}

function jump(chain: string): string[] {
  return ["-m", "comment", "--comment", RULE_COMMENT, "-j", chain];
}

function hex(n: number): string {
  return "0x" + (n >>> 0).toString(16);
}

/** Where SSG's iptables chains hang: [table, parent chain, own chain]. */
export const IPTABLES_HOOKS: readonly (readonly [string, string, string])[] = [
  ["raw", "PREROUTING", CHAIN_PRE],
  ["raw", "OUTPUT", CHAIN_OUT],
  ["mangle", "PREROUTING", CHAIN_GUARD],
];

/**
 * The commands that remove SSG's iptables rules for one family and table: delete the jump rule
 * (run repeatedly until it fails: a crash loop may have left several), flush, delete the chain.
 */
export function iptablesRemoveCommands(fam: 4 | 6, table: string): FirewallCommand[][] {
  return IPTABLES_HOOKS.filter(([t]) => t === table).map(([t, parent, chain]) => [
    ipt(fam, "-t", t, "-D", parent, ...jump(chain)),
    ipt(fam, "-t", t, "-F", chain),
    ipt(fam, "-t", t, "-X", chain),
  ]);
}

function nftIfaces(plan: DiversionPlan): string {
  if (plan.interfaces.length === 0) return "";
  // iptables' "eth+" wildcard is "eth*" in nft.
  const names = plan.interfaces.map((i) =>
    JSON.stringify(i.endsWith("+") ? i.slice(0, -1) + "*" : i)
  );
  return `iifname { ${names.join(", ")} } `;
}

/** The nft ruleset (input of `nft -f /dev/stdin`) that installs `plan`. Pure. */
export function nftRuleset(plan: DiversionPlan): string {
  validate(plan);
  const q = `notrack queue num ${plan.queueNum} bypass`;
  const ports = `{ ${plan.ports.join(", ")} }`;
  const pre: string[] = [];
  const out: string[] = [];
  const guard: string[] = [];
  for (const fam of families(plan)) {
    const ip = fam === 4 ? "ip" : "ip6";
    const nets = plan.protect.filter((c) => c.family === fam).map((c) => c.text).join(", ");
    const r = responder(plan, fam)!;
    pre.push(`${nftIfaces(plan)}${ip} daddr { ${nets} } tcp dport ${ports} ${q}`);
    out.push(`${ip} saddr ${r} tcp sport ${plan.responderPort} ${q}`);
    if (plan.relaySource) {
      const range = `${plan.relaySource.first}-${plan.relaySource.last}`;
      out.push(`${ip} daddr { ${nets} } tcp dport ${ports} tcp sport ${range} ${q}`);
      pre.push(`${ip} saddr { ${nets} } tcp sport ${ports} ${q}`);
    }
    if (plan.guardMark) {
      guard.push(
        `${ip} daddr ${r} tcp dport ${plan.responderPort} meta mark != ${hex(plan.guardMark)} drop`,
      );
    }
  }
  const chain = (name: string, hook: string, prio: number, rules: string[]) =>
    `  chain ${name} {\n    type filter hook ${hook} priority ${prio}; policy accept;\n` +
    rules.map((r) => `    ${r}\n`).join("") + "  }\n";
  // "table" then "delete table" then the table again: replaces any leftover atomically.
  return `add table inet ${NFT_TABLE}\ndelete table inet ${NFT_TABLE}\n` +
    `table inet ${NFT_TABLE} {\n` +
    chain("prerouting", "prerouting", -300, pre) +
    chain("output", "output", -300, out) +
    (guard.length > 0 ? chain("guard", "prerouting", -150, guard) : "") +
    "}\n";
}

/** Probes whether the kernel has the nft `queue` statement: one transaction that leaves nothing. */
export const NFT_QUEUE_PROBE: FirewallCommand = {
  argv: ["nft", "-f", "/dev/stdin"],
  stdin: "add table inet ssg_probe\n" +
    "add chain inet ssg_probe probe\n" +
    "add rule inet ssg_probe probe meta l4proto 253 queue num 0 bypass\n" +
    "delete table inet ssg_probe\n",
};

/** Removes the nft table. */
export const NFT_REMOVE: FirewallCommand = { argv: ["nft", "delete", "table", "inet", NFT_TABLE] };

const decoder = new TextDecoder();

/** The default runner: Deno.Command with a 15 s bound. */
export const runCommand: CommandRunner = async (cmd): Promise<CommandResult> => {
  try {
    const child = new Deno.Command(cmd.argv[0], {
      args: cmd.argv.slice(1),
      stdin: cmd.stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(15_000),
    }).spawn();
    if (cmd.stdin !== undefined) {
      const w = child.stdin.getWriter();
      await w.write(new TextEncoder().encode(cmd.stdin));
      await w.close();
    }
    const r = await child.output();
    return { code: r.code, stdout: decoder.decode(r.stdout), stderr: decoder.decode(r.stderr) };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return { code: -1, stdout: "", stderr: "not installed" };
    return { code: -2, stdout: "", stderr: e instanceof Error ? e.message : String(e) };
  }
};

/** The synchronous runner, for exit paths where nothing can be awaited. */
export function runCommandSync(cmd: FirewallCommand): CommandResult {
  try {
    if (cmd.stdin !== undefined) throw new Error("runCommandSync: stdin unsupported");
    const r = new Deno.Command(cmd.argv[0], {
      args: cmd.argv.slice(1),
      stdout: "piped",
      stderr: "piped",
    })
      .outputSync();
    return { code: r.code, stdout: decoder.decode(r.stdout), stderr: decoder.decode(r.stderr) };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return { code: -1, stdout: "", stderr: "not installed" };
    return { code: -2, stdout: "", stderr: e instanceof Error ? e.message : String(e) };
  }
}

/** Options of a Firewall. */
export interface FirewallOptions {
  /** Runs commands (default: Deno.Command); tests pass a fake. */
  run?: CommandRunner;
  /** Force a backend (default "auto": nft when its queue statement works, else iptables). */
  backend?: "auto" | FirewallBackend;
  /** Install the guard (default true). */
  guard?: boolean;
  /** The relay source port range (`relay.source: client`): adds the relay rules. */
  relaySource?: { first: number; last: number };
}

/** The operations shared by async and sync removal. */
function* removalSteps(): Generator<{ fam: 4 | 6; table: string; steps: FirewallCommand[][] }> {
  for (const fam of [4, 6] as const) {
    for (const table of ["raw", "mangle"]) {
      yield { fam, table, steps: iptablesRemoveCommands(fam, table) };
    }
  }
}

const MAX_JUMP_DELETES = 16;

/** Installs and removes SSG's diversion rules. */
export class Firewall {
  #plan: DiversionPlan;
  #log: EventLog;
  #run: CommandRunner;
  #want: "auto" | FirewallBackend;
  #backend: FirewallBackend | undefined;
  #installed = false;

  /**
   * Rules for `gateway` with the responder addresses already resolved from "auto"
   * (`pickResponderAddresses`), or for an explicit DiversionPlan. Throws FirewallError when they
   * cannot work (a protected family without a responder address, a bad interface name, the
   * responder port among the diverted ports).
   */
  constructor(
    gateway: GatewayConfig,
    responders: { ipv4?: string; ipv6?: string },
    log: EventLog,
    opts?: FirewallOptions,
  );
  /** Rules for an explicit DiversionPlan; throws FirewallError like the overload above. */
  constructor(plan: DiversionPlan, log: EventLog, opts?: FirewallOptions);
  constructor(
    a: GatewayConfig | DiversionPlan,
    b: { ipv4?: string; ipv6?: string } | EventLog,
    c?: EventLog | FirewallOptions,
    d?: FirewallOptions,
  ) {
    let plan: DiversionPlan;
    let log: EventLog;
    let opts: FirewallOptions;
    if ("queueNum" in a) {
      [plan, log, opts] = [a, b as EventLog, (c as FirewallOptions | undefined) ?? {}];
    } else {
      opts = d ?? {};
      plan = planFromConfig(a, b as { ipv4?: string; ipv6?: string }, {
        guard: opts.guard,
        relaySource: opts.relaySource,
      });
      log = c as EventLog;
    }
    validate(plan);
    this.#plan = plan;
    this.#log = log;
    this.#run = opts.run ?? runCommand;
    this.#want = opts.backend ?? "auto";
  }

  /** Removes rules left by an earlier SSG (both backends); see the static `cleanupStale`. */
  cleanupStale(): Promise<number> {
    return Firewall.cleanupStale({ log: this.#log, run: this.#run });
  }

  /** The backend in use after `install()`. */
  get backend(): FirewallBackend | undefined {
    return this.#backend;
  }

  /** Whether rules are installed (between `install()` and `remove()`). */
  get installed(): boolean {
    return this.#installed;
  }

  /** nft when its `queue` statement works in this kernel, else iptables; throws when neither. */
  static async detectBackend(run: CommandRunner = runCommand): Promise<FirewallBackend> {
    const probe = await run(NFT_QUEUE_PROBE);
    if (probe.code === 0) return "nft";
    const v = await run({ argv: ["iptables", "-V"] });
    if (v.code === 0) return "iptables";
    throw new FirewallError(
      "Cannot install diversion rules: nft lacks the queue statement" +
        (probe.code === -1 ? " (nft not installed)" : ` (${probe.stderr.trim().split("\n")[0]})`) +
        " and iptables is not installed: install the iptables package",
    );
  }

  /**
   * Removes rules left by an earlier SSG (both backends). Returns how many rule/chain/table
   * removals succeeded (0: nothing was left). Never throws.
   */
  static async cleanupStale(opts: { log: EventLog; run?: CommandRunner }): Promise<number> {
    const run = opts.run ?? runCommand;
    let removed = 0;
    const nft = await run(NFT_REMOVE);
    if (nft.code === 0) removed++;
    for (const { fam, table, steps } of removalSteps()) {
      const list = await run(ipt(fam, "-t", table, "-S"));
      if (list.code !== 0 || !list.stdout.includes("SSG-")) continue;
      for (const [del, flush, drop] of steps) {
        for (let i = 0; i < MAX_JUMP_DELETES && (await run(del)).code === 0; i++) removed++;
        if ((await run(flush)).code === 0) removed++;
        if ((await run(drop)).code === 0) removed++;
      }
    }
    if (removed > 0) opts.log.event("firewall.stale_removed", { removed }, "warning");
    return removed;
  }

  /**
   * Cleans stale rules, picks the backend and installs the rules. On any failure, removes what
   * was installed and throws FirewallError naming the command and the tool's message.
   */
  async install(): Promise<FirewallBackend> {
    await Firewall.cleanupStale({ log: this.#log, run: this.#run });
    const backend = this.#want === "auto" ? await Firewall.detectBackend(this.#run) : this.#want;
    const cmds = backend === "nft"
      ? [{ argv: ["nft", "-f", "/dev/stdin"], stdin: nftRuleset(this.#plan) }]
      : iptablesInstallCommands(this.#plan);
    this.#backend = backend;
    this.#installed = true; // so that a failure half-way is rolled back by remove()
    for (const cmd of cmds) {
      const r = await this.#run(cmd);
      if (r.code !== 0) {
        await this.remove();
        throw new FirewallError(
          `Cannot install diversion rules with ${backend}: \`${cmd.argv.join(" ")}\` failed: ` +
            (r.stderr.trim() || `exit ${r.code}`),
        );
      }
    }
    this.#log.event("firewall.install", {
      backend,
      rules: cmds.length,
      queue: this.#plan.queueNum,
      protect: this.#plan.protect.map((c) => c.text),
      ports: this.#plan.ports.map(String),
      guard: Boolean(this.#plan.guardMark),
      relaySource: this.#plan.relaySource
        ? `${this.#plan.relaySource.first}-${this.#plan.relaySource.last}`
        : "off",
    });
    return backend;
  }

  /** Removes the rules. Safe to call twice; never throws (failures are logged). */
  async remove(): Promise<void> {
    if (!this.#installed) return;
    this.#installed = false;
    let failures = 0;
    if (this.#backend === "nft") {
      const r = await this.#run(NFT_REMOVE);
      if (r.code !== 0 && !/No such file/.test(r.stderr)) failures++;
    } else {
      for (const { fam, steps } of removalSteps()) {
        if (!families(this.#plan).includes(fam)) continue;
        for (const [del, flush, drop] of steps) {
          for (let i = 0; i < MAX_JUMP_DELETES && (await this.#run(del)).code === 0; i++);
          await this.#run(flush);
          await this.#run(drop);
        }
      }
      failures += await this.#leftovers();
    }
    this.#log.event(
      "firewall.remove",
      { backend: this.#backend, failures },
      failures ? "error" : "info",
    );
  }

  /** Counts SSG chains still present after removal (iptables). */
  async #leftovers(): Promise<number> {
    let n = 0;
    for (const fam of families(this.#plan)) {
      for (const table of ["raw", "mangle"]) {
        const r = await this.#run(ipt(fam, "-t", table, "-S"));
        if (r.code === 0 && r.stdout.includes("SSG-")) n++;
      }
    }
    return n;
  }

  /**
   * Synchronous removal for exit paths (an `unload` handler, a fatal error) where nothing can be
   * awaited. Uses Deno.Command directly. Safe to call twice and after `remove()`.
   */
  removeSync(): void {
    if (!this.#installed) return;
    this.#installed = false;
    if (this.#backend === "nft") {
      runCommandSync(NFT_REMOVE);
    } else {
      for (const { fam, steps } of removalSteps()) {
        if (!families(this.#plan).includes(fam)) continue;
        for (const [del, flush, drop] of steps) {
          for (let i = 0; i < MAX_JUMP_DELETES && runCommandSync(del).code === 0; i++);
          runCommandSync(flush);
          runCommandSync(drop);
        }
      }
    }
    this.#log.event("firewall.remove", { backend: this.#backend, sync: true });
  }
}
