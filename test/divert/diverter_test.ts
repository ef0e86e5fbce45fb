import assert from "node:assert/strict";
import {
  Diverter,
  DiverterError,
  DivertVerdict,
  type FlowEvent,
} from "../../src/divert/diverter.ts";
import { FlowTable } from "../../src/flow/flow_table.ts";
import { SynCache } from "../../src/flow/syn_cache.ts";
import { buildTcpPacket, type TcpPacketSpec } from "../../src/packet/build_tcp_packet.ts";
import { cidrContains, parseCidr } from "../../src/packet/cidr.ts";
import { checksumsValid } from "../../src/packet/checksum.ts";
import { formatIp } from "../../src/packet/ip_address.ts";
import {
  PacketView,
  parsePacket,
  ParseStatus,
  TCP_ACK,
  TCP_FIN,
  TCP_PSH,
  TCP_RST,
  TCP_SYN,
} from "../../src/packet/packet_view.ts";
import { ip, prng } from "../packet/packet_helpers.ts";

const { Accept, AcceptModified, Drop } = DivertVerdict;

/** The two families' addresses for the same roles. */
const NET = {
  4: {
    client: "192.0.2.10",
    client2: "192.0.2.11",
    server: "198.51.100.25",
    server2: "198.51.100.26",
    unprotected: "203.0.113.25",
    responder: "192.0.2.1",
  },
  6: {
    client: "2001:db8:1::10",
    client2: "2001:db8:1::11",
    server: "2001:db8:25::25",
    server2: "2001:db8:25::26",
    unprotected: "2001:db8:99::25",
    responder: "2001:db8:1::1",
  },
} as const;
const RESPONDER_PORT = 10025;

interface Rig {
  d: Diverter;
  table: FlowTable;
  events: FlowEvent[];
  blocked: Set<string>;
}

function rig(opts: { max?: number; v4Responder?: boolean; v6Responder?: boolean } = {}): Rig {
  const table = new FlowTable({ max: opts.max ?? 100, idleSeconds: 600, seed: 1 });
  const events: FlowEvent[] = [];
  const blocked = new Set<string>();
  const d = new Diverter({
    protect: [parseCidr("198.51.100.0/24"), parseCidr("2001:db8:25::/64")],
    ports: [25, 587],
    responder4: opts.v4Responder === false ? undefined : ip(NET[4].responder),
    responder6: opts.v6Responder === false ? undefined : ip(NET[6].responder),
    responderPort: RESPONDER_PORT,
    table,
    isBlocked: (family, addr) => blocked.has(formatIp(addr, 0, family)),
    onFlow: (e) => events.push(e),
  });
  return { d, table, events, blocked };
}

/** The server a half-open connection (SYN seen, no handshake ACK yet) asked for, as "ip|port". */
function halfOpen(d: Diverter, client: string, port: number, now = 0): string | undefined {
  const bytes = ip(client);
  const family = bytes.length === 4 ? 4 : 6;
  const s = d.syns.find(family, bytes, 0, port, now);
  if (s < 0) return undefined;
  return `${formatIp(d.syns.addresses, d.syns.serverOffset(s), family)}|${d.syns.serverPort(s)}`;
}

function pkt(
  spec: Omit<Partial<TcpPacketSpec>, "src" | "dst"> & { src: string; dst: string },
): Uint8Array {
  return buildTcpPacket({
    srcPort: 40000,
    dstPort: 25,
    flags: TCP_ACK,
    ...spec,
    src: ip(spec.src),
    dst: ip(spec.dst),
  });
}

