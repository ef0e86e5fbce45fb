import assert from "node:assert/strict";
import { buildTcpPacket, type TcpPacketSpec } from "../../src/packet/build_tcp_packet.ts";
import { formatIp } from "../../src/packet/ip_address.ts";
import {
  MAX_EXTENSION_HEADERS,
  PacketView,
  parsePacket,
  ParseStatus,
  TCP_ACK,
  TCP_PSH,
  TCP_SYN,
  tcpAck,
  tcpSeq,
} from "../../src/packet/packet_view.ts";
import { ip, prng, randomSpec } from "./packet_helpers.ts";

const text = new TextEncoder();

function parsed(packet: Uint8Array): PacketView {
  const v = new PacketView();
  assert.equal(parsePacket(packet, v), ParseStatus.Tcp);
  return v;
}

Deno.test("parsePacket() reads back every field buildTcpPacket() wrote (IPv4 and IPv6)", () => {
  const cases: TcpPacketSpec[] = [
    {
      src: ip("192.0.2.10"),
      dst: ip("198.51.100.25"),
      srcPort: 40000,
      dstPort: 25,
      seq: 0xdeadbeef,
      ack: 0,
      flags: TCP_SYN,
      options: Uint8Array.of(2, 4, 0x05, 0xb4), // MSS 1460
    },
    {
      src: ip("198.51.100.25"),
      dst: ip("192.0.2.10"),
      srcPort: 25,
      dstPort: 40000,
      seq: 1,
      ack: 0xffffffff,
      flags: TCP_ACK | TCP_PSH,
      payload: text.encode("220 mail.example ESMTP\r\n"),
      ipOptions: Uint8Array.of(1, 1, 1, 0), // NOPs: a 24-byte IPv4 header
    },
    {
      src: ip("2001:db8:1::10"),
      dst: ip("2001:db8:25::25"),
      srcPort: 51000,
      dstPort: 25,
      seq: 7,
      ack: 9,
      flags: TCP_ACK,
      payload: text.encode("EHLO client.example\r\n"),
    },
    {
      src: ip("2001:db8:1::10"),
      dst: ip("2001:db8:25::25"),
      srcPort: 51000,
      dstPort: 25,
      flags: TCP_ACK,
      payload: Uint8Array.of(1, 2, 3),
      extensions: [{ type: 0 }, { type: 60, body: new Uint8Array(14) }, {
        type: 43,
        body: Uint8Array.of(4, 0, 0, 0, 0, 0), // segments left 0
      }],
    },
  ];
  for (const spec of cases) {
    const p = buildTcpPacket(spec);
    const v = parsed(p);
    const family = spec.src.length === 4 ? 4 : 6;
    assert.equal(v.family, family);
    assert.equal(formatIp(p, v.srcOffset, family), formatIp(spec.src));
    assert.equal(formatIp(p, v.dstOffset, family), formatIp(spec.dst));
    assert.equal(v.srcPort, spec.srcPort);
    assert.equal(v.dstPort, spec.dstPort);
    assert.equal(v.flags, spec.flags);
    assert.equal(tcpSeq(p, v), (spec.seq ?? 0) >>> 0);
    assert.equal(tcpAck(p, v), (spec.ack ?? 0) >>> 0);
    assert.equal(v.tcpHeaderLength, 20 + (spec.options?.length ?? 0));
    assert.equal(v.ipEnd, p.length);
    assert.deepEqual(
      p.subarray(v.payloadOffset, v.payloadOffset + v.payloadLength),
      spec.payload ?? new Uint8Array(0),
    );
  }
});

Deno.test("parsePacket() locates TCP after IPv6 extension headers", () => {
  const p = buildTcpPacket({
    src: ip("2001:db8::1"),
    dst: ip("2001:db8::2"),
    srcPort: 1,
    dstPort: 25,
    extensions: [{ type: 0, body: new Uint8Array(14) }, { type: 60 }],
  });
  const v = parsed(p);
  assert.equal(v.tcpOffset, 40 + 16 + 8);
  assert.equal(v.dstPort, 25);
});

