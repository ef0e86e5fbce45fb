/**
 * Reading an IPv4/IPv6 packet carrying TCP, in place: where the addresses, ports, flags and
 * payload are. One `PacketView` is reused for every packet (no allocation per packet); the
 * packet bytes are never copied.
 *
 * Security: untrusted bytes. Every offset is checked against the packet length and against the
 * length the IP header claims, before it is used. A packet that cannot be read completely and
 * unambiguously is reported as such (`ParseStatus`), never half-parsed: the caller leaves those
 * untouched. Deliberately unreadable:
 * - IPv4 fragments (MF set or offset != 0) and IPv6 packets with a Fragment header: only the
 *   first fragment has a TCP header, and a rewrite of it alone would break reassembly checksums.
 * - IPv6 jumbograms (payload length 0, RFC 2675) — NFQUEUE never hands us more than 64 KiB.
 * - IPv6 with a Routing header whose Segments Left is not 0: the TCP pseudo-header then uses the
 *   final destination from the routing header, not the IPv6 destination (RFC 8200 §8.1); for the
 *   same reason IPv4 packets with a source route option (LSRR/SSRR, RFC 791 §3.1, RFC 9293 §3.1),
 *   and IPv4 options whose lengths do not add up.
 * - More than `MAX_EXTENSION_HEADERS` extension headers (a bound on work per packet).
 */

/** TCP flag bits (RFC 9293 §3.1). */
export const TCP_FIN = 0x01;
/** TCP SYN flag. */
export const TCP_SYN = 0x02;
/** TCP RST flag. */
export const TCP_RST = 0x04;
/** TCP PSH flag. */
export const TCP_PSH = 0x08;
/** TCP ACK flag. */
export const TCP_ACK = 0x10;
/** TCP URG flag. */
export const TCP_URG = 0x20;

/** IP protocol / IPv6 next-header number of TCP. */
export const PROTO_TCP = 6;

/** Most IPv6 extension headers (hop-by-hop, routing, destination options) skipped per packet. */
export const MAX_EXTENSION_HEADERS = 4;

/** Outcome of `parsePacket`. */
export const ParseStatus = {
  /** A complete, readable TCP segment; every field of the view is valid. */
  Tcp: 0,
  /** A readable IP packet that is not TCP (or carries ESP/AH/no-next-header). */
  NotTcp: 1,
  /** A fragment (IPv4 MF/offset, IPv6 Fragment header): not TCP we can read. */
  Fragment: 2,
  /** Too short, wrong version, lengths that disagree, or past our extension-header bound. */
  Malformed: 3,
} as const;
/** One of the `ParseStatus` values. */
export type ParseStatus = typeof ParseStatus[keyof typeof ParseStatus];

/** Where things are in one packet. Filled by `parsePacket`; valid only when it returned Tcp. */
export class PacketView {
  /** 4 or 6. */
  family: 4 | 6 = 4;
  /** Bytes per address: 4 or 16. */
  addrLength = 4;
  /** Offset of the source address. */
  srcOffset = 12;
  /** Offset of the destination address. */
  dstOffset = 16;
  /** Offset of the TCP header (= length of the IP header including IPv6 extension headers). */
  tcpOffset = 0;
  /** TCP header length in bytes (data offset × 4). */
  tcpHeaderLength = 0;
  /** End of the IP datagram (IPv4 total length / 40 + IPv6 payload length); trailing bytes past
   * it (link padding) are not part of the packet. */
  ipEnd = 0;
  /** TCP source port. */
  srcPort = 0;
  /** TCP destination port. */
  dstPort = 0;
  /** TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, URG 0x20). */
  flags = 0;

  /** Offset of the TCP payload. */
  get payloadOffset(): number {
    return this.tcpOffset + this.tcpHeaderLength;
  }
  /** TCP payload length in bytes. */
  get payloadLength(): number {
    return this.ipEnd - this.tcpOffset - this.tcpHeaderLength;
  }
  /** Length of the TCP segment (header + payload), as used in the pseudo-header. */
  get tcpLength(): number {
    return this.ipEnd - this.tcpOffset;
  }
}

/** Reads the 32-bit sequence number of the TCP segment described by `view`. */
export function tcpSeq(packet: Uint8Array, view: PacketView): number {
  const o = view.tcpOffset + 4;
  return ((packet[o] << 24) | (packet[o + 1] << 16) | (packet[o + 2] << 8) | packet[o + 3]) >>> 0;
}

/** Reads the 32-bit acknowledgment number of the TCP segment described by `view`. */
export function tcpAck(packet: Uint8Array, view: PacketView): number {
  const o = view.tcpOffset + 8;
  return ((packet[o] << 24) | (packet[o + 1] << 16) | (packet[o + 2] << 8) | packet[o + 3]) >>> 0;
}