/** Parsed endpoints of a packet, and whether its checksums verify. */
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

  Deno.test(`Diverter (IPv${family}): a SYN creates a flow and is rewritten to the responder; the reply is rewritten back`, () => {
    const { d, events, table } = rig();
    const syn = pkt({ src: n.client, dst: n.server, flags: TCP_SYN, seq: 100 });
    assert.equal(d.handle(syn, 1000), AcceptModified);
    assert.deepEqual(endpoints(syn), {
      src: `${n.client}|40000`,
      dst: `${n.responder}|${RESPONDER_PORT}`,
      valid: true,
    });
    assert.equal(events.length, 0, "a half-open flow is not told");
    assert.equal(table.lookup(n.client, 40000), undefined, "no Flow before the handshake ACK");
    assert.equal(halfOpen(d, n.client, 40000), `${n.server}|25`);
    const ack = pkt({ src: n.client, dst: n.server, seq: 101 });
    assert.equal(d.handle(ack, 1000), AcceptModified);
    assert.equal(events.length, 1, "the client's ACK tells the flow");
    assert.deepEqual(events[0], {
      type: "new",
      family,
      clientIp: n.client,
      clientPort: 40000,
      serverIp: n.server,
      serverPort: 25,
      id: events[0].id,
    });
    assert.equal(table.lookup(n.client, 40000)?.serverIp, n.server);
    assert.equal(halfOpen(d, n.client, 40000), undefined, "the half-open entry became the Flow");

    const synAck = pkt({
      src: n.responder,
      dst: n.client,
      srcPort: RESPONDER_PORT,
      dstPort: 40000,
      flags: TCP_SYN | TCP_ACK,
    });
    assert.equal(d.handle(synAck, 1001), AcceptModified);
    assert.deepEqual(endpoints(synAck), {
      src: `${n.server}|25`,
      dst: `${n.client}|40000`,
      valid: true,
    });

    const data = pkt({
      src: n.client,
      dst: n.server,
      flags: TCP_ACK | TCP_PSH,
      payload: new TextEncoder().encode("EHLO x\r\n"),
    });
    assert.equal(d.handle(data, 1002), AcceptModified);
    assert.deepEqual(endpoints(data), {
      src: `${n.client}|40000`,
      dst: `${n.responder}|${RESPONDER_PORT}`,
      valid: true,
    });

    const banner = pkt({
      src: n.responder,
      dst: n.client,
      srcPort: RESPONDER_PORT,
      dstPort: 40000,
      payload: new TextEncoder().encode("220 hi\r\n"),
    });
    assert.equal(d.handle(banner, 1003), AcceptModified);
    assert.deepEqual(endpoints(banner), {
      src: `${n.server}|25`,
      dst: `${n.client}|40000`,
      valid: true,
    });

    const s = d.stats();
    assert.equal(s.packetsIn, 3);
    assert.equal(s.packetsOut, 2);
    assert.equal(s.rewritten, 5);
    assert.equal(s.flowsActive, 1);
    assert.equal(s.flowsCreated, 1);
    assert.equal(s.dropped, 0);
  });

  Deno.test(`Diverter (IPv${family}): responder packets to an unknown client are dropped`, () => {
    const { d } = rig();
    for (
      const flags of [TCP_ACK, TCP_RST, TCP_RST | TCP_ACK, TCP_SYN | TCP_ACK, TCP_FIN | TCP_ACK]
    ) {
      const p = pkt({
        src: n.responder,
        dst: n.client,
        srcPort: RESPONDER_PORT,
        dstPort: 40000,
        flags,
      });
      const copy = new Uint8Array(p);
      assert.equal(d.handle(p, 0), Drop);
      assert.deepEqual(p, copy, "a dropped packet is not modified");
    }
    // Known client address, other port: still unknown.
    d.handle(pkt({ src: n.client, dst: n.server, flags: TCP_SYN }), 0);
    assert.equal(
      d.handle(
        pkt({ src: n.responder, dst: n.client, srcPort: RESPONDER_PORT, dstPort: 40001 }),
        0,
      ),
      Drop,
    );
    assert.equal(d.stats().droppedUnknownOutbound, 6);
  });

  Deno.test(`Diverter (IPv${family}): traffic that is not diverted passes unmodified`, () => {
    const { d, events } = rig();
    const cases: [string, Uint8Array][] = [
      ["unprotected destination", pkt({ src: n.client, dst: n.unprotected, flags: TCP_SYN })],
      [
        "protected destination, port 80",
        pkt({ src: n.client, dst: n.server, dstPort: 80, flags: TCP_SYN }),
      ],
      [
        "protected destination, port 24",
        pkt({ src: n.client, dst: n.server, dstPort: 24, flags: TCP_SYN }),
      ],
      [
        "protected destination, port 26",
        pkt({ src: n.client, dst: n.server, dstPort: 26, flags: TCP_SYN }),
      ],
      [
        "the real server answering a direct connection",
        pkt({ src: n.server, dst: n.client, srcPort: 25, dstPort: 40000 }),
      ],
      [
        "responder address, other source port",
        pkt({ src: n.responder, dst: n.client, srcPort: 10026, dstPort: 40000 }),
      ],
      [
        "data of an unknown flow (a connection made while SSG was down)",
        pkt({ src: n.client, dst: n.server }),
      ],
      [
        "SYN+ACK towards a protected server",
        pkt({ src: n.client, dst: n.server, flags: TCP_SYN | TCP_ACK }),
      ],
    ];
    for (const [name, p] of cases) {
      const copy = new Uint8Array(p);
      assert.equal(d.handle(p, 0), Accept, name);
      assert.deepEqual(p, copy, name);
    }
    assert.equal(events.length, 0);
    assert.equal(d.flows.size, 0);
  });

  Deno.test(`Diverter (IPv${family}): a second configured port (587) is diverted too`, () => {
    const { d } = rig();
    const syn = pkt({ src: n.client, dst: n.server, dstPort: 587, flags: TCP_SYN });
    assert.equal(d.handle(syn, 0), AcceptModified);
    assert.equal(halfOpen(d, n.client, 40000), `${n.server}|587`);
    const reply = pkt({ src: n.responder, dst: n.client, srcPort: RESPONDER_PORT, dstPort: 40000 });
    assert.equal(d.handle(reply, 0), AcceptModified);
    assert.equal(endpoints(reply).src, `${n.server}|587`);
  });

  /** SYN, then the client's ACK: an established flow from client port `port`. */
  const connect = (d: Diverter, port: number, now = 0): [DivertVerdict, DivertVerdict] => [
    d.handle(pkt({ src: n.client, dst: n.server, srcPort: port, flags: TCP_SYN }), now),
    d.handle(pkt({ src: n.client, dst: n.server, srcPort: port, flags: TCP_ACK }), now),
  ];

  Deno.test(`Diverter (IPv${family}): when the table is full of established flows a new SYN is dropped, not passed`, () => {
    const max = 3;
    const { d, table } = rig({ max });
    for (let i = 0; i < max - 1; i++) {
      assert.deepEqual(connect(d, 1000 + i), [AcceptModified, AcceptModified], `max-1: ${i}`);
    }
    assert.deepEqual(connect(d, 2000), [AcceptModified, AcceptModified], "max");
    assert.equal(table.size, max);
    const over = pkt({ src: n.client, dst: n.server, srcPort: 2001, flags: TCP_SYN });
    const copy = new Uint8Array(over);
    assert.equal(d.handle(over, 0), Drop, "max+1");
    assert.deepEqual(over, copy);
    assert.equal(d.stats().droppedTableFull, 1);
    // Its later packets are unknown and go to the real server (which answers RST).
    assert.equal(d.handle(pkt({ src: n.client, dst: n.server, srcPort: 2001 }), 0), Accept);
    // After one flow ends, the next SYN is diverted again.
    d.handle(pkt({ src: n.client, dst: n.server, srcPort: 1000, flags: TCP_RST }), 1);
    d.expire(1 + table.rstLingerMs);
    assert.equal(d.handle(over, 1 + table.rstLingerMs), AcceptModified);
  });

  Deno.test(`Diverter (IPv${family}): a full SYN cache gives its oldest half-open entry's slot to a new SYN (SYN flood)`, () => {
    const { d, table, events } = rig({ max: 2 }); // SYN cache of 2 entries
    connect(d, 1000);
    for (
      const [src, port, now] of [[n.client2, 40000, 1], [n.client, 3000, 2], [
        n.client,
        3001,
        3,
      ]] as const
    ) {
      assert.equal(
        d.handle(pkt({ src, dst: n.server, srcPort: port, flags: TCP_SYN }), now),
        AcceptModified,
      );
    }
    assert.equal(
      halfOpen(d, n.client2, 40000, 3),
      undefined,
      "the oldest half-open entry was evicted",
    );
    assert.equal(halfOpen(d, n.client, 3000, 3), `${n.server}|25`);
    assert.equal(halfOpen(d, n.client, 3001, 3), `${n.server}|25`);
    assert.ok(table.lookup(n.client, 1000), "the established flow stays");
    assert.equal(d.stats().flowsEvicted, 1);
    assert.equal(d.stats().flowsHalfOpen, 2);
    // The evicted entry was never told, so its end is not told either.
    assert.deepEqual(events.map((e) => [e.type, e.clientIp]), [["new", n.client]]);
    // A half-open entry still completes its handshake into a flow.
    assert.equal(d.handle(pkt({ src: n.client, dst: n.server, srcPort: 3000 }), 4), AcceptModified);
    assert.equal(table.size, 2);
  });

  Deno.test(`Diverter (IPv${family}): a spoofed SYN flood makes no flow events and no Flow, however many half-open connections come and go`, () => {
    const { d, table, events } = rig({ max: 8 });
    connect(d, 1000);
    for (let i = 0; i < 100; i++) {
      const r = d.handle(
        pkt({ src: n.client2, dst: n.server, srcPort: 2000 + i, flags: TCP_SYN }),
        i,
      );
      assert.equal(r, AcceptModified);
    }
    const s = d.stats();
    assert.equal(s.synsSeen, 101);
    assert.equal(s.flowsHalfOpen, 8, "the SYN cache is full");
    assert.equal(s.flowsEvicted, 92);
    assert.equal(table.size, 1, "only the established flow is a Flow");
    assert.equal(d.syns.bytes, new SynCache({ capacity: 8 }).bytes, "no growth");
    assert.deepEqual(events.map((e) => [e.type, e.clientIp]), [["new", n.client]]);
    // The SYN-ACKs of the newest half-open connections are still rewritten; evicted ones dropped.
    const synAck = (port: number) =>
      pkt({
        src: n.responder,
        dst: n.client2,
        srcPort: RESPONDER_PORT,
        dstPort: port,
        flags: TCP_SYN | TCP_ACK,
      });
    assert.equal(d.handle(synAck(2099), 100), AcceptModified);
    assert.equal(d.handle(synAck(2000), 100), Drop);
  });

  Deno.test(`Diverter (IPv${family}): a handshake the client never completes ends after synTimeoutMs`, () => {
    const { d, table } = rig();
    d.handle(pkt({ src: n.client, dst: n.server, flags: TCP_SYN }), 0);
    // The responder's SYN-ACK does not complete the handshake; only the client's ACK does.
    d.handle(
      pkt({
        src: n.responder,
        dst: n.client,
        srcPort: RESPONDER_PORT,
        dstPort: 40000,
        flags: TCP_SYN | TCP_ACK,
      }),
      10,
    );
    assert.equal(table.lookup(n.client, 40000), undefined);
    assert.equal(halfOpen(d, n.client, 40000, 10), `${n.server}|25`);
    assert.equal(d.expire(table.synTimeoutMs - 1), 0);
    assert.equal(d.expire(table.synTimeoutMs), 1);
    assert.equal(d.stats().flowsEndedHandshake, 1);
    // Its late ACK is not diverted (the real server answers it with RST).
    assert.equal(d.handle(pkt({ src: n.client, dst: n.server }), table.synTimeoutMs), Accept);
    // Completed handshakes live on to the idle timeout.
    connect(d, 5000, 100);
    assert.equal(table.lookup(n.client, 5000)?.established, true);
    assert.equal(d.expire(100 + table.synTimeoutMs), 0);
  });

  Deno.test(`Diverter (IPv${family}): SYN with RST or FIN is dropped and creates no flow`, () => {
    const { d, table } = rig();
    for (
      const flags of [TCP_SYN | TCP_RST, TCP_SYN | TCP_FIN, TCP_SYN | TCP_FIN | TCP_RST | TCP_ACK]
    ) {
      assert.equal(d.handle(pkt({ src: n.client, dst: n.server, flags }), 0), Drop);
    }
    assert.equal(table.size, 0);
    assert.equal(d.stats().droppedInvalid, 3);
  });

  Deno.test(`Diverter (IPv${family}): a blocked client's SYN is dropped; others are not`, () => {
    const { d, blocked, events } = rig();
    blocked.add(n.client);
    assert.equal(d.handle(pkt({ src: n.client, dst: n.server, flags: TCP_SYN }), 0), Drop);
    assert.equal(
      d.handle(pkt({ src: n.client2, dst: n.server, flags: TCP_SYN }), 0),
      AcceptModified,
    );
    assert.equal(d.stats().droppedBlocked, 1);
    assert.equal(d.stats().synsSeen, 2);
    assert.equal(d.handle(pkt({ src: n.client2, dst: n.server }), 1), AcceptModified);
    assert.equal(events.length, 1);
    assert.equal(events[0].clientIp, n.client2);
  });

  Deno.test(`Diverter (IPv${family}): without a responder address of the family, SYNs are dropped`, () => {
    const { d } = rig({ v4Responder: family !== 4, v6Responder: family !== 6 });
    assert.equal(d.handle(pkt({ src: n.client, dst: n.server, flags: TCP_SYN }), 0), Drop);
    assert.equal(d.stats().droppedNoResponder, 1);
  });

  Deno.test(`Diverter (IPv${family}): FIN both ways ends the flow after the linger; late segments still rewritten`, () => {
    const { d, events, table } = rig();
    d.handle(pkt({ src: n.client, dst: n.server, flags: TCP_SYN }), 0);
    d.handle(pkt({ src: n.client, dst: n.server }), 50);
    d.handle(
      pkt({
        src: n.responder,
        dst: n.client,
        srcPort: RESPONDER_PORT,
        dstPort: 40000,
        flags: TCP_FIN | TCP_ACK,
      }),
      100,
    );
    d.handle(pkt({ src: n.client, dst: n.server, flags: TCP_FIN | TCP_ACK }), 200);
    const flow = table.lookup(n.client, 40000)!;
    assert.ok(flow.closing);
    const lastAck = pkt({ src: n.client, dst: n.server });
    assert.equal(d.handle(lastAck, 300), AcceptModified, "the last ACK is still diverted");
    assert.equal(d.expire(200 + table.finLingerMs - 1), 0);
    assert.equal(d.expire(200 + table.finLingerMs), 1);
    assert.deepEqual(events.map((e) => [e.type, e.reason]), [["new", undefined], ["end", "fin"]]);
    assert.equal(d.stats().flowsEndedFin, 1);
  });

  Deno.test(`Diverter (IPv${family}): RST from either side ends the flow after the RST linger`, () => {
    for (const fromClient of [true, false]) {
      const { d, events, table } = rig();
      d.handle(pkt({ src: n.client, dst: n.server, flags: TCP_SYN }), 0);
      d.handle(pkt({ src: n.client, dst: n.server }), 10);
      const rst = fromClient ? pkt({ src: n.client, dst: n.server, flags: TCP_RST }) : pkt({
        src: n.responder,
        dst: n.client,
        srcPort: RESPONDER_PORT,
        dstPort: 40000,
        flags: TCP_RST | TCP_ACK,
      });
      assert.equal(d.handle(rst, 50), AcceptModified);
      // Amortised expiry inside handle(): an unrelated packet after the linger ends the flow.
      d.handle(pkt({ src: n.client2, dst: n.unprotected }), 50 + table.rstLingerMs - 1);
      assert.equal(table.size, 1);
      d.handle(pkt({ src: n.client2, dst: n.unprotected }), 50 + table.rstLingerMs);
      assert.equal(table.size, 0);
      assert.deepEqual(events.at(-1)?.reason, "rst");
    }
  });

  Deno.test(`Diverter (IPv${family}): a retransmitted SYN keeps the flow; a new SYN on the same port replaces it`, () => {
    const { d, events, table } = rig();
    d.handle(pkt({ src: n.client, dst: n.server, flags: TCP_SYN, seq: 5 }), 0);
    assert.equal(
      d.handle(pkt({ src: n.client, dst: n.server, flags: TCP_SYN, seq: 5 }), 1000),
      AcceptModified,
    );
    assert.equal(halfOpen(d, n.client, 40000, 1000), `${n.server}|25`, "retransmission");
    assert.equal(d.stats().synRetransmits, 1);
    assert.equal(d.stats().synCacheInserted, 1, "retransmission: same entry");
    assert.equal(
      d.handle(pkt({ src: n.client, dst: n.server2, flags: TCP_SYN, seq: 5 }), 2000),
      AcceptModified,
    );
    assert.equal(halfOpen(d, n.client, 40000, 2000), `${n.server2}|25`, "other server: replaced");
    assert.equal(table.size, 0);
    assert.equal(
      d.handle(pkt({ src: n.client, dst: n.server2, flags: TCP_SYN, seq: 999 }), 3000),
      AcceptModified,
    );
    assert.equal(events.length, 0, "none of these flows completed a handshake");
    d.handle(pkt({ src: n.client, dst: n.server2, seq: 1000 }), 3000);
    assert.equal(
      d.handle(pkt({ src: n.client, dst: n.server, flags: TCP_SYN, seq: 7 }), 3000),
      AcceptModified,
    );
    d.handle(pkt({ src: n.client, dst: n.server, seq: 8 }), 3000);
    assert.deepEqual(events.map((e) => [e.type, e.serverIp, e.reason]), [
      ["new", n.server2, undefined],
      ["end", n.server2, "replaced"],
      ["new", n.server, undefined],
    ]);
    d.handle(pkt({ src: n.client, dst: n.server2, flags: TCP_SYN, seq: 999 }), 3000);
    const reply = pkt({ src: n.responder, dst: n.client, srcPort: RESPONDER_PORT, dstPort: 40000 });
    d.handle(reply, 3001);
    assert.equal(endpoints(reply).src, `${n.server2}|25`);
  });

  Deno.test(`Diverter (IPv${family}): a non-SYN packet to another server from a diverted client port is not injected`, () => {
    const { d } = rig();
    d.handle(pkt({ src: n.client, dst: n.server, flags: TCP_SYN }), 0);
    const other = pkt({ src: n.client, dst: n.server2 });
    const copy = new Uint8Array(other);
    assert.equal(d.handle(other, 1), Accept);
    assert.deepEqual(other, copy);
    assert.equal(d.handle(pkt({ src: n.client, dst: n.server, dstPort: 587 }), 1), Accept);
    assert.equal(d.stats().passedUnknownInbound, 2);
  });
}

