/**
 * In-place rewriting of a TCP packet's source or destination address and port — the paper's PFM
 * step, done in userspace — with the IPv4 header checksum and the TCP checksum fixed
 * incrementally (RFC 1624 eqn. 3; see checksum.ts for why that is exact here).
 *
 * The TCP checksum covers the addresses through the pseudo-header (RFC 9293 §3.1, RFC 8200
 * §8.1), so an address change moves both checksums by the same amount; a port change moves only
 * the TCP one. Nothing is allocated and only the changed words are read.
 *
 * Caution: `view` must describe `packet` (a successful `parsePacket` on these bytes), and the
 * packet's checksums must be complete (NFQUEUE GSO flag off). The new address must be of the
 * packet's family.
 */
import { applyChecksumDelta } from "./checksum.ts";
import type { PacketView } from "./packet_view.ts";

/**
 * Overwrites `len` address bytes at `at` with `addr[addrOffset..]` and returns Σ(~m + m') over
 * the changed 16-bit words (RFC 1624 eqn. 3 terms).
 */
function replaceAddress(
  packet: Uint8Array,
  at: number,
  len: number,
  addr: Uint8Array,
  addrOffset: number,
): number {
  let delta = 0;
  for (let i = 0; i < len; i += 2) {
    const oldWord = (packet[at + i] << 8) | packet[at + i + 1];
    const hi = addr[addrOffset + i];
    const lo = addr[addrOffset + i + 1];
    delta += (~oldWord & 0xffff) + ((hi << 8) | lo);
    packet[at + i] = hi;
    packet[at + i + 1] = lo;
  }
  return delta;
}

function rewrite(
  packet: Uint8Array,
  view: PacketView,
  addrAt: number,
  portAt: number,
  addr: Uint8Array,
  addrOffset: number,
  port: number,
): void {
  const addrDelta = replaceAddress(packet, addrAt, view.addrLength, addr, addrOffset);
  const oldPort = (packet[portAt] << 8) | packet[portAt + 1];
  packet[portAt] = port >> 8;
  packet[portAt + 1] = port & 0xff;
  const portDelta = (~oldPort & 0xffff) + port;
  if (view.family === 4) {
    // RFC 791: the header checksum covers the addresses, not the ports.
    const hc = (packet[10] << 8) | packet[11];
    const c = applyChecksumDelta(hc, addrDelta);
    packet[10] = c >> 8;
    packet[11] = c & 0xff;
  }
  const t = view.tcpOffset + 16;
  const tc = applyChecksumDelta((packet[t] << 8) | packet[t + 1], addrDelta + portDelta);
  packet[t] = tc >> 8;
  packet[t + 1] = tc & 0xff;
}

/**
 * Rewrites the destination address (from `addr` at `addrOffset`) and destination port of the
 * packet in place, fixing checksums incrementally. Updates `view.dstPort`.
 */
export function rewriteDestination(
  packet: Uint8Array,
  view: PacketView,
  addr: Uint8Array,
  addrOffset: number,
  port: number,
): void {
  rewrite(packet, view, view.dstOffset, view.tcpOffset + 2, addr, addrOffset, port);
  view.dstPort = port;
}

/**
 * Rewrites the source address (from `addr` at `addrOffset`) and source port of the packet in
 * place, fixing checksums incrementally. Updates `view.srcPort`.
 */
export function rewriteSource(
  packet: Uint8Array,
  view: PacketView,
  addr: Uint8Array,
  addrOffset: number,
  port: number,
): void {
  rewrite(packet, view, view.srcOffset, view.tcpOffset, addr, addrOffset, port);
  view.srcPort = port;
}