Deno.test("parsePacket() skips at most MAX_EXTENSION_HEADERS extension headers", () => {
  for (const n of [MAX_EXTENSION_HEADERS - 1, MAX_EXTENSION_HEADERS, MAX_EXTENSION_HEADERS + 1]) {
    const p = buildTcpPacket({
      src: ip("2001:db8::1"),
      dst: ip("2001:db8::2"),
      srcPort: 1,
      dstPort: 25,
      extensions: Array.from({ length: n }, () => ({ type: 60 as const })),
    });
    const expected = n <= MAX_EXTENSION_HEADERS ? ParseStatus.Tcp : ParseStatus.Malformed;
    assert.equal(parsePacket(p, new PacketView()), expected, `${n} headers`);
  }
});

Deno.test("parsePacket() classifies fragments, foreign protocols and odd headers", () => {
  const base4 = { src: ip("192.0.2.1"), dst: ip("198.51.100.25"), srcPort: 1, dstPort: 25 };
  const base6 = { src: ip("2001:db8::1"), dst: ip("2001:db8:25::25"), srcPort: 1, dstPort: 25 };
  const udp4 = buildTcpPacket(base4);
  udp4[9] = 17;
  const icmp6 = buildTcpPacket(base6);
  icmp6[6] = 58;
  const esp6 = buildTcpPacket({ ...base6, extensions: [{ type: 60 }] });
  esp6[40] = 50;
  const hopLater = buildTcpPacket({ ...base6, extensions: [{ type: 60 }, { type: 0 }] });
  const cases: [string, Uint8Array, ParseStatus][] = [
    ["IPv4 with DF only", buildTcpPacket({ ...base4, fragmentWord: 0x4000 }), ParseStatus.Tcp],
    ["IPv4 with no flags", buildTcpPacket({ ...base4, fragmentWord: 0 }), ParseStatus.Tcp],
    ["IPv4 first fragment (MF)", buildTcpPacket({ ...base4, fragmentWord: 0x2000 }), 2],
    ["IPv4 later fragment", buildTcpPacket({ ...base4, fragmentWord: 0x0001 }), 2],
    ["IPv4 last fragment, high offset bits", buildTcpPacket({ ...base4, fragmentWord: 0x1000 }), 2],
    ["IPv6 fragment header", buildTcpPacket({ ...base6, extensions: [{ type: 44 }] }), 2],
    [
      "IPv6 fragment after hop-by-hop",
      buildTcpPacket({ ...base6, extensions: [{ type: 0 }, { type: 44 }] }),
      2,
    ],
    ["IPv4 UDP", udp4, ParseStatus.NotTcp],
    ["IPv6 ICMPv6", icmp6, ParseStatus.NotTcp],
    ["IPv6 ESP after destination options", esp6, ParseStatus.NotTcp],
    ["IPv6 hop-by-hop not first", hopLater, ParseStatus.Malformed],
    [
      "IPv6 routing header with segments left",
      buildTcpPacket({
        ...base6,
        extensions: [{ type: 43, body: Uint8Array.of(4, 1, 0, 0, 0, 0) }],
      }),
      ParseStatus.Malformed,
    ],
  ];
  for (const [name, p, status] of cases) {
    assert.equal(parsePacket(p, new PacketView()), status, name);
  }
});

