/**
 * Test helpers for the packet path: a seeded PRNG (reproducible random packets), address
 * shorthands, and random TCP packets of either family with options, IPv6 extension headers and
 * odd payload lengths.
 */
import { buildTcpPacket, type TcpPacketSpec } from "../../src/packet/build_tcp_packet.ts";
import { parseIp } from "../../src/packet/ip_address.ts";

/** Mulberry32: a small seeded PRNG; returns uint32 values. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** The same PRNG as fractions in [0, 1) (for choices rather than bytes). */
export function prngFraction(seed: number): () => number {
  const u32 = prng(seed);
  return () => u32() / 4294967296;
}

/** Random bytes from a PRNG. */
export function randomBytes(next: () => number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = next() & 0xff;
  return b;
}

/** Address text → bytes; throws on a typo so tests fail loudly. */
export function ip(text: string): Uint8Array {
  const b = parseIp(text);
  if (!b) throw new Error(`bad test address ${text}`);
  return b;
}

/** Well-formed random IPv4 options of `n` bytes: NOPs and record-route/timestamp TLVs. */
export function randomIpv4Options(next: () => number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  let i = 0;
  while (i < n) {
    const left = n - i;
    if (left >= 3 && next() % 2 === 0) {
      const len = 3 + (next() % (left - 2));
      out[i] = next() % 2 ? 7 : 0x44;
      out[i + 1] = len;
      for (let k = 2; k < len; k++) out[i + k] = next() & 0xff;
      i += len;
    } else {
      out[i++] = 1; // NOP
    }
  }
  return out;
}

/** A random, valid TCP packet spec of `family`, with a payload of 0..maxPayload bytes. */
export function randomSpec(next: () => number, family: 4 | 6, maxPayload = 1500): TcpPacketSpec {
  const n = family === 4 ? 4 : 16;
  const optLen = (next() % 11) * 4; // 0..40 bytes of TCP options
  const spec: TcpPacketSpec = {
    src: randomBytes(next, n),
    dst: randomBytes(next, n),
    srcPort: next() & 0xffff,
    dstPort: next() & 0xffff,
    seq: next(),
    ack: next(),
    flags: next() & 0x3f,
    window: next() & 0xffff,
    options: randomBytes(next, optLen),
    payload: randomBytes(next, next() % (maxPayload + 1)),
    ttl: next() & 0xff,
  };
  if (family === 4) {
    spec.id = next() & 0xffff;
    if (next() % 4 === 0) spec.ipOptions = randomIpv4Options(next, (next() % 11) * 4);
  } else if (next() % 3 === 0) {
    const types = [0, 60, 43] as const;
    const count = 1 + (next() % 3);
    spec.extensions = [];
    for (let i = 0; i < count; i++) {
      const type = i === 0 ? types[next() % 3] : (next() % 2 ? 60 : 43);
      const body = randomBytes(next, 6 + 8 * (next() % 3));
      if (type === 43) body[1] = 0; // routing: segments left 0 (readable)
      spec.extensions.push({ type, body });
    }
  }
  if (next() % 5 === 0) spec.trailer = randomBytes(next, 1 + (next() % 6));
  return spec;
}

/** Builds a random packet (see randomSpec). */
export function randomPacket(next: () => number, family: 4 | 6, maxPayload = 1500): Uint8Array {
  return buildTcpPacket(randomSpec(next, family, maxPayload));
}

/** Hex string (spaces/newlines ignored) → bytes. */
export function hex(text: string): Uint8Array {
  const clean = text.replace(/\s+/g, "");
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}
