/**
 * The relay source in the packet path (pure, no root): relay sockets' packets leave with the
 * client's address, the server's replies come back to the relay socket, and none of it ever
 * touches the client's own diverted flow with the same 4-tuple.
 */
import assert from "node:assert/strict";
import { Diverter, DivertVerdict, PacketHook } from "../../src/divert/diverter.ts";
import { FlowTable } from "../../src/flow/flow_table.ts";
import { RelayRegistry } from "../../src/flow/relay_registry.ts";
import { buildTcpPacket, type TcpPacketSpec } from "../../src/packet/build_tcp_packet.ts";
import { parseCidr } from "../../src/packet/cidr.ts";
import { checksumsValid } from "../../src/packet/checksum.ts";
import { formatIp } from "../../src/packet/ip_address.ts";
import {
  PacketView,
  parsePacket,
  ParseStatus,
  TCP_ACK,
  TCP_FIN,
  TCP_RST,
  TCP_SYN,
} from "../../src/packet/packet_view.ts";
import { ip } from "../packet/packet_helpers.ts";

const { Accept, AcceptModified, Drop } = DivertVerdict;
const { PreRouting, LocalOut } = PacketHook;

const NET = {
  4: {
    client: "192.0.2.10",
    server: "198.51.100.25",
    gateway: "198.51.100.1",
    responder: "192.0.2.1",
  },
  6: {
    client: "2001:db8:1::10",
    server: "2001:db8:25::25",
    gateway: "2001:db8:25::1",
    responder: "2001:db8:1::1",
  },
} as const;
const RESPONDER_PORT = 10025;
const FIRST = 61000;
const LAST = 61009;
const CLIENT_PORT = 40000;

function rig(opts: { relayMax?: number } = {}) {
  const table = new FlowTable({ max: 100, idleSeconds: 600, seed: 1 });
  const registry = new RelayRegistry(FIRST, LAST);
  // The Worker's view of the same shared words, as queue_worker.ts builds it.
  const workerView = RelayRegistry.attach(FIRST, LAST, registry.words);
  const relayTable = new FlowTable({
    max: opts.relayMax ?? registry.size,
    idleSeconds: 600,
    seed: 2,
  });
  const d = new Diverter({
    protect: [parseCidr("198.51.100.0/24"), parseCidr("2001:db8:25::/64")],
    ports: [25],
    responder4: ip(NET[4].responder),
    responder6: ip(NET[6].responder),
    responderPort: RESPONDER_PORT,
    table,
    relay: { registry: workerView, table: relayTable },
  });
  return { d, table, registry, relayTable };
}

function pkt(
  spec: Omit<Partial<TcpPacketSpec>, "src" | "dst"> & { src: string; dst: string },
): Uint8Array {
  return buildTcpPacket({
    srcPort: CLIENT_PORT,
    dstPort: 25,
    flags: TCP_ACK,
    ...spec,
    src: ip(spec.src),
    dst: ip(spec.dst),
  });
}

function endpoints(p: Uint8Array): { src: string; dst: string; valid: boolean } {
  const v = new PacketView();
  assert.equal(parsePacket(p, v), ParseStatus.Tcp);
  return {
    src: `${formatIp(p, v.srcOffset, v.family)}|${v.srcPort}`,
    dst: `${formatIp(p, v.dstOffset, v.family)}|${v.dstPort}`,
    valid: checksumsValid(p, v),
  };
}

