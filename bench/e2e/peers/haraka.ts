/**
 * Peer arm: Haraka with `queue/smtp_forward` — before-queue forwarding in Node.js, the closest
 * architectural peer of SSG (the client's final reply to DATA is the inner server's reply).
 *
 * Installed at bench time with npm into a cache outside the repository
 * (`$SSG_BENCH_CACHE/haraka`, default /var/cache/ssg-bench/haraka), pinned to HARAKA_VERSION, so
 * nothing of Haraka is committed. The configuration is generated per run in a scratch directory:
 * `haraka -i` skeleton, then
 *   smtp.ini        listen=192.0.2.1:25, nodes=1 (one worker; SSG is one process too)
 *   plugins         rcpt_to.in_host_list, queue/smtp_forward — nothing else (no DNS-based plugin)
 *   host_list       example.net (the protected domain; anything else is refused as relaying)
 *   smtp_forward.ini host=198.51.100.25 port=25 enable_tls=false
 *   log.ini         level=warn (as in the Haraka author's own benchmarks)
 * Caution: Haraka's core still does one reverse-DNS lookup per connection (connection.js
 * `lookup_rdns`). The gateway namespace has no default route, so the resolver fails at once
 * (ENETUNREACH); the max column of the result table shows if it ever did not.
 *
 * @module
 */
import { join } from "node:path";
import { run, type Topology } from "../../../test/netns/topology.ts";
import { type RunningPeer, tail, type UnavailablePeer, waitPortClosed } from "./peer.ts";

/** The Haraka release the bench installs (Node 20 compatible). */
export const HARAKA_VERSION = "3.3.4";

/** Where npm installs Haraka (outside the repository, kept between runs). */
export function harakaCacheDir(): string {
  return join(Deno.env.get("SSG_BENCH_CACHE") ?? "/var/cache/ssg-bench", "haraka");
}

async function installedVersion(dir: string): Promise<string | undefined> {
  try {
    const pkg = JSON.parse(
      await Deno.readTextFile(join(dir, "node_modules", "Haraka", "package.json")),
    );
    return typeof pkg.version === "string" ? pkg.version : undefined;
  } catch {
    return undefined;
  }
}

/** Installs Haraka into the cache when it is missing; returns the `haraka` script or a reason. */
export async function ensureHaraka(): Promise<{ bin: string } | { why: string }> {
  const dir = harakaCacheDir();
  const bin = join(dir, "node_modules", ".bin", "haraka");
  if ((await installedVersion(dir)) === HARAKA_VERSION) return { bin };
  try {
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(
      join(dir, "package.json"),
      JSON.stringify({ name: "ssg-bench-haraka", private: true }) + "\n",
    );
  } catch (e) {
    return { why: `cannot create ${dir}: ${e instanceof Error ? e.message : e}` };
  }
  console.log(`installing Haraka ${HARAKA_VERSION} with npm into ${dir} (once) …`);
  let r;
  try {
    r = await run([
      "npm",
      "install",
      "--prefix",
      dir,
      "--no-audit",
      "--no-fund",
      "--omit=dev",
      `Haraka@${HARAKA_VERSION}`,
    ], { timeoutMs: 300_000 });
  } catch (e) {
    return { why: `npm is not runnable: ${e instanceof Error ? e.message : e}` };
  }
  if (r.code !== 0 || (await installedVersion(dir)) !== HARAKA_VERSION) {
    return {
      why: `npm install Haraka@${HARAKA_VERSION} failed (exit ${r.code}): ${
        (r.stderr || r.stdout).trim().slice(-400)
      }`,
    };
  }
  return { bin };
}

/** Starts Haraka in the gateway namespace, listening on the gateway's client-side address. */
export async function startHaraka(
  t: Topology,
  work: string,
): Promise<RunningPeer | UnavailablePeer> {
  const label = `(p1) Haraka ${HARAKA_VERSION} smtp_forward`;
  const got = await ensureHaraka();
  if ("why" in got) return { label, unavailable: got.why };
  const home = join(work, "haraka");
  const init = await run([got.bin, "-i", home], { timeoutMs: 60_000 });
  if (init.code !== 0) {
    return { label, unavailable: `haraka -i failed (exit ${init.code}): ${init.stderr.trim()}` };
  }
  const cfg = join(home, "config");
  const listen = t.addr.gwClient4;
  await Deno.writeTextFile(join(cfg, "smtp.ini"), `[main]\nlisten=${listen}:25\nnodes=1\n`);
  await Deno.writeTextFile(join(cfg, "plugins"), "rcpt_to.in_host_list\nqueue/smtp_forward\n");
  await Deno.writeTextFile(join(cfg, "host_list"), "example.net\n");
  await Deno.writeTextFile(
    join(cfg, "smtp_forward.ini"),
    `host=${t.addr.server4}\nport=25\nenable_tls=false\nenable_outbound=false\n`,
  );
  await Deno.writeTextFile(join(cfg, "log.ini"), "[main]\nlevel=warn\n");
  await Deno.writeTextFile(join(cfg, "me"), "haraka.gateway.test\n");

  const log = join(work, "haraka.log");
  // A shell only to send Haraka's output to a file; `exec` keeps the pid Haraka's own.
  const child = t.spawn(t.ns.gateway, [
    "/bin/sh",
    "-c",
    'exec "$0" -c "$1" >"$2" 2>&1',
    got.bin,
    home,
    log,
  ], { stdout: "null", stderr: "null", env: { UV_TCP_SINGLE_ACCEPT: "1" } });
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    try {
      child.kill("SIGTERM");
    } catch { /* already exited */ }
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([child.status, new Promise((r) => timer = setTimeout(r, 10_000))]);
    clearTimeout(timer);
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    // Haraka's cluster worker may outlive the master by a moment; the next peer needs port 25.
    if (!await waitPortClosed(t, t.ns.client, listen, 25)) {
      console.error("haraka: port 25 still open 10 s after SIGTERM");
    }
  };
  try {
    await t.waitForPort(t.ns.client, listen, 25, 60_000);
  } catch (e) {
    await stop();
    return {
      label,
      unavailable: `Haraka did not listen on ${listen}:25: ${
        e instanceof Error ? e.message : e
      }\n${await tail(
        log,
      )}`,
    };
  }
  return {
    label,
    target: listen,
    note: "nodes=1; 250 after the inner server's 250",
    diagnostics: () => tail(log),
    stop,
    [Symbol.asyncDispose]: stop,
  };
}
