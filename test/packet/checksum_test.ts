import assert from "node:assert/strict";
import { buildTcpPacket } from "../../src/packet/build_tcp_packet.ts";
import {
  checksumsValid,
  computeIpv4HeaderChecksum,
  computeTcpChecksum,
  foldSum,
  internetChecksum,
  sumWords,
  updateChecksum16,
} from "../../src/packet/checksum.ts";
import { PacketView, parsePacket, ParseStatus } from "../../src/packet/packet_view.ts";
import { rewriteDestination } from "../../src/packet/rewrite.ts";
import { hex, ip, prng, randomPacket } from "./packet_helpers.ts";

function view(p: Uint8Array): PacketView {
  const v = new PacketView();
  assert.equal(parsePacket(p, v), ParseStatus.Tcp);
  return v;
}

Deno.test("internetChecksum() matches the RFC 1071 §3 worked example", () => {
  // RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2 (one's complement), checksum 220d.
  const data = hex("0001 f203 f4f5 f6f7");
  assert.equal(foldSum(sumWords(data, 0, data.length)), 0xddf2);
  assert.equal(internetChecksum(data), 0x220d);
});

Deno.test("internetChecksum() pads an odd trailing byte with zero", () => {
  assert.equal(internetChecksum(hex("ab")), ~0xab00 & 0xffff);
  assert.equal(internetChecksum(hex("0001 f2")), internetChecksum(hex("0001 f200")));
});

Deno.test("foldSum() handles sums past 2^31 and 2^32", () => {
  for (const s of [0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff, 2 ** 40 + 12345]) {
    // One's complement fold is the value modulo 0xffff, in 1..0xffff.
    const expect = s % 0xffff === 0 ? 0xffff : s % 0xffff;
    assert.equal(foldSum(s), expect, `${s}`);
  }
});

// A hand-built IPv4 SYN, 198.51.100.7:49152 -> 192.0.2.25:25, MSS 1460, seq 0x01020304, id 0x1c46,
// TTL 64; checksums computed independently (Python, RFC 1071 by the book) and written here.
const FIXTURE_SYN4 = hex(`
  4500 002c 1c46 4000 4006 3232 c633 6407 c000 0219
  c000 0019 0102 0304 0000 0000 6002 faf0 ecc1 0000 0204 05b4
`);

Deno.test("checksums of a hand-built IPv4 SYN match the independently computed fixture", () => {
  const v = view(FIXTURE_SYN4);
  assert.equal(computeIpv4HeaderChecksum(FIXTURE_SYN4), 0x3232);
  assert.equal(computeTcpChecksum(FIXTURE_SYN4, v), 0xecc1);
  assert.ok(checksumsValid(FIXTURE_SYN4, v));
  // buildTcpPacket() produces the same bytes from the same fields.
  const built = buildTcpPacket({
    src: ip("198.51.100.7"),
    dst: ip("192.0.2.25"),
    srcPort: 49152,
    dstPort: 25,
    seq: 0x01020304,
    flags: 0x02,
    window: 0xfaf0,
    id: 0x1c46,
    options: hex("020405b4"),
  });
  assert.deepEqual(built, FIXTURE_SYN4);
});

Deno.test("checksumsValid() detects any single-bit change in a packet (IPv4 and IPv6)", () => {
  const next = prng(3);
  for (const family of [4, 6] as const) {
    const p = randomPacket(next, family, 40);
    const v = view(p);
    assert.ok(checksumsValid(p, v));
    // TCP segment and (IPv4) header; addresses through the pseudo-header.
    const start = family === 4 ? 0 : v.srcOffset;
    for (let i = start; i < v.ipEnd; i++) {
      if (family === 6 && i >= 40 && i < v.tcpOffset) continue; // extension headers: not covered
      if (family === 4 && i >= 2 && i < 4) continue; // total length changes the view itself
      if (i === v.tcpOffset + 12) continue; // data offset: changes the view
      const q = new Uint8Array(p);
      q[i] ^= 0x01;
      assert.ok(!checksumsValid(q, v), `bit flip at byte ${i} (family ${family}) detected`);
    }
  }
});

