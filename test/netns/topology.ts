/**
 * The shared network-namespace topology for integration tests, after WireGuard's `netns.sh`:
 * unique names per run, a diagram at the top, cleanup whatever happens.
 *
 * ```
 *   client ns                    gateway ns (SSG runs here)                 server ns
 *  ┌──────────────┐          ┌──────────────────────────────┐          ┌──────────────────────┐
 *  │ eth0         │   veth   │ cli            srv           │   veth   │ eth0                 │
 *  │ 192.0.2.10   ├──────────┤ 192.0.2.1      198.51.100.1  ├──────────┤ 198.51.100.25 .26 .27│
 *  │ 2001:db8:1:: │          │ 2001:db8:1::1  203.0.113.1   │          │ 203.0.113.25         │
 *  │          10  │          │                2001:db8:25::1│          │ 2001:db8:25::25      │
 *  └──────────────┘          │ ip_forward=1, v6 forwarding=1│          └──────────────────────┘
 *   default via gateway      └──────────────────────────────┘           default via gateway
 * ```
 *
 * Only documentation addresses (RFC 5737, RFC 3849) and loopback are used; no traffic can leave
 * the namespaces because the client and server namespaces have no link but their veth to the
 * gateway, and the gateway namespace has no link to the host.
 *
 * What it trusts: nothing from the network; it runs `ip`, `sysctl` and test tools as root.
 * What it limits: every command runs under a time bound (`exec` default 30 s, `waitForPort`
 * default 10 s); `dispose()` kills every process left in the namespaces before deleting them.
 * Alternatives rejected: one namespace pair without a router (cannot show forwarding and the
 * queue bypass), host-wide `ip link` names (collide between parallel runs — links are created
 * directly inside the namespaces instead, so their names never touch the host).
 *
 * @module
 */

/** Names and addresses of one topology. */
export interface TopologyAddresses {
  readonly client4: "192.0.2.10";
  readonly client6: "2001:db8:1::10";
  /** Gateway, client side (the responder lives here). */
  readonly gwClient4: "192.0.2.1";
  readonly gwClient6: "2001:db8:1::1";
  /** Gateway, server side. */
  readonly gwServer4: "198.51.100.1";
  readonly gwServer6: "2001:db8:25::1";
  /** The protected internal server. */
  readonly server4: "198.51.100.25";
  readonly server6: "2001:db8:25::25";
  /** Three internal servers: 198.51.100.25, .26 and .27. */
  readonly servers4: string[];
  /** An unprotected host on the server side. */
  readonly unprotected4: "203.0.113.25";
}

/** Result of a bounded command. `code` is 124 when the time bound killed it. */
export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Options of {@linkcode Topology.exec}. */
export interface ExecOptions {
  /** Kill the command after this many milliseconds (default 30000); the result then has code 124. */
  timeoutMs?: number;
  /** Bytes or text written to the command's stdin (stdin is closed otherwise). */
  stdin?: string | Uint8Array;
  /** Extra environment variables. */
  env?: Record<string, string>;
}

/** Options of {@linkcode Topology.spawn}. */
export interface SpawnOptions {
  env?: Record<string, string>;
  stdout?: "piped" | "null" | "inherit";
  stderr?: "piped" | "null" | "inherit";
}