Deno.test("Diverter drops unreadable packets from the responder or to a protected server, and passes other unreadable ones", () => {
  const { d } = rig();
  const frag = buildTcpPacket({
    src: ip("192.0.2.1"),
    dst: ip("192.0.2.10"),
    srcPort: RESPONDER_PORT,
    dstPort: 40000,
    fragmentWord: 0x2000,
  });
  assert.equal(d.handle(frag, 0), Drop);
  const frag6 = buildTcpPacket({
    src: ip("2001:db8:1::1"),
    dst: ip("2001:db8:1::10"),
    srcPort: RESPONDER_PORT,
    dstPort: 40000,
    extensions: [{ type: 44 }],
  });
  assert.equal(d.handle(frag6, 0), Drop);
  const inFrag = buildTcpPacket({
    src: ip("192.0.2.10"),
    dst: ip("198.51.100.25"),
    srcPort: 40000,
    dstPort: 25,
    flags: TCP_SYN,
    fragmentWord: 0x2000,
  });
  // A fragmented SYN to a protected server would open a connection around the gateway.
  assert.equal(d.handle(inFrag, 0), Drop);
  const inFrag6 = buildTcpPacket({
    src: ip("2001:db8:1::10"),
    dst: ip("2001:db8:25::25"),
    srcPort: 40000,
    dstPort: 25,
    flags: TCP_SYN,
    extensions: [{ type: 44 }],
  });
  assert.equal(d.handle(inFrag6, 0), Drop);
  const otherFrag = buildTcpPacket({
    src: ip("192.0.2.10"),
    dst: ip("203.0.113.25"),
    srcPort: 40000,
    dstPort: 25,
    flags: TCP_SYN,
    fragmentWord: 0x2000,
  });
  assert.equal(d.handle(otherFrag, 0), Accept);
  assert.equal(d.handle(new Uint8Array(0), 0), Accept);
  assert.equal(d.handle(Uint8Array.of(0x45, 0, 0), 0), Accept);
  const s = d.stats();
  assert.equal(s.packetsUnreadable, 7);
  assert.equal(s.droppedUnreadableOutbound, 2);
  assert.equal(s.droppedUnreadableInbound, 2);
});