Deno.test("updateChecksum16() equals full recomputation for random one-word changes", () => {
  const next = prng(9);
  for (let n = 0; n < 5000; n++) {
    const len = 2 + 2 * (next() % 40);
    const data = new Uint8Array(len);
    for (let i = 0; i < len; i++) data[i] = next() & 0xff;
    if (n % 7 === 0) data.fill(0); // all-zero words stress the +0/-0 corner
    const before = internetChecksum(data);
    const at = 2 * (next() % (len / 2));
    const oldWord = (data[at] << 8) | data[at + 1];
    const newWord = n % 11 === 0 ? oldWord : next() & 0xffff;
    data[at] = newWord >> 8;
    data[at + 1] = newWord & 0xff;
    const full = internetChecksum(data);
    const incr = updateChecksum16(before, oldWord, newWord);
    // Exact equality except where the data sum is +0 (all-zero data), which no IP packet has.
    if (data.some((b) => b !== 0)) assert.equal(incr, full, `case ${n}`);
  }
});

// Real SYNs sent by the Linux 6.18 stack of this machine between two network namespaces (veth
// with tx checksum offload switched off so the wire carried full checksums), captured with
// tcpdump, which reported "cksum 0x76ce (correct)" and "cksum 0x78d5 (correct)". The IPv4 header
// checksum 0x7440 is the kernel's own.
const CAPTURED_SYN4 = hex(`
  4500 003c 4258 4000 4006 7440 c000 020a
  c000 0219 ce46 0019 9537 939b 0000 0000
  a002 faf0 76ce 0000 0204 05b4 0402 080a
  e247 789f 0000 0000 0103 030a
`);
const CAPTURED_SYN6 = hex(`
  6002 1767 0028 0640 2001 0db8 0000 0000
  0000 0000 0000 0010 2001 0db8 0000 0000
  0000 0000 0000 0025 ba24 0019 730b 67eb
  0000 0000 a002 fd20 78d5 0000 0204 05a0
  0402 080a 4cdf 9460 0000 0000 0103 030a
`);

Deno.test("checksums of real captured SYNs (IPv4 and IPv6) match the kernel's", () => {
  const cases: [string, Uint8Array, number, number][] = [
    ["IPv4", CAPTURED_SYN4, 0x7440, 0x76ce],
    ["IPv6", CAPTURED_SYN6, -1, 0x78d5],
  ];
  for (const [name, p, ipSum, tcpSum] of cases) {
    const v = view(p);
    assert.equal(v.dstPort, 25, name);
    assert.equal(v.flags, 0x02, name);
    if (ipSum >= 0) assert.equal(computeIpv4HeaderChecksum(p), ipSum, name);
    assert.equal(computeTcpChecksum(p, v), tcpSum, name);
    assert.ok(checksumsValid(p, v), name);
  }
});

Deno.test("rewriting real captured SYNs to a responder keeps their checksums exact", () => {
  const cases: [Uint8Array, string][] = [
    [CAPTURED_SYN4, "203.0.113.1"],
    [CAPTURED_SYN6, "2001:db8:ff::1"],
  ];
  for (const [captured, responder] of cases) {
    const p = new Uint8Array(captured);
    const v = view(p);
    rewriteDestination(p, v, ip(responder), 0, 10025);
    if (v.family === 4) assert.equal((p[10] << 8) | p[11], computeIpv4HeaderChecksum(p));
    const t = v.tcpOffset + 16;
    assert.equal((p[t] << 8) | p[t + 1], computeTcpChecksum(p, v));
    assert.ok(checksumsValid(p, v));
  }
});

Deno.test("sumWords() on long runs (32-bit steps) folds to the same value as 16-bit words", () => {
  const next = prng(1624);
  const ref = (d: Uint8Array, s: number, e: number) => {
    let sum = 0;
    for (let i = s; i < e; i += 2) sum += (d[i] << 8) | (i + 1 < e ? d[i + 1] : 0);
    return foldSum(sum);
  };
  const big = new Uint8Array(70000);
  for (let i = 0; i < big.length; i++) big[i] = next() & 0xff;
  big.fill(0xff, 1000, 66000); // long runs of ones: sums near the fold's edges
  for (let k = 0; k < 300; k++) {
    const off = next() % 17; // subarrays at odd and even byte offsets of the buffer
    const data = big.subarray(off);
    const s = next() % 100;
    const e = Math.min(data.length, s + (k < 20 ? next() % 128 : next() % 65536));
    assert.equal(
      foldSum(sumWords(data, s, e, 7)),
      foldSum(ref(data, s, e) + 7),
      `${off} ${s} ${e}`,
    );
  }
  assert.equal(foldSum(sumWords(new Uint8Array(4096), 0, 4096)), 0, "all zero stays zero");
});