Deno.test("parsePacket() rejects inconsistent lengths and versions", () => {
  const p4 = buildTcpPacket({
    src: ip("192.0.2.1"),
    dst: ip("198.51.100.25"),
    srcPort: 1,
    dstPort: 25,
  });
  const p6 = buildTcpPacket({
    src: ip("2001:db8::1"),
    dst: ip("2001:db8::2"),
    srcPort: 1,
    dstPort: 25,
  });
  const mutate = (p: Uint8Array, f: (q: Uint8Array) => void) => {
    const q = new Uint8Array(p);
    f(q);
    return q;
  };
  const cases: [string, Uint8Array][] = [
    ["empty", new Uint8Array(0)],
    ["version 5", mutate(p4, (q) => (q[0] = 0x55))],
    ["IHL 4", mutate(p4, (q) => (q[0] = 0x44))],
    ["IHL past total length", mutate(p4, (q) => (q[0] = 0x4f))],
    ["total length below IHL", mutate(p4, (q) => (q[2] = 0, q[3] = 19))],
    ["total length past the buffer", mutate(p4, (q) => (q[3] = q[3] + 1))],
    ["total length leaves no room for TCP", mutate(p4, (q) => (q[3] = 39))],
    ["TCP data offset 4", mutate(p4, (q) => (q[32] = 0x40))],
    ["TCP data offset past the end", mutate(p4, (q) => (q[32] = 0x60))],
    ["IPv6 payload length 0 (jumbogram)", mutate(p6, (q) => (q[4] = 0, q[5] = 0))],
    ["IPv6 payload length past the buffer", mutate(p6, (q) => (q[5] = q[5] + 1))],
    ["IPv6 TCP data offset past the end", mutate(p6, (q) => (q[52] = 0xf0))],
  ];
  for (const [name, p] of cases) {
    assert.equal(parsePacket(p, new PacketView()), ParseStatus.Malformed, name);
  }
});

Deno.test("parsePacket() never reads a truncated packet as TCP (every length)", () => {
  const next = prng(11);
  for (const family of [4, 6] as const) {
    for (let k = 0; k < 20; k++) {
      const p = buildTcpPacket(randomSpec(next, family, 64));
      const full = parsePacket(p, new PacketView());
      assert.equal(full, ParseStatus.Tcp);
      const v = parsed(p);
      for (let n = 0; n < v.ipEnd; n++) {
        assert.notEqual(parsePacket(p.subarray(0, n), new PacketView()), ParseStatus.Tcp, `${n}`);
      }
    }
  }
});

Deno.test("parsePacket() ignores link-layer padding past the IP datagram", () => {
  const p = buildTcpPacket({
    src: ip("192.0.2.1"),
    dst: ip("198.51.100.25"),
    srcPort: 1,
    dstPort: 25,
    payload: Uint8Array.of(9, 9),
    trailer: new Uint8Array(6),
  });
  const v = parsed(p);
  assert.equal(v.ipEnd, p.length - 6);
  assert.equal(v.payloadLength, 2);
});

Deno.test("parsePacket() reads IPv4 options but refuses source routes and broken option lengths", () => {
  const base = { src: ip("192.0.2.1"), dst: ip("198.51.100.25"), srcPort: 1, dstPort: 25 };
  const cases: [string, number[], ParseStatus][] = [
    ["NOPs and EOL", [1, 1, 1, 0], ParseStatus.Tcp],
    ["record route (7), 7 bytes", [7, 7, 4, 0, 0, 0, 0, 0], ParseStatus.Tcp],
    ["timestamp (0x44), 8 bytes", [0x44, 8, 5, 0, 0, 0, 0, 0], ParseStatus.Tcp],
    ["EOL then garbage padding", [0, 0x83, 0xff, 0], ParseStatus.Tcp],
    ["loose source route (0x83)", [0x83, 7, 4, 192, 0, 2, 99, 0], ParseStatus.Malformed],
    ["strict source route (0x89)", [1, 0x89, 7, 4, 192, 0, 2, 99], ParseStatus.Malformed],
    ["option length 1", [7, 1, 0, 0], ParseStatus.Malformed],
    ["option length past the header", [7, 9, 4, 0, 0, 0, 0, 0], ParseStatus.Malformed],
    ["option type with no length byte", [1, 1, 1, 7], ParseStatus.Malformed],
  ];
  for (const [name, opts, status] of cases) {
    const p = buildTcpPacket({ ...base, ipOptions: Uint8Array.from(opts) });
    assert.equal(parsePacket(p, new PacketView()), status, name);
  }
});