Deno.test("Diverter handles IPv4 and IPv6 flows of the same client port independently", () => {
  const { d } = rig();
  d.handle(pkt({ src: NET[4].client, dst: NET[4].server, flags: TCP_SYN }), 0);
  d.handle(pkt({ src: NET[6].client, dst: NET[6].server, flags: TCP_SYN }), 0);
  assert.equal(d.syns.size, 2);
  const r4 = pkt({
    src: NET[4].responder,
    dst: NET[4].client,
    srcPort: RESPONDER_PORT,
    dstPort: 40000,
  });
  const r6 = pkt({
    src: NET[6].responder,
    dst: NET[6].client,
    srcPort: RESPONDER_PORT,
    dstPort: 40000,
  });
  assert.equal(d.handle(r4, 1), AcceptModified);
  assert.equal(d.handle(r6, 1), AcceptModified);
  assert.equal(endpoints(r4).src, `${NET[4].server}|25`);
  assert.equal(endpoints(r6).src, `${NET[6].server}|25`);
});

Deno.test("new Diverter() rejects bad options with a precise message", () => {
  const table = new FlowTable({ max: 10, idleSeconds: 600 });
  const base = { protect: [], ports: [25], responderPort: 10025, table };
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ responder4: new Uint8Array(16) }, /responder4 must be 4 bytes, got 16/],
    [{ responder6: new Uint8Array(4) }, /responder6 must be 16 bytes, got 4/],
    [{ responderPort: 0 }, /responderPort must be 1\.\.65535, got 0/],
    [{ responderPort: 65536 }, /responderPort must be 1\.\.65535, got 65536/],
    [{ ports: [25, 0] }, /Protected port must be 1\.\.65535, got 0/],
  ];
  for (const [extra, re] of cases) {
    assert.throws(() => new Diverter({ ...base, ...extra }), (e: unknown) => {
      assert.ok(e instanceof DiverterError);
      assert.equal(e.name, "DiverterError");
      assert.match(e.message, re);
      return true;
    });
  }
});

