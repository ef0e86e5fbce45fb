/**
 * A real Rspamd for tests (Debian's `rspamd` 3.4): started in the foreground (`rspamd -f`, with
 * `-i` when root) with a config directory the test writes, and stopped after. The config is the
 * smallest that starts quickly and scores what the tests need, with no network and no redis:
 * - one normal worker on a loopback port (no controller, no proxy, no fuzzy storage);
 * - no Lua rules at all (no `lua =`): only Rspamd's C core, which recognises the GTUBE test
 *   string by itself (symbol GTUBE, action reject), and the C `regexp` module (`filters`) with
 *   one test rule, SSG_TEST_MARKER (score 7: action "add header") on `MARKER` in the body;
 * - a three-line TLD list (`url_tld`): the full public-suffix list costs ~12 s to compile at
 *   every start, the small one ~1 s;
 * - a DNS server at 127.0.0.1:1 (nothing listens: no lookup leaves the machine).
 * The whole start takes about 2 s here. `netns` runs it inside a network namespace.
 */
import { join } from "node:path";

/** GTUBE, the anti-spam test string Rspamd recognises by itself. */
export const GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
/** A body word the test's regexp rule scores 7 (symbol `SSG_TEST_MARKER`). */
export const MARKER = "ssg-rspamd-test-marker";

/** A running Rspamd; `stop()` ends it and removes its directory (safe twice). */
export interface TestRspamd {
  host: string;
  port: number;
  dir: string;
  stop(): Promise<void>;
}

/** A TCP port free on the host's loopback now (the kernel's pick). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** The rspamd.conf the tests use (exported so the README/bench can show the same). */
export function rspamdConf(dir: string, port: number): string {
  return `options {
  pidfile = "${join(dir, "rspamd.pid")}";
  dbdir = "${dir}";
  hs_cache_dir = "${dir}";
  tempdir = "${dir}";
  enable_test_patterns = true;
  filters = "regexp";
  url_tld = "${join(dir, "tld.dat")}";
  dns { nameserver = ["127.0.0.1:1"]; timeout = 1s; retransmits = 0; }
}
logging { type = "file"; filename = "${join(dir, "rspamd.log")}"; level = "info"; }
worker "normal" { bind_socket = "127.0.0.1:${port}"; count = 1; }
actions { reject = 15; add_header = 6; greylist = 4; }
regexp {
  SSG_TEST_MARKER { re = "/${MARKER}/i{body}"; score = 7.0; description = "SSG test marker"; }
}
`;
}

/**
 * Starts Rspamd (bounded: 60 s until its port answers). Fails when rspamd is not installed.
 * With `netns`, it runs in that namespace (its loopback must be up).
 */
export async function startRspamd(opts: { netns?: string; port?: number } = {}): Promise<
  TestRspamd
> {
  const dir = await Deno.makeTempDir({ prefix: "ssg-rspamd-" });
  const port = opts.port ?? freePort();
  await Deno.writeTextFile(join(dir, "tld.dat"), "com\nnet\norg\n");
  await Deno.writeTextFile(join(dir, "rspamd.conf"), rspamdConf(dir, port));
  const root = Deno.uid() === 0;
  const rspamd = ["/usr/bin/rspamd", "-f", ...(root ? ["-i"] : []), "-c", join(dir, "rspamd.conf")];
  const cmd = opts.netns ? ["ip", "netns", "exec", opts.netns, ...rspamd] : rspamd;
  const child = new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let out = "";
  for (const s of [child.stdout, child.stderr]) {
    void (async () => {
      const r = s.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const x = await r.read().catch(() => ({ done: true, value: "" }));
        if (x.done) return;
        if (out.length < 64 * 1024) out += x.value;
      }
    })();
  }
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    try {
      child.kill("SIGTERM");
    } catch { /* exited */ }
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
    }, 10_000);
    await child.status;
    clearTimeout(timer);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  const deadline = Date.now() + 60_000;
  let exited = false;
  child.status.then(() => exited = true);
  while (Date.now() < deadline && !exited) {
    if (await answers(opts.netns, port)) return { host: "127.0.0.1", port, dir, stop };
    await new Promise((r) => setTimeout(r, 100));
  }
  const log = await Deno.readTextFile(join(dir, "rspamd.log")).catch(() => "");
  await stop();
  throw new Error(
    `rspamd did not answer on port ${port} within 60 s:\n${out}\n${log.slice(-4000)}`,
  );
}

/** Whether something accepts TCP connections on 127.0.0.1:port (in `netns` when given). */
async function answers(netns: string | undefined, port: number): Promise<boolean> {
  if (!netns) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return true;
    } catch {
      return false;
    }
  }
  const r = await new Deno.Command("ip", {
    args: ["netns", "exec", netns, "bash", "-c", `exec 3<>/dev/tcp/127.0.0.1/${port}`],
    stdout: "null",
    stderr: "null",
  }).output();
  return r.code === 0;
}
