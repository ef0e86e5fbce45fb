/**
 * The shared namespace harness itself: it routes client ↔ server through the gateway on every
 * address other tests rely on, and leaves nothing behind.
 */
import assert from "node:assert/strict";
import { canRunNetns, createTopology, run } from "./topology.ts";

const ignore = !canRunNetns();

async function namespaces(): Promise<string> {
  return (await run(["ip", "netns", "list"])).stdout;
}

Deno.test({
  name: "createTopology() routes the client to every server-side address through the gateway",
  ignore,
  async fn() {
    await using t = await createTopology();
    assert.match(t.id, /^[0-9a-f]{6}$/);
    const list = await namespaces();
    for (const n of Object.values(t.ns)) assert.ok(list.includes(n), `${n} exists`);

    // One listener on all addresses of the server namespace answers with its local address.
    const server = t.spawn(t.ns.server, [
      "/usr/bin/python3",
      "-c",
      `
import socket, threading
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0); s.bind(("::", 8025)); s.listen(16)
s.settimeout(60)
for _ in range(16):
    c, peer = s.accept()
    c.sendall((c.getsockname()[0] + " " + peer[0] + "\\n").encode()); c.close()
`,
    ], { stdout: "null", stderr: "null" });
    await t.waitForPort(t.ns.server, "::1", 8025);

    const cases: [string, string][] = [
      ...t.addr.servers4.map((s): [string, string] => [s, `::ffff:${s} ::ffff:${t.addr.client4}`]),
      [t.addr.unprotected4, `::ffff:${t.addr.unprotected4} ::ffff:${t.addr.client4}`],
      [t.addr.server6, `${t.addr.server6} ${t.addr.client6}`],
    ];
    for (const [dst, want] of cases) {
      const r = await t.exec(t.ns.client, [
        "/usr/bin/python3",
        "-c",
        `import socket,sys; c=socket.create_connection((sys.argv[1], 8025), timeout=5); print(c.recv(200).decode().strip())`,
        dst,
      ], { timeoutMs: 10_000 });
      assert.equal(r.code, 0, `connect ${dst}: ${r.stderr}`);
      assert.equal(r.stdout.trim(), want, `peer view for ${dst}`);
    }
    server.kill("SIGKILL");
    await server.status;

    const fwd = await t.exec(t.ns.gateway, ["sysctl", "-n", "net.ipv4.ip_forward"]);
    assert.equal(fwd.stdout.trim(), "1");
  },
});

Deno.test({
  name: "Topology.exec() bounds a command by timeoutMs and reports code 124",
  ignore,
  async fn() {
    await using t = await createTopology();
    const started = Date.now();
    const r = await t.exec(t.ns.client, ["sleep", "30"], { timeoutMs: 300 });
    assert.equal(r.code, 124);
    assert.ok(Date.now() - started < 5_000);
    const echo = await t.exec(t.ns.client, ["cat"], { stdin: "hello" });
    assert.deepEqual([echo.code, echo.stdout], [0, "hello"]);
  },
});

Deno.test({
  name: "Topology.waitForPort() fails within its bound when nothing listens",
  ignore,
  async fn() {
    await using t = await createTopology();
    const started = Date.now();
    await assert.rejects(
      t.waitForPort(t.ns.client, t.addr.server4, 25, 700),
      /did not accept connections/,
    );
    assert.ok(Date.now() - started < 4_000);
  },
});

Deno.test({
  name: "Topology.dispose() kills spawned processes, removes the namespaces and is safe twice",
  ignore,
  async fn() {
    const t = await createTopology();
    const child = t.spawn(t.ns.server, ["sleep", "600"], { stdout: "null", stderr: "null" });
    await t.dispose();
    const status = await child.status;
    assert.equal(status.success, false);
    await t.dispose();
    const list = await namespaces();
    for (const n of Object.values(t.ns)) assert.ok(!list.includes(n), `${n} removed`);
    assert.throws(() => t.spawn(t.ns.client, ["true"]), /already disposed/);
  },
});