Deno.test({
  name: "Diverter.handle() allocates nothing per packet on the data path (no GC in 2M packets)",
  // A child process with --trace-gc: every young-generation collection is printed, so a
  // per-packet allocation of even a few bytes shows up as dozens of scavenges.
  fn: async () => {
    const mod = (p: string) => JSON.stringify(import.meta.resolve(p));
    const code = `
      import { Diverter } from ${mod("../../src/divert/diverter.ts")};
      import { FlowTable } from ${mod("../../src/flow/flow_table.ts")};
      import { buildTcpPacket } from ${mod("../../src/packet/build_tcp_packet.ts")};
      import { parseCidr } from ${mod("../../src/packet/cidr.ts")};
      import { parseIp } from ${mod("../../src/packet/ip_address.ts")};
      const ip = (t) => parseIp(t);
      const table = new FlowTable({ max: 1024, idleSeconds: 600 });
      const d = new Diverter({ protect: [parseCidr("198.51.100.0/24"), parseCidr("2001:db8:25::/64")],
        ports: [25], responder4: ip("192.0.2.1"), responder6: ip("2001:db8:1::1"), responderPort: 10025, table });
      const pairs = [["192.0.2.10", "198.51.100.25", "192.0.2.1"], ["2001:db8:1::10", "2001:db8:25::25", "2001:db8:1::1"]]
        .map(([c, s, r]) => {
          d.handle(buildTcpPacket({ src: ip(c), dst: ip(s), srcPort: 1024, dstPort: 25, flags: 2 }), 0);
          const inb = buildTcpPacket({ src: ip(c), dst: ip(s), srcPort: 1024, dstPort: 25, flags: 0x18, payload: new Uint8Array(512) });
          const out = buildTcpPacket({ src: ip(r), dst: ip(c), srcPort: 10025, dstPort: 1024, flags: 0x10 });
          return [inb, new Uint8Array(inb).subarray(0, 80), out, new Uint8Array(out)];
        });
      const run = (n, t0) => {
        for (let i = 0; i < n; i++) {
          for (const [inb, inCopy, out, outCopy] of pairs) {
            inb.set(inCopy); if (d.handle(inb, t0 + i) !== 1) throw new Error("in");
            out.set(outCopy); if (d.handle(out, t0 + i) !== 1) throw new Error("out");
          }
        }
      };
      run(100000, 1);
      console.log("MEASURE");
      run(500000, 200000);
      console.log("DONE");
    `;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--v8-flags=--trace-gc", code],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const measured = text.slice(text.indexOf("MEASURE"), text.indexOf("DONE"));
    assert.ok(text.includes("DONE"));
    const gcs = measured.split("\n").filter((l) => /Scavenge|Mark-Compact|Minor/.test(l));
    assert.ok(
      gcs.length <= 1,
      `collections while handling 2M packets: ${gcs.length}\n${gcs.join("\n")}`,
    );
  },
});