/** IPv4 option types that make the destination field not the final destination. */
const IPOPT_LSRR = 0x83;
const IPOPT_SSRR = 0x89;

/**
 * Whether the IPv4 options in bytes 20..ihl are well-formed (RFC 791 §3.1: single-byte EOL and
 * NOP, every other option type-length-value with length ≥ 2 inside the header) and carry no
 * source route. At most 40 bytes: bounded.
 */
function ipv4OptionsReadable(packet: Uint8Array, ihl: number): boolean {
  let i = 20;
  while (i < ihl) {
    const type = packet[i];
    if (type === 0) return true; // end of option list; the rest is padding
    if (type === 1) {
      i++;
      continue;
    }
    if (i + 1 >= ihl) return false;
    const len = packet[i + 1];
    if (len < 2 || i + len > ihl) return false;
    if (type === IPOPT_LSRR || type === IPOPT_SSRR) return false;
    i += len;
  }
  return true;
}

/**
 * Parses the IP and TCP headers of `packet` into `view` (reused; no allocation).
 * Returns ParseStatus.Tcp when every view field is valid.
 */
export function parsePacket(packet: Uint8Array, view: PacketView): ParseStatus {
  const len = packet.length;
  if (len < 1) return ParseStatus.Malformed;
  const version = packet[0] >> 4;
  let proto: number;
  let l4: number;
  let end: number;
  if (version === 4) {
    // RFC 791 §3.1.
    if (len < 20) return ParseStatus.Malformed;
    const ihl = (packet[0] & 0x0f) << 2;
    if (ihl < 20) return ParseStatus.Malformed;
    end = (packet[2] << 8) | packet[3];
    if (end < ihl || end > len) return ParseStatus.Malformed;
    // MF flag or a non-zero fragment offset: a fragment.
    if (((packet[6] & 0x3f) | packet[7]) !== 0) return ParseStatus.Fragment;
    if (ihl > 20 && !ipv4OptionsReadable(packet, ihl)) return ParseStatus.Malformed;
    proto = packet[9];
    l4 = ihl;
    view.family = 4;
    view.addrLength = 4;
    view.srcOffset = 12;
    view.dstOffset = 16;
  } else if (version === 6) {
    // RFC 8200 §3.
    if (len < 40) return ParseStatus.Malformed;
    const payloadLength = (packet[4] << 8) | packet[5];
    if (payloadLength === 0) return ParseStatus.Malformed; // jumbogram or empty: not ours
    end = 40 + payloadLength;
    if (end > len) return ParseStatus.Malformed;
    proto = packet[6];
    l4 = 40;
    // RFC 8200 §4.1: skip the extension headers that may precede TCP, up to a bound.
    for (let n = 0;; n++) {
      if (proto === PROTO_TCP) break;
      if (proto === 44) return ParseStatus.Fragment;
      if (proto !== 0 && proto !== 43 && proto !== 60) {
        // ESP (50), AH (51), no next header (59), UDP, ICMPv6 ...: not TCP we read.
        return ParseStatus.NotTcp;
      }
      if (proto === 0 && n !== 0) return ParseStatus.Malformed; // §4.3: hop-by-hop only first
      if (n >= MAX_EXTENSION_HEADERS) return ParseStatus.Malformed;
      if (l4 + 8 > end) return ParseStatus.Malformed;
      // §8.1: with segments left, the pseudo-header destination is not the IPv6 destination.
      if (proto === 43 && packet[l4 + 3] !== 0) return ParseStatus.Malformed;
      proto = packet[l4];
      l4 += (packet[l4 + 1] + 1) << 3;
      if (l4 > end) return ParseStatus.Malformed;
    }
    view.family = 6;
    view.addrLength = 16;
    view.srcOffset = 8;
    view.dstOffset = 24;
  } else {
    return ParseStatus.Malformed;
  }
  if (proto !== PROTO_TCP) return ParseStatus.NotTcp;
  // RFC 9293 §3.1: 20-byte fixed header, data offset in 32-bit words, at least 5.
  if (l4 + 20 > end) return ParseStatus.Malformed;
  const thl = (packet[l4 + 12] >> 4) << 2;
  if (thl < 20 || l4 + thl > end) return ParseStatus.Malformed;
  view.tcpOffset = l4;
  view.tcpHeaderLength = thl;
  view.ipEnd = end;
  view.srcPort = (packet[l4] << 8) | packet[l4 + 1];
  view.dstPort = (packet[l4 + 2] << 8) | packet[l4 + 3];
  view.flags = packet[l4 + 13];
  return ParseStatus.Tcp;
}