/** client ns ── veth ── gateway ns (forwarding, SSG runs here) ── veth ── server ns */
export interface Topology {
  /** Unique per run, e.g. "a1b2c3". */
  readonly id: string;
  /** Namespace names, unique per run. */
  readonly ns: { client: string; gateway: string; server: string };
  readonly addr: TopologyAddresses;
  /** Run a command inside a namespace, bounded by timeoutMs (default 30000); never throws on non-zero exit. */
  exec(ns: string, cmd: string[], opts?: ExecOptions): Promise<ExecResult>;
  /** Start a long-running process inside a namespace; it is killed when the topology is disposed. */
  spawn(ns: string, cmd: string[], opts?: SpawnOptions): Deno.ChildProcess;
  /** Wait until a TCP port accepts connections from inside `ns` (bounded, default 10000 ms). */
  waitForPort(ns: string, host: string, port: number, timeoutMs?: number): Promise<void>;
  /** Kill spawned processes, delete the namespaces. Safe to call twice. */
  dispose(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Raised when the topology cannot be built or a bounded wait runs out. */
export class TopologyError extends Error {
  /** Creates the error; `cause` keeps the underlying failure. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "TopologyError";
  }
}

const ADDR: TopologyAddresses = Object.freeze({
  client4: "192.0.2.10",
  client6: "2001:db8:1::10",
  gwClient4: "192.0.2.1",
  gwClient6: "2001:db8:1::1",
  gwServer4: "198.51.100.1",
  gwServer6: "2001:db8:25::1",
  server4: "198.51.100.25",
  server6: "2001:db8:25::25",
  servers4: Object.freeze(["198.51.100.25", "198.51.100.26", "198.51.100.27"]) as string[],
  unprotected4: "203.0.113.25",
});

let cachedCanRun: boolean | undefined;
let cachedWhyNot = "";

/**
 * True when running as root with `ip netns` available (integration tests are `ignore`d
 * otherwise, never green-skipped silently: the reason is printed once, see {@linkcode whyNoNetns}).
 */
export function canRunNetns(): boolean {
  if (cachedCanRun !== undefined) return cachedCanRun;
  cachedCanRun = false;
  try {
    if (Deno.uid() !== 0) {
      cachedWhyNot = "not running as root (uid " + Deno.uid() + ")";
    } else {
      const r = new Deno.Command("ip", { args: ["netns", "list"], stdout: "null", stderr: "piped" })
        .outputSync();
      if (!r.success) {
        cachedWhyNot = "`ip netns list` failed: " + new TextDecoder().decode(r.stderr).trim();
      } else cachedCanRun = true;
    }
  } catch (e) {
    cachedWhyNot = "`ip` (iproute2) is not runnable: " + (e instanceof Error ? e.message : e);
  }
  if (!cachedCanRun) {
    console.error(`netns integration tests are IGNORED: ${cachedWhyNot}`);
  }
  return cachedCanRun;
}

/** Why {@linkcode canRunNetns} returned false ("" when it returned true or was not called). */
export function whyNoNetns(): string {
  return cachedWhyNot;
}

const decoder = new TextDecoder();

/** Runs a host command with a time bound; never throws on non-zero exit (spawn errors do throw). */
export async function run(
  cmd: string[],
  opts: ExecOptions = {},
): Promise<ExecResult> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const child = new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    stdin: opts.stdin !== undefined ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
    env: opts.env,
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, timeoutMs);
  try {
    if (opts.stdin !== undefined) {
      const w = child.stdin.getWriter();
      try {
        await w.write(
          typeof opts.stdin === "string" ? new TextEncoder().encode(opts.stdin) : opts.stdin,
        );
        await w.close();
      } catch { /* the command exited without reading its input */ }
    }
    const out = await child.output();
    return {
      code: timedOut ? 124 : out.code,
      stdout: decoder.decode(out.stdout),
      stderr: decoder.decode(out.stderr) + (timedOut ? `\n[killed after ${timeoutMs} ms]` : ""),
    };
  } finally {
    clearTimeout(timer);
  }
}

/** Runs a host command and throws a TopologyError when it fails. */
async function must(cmd: string[], timeoutMs = 15_000): Promise<string> {
  const r = await run(cmd, { timeoutMs });
  if (r.code !== 0) {
    throw new TopologyError(`${cmd.join(" ")} failed (exit ${r.code}): ${r.stderr.trim()}`);
  }
  return r.stdout;
}

function randomId(): string {
  const b = crypto.getRandomValues(new Uint8Array(3));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** Topologies created and not yet disposed; cleaned synchronously if the process exits early. */
const live = new Set<NetnsTopology>();
let unloadHooked = false;

function onSignal(): void {
  for (const t of live) t.disposeSync();
  Deno.exit(130);
}

function trackLive(t: NetnsTopology, alive: boolean): void {
  const before = live.size;
  if (alive) live.add(t);
  else live.delete(t);
  // Ctrl-C or a TERM from a CI timeout would skip every `finally`: remove the namespaces first.
  // The listeners exist only while a topology does, so tests see no leaked signal resource.
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  if (before === 0 && live.size === 1) {
    for (const s of signals) Deno.addSignalListener(s, onSignal);
  } else if (before === 1 && live.size === 0) {
    for (const s of signals) Deno.removeSignalListener(s, onSignal);
  }
}

function hookUnload(): void {
  if (unloadHooked) return;
  unloadHooked = true;
  // Caution: a test runner that exits (uncaught error, Deno.exit) skips `finally` blocks, so
  // undisposed namespaces are removed synchronously here. SIGKILL of the runner cannot be caught;
  // `scripts/test.sh` sweeps what is left after the run (namespaces named ssgt-*).
  globalThis.addEventListener("unload", () => {
    for (const t of live) t.disposeSync();
  });
}

class NetnsTopology implements Topology {
  readonly id: string;
  readonly ns: { client: string; gateway: string; server: string };
  readonly addr = ADDR;
  #children = new Set<Deno.ChildProcess>();
  #disposed = false;

  constructor(id: string) {
    this.id = id;
    // "ssgt-" marks namespaces made by SSG tests, so a sweep after a crashed run finds them.
    this.ns = { client: `ssgt-${id}-c`, gateway: `ssgt-${id}-g`, server: `ssgt-${id}-s` };
  }

  async build(): Promise<void> {
    const { client, gateway, server } = this.ns;
    for (const n of [client, gateway, server]) await must(["ip", "netns", "add", n]);
    // Links are created inside the gateway namespace with their peers moved straight into the
    // other namespace, so no name is ever visible (or colliding) in the host namespace.
    await must([
      "ip",
      "-n",
      gateway,
      "link",
      "add",
      "cli",
      "type",
      "veth",
      "peer",
      "name",
      "eth0",
      "netns",
      client,
    ]);
    await must([
      "ip",
      "-n",
      gateway,
      "link",
      "add",
      "srv",
      "type",
      "veth",
      "peer",
      "name",
      "eth0",
      "netns",
      server,
    ]);
    // Disable duplicate address detection everywhere too (belt and braces with `nodad`), so
    // IPv6 addresses are usable at once instead of ~1-2 s later.
    for (const n of [client, gateway, server]) {
      await must(["ip", "netns", "exec", n, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"]);
      await must(["ip", "netns", "exec", n, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"]);
      await must(["ip", "-n", n, "link", "set", "lo", "up"]);
    }
    const a = ADDR;
    const addrs: [string, string, string][] = [
      [client, "eth0", `${a.client4}/24`],
      [client, "eth0", `${a.client6}/64`],
      [gateway, "cli", `${a.gwClient4}/24`],
      [gateway, "cli", `${a.gwClient6}/64`],
      [gateway, "srv", `${a.gwServer4}/24`],
      [gateway, "srv", "203.0.113.1/24"],
      [gateway, "srv", `${a.gwServer6}/64`],
      ...a.servers4.map((s): [string, string, string] => [server, "eth0", `${s}/24`]),
      [server, "eth0", `${a.unprotected4}/24`],
      [server, "eth0", `${a.server6}/64`],
    ];
    for (const [n, dev, cidr] of addrs) {
      const args = ["ip", "-n", n, "addr", "add", cidr, "dev", dev];
      if (cidr.includes(":")) args.push("nodad");
      await must(args);
    }
    for (
      const [n, dev] of [[client, "eth0"], [gateway, "cli"], [gateway, "srv"], [server, "eth0"]]
    ) {
      await must(["ip", "-n", n, "link", "set", dev, "up"]);
    }
    await must(["ip", "-n", client, "route", "add", "default", "via", a.gwClient4]);
    await must(["ip", "-n", client, "-6", "route", "add", "default", "via", a.gwClient6]);
    await must(["ip", "-n", server, "route", "add", "default", "via", a.gwServer4]);
    await must(["ip", "-n", server, "-6", "route", "add", "default", "via", a.gwServer6]);
    await must(["ip", "netns", "exec", gateway, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    await must(["ip", "netns", "exec", gateway, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
  }

  exec(ns: string, cmd: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    this.#checkNs(ns);
    return run(["ip", "netns", "exec", ns, ...cmd], opts);
  }

  spawn(ns: string, cmd: string[], opts: SpawnOptions = {}): Deno.ChildProcess {
    this.#checkNs(ns);
    // `ip netns exec` execs the command in place, so the child's pid is the command's own.
    const child = new Deno.Command("ip", {
      args: ["netns", "exec", ns, ...cmd],
      stdin: "null",
      stdout: opts.stdout ?? "piped",
      stderr: opts.stderr ?? "piped",
      env: opts.env,
    }).spawn();
    this.#children.add(child);
    child.status.finally(() => this.#children.delete(child));
    return child;
  }

  async waitForPort(ns: string, host: string, port: number, timeoutMs = 10_000): Promise<void> {
    this.#checkNs(ns);
    const deadline = Date.now() + timeoutMs;
    const target = host.includes(":") ? `[${host}]` : host;
    let last = "";
    // Bounded: at most timeoutMs, one connect attempt (itself bounded to 2 s) per 100 ms.
    while (Date.now() < deadline) {
      const r = await this.exec(ns, [
        "bash",
        "-c",
        `exec 3<>/dev/tcp/${host}/${port}`,
      ], { timeoutMs: Math.max(200, Math.min(2_000, deadline - Date.now())) });
      if (r.code === 0) return;
      last = r.stderr.trim();
      await new Promise((res) => setTimeout(res, 100));
    }
    throw new TopologyError(
      `Port ${target}:${port} did not accept connections from ${ns} within ${timeoutMs} ms` +
        (last ? `: ${last}` : ""),
    );
  }

  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    trackLive(this, false);
    for (const c of this.#children) {
      try {
        c.kill("SIGTERM");
      } catch { /* already exited */ }
    }
    // Give polite exits a moment (SSG removes its rules on SIGTERM), bounded to 3 s.
    const grace = Promise.allSettled([...this.#children].map((c) => c.status));
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([grace, new Promise((r) => timer = setTimeout(r, 3_000))]);
    clearTimeout(timer);
    for (const c of this.#children) {
      try {
        c.kill("SIGKILL");
      } catch { /* already exited */ }
    }
    for (const n of Object.values(this.ns)) {
      await killAllIn(n);
      await run(["ip", "netns", "del", n], { timeoutMs: 10_000 });
    }
    // Reap what we killed so no child handle is leaked to the test sanitizer.
    await Promise.allSettled([...this.#children].map((c) => c.status));
    for (const c of [...this.#children]) {
      for (const s of [c.stdout, c.stderr]) {
        try {
          await (s as ReadableStream<Uint8Array> | null)?.cancel();
        } catch { /* not piped or already consumed */ }
      }
    }
    this.#children.clear();
  }

  /** Synchronous last-resort cleanup for process exit. */
  disposeSync(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const n of Object.values(this.ns)) {
      try {
        const pids = decoder.decode(
          new Deno.Command("ip", { args: ["netns", "pids", n], stderr: "null" }).outputSync()
            .stdout,
        ).split(/\s+/).filter(Boolean);
        for (const p of pids) {
          try {
            Deno.kill(Number(p), "SIGKILL");
          } catch { /* gone */ }
        }
        new Deno.Command("ip", { args: ["netns", "del", n], stderr: "null" }).outputSync();
      } catch { /* best effort at exit */ }
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }

  #checkNs(ns: string): void {
    if (this.#disposed) throw new TopologyError(`Topology ${this.id} is already disposed`);
    if (ns !== this.ns.client && ns !== this.ns.gateway && ns !== this.ns.server) {
      throw new TopologyError(`"${ns}" is not a namespace of topology ${this.id}`);
    }
  }
}

/** Kills every process still inside namespace `ns` (SIGKILL), so that deleting it frees it. */
async function killAllIn(ns: string): Promise<void> {
  const r = await run(["ip", "netns", "pids", ns], { timeoutMs: 5_000 });
  if (r.code !== 0) return;
  for (const p of r.stdout.split(/\s+/).filter(Boolean)) {
    try {
      Deno.kill(Number(p), "SIGKILL");
    } catch { /* already gone */ }
  }
}

/**
 * Builds a fresh client → gateway → server topology with unique namespace names.
 * On any failure the partial topology is removed before the error is thrown.
 */
export async function createTopology(): Promise<Topology> {
  if (!canRunNetns()) {
    throw new TopologyError(`Cannot build a netns topology: ${whyNoNetns()}`);
  }
  const t = new NetnsTopology(randomId());
  trackLive(t, true);
  hookUnload();
  try {
    await t.build();
  } catch (e) {
    await t.dispose();
    throw new TopologyError(`Cannot build netns topology ${t.id}`, { cause: e });
  }
  return t;
}