for (const family of [4, 6] as const) {
  const n = NET[family];
  const client = { ip: n.client, port: CLIENT_PORT };
  const server = { ip: n.server, port: 25 };

  Deno.test(`Diverter relay (IPv${family}): a first-contact relay socket leaves with the client's address and its own port; the server's replies come back to the socket`, () => {
    const { d, registry, relayTable } = rig();
    const lease = registry.lease(client, server, false)!;
    const lp = lease.port;
    const syn = pkt({ src: n.gateway, dst: n.server, srcPort: lp, flags: TCP_SYN, seq: 7 });
    assert.equal(d.handle(syn, 1000, LocalOut), AcceptModified);
    assert.deepEqual(endpoints(syn), {
      src: `${n.client}|${lp}`,
      dst: `${n.server}|25`,
      valid: true,
    });
    const synAck = pkt({
      src: n.server,
      dst: n.client,
      srcPort: 25,
      dstPort: lp,
      flags: TCP_SYN | TCP_ACK,
    });
    assert.equal(d.handle(synAck, 1001, PreRouting), AcceptModified);
    assert.deepEqual(endpoints(synAck), {
      src: `${n.server}|25`,
      dst: `${n.gateway}|${lp}`,
      valid: true,
    });
    const ack = pkt({ src: n.gateway, dst: n.server, srcPort: lp, payload: new Uint8Array(9) });
    assert.equal(d.handle(ack, 1002, LocalOut), AcceptModified);
    assert.equal(endpoints(ack).src, `${n.client}|${lp}`);
    assert.equal(endpoints(ack).valid, true);
    assert.equal(relayTable.size, 1);
    assert.equal(relayTable.values().next().value!.established, true);
    assert.equal(d.flows.size, 0, "the diverted table never sees relay packets");
  });

  Deno.test(`Diverter relay (IPv${family}): with the route proven the client's own port is kept, and the client's diverted flow with the same 4-tuple stays apart`, () => {
    const { d, table, registry } = rig();
    // The client's own connection, diverted to the responder.
    const clientSyn = pkt({ src: n.client, dst: n.server, flags: TCP_SYN, seq: 1 });
    assert.equal(d.handle(clientSyn, 1000, PreRouting), AcceptModified);
    assert.equal(endpoints(clientSyn).dst, `${n.responder}|${RESPONDER_PORT}`);
    const lp = registry.lease(client, server, true)!.port;
    const relaySyn = pkt({ src: n.gateway, dst: n.server, srcPort: lp, flags: TCP_SYN });
    assert.equal(d.handle(relaySyn, 1001, LocalOut), AcceptModified);
    // On the wire: the very 4-tuple of the client's own connection — what the server should see.
    assert.equal(endpoints(relaySyn).src, `${n.client}|${CLIENT_PORT}`);
    assert.equal(endpoints(relaySyn).dst, `${n.server}|25`);
    // The server's reply to C:cp arrives on PREROUTING and goes to the relay socket...
    const reply = pkt({ src: n.server, dst: n.client, srcPort: 25, dstPort: CLIENT_PORT });
    assert.equal(d.handle(reply, 1002, PreRouting), AcceptModified);
    assert.equal(endpoints(reply).dst, `${n.gateway}|${lp}`);
    // ...while the responder's reply to the client (LOCAL_OUT) still becomes S:25 → C:cp.
    const resp = pkt({
      src: n.responder,
      dst: n.client,
      srcPort: RESPONDER_PORT,
      dstPort: CLIENT_PORT,
    });
    assert.equal(d.handle(resp, 1003, LocalOut), AcceptModified);
    assert.deepEqual(endpoints(resp), {
      src: `${n.server}|25`,
      dst: `${n.client}|${CLIENT_PORT}`,
      valid: true,
    });
    // And the client's next packet still goes to the responder.
    const clientAck = pkt({ src: n.client, dst: n.server });
    assert.equal(d.handle(clientAck, 1004, PreRouting), AcceptModified);
    assert.equal(endpoints(clientAck).dst, `${n.responder}|${RESPONDER_PORT}`);
    assert.equal(table.size, 1);
    assert.equal(d.stats().relayFlowsKeptClientPort, 1);
  });
}

