/**
 * RelayConnector: per-server route verdicts for relay.source client (probe, proof, fallback with
 * expiry), driven with fake connects and a pinned clock. No sockets except the last test, which
 * binds a real local port on loopback.
 */
import assert from "node:assert/strict";
import { RELAY_SOURCE_DEFAULTS, type RelaySourceSettings } from "../../src/config/relay_source.ts";
import { RelayRegistry } from "../../src/flow/relay_registry.ts";
import type { EventLog } from "../../src/log/log.ts";
import {
  connectBound,
  ConnectTimeout,
  RelayConnector,
  type SourcedIo,
} from "../../src/smtp/relay_connector.ts";
import type { SessionIo } from "../../src/smtp/session_io.ts";
import { duplex } from "./harness.ts";

const SERVER = { ip: "198.51.100.25", port: 25 };
const CLIENT = { ip: "192.0.2.10", port: 40000 };

function settings(over: Partial<RelaySourceSettings> = {}): RelaySourceSettings {
  return { ...RELAY_SOURCE_DEFAULTS, ports: { first: 61000, last: 61003 }, ...over };
}

interface Rig {
  connector: RelayConnector;
  registry: RelayRegistry;
  events: { name: string; fields: Record<string, unknown> }[];
  bound: { port: number; timeoutMs: number; keep: number | undefined }[];
  gateway: number[];
  clock: { now: number };
}

/** `route`: what a bound connect does — "ok", "timeout", "refused", or "busy" (EADDRINUSE). */
function rig(
  route: () => "ok" | "timeout" | "refused" | "busy",
  opts: { gatewayUp?: boolean; mode?: "client" | "gateway" } = {},
): Rig {
  const registry = new RelayRegistry(61000, 61003);
  const events: Rig["events"] = [];
  const log = {
    event: (name: string, fields: Record<string, unknown>) => events.push({ name, fields }),
  } as unknown as EventLog;
  const bound: Rig["bound"] = [];
  const gateway: number[] = [];
  const clock = { now: 1_000_000 };
  const connector = new RelayConnector({
    settings: settings({ mode: opts.mode ?? "client" }),
    registry,
    log,
    now: () => clock.now,
    connectBound: (_dest, port, timeoutMs) => {
      bound.push({ port, timeoutMs, keep: registry.describe(port)?.flags });
      const r = route();
      if (r === "ok") return Promise.resolve(duplex().a as SessionIo);
      if (r === "timeout") return Promise.reject(new ConnectTimeout("no SYN-ACK"));
      const code = r === "busy" ? "EADDRINUSE" : "ECONNREFUSED";
      return Promise.reject(Object.assign(new Error(code), { code }));
    },
    connectGateway: (_dest, timeoutMs) => {
      gateway.push(timeoutMs);
      return opts.gatewayUp === false
        ? Promise.reject(new Deno.errors.ConnectionRefused("down"))
        : Promise.resolve(duplex().a as SessionIo);
    },
  });
  return { connector, registry, events, bound, gateway, clock };
}

Deno.test("RelayConnector: first contact probes with the socket's own port, a SYN-ACK proves the route, later connections keep the client's port", async () => {
  const r = rig(() => "ok");
  const a = await r.connector.connect(SERVER, 30_000, CLIENT);
  assert.equal(a.relaySource, "client");
  assert.deepEqual(r.bound[0], { port: 61000, timeoutMs: 2000, keep: 0 });
  assert.equal(r.connector.routeOf(SERVER), "client");
  const b = await r.connector.connect(SERVER, 30_000, CLIENT);
  assert.equal(r.bound[1].keep, 1, "FLAG_KEEP_PORT once proven");
  assert.equal(r.registry.leased, 2);
  a.close();
  b.close();
  b.close();
  assert.equal(r.registry.leased, 0, "closing the io releases its port (twice is harmless)");
  assert.equal(r.gateway.length, 0);
});

Deno.test("RelayConnector: no SYN-ACK but the server answers the gateway → fallback cached for the TTL, logged once; it expires", async () => {
  const r = rig(() => "timeout");
  const io = await r.connector.connect(SERVER, 30_000, CLIENT) as SourcedIo;
  assert.equal(io.relaySource, "gateway");
  assert.equal(r.registry.leased, 0, "the probe's port was released");
  assert.equal(r.gateway[0] > 27_000, true, "the gateway connect gets what is left of the bound");
  const fb = r.events.filter((e) => e.name === "relay.source_fallback");
  assert.equal(fb.length, 1);
  assert.equal(fb[0].fields.server, "198.51.100.25:25");
  assert.match(String(fb[0].fields.reason), /route to the client does not pass the gateway/);
  // Cached: no probe for the next session.
  const io2 = await r.connector.connect(SERVER, 30_000, CLIENT) as SourcedIo;
  assert.equal(io2.relaySource, "gateway");
  assert.equal(io2.sourceReason, "cached fallback");
  assert.equal(r.bound.length, 1);
  // TTL-1 ms: still cached; TTL: probed again.
  r.clock.now += RELAY_SOURCE_DEFAULTS.fallbackTtl * 1000 - 1;
  await r.connector.connect(SERVER, 30_000, CLIENT);
  assert.equal(r.bound.length, 1);
  r.clock.now += 1;
  await r.connector.connect(SERVER, 30_000, CLIENT);
  assert.equal(r.bound.length, 2, "the verdict expired: probed again");
});

