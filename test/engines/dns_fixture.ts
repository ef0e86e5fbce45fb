/**
 * A real DNS server for tests: dnsmasq (Debian package dnsmasq-base) started in the foreground
 * with a configuration the test writes (`txt-record=`, `host-record=`, `address=`, `local=`...),
 * listening on loopback (or an address inside a test namespace) on a free port, with no upstream
 * (`no-resolv`), no /etc/hosts (`no-hosts`), and its queries logged to a file so tests can count
 * what reached the server. The system's dnsmasq service is never involved.
 */
import { join } from "node:path";
import dgram from "node:dgram";

/**
 * DNS lists for DNSBL tests: bl.test (block list), wl.test (allow list), dbl.test (domains).
 */
export const DNSBL_RECORDS = [
  "local=/bl.test/",
  "local=/wl.test/",
  "local=/dbl.test/",
  // 192.0.2.66 and 2001:db8::66 listed in bl.test; 192.0.2.77 listed in bl.test with a code
  // outside the filter; 192.0.2.88 listed in both bl.test and wl.test; 192.0.2.99: refusal code.
  "host-record=66.2.0.192.bl.test,127.0.0.2",
  "host-record=6.6.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test,127.0.0.4",
  "host-record=77.2.0.192.bl.test,127.0.0.99",
  "host-record=88.2.0.192.bl.test,127.0.0.3",
  "host-record=88.2.0.192.wl.test,127.0.10.2",
  "host-record=99.2.0.192.bl.test,127.255.255.254",
  "host-record=spammer.example.dbl.test,127.0.1.2",
  "host-record=bad-helo.example.dbl.test,127.0.1.3",
];

/** A running dnsmasq; `stop()` ends it and removes its directory. */
export interface TestDns {
  /** The address it listens on. */
  address: string;
  port: number;
  /** `address:port` (or `[v6]:port`), as the resolver's `servers` entry. */
  server: string;
  dir: string;
  /** How many queries dnsmasq logged for `name` (all types), or all queries without a name. */
  queries(name?: string): Promise<number>;
  stop(): Promise<void>;
}

/** Options of `startDnsmasq`. */
export interface DnsmasqOptions {
  /** Listen address (default 127.0.0.1). */
  address?: string;
  /** Port (default: a free one found on loopback). */
  port?: number;
  /** Run inside this network namespace (`ip netns exec`). */
  netns?: string;
  /** TTL of the local records (dnsmasq's `local-ttl`; default 300). */
  localTtl?: number;
}

/** A UDP and TCP port that is free on 127.0.0.1 right now. */
export async function freePort(): Promise<number> {
  for (let i = 0; i < 20; i++) {
    const s = dgram.createSocket("udp4");
    const port = await new Promise<number>((resolve) =>
      s.bind(0, "127.0.0.1", () => resolve(s.address().port))
    );
    s.close();
    try {
      const l = Deno.listen({ hostname: "127.0.0.1", port });
      l.close();
      return port;
    } catch { /* TCP side taken: try another */ }
  }
  throw new Error("no free port found in 20 tries");
}

/**
 * Starts dnsmasq with `lines` as its records (bounded: 15 s until it logs "started"). Fails when
 * dnsmasq is not installed or cannot bind.
 */
export async function startDnsmasq(
  lines: string[],
  opts: DnsmasqOptions = {},
): Promise<TestDns> {
  // The free port is found before dnsmasq binds it: another test process may take it meanwhile
  // (seen on a shared machine). With no port given, pick another and try again, at most 5 times.
  for (let attempt = 1;; attempt++) {
    try {
      return await startDnsmasqOnce(lines, opts);
    } catch (e) {
      const taken = e instanceof Error && /Address already in use/.test(e.message);
      if (!taken || opts.port !== undefined || attempt >= 5) throw e;
    }
  }
}

async function startDnsmasqOnce(lines: string[], opts: DnsmasqOptions): Promise<TestDns> {
  const dir = await Deno.makeTempDir({ prefix: "ssg-dnsmasq-" });
  const address = opts.address ?? "127.0.0.1";
  const port = opts.port ?? await freePort();
  const log = join(dir, "dnsmasq.log");
  const conf = join(dir, "dnsmasq.conf");
  await Deno.writeTextFile(
    conf,
    [
      `port=${port}`,
      `listen-address=${address}`,
      "bind-interfaces",
      "no-resolv",
      "no-hosts",
      "no-poll",
      `local-ttl=${opts.localTtl ?? 300}`,
      "log-queries",
      `log-facility=${log}`,
      ...lines,
      "",
    ].join("\n"),
  );
  await Deno.writeTextFile(log, "");
  const args = [
    "--keep-in-foreground",
    `--conf-file=${conf}`,
    "--pid-file=",
    "--user=root",
    "--group=root",
  ];
  const cmd = opts.netns
    ? new Deno.Command("ip", {
      args: ["netns", "exec", opts.netns, "/usr/sbin/dnsmasq", ...args],
      stdout: "null",
      stderr: "piped",
    })
    : new Deno.Command("/usr/sbin/dnsmasq", { args, stdout: "null", stderr: "piped" });
  const child = cmd.spawn();
  let errText = "";
  let exited = false;
  void child.status.then(() => exited = true);
  void (async () => {
    const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const r = await reader.read().catch(() => ({ done: true, value: "" }));
      if (r.done) return;
      errText += r.value;
    }
  })();
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* exited */ }
    await child.status;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  const server = address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
  const queries = async (name?: string) => {
    const text = await Deno.readTextFile(log).catch(() => "");
    return text.split("\n").filter((l) =>
      /\bquery\[[A-Z0-9]+\] /.test(l) && (name === undefined || l.includes(` ${name} from `))
    ).length;
  };
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline && !exited) {
    const text = await Deno.readTextFile(log).catch(() => "");
    if (/started, version/.test(text)) return { address, port, server, dir, queries, stop };
    await new Promise((r) => setTimeout(r, 30));
  }
  const text = await Deno.readTextFile(log).catch(() => "");
  await stop();
  throw new Error(`dnsmasq did not start within 15 s: ${errText.trim()} ${text.trim()}`);
}