Deno.test("Diverter relay: a second relay socket for the same client while the first still holds its port uses its own port", () => {
  const { d, registry } = rig();
  const client = { ip: NET[4].client, port: CLIENT_PORT };
  const server = { ip: NET[4].server, port: 25 };
  const a = registry.lease(client, server, true)!.port;
  const b = registry.lease(client, server, true)!.port;
  const synA = pkt({ src: NET[4].gateway, dst: NET[4].server, srcPort: a, flags: TCP_SYN });
  const synB = pkt({ src: NET[4].gateway, dst: NET[4].server, srcPort: b, flags: TCP_SYN });
  assert.equal(d.handle(synA, 1, LocalOut), AcceptModified);
  assert.equal(d.handle(synB, 2, LocalOut), AcceptModified);
  assert.equal(endpoints(synA).src, `${NET[4].client}|${CLIENT_PORT}`);
  assert.equal(endpoints(synB).src, `${NET[4].client}|${b}`);
});

Deno.test("Diverter relay: packets of the relay range without a registration keep the gateway's address; a registered socket without a flow is dropped", () => {
  const { d, registry } = rig();
  const unregistered = pkt({
    src: NET[4].gateway,
    dst: NET[4].server,
    srcPort: FIRST + 5,
    flags: TCP_SYN,
  });
  const before = unregistered.slice();
  assert.equal(d.handle(unregistered, 1, LocalOut), Accept);
  assert.deepEqual(unregistered, before);
  const lp = registry.lease({ ip: NET[4].client, port: 1 }, { ip: NET[4].server, port: 25 }, false)!
    .port;
  const orphan = pkt({ src: NET[4].gateway, dst: NET[4].server, srcPort: lp });
  assert.equal(d.handle(orphan, 2, LocalOut), Drop, "no SYN seen: never sent without a flow");
});

Deno.test("Diverter relay: a registration for another server is refused (fail closed)", () => {
  const { d, registry } = rig();
  const lp =
    registry.lease({ ip: NET[4].client, port: 1 }, { ip: "198.51.100.26", port: 25 }, false)!
      .port;
  const syn = pkt({ src: NET[4].gateway, dst: NET[4].server, srcPort: lp, flags: TCP_SYN });
  assert.equal(d.handle(syn, 1, LocalOut), Drop);
  assert.equal(d.stats().relayDroppedMismatch, 1);
});

Deno.test("Diverter relay: replies from a protected server that belong to no relay flow pass unmodified (a direct connection)", () => {
  const { d } = rig();
  const p = pkt({ src: NET[4].server, dst: NET[4].client, srcPort: 25, dstPort: 5555 });
  const before = p.slice();
  assert.equal(d.handle(p, 1, PreRouting), Accept);
  assert.deepEqual(p, before);
});

Deno.test("Diverter relay: without the hook (Unknown) relay packets are never recognised", () => {
  const { d, registry } = rig();
  const lp = registry.lease({ ip: NET[4].client, port: 1 }, { ip: NET[4].server, port: 25 }, false)!
    .port;
  const syn = pkt({ src: NET[4].gateway, dst: NET[4].server, srcPort: lp, flags: TCP_SYN });
  // Without the hook it looks like an inbound SYN to a protected server: the diverted path.
  assert.equal(d.handle(syn, 1), AcceptModified);
  assert.equal(endpoints(syn).dst, `${NET[4].responder}|${RESPONDER_PORT}`);
  assert.equal(d.stats().relayFlowsCreated, 0);
});

