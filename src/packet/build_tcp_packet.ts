/**
 * Serializing an IPv4 or IPv6 packet carrying one TCP segment, with full, correct checksums.
 *
 * SSG never originates packets on the hot path (it rewrites the kernel's), so this is for tests,
 * benchmarks and fixtures: it allocates freely and validates its input.
 */
import { fillChecksums } from "./checksum.ts";
import { PacketView, parsePacket, ParseStatus, PROTO_TCP } from "./packet_view.ts";

/** An IPv6 extension header to put before TCP (hop-by-hop 0, routing 43, destination options 60,
 * fragment 44). `body` is everything after the next-header and length bytes; it is padded with
 * zeros to a multiple of 8 bytes including those two. */
export interface ExtensionHeaderSpec {
  /** The extension header's protocol number: 0, 43, 44 or 60. */
  type: 0 | 43 | 44 | 60;
  /** Header content after the next-header and length bytes (default empty). */
  body?: Uint8Array;
}

/** What to serialize. Addresses are 4 bytes (IPv4) or 16 bytes (IPv6), both of one family. */
export interface TcpPacketSpec {
  /** Source address, 4 or 16 bytes. */
  src: Uint8Array;
  /** Destination address, same family as `src`. */
  dst: Uint8Array;
  /** Source TCP port. */
  srcPort: number;
  /** Destination TCP port. */
  dstPort: number;
  /** Sequence number (default 0). */
  seq?: number;
  /** Acknowledgment number (default 0). */
  ack?: number;
  /** Flags byte (TCP_SYN | TCP_ACK ...; default ACK). */
  flags?: number;
  /** Window (default 65535). */
  window?: number;
  /** TCP options, padded with zeros (end-of-list) to a multiple of 4 bytes. */
  options?: Uint8Array;
  /** TCP payload. */
  payload?: Uint8Array;
  /** IPv4 TTL / IPv6 hop limit (default 64). */
  ttl?: number;
  /** IPv4 identification (default 0). */
  id?: number;
  /** IPv4 options, padded to a multiple of 4 bytes. */
  ipOptions?: Uint8Array;
  /** IPv4 flags+fragment offset word (default 0x4000: DF). */
  fragmentWord?: number;
  /** IPv6 extension headers, in order, before TCP. */
  extensions?: ExtensionHeaderSpec[];
  /** Bytes appended after the IP datagram (link-layer padding), not counted in its lengths. */
  trailer?: Uint8Array;
}

/** A spec that cannot be serialized. */
export class PacketSpecError extends Error {
  /** Creates the error; `name` is "PacketSpecError". */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "PacketSpecError";
  }
}

function pad(bytes: Uint8Array | undefined, to: number): Uint8Array {
  const b = bytes ?? new Uint8Array(0);
  const n = Math.ceil(b.length / to) * to;
  const out = new Uint8Array(n);
  out.set(b);
  return out;
}

