import assert from "node:assert/strict";
import { buildTcpPacket } from "../../src/packet/build_tcp_packet.ts";
import {
  checksumsValid,
  computeIpv4HeaderChecksum,
  computeTcpChecksum,
} from "../../src/packet/checksum.ts";
import { formatIp } from "../../src/packet/ip_address.ts";
import { PacketView, parsePacket, ParseStatus } from "../../src/packet/packet_view.ts";
import { rewriteDestination, rewriteSource } from "../../src/packet/rewrite.ts";
import { ip, prng, randomBytes, randomPacket } from "./packet_helpers.ts";

function view(p: Uint8Array): PacketView {
  const v = new PacketView();
  assert.equal(parsePacket(p, v), ParseStatus.Tcp);
  return v;
}

function storedChecksums(p: Uint8Array, v: PacketView): [number, number] {
  const t = v.tcpOffset + 16;
  return [v.family === 4 ? (p[10] << 8) | p[11] : -1, (p[t] << 8) | p[t + 1]];
}

function fullChecksums(p: Uint8Array, v: PacketView): [number, number] {
  return [v.family === 4 ? computeIpv4HeaderChecksum(p) : -1, computeTcpChecksum(p, v)];
}

Deno.test("rewriteDestination() then rewriteSource() keep checksums equal to full recomputation on 12,000 random packets", () => {
  const next = prng(1624);
  let count = 0;
  let odd = 0;
  for (const family of [4, 6] as const) {
    for (let n = 0; n < 6000; n++) {
      // Mostly small segments (fast), some up to a full 1500-byte MTU, and a few near 64 KiB.
      const max = n % 500 === 0 ? 65000 : n % 10 === 0 ? 1460 : 200;
      const p = randomPacket(next, family, max);
      const original = new Uint8Array(p);
      const v = view(p);
      if (v.payloadLength % 2 === 1) odd++;
      const len = family === 4 ? 4 : 16;
      const newDst = randomBytes(next, len);
      const newSrc = randomBytes(next, len);
      const dstPort = next() & 0xffff;
      const srcPort = next() & 0xffff;
      const oldDst = p.slice(v.dstOffset, v.dstOffset + len);
      const oldDstPort = v.dstPort;

      rewriteDestination(p, v, newDst, 0, dstPort);
      assert.deepEqual(storedChecksums(p, v), fullChecksums(p, v), `dst rewrite, case ${n}`);
      assert.ok(checksumsValid(p, v));
      assert.deepEqual(p.subarray(v.dstOffset, v.dstOffset + len), newDst);
      assert.equal(v.dstPort, dstPort);
      assert.equal((p[v.tcpOffset + 2] << 8) | p[v.tcpOffset + 3], dstPort);

      rewriteSource(p, v, newSrc, 0, srcPort);
      assert.deepEqual(storedChecksums(p, v), fullChecksums(p, v), `src rewrite, case ${n}`);
      assert.ok(checksumsValid(p, v));
      assert.equal(v.srcPort, srcPort);

      // Every byte other than addresses, ports and checksums is untouched.
      const changed = new Set<number>();
      for (let i = 0; i < len; i++) changed.add(v.srcOffset + i).add(v.dstOffset + i);
      for (const k of [0, 1, 2, 3, 16, 17]) changed.add(v.tcpOffset + k);
      if (family === 4) changed.add(10).add(11);
      for (let i = 0; i < p.length; i++) {
        if (!changed.has(i)) assert.equal(p[i], original[i], `byte ${i} untouched`);
      }

      // And back: the original bytes exactly (checksums included).
      rewriteSource(
        p,
        v,
        original,
        v.srcOffset,
        (original[v.tcpOffset] << 8) | original[v.tcpOffset + 1],
      );
      rewriteDestination(p, v, oldDst, 0, oldDstPort);
      assert.deepEqual(p, original, `round trip, case ${n}`);
      count++;
    }
  }
  assert.equal(count, 12000);
  assert.ok(odd > 1000, `odd payload lengths exercised (${odd})`);
});

Deno.test("rewriteDestination() diverts a port-25 SYN to the responder and back (IPv4 and IPv6)", () => {
  const cases = [
    ["192.0.2.10", "198.51.100.25", "203.0.113.1"],
    ["2001:db8:1::10", "2001:db8:25::25", "2001:db8:ff::1"],
  ];
  for (const [client, server, responder] of cases) {
    const syn = buildTcpPacket({
      src: ip(client),
      dst: ip(server),
      srcPort: 40001,
      dstPort: 25,
      seq: 1000,
      flags: 0x02,
      options: Uint8Array.of(2, 4, 5, 0xb4),
    });
    const v = view(syn);
    rewriteDestination(syn, v, ip(responder), 0, 10025);
    const expected = buildTcpPacket({
      src: ip(client),
      dst: ip(responder),
      srcPort: 40001,
      dstPort: 10025,
      seq: 1000,
      flags: 0x02,
      options: Uint8Array.of(2, 4, 5, 0xb4),
    });
    assert.deepEqual(syn, expected, "same bytes as a packet built for the responder");
    const reply = buildTcpPacket({
      src: ip(responder),
      dst: ip(client),
      srcPort: 10025,
      dstPort: 40001,
      seq: 5000,
      ack: 1001,
      flags: 0x12,
    });
    const rv = view(reply);
    rewriteSource(reply, rv, ip(server), 0, 25);
    assert.equal(formatIp(reply, rv.srcOffset, rv.family), server);
    assert.deepEqual(
      reply,
      buildTcpPacket({
        src: ip(server),
        dst: ip(client),
        srcPort: 25,
        dstPort: 40001,
        seq: 5000,
        ack: 1001,
        flags: 0x12,
      }),
    );
  }
});

Deno.test("rewriting keeps a checksum of 0x0000 and 0xffff corners exact", () => {
  // Search for packets whose TCP checksum after rewrite is 0x0000 (sum = -0): eqn. 3 must give
  // 0x0000 like recomputation does, never 0xffff.
  const next = prng(77);
  let zeroSeen = 0;
  for (let n = 0; n < 400000 && zeroSeen < 3; n++) {
    const p = randomPacket(next, 4, 0);
    const v = view(p);
    rewriteDestination(p, v, randomBytes(next, 4), 0, next() & 0xffff);
    const [, tcp] = storedChecksums(p, v);
    assert.equal(tcp, computeTcpChecksum(p, v));
    if (tcp === 0) zeroSeen++;
  }
  assert.ok(zeroSeen > 0, "found rewritten packets whose checksum is 0x0000");
});