Deno.test("Diverter relay: a reused port replaces the old relay flow; RST and FIN end flows like diverted ones", () => {
  const { d, registry, relayTable } = rig();
  const c = { ip: NET[4].client, port: CLIENT_PORT };
  const s = { ip: NET[4].server, port: 25 };
  const first = registry.lease(c, s, false)!;
  const lp = first.port;
  assert.equal(
    d.handle(
      pkt({ src: NET[4].gateway, dst: NET[4].server, srcPort: lp, flags: TCP_SYN }),
      1,
      LocalOut,
    ),
    AcceptModified,
  );
  const rst = pkt({
    src: NET[4].server,
    dst: NET[4].client,
    srcPort: 25,
    dstPort: lp,
    flags: TCP_RST,
  });
  assert.equal(d.handle(rst, 2, PreRouting), AcceptModified);
  assert.equal(relayTable.values().next().value!.rstSeen, true);
  first.release();
  // The connector leases until it lands on the same port again (round robin over 10 ports).
  const held = [];
  let again;
  for (let i = 0; i < registry.size; i++) {
    const l = registry.lease({ ip: NET[4].client, port: 40001 }, s, false)!;
    if (l.port === lp) {
      again = l;
      break;
    }
    held.push(l);
  }
  assert.ok(again, "the port comes round again");
  const syn2 = pkt({
    src: NET[4].gateway,
    dst: NET[4].server,
    srcPort: lp,
    flags: TCP_SYN,
    seq: 99,
  });
  assert.equal(d.handle(syn2, 3, LocalOut), AcceptModified);
  assert.equal(endpoints(syn2).src, `${NET[4].client}|${lp}`);
  assert.equal(relayTable.size, 1, "the old flow was replaced");
  assert.equal(relayTable.stats().endedReplaced, 1);
  // FIN both ways, then the linger: the flow ends.
  const finOut = pkt({
    src: NET[4].gateway,
    dst: NET[4].server,
    srcPort: lp,
    flags: TCP_FIN | TCP_ACK,
  });
  const finIn = pkt({
    src: NET[4].server,
    dst: NET[4].client,
    srcPort: 25,
    dstPort: lp,
    flags: TCP_FIN | TCP_ACK,
  });
  assert.equal(d.handle(finOut, 4, LocalOut), AcceptModified);
  assert.equal(d.handle(finIn, 5, PreRouting), AcceptModified);
  assert.equal(d.expire(5 + relayTable.finLingerMs), 1);
  assert.equal(relayTable.size, 0);
});

Deno.test("RelayRegistry: leases every port of the range once, refuses the next, and a released port is leased again", () => {
  const registry = new RelayRegistry(FIRST, LAST);
  const c = { ip: NET[4].client, port: 1 };
  const s = { ip: NET[4].server, port: 25 };
  const leases = [];
  for (let i = 0; i < registry.size; i++) leases.push(registry.lease(c, s, false)!);
  assert.equal(new Set(leases.map((l) => l.port)).size, registry.size);
  assert.equal(registry.lease(c, s, false), undefined, "limit+1: refused");
  leases[3].release();
  leases[3].release(); // twice is harmless
  assert.equal(registry.leased, registry.size - 1);
  assert.equal(registry.describe(leases[3].port), undefined, "a released slot reads as free");
  const again = registry.lease(
    { ip: NET[6].client, port: 2 },
    { ip: NET[6].server, port: 25 },
    true,
  )!;
  assert.equal(again.port, leases[3].port);
  assert.deepEqual(registry.describe(again.port), {
    client: `${NET[6].client}:2`,
    server: `${NET[6].server}:25`,
    flags: 1,
  });
});

Deno.test("RelayRegistry: skips busy ports, refuses mixed families, and rejects ranges outside 1..65535 or over 4096 ports", () => {
  const registry = new RelayRegistry(FIRST, FIRST + 1);
  const s = { ip: NET[4].server, port: 25 };
  assert.equal(registry.lease({ ip: NET[6].client, port: 1 }, s, false), undefined);
  const l = registry.lease({ ip: NET[4].client, port: 1 }, s, false, new Set([FIRST]))!;
  assert.equal(l.port, FIRST + 1);
  assert.throws(() => new RelayRegistry(0, 10), /range/);
  assert.throws(() => new RelayRegistry(65000, 65536), /range/);
  assert.throws(() => new RelayRegistry(10, 9), /range/);
  new RelayRegistry(1000, 1000 + 4095); // limit: 4096 ports
  assert.throws(() => new RelayRegistry(1000, 1000 + 4096), /4096/);
});

Deno.test("Diverter: a relay table shared with the diverted flows is refused", () => {
  const table = new FlowTable({ max: 10, idleSeconds: 60 });
  assert.throws(
    () =>
      new Diverter({
        protect: [parseCidr("198.51.100.0/24")],
        ports: [25],
        responder4: ip("192.0.2.1"),
        responderPort: 10025,
        table,
        relay: { registry: new RelayRegistry(FIRST, LAST), table },
      }),
    /own/,
  );
});