/** Serializes `spec` to a new packet with valid IPv4 header and TCP checksums. */
export function buildTcpPacket(spec: TcpPacketSpec): Uint8Array {
  const family = spec.src.length === 4 ? 4 : 6;
  if (spec.src.length !== (family === 4 ? 4 : 16) || spec.dst.length !== spec.src.length) {
    throw new PacketSpecError("Addresses must both be 4 bytes (IPv4) or both 16 bytes (IPv6)");
  }
  const options = pad(spec.options, 4);
  if (options.length > 40) throw new PacketSpecError("TCP options exceed 40 bytes");
  const payload = spec.payload ?? new Uint8Array(0);
  const tcpLen = 20 + options.length + payload.length;
  let ipHeader: Uint8Array;
  if (family === 4) {
    const ipOpts = pad(spec.ipOptions, 4);
    if (ipOpts.length > 40) throw new PacketSpecError("IPv4 options exceed 40 bytes");
    const ihl = 20 + ipOpts.length;
    const total = ihl + tcpLen;
    if (total > 0xffff) throw new PacketSpecError(`IPv4 packet of ${total} bytes exceeds 65535`);
    ipHeader = new Uint8Array(ihl);
    ipHeader[0] = 0x40 | (ihl >> 2);
    ipHeader[2] = total >> 8;
    ipHeader[3] = total & 0xff;
    ipHeader[4] = (spec.id ?? 0) >> 8;
    ipHeader[5] = (spec.id ?? 0) & 0xff;
    const frag = spec.fragmentWord ?? 0x4000;
    ipHeader[6] = frag >> 8;
    ipHeader[7] = frag & 0xff;
    ipHeader[8] = spec.ttl ?? 64;
    ipHeader[9] = PROTO_TCP;
    ipHeader.set(spec.src, 12);
    ipHeader.set(spec.dst, 16);
    ipHeader.set(ipOpts, 20);
  } else {
    const exts = spec.extensions ?? [];
    const extBytes: Uint8Array[] = [];
    for (let i = 0; i < exts.length; i++) {
      const e = exts[i];
      const next = i + 1 < exts.length ? exts[i + 1].type : PROTO_TCP;
      const body = e.body ?? new Uint8Array(6);
      const h = pad(Uint8Array.of(next, 0, ...body), 8);
      if (e.type !== 44) h[1] = h.length / 8 - 1; // the fragment header's length byte is reserved
      extBytes.push(h);
    }
    const extLen = extBytes.reduce((n, b) => n + b.length, 0);
    const payloadLength = extLen + tcpLen;
    if (payloadLength > 0xffff) {
      throw new PacketSpecError(`IPv6 payload of ${payloadLength} bytes exceeds 65535`);
    }
    ipHeader = new Uint8Array(40 + extLen);
    ipHeader[0] = 0x60;
    ipHeader[4] = payloadLength >> 8;
    ipHeader[5] = payloadLength & 0xff;
    ipHeader[6] = exts.length > 0 ? exts[0].type : PROTO_TCP;
    ipHeader[7] = spec.ttl ?? 64;
    ipHeader.set(spec.src, 8);
    ipHeader.set(spec.dst, 24);
    let at = 40;
    for (const b of extBytes) {
      ipHeader.set(b, at);
      at += b.length;
    }
  }
  const trailer = spec.trailer ?? new Uint8Array(0);
  const packet = new Uint8Array(ipHeader.length + tcpLen + trailer.length);
  packet.set(ipHeader, 0);
  const t = ipHeader.length;
  packet[t] = spec.srcPort >> 8;
  packet[t + 1] = spec.srcPort & 0xff;
  packet[t + 2] = spec.dstPort >> 8;
  packet[t + 3] = spec.dstPort & 0xff;
  const seq = (spec.seq ?? 0) >>> 0;
  const ack = (spec.ack ?? 0) >>> 0;
  packet[t + 4] = seq >>> 24;
  packet[t + 5] = (seq >>> 16) & 0xff;
  packet[t + 6] = (seq >>> 8) & 0xff;
  packet[t + 7] = seq & 0xff;
  packet[t + 8] = ack >>> 24;
  packet[t + 9] = (ack >>> 16) & 0xff;
  packet[t + 10] = (ack >>> 8) & 0xff;
  packet[t + 11] = ack & 0xff;
  packet[t + 12] = ((20 + options.length) >> 2) << 4;
  packet[t + 13] = spec.flags ?? 0x10;
  const win = spec.window ?? 65535;
  packet[t + 14] = win >> 8;
  packet[t + 15] = win & 0xff;
  packet.set(options, t + 20);
  packet.set(payload, t + 20 + options.length);
  packet.set(trailer, t + tcpLen);
  // Checksums over the datagram (not the trailer). Fragments and routed packets are built but
  // the view-based checksum needs a readable packet; compute those by hand.
  const view = new PacketView();
  const status = parsePacket(packet, view);
  if (status !== ParseStatus.Tcp) {
    view.family = family;
    view.addrLength = family === 4 ? 4 : 16;
    view.srcOffset = family === 4 ? 12 : 8;
    view.dstOffset = family === 4 ? 16 : 24;
    view.tcpOffset = t;
    view.tcpHeaderLength = 20 + options.length;
    view.ipEnd = t + tcpLen;
  }
  fillChecksums(packet, view);
  return packet;
}