Deno.test("Diverter diverts exactly the protected networks (agrees with cidrContains on random addresses)", () => {
  const next = prng(25);
  const nets = [
    ["198.51.100.0/24", "203.0.113.128/25", "192.0.2.7/32"],
    ["0.0.0.0/0"],
    ["2001:db8:25::/64", "2001:db8:26::/63", "2001:db8:27:0:8000::/65", "2001:db8::25/128"],
    ["2001:db8::/32", "::/0"],
    ["2001:db8:ab00::/40"],
  ];
  for (const texts of nets) {
    const protect = texts.map(parseCidr);
    const family = protect[0].family;
    const table = new FlowTable({ max: 100000, idleSeconds: 600 });
    const d = new Diverter({
      protect,
      ports: [25],
      responder4: ip("192.0.2.1"),
      responder6: ip("2001:db8:1::1"),
      responderPort: RESPONDER_PORT,
      table,
    });
    let inside = 0;
    for (let i = 0; i < 4000; i++) {
      // Start from a network address and flip a few random bits, so hits and near misses both occur.
      const base = new Uint8Array(protect[next() % protect.length].bytes);
      for (let k = next() % 3; k > 0; k--) {
        const bit = next() % (base.length * 8);
        base[bit >> 3] ^= 0x80 >> (bit & 7);
      }
      const expected = protect.some((c) => cidrContains(c, base));
      if (expected) inside++;
      const client = family === 4 ? ip("192.0.2.200") : ip("2001:db8:1::200");
      const syn = buildTcpPacket({
        src: client,
        dst: base,
        srcPort: 1024 + (i % 60000),
        dstPort: 25,
        flags: TCP_SYN,
      });
      assert.equal(
        d.handle(syn, i),
        expected ? AcceptModified : Accept,
        `${texts} ${formatIp(base)}`,
      );
    }
    assert.ok(inside > 0, `${texts}: some addresses inside`);
  }
});