Deno.test("RelayConnector: no SYN-ACK and the gateway's connect fails too → the server is down: the error, nothing cached", async () => {
  const r = rig(() => "timeout", { gatewayUp: false });
  await assert.rejects(r.connector.connect(SERVER, 30_000, CLIENT), Deno.errors.ConnectionRefused);
  assert.equal(r.connector.routeOf(SERVER), undefined);
  assert.equal(r.events.some((e) => e.name === "relay.source_fallback"), false);
});

Deno.test("RelayConnector: a refusal in client mode is final (direct would be refused too); busy ports are skipped", async () => {
  const refused = rig(() => "refused");
  await assert.rejects(refused.connector.connect(SERVER, 30_000, CLIENT), /ECONNREFUSED/);
  assert.equal(refused.gateway.length, 0);
  assert.equal(refused.registry.leased, 0);

  let n = 0;
  const busy = rig(() => (n++ < 2 ? "busy" : "ok"));
  const io = await busy.connector.connect(SERVER, 30_000, CLIENT) as SourcedIo;
  assert.equal(io.relaySource, "client");
  assert.deepEqual(busy.bound.map((b) => b.port), [61000, 61001, 61002]);
  assert.equal(busy.registry.leased, 1);
});

Deno.test("RelayConnector: every port leased → the gateway's address for this connection, logged, not cached", async () => {
  const r = rig(() => "ok");
  const held = [];
  for (let i = 0; i < 4; i++) held.push(await r.connector.connect(SERVER, 30_000, CLIENT));
  const fifth = await r.connector.connect(SERVER, 30_000, CLIENT) as SourcedIo;
  assert.equal(fifth.relaySource, "gateway");
  assert.equal(fifth.sourceReason, "no free relay source port");
  assert.equal(r.events.filter((e) => e.name === "relay.source_ports_exhausted").length, 1);
  assert.equal(r.connector.routeOf(SERVER), "client");
  held[0].close();
  const again = await r.connector.connect(SERVER, 30_000, CLIENT) as SourcedIo;
  assert.equal(again.relaySource, "client");
});

Deno.test("RelayConnector: gateway mode and mixed families never touch the registry", async () => {
  const g = rig(() => "ok", { mode: "gateway" });
  const io = await g.connector.connect(SERVER, 5_000, CLIENT) as SourcedIo;
  assert.equal(io.relaySource, "gateway");
  assert.equal(g.bound.length, 0);
  const m = rig(() => "ok");
  const io6 = await m.connector.connect(SERVER, 5_000, { ip: "2001:db8:1::10", port: 1 });
  assert.equal((io6 as SourcedIo).relaySource, "gateway");
  assert.equal(m.bound.length, 0);
  assert.throws(
    () => new RelayConnector({ settings: settings(), log: {} as EventLog }),
    /registry/,
  );
});

Deno.test({
  name:
    "connectBound() binds the given local port; the same 4-tuple again fails with a busy code; a black hole times out",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    const accepted = listener.accept();
    const io = await connectBound({ ip: "127.0.0.1", port }, 0, 2000).catch(() => undefined);
    // Port 0 lets the kernel choose: the wrapper works as a SessionIo with setNoDelay.
    assert.ok(io);
    const peer = await accepted;
    const local = (peer.remoteAddr as Deno.NetAddr).port;
    const w = io.writable.getWriter();
    await w.write(new TextEncoder().encode("x"));
    const buf = new Uint8Array(1);
    assert.equal(await peer.read(buf), 1);
    const accepted2 = listener.accept();
    const io2 = await connectBound({ ip: "127.0.0.1", port }, local + 1, 2000).catch((e) => e);
    if (io2 instanceof Error) {
      assert.ok(String((io2 as { code?: string }).code).startsWith("E"), String(io2));
    } else {
      const p2 = await accepted2;
      assert.equal((p2.remoteAddr as Deno.NetAddr).port, local + 1, "bound to the asked port");
      // The same local port again, while the first socket holds it: EADDRINUSE.
      const dup = await connectBound({ ip: "127.0.0.1", port }, local + 1, 2000).catch((e) => e);
      // Deno's node:net binds with SO_REUSEADDR: the connect fails (EADDRNOTAVAIL, as EINVAL).
      assert.ok(["EADDRINUSE", "EADDRNOTAVAIL", "EINVAL"].includes(String(dup.code)), String(dup));
      io2.close();
      p2.close();
    }
    // 192.0.2.0/24 is never routed here (RFC 5737): the SYN goes nowhere within 100 ms.
    const t = await connectBound({ ip: "192.0.2.123", port: 25 }, 0, 100).catch((e) => e);
    assert.ok(
      t instanceof ConnectTimeout || typeof (t as { code?: string }).code === "string",
      String(t),
    );
    io.close();
    peer.close();
    listener.close();
  },
});
