/**
 * The Internet checksum: full computation (RFC 1071) over the IPv4 header and over TCP with its
 * pseudo-header (RFC 9293 §3.1 for IPv4, RFC 8200 §8.1 for IPv6), and incremental update when a
 * few 16-bit words change (RFC 1624 §3, eqn. 3: HC' = ~(~HC + ~m + m')).
 *
 * Why incremental: rewriting an address and a port changes at most 9 words (an IPv6 address and a
 * port), while a full TCP checksum reads the whole segment. Incremental updates are exact only
 * when the checksum already in the packet is complete; the kernel marks the packets whose checksum
 * is partial (NFQA_SKB_CSUMNOTREADY, with the NFQUEUE GSO flag on), and those get a full
 * computation instead (queue_worker.ts; research/performance-anchors.md §2.3).
 *
 * Eqn. 3 (not eqn. 2, which RFC 1624 §4 shows can yield -0 where recomputation yields +0) gives
 * exactly the value a full recomputation gives: both are the one's complement of a sum in
 * 1..0xffff, congruent modulo 0xffff. The tests check this on random packets.
 *
 * Sums here are plain JS numbers accumulated without folding and folded once at the end: 2^53
 * leaves room for far more than 64 KiB of 16-bit words.
 */
import type { PacketView } from "./packet_view.ts";
import { PROTO_TCP } from "./packet_view.ts";

/** Folds a non-negative sum of 16-bit words to 16 bits with end-around carry (RFC 1071 §4.1). */
export function foldSum(sum: number): number {
  // Past 2^31 bit operators would truncate; divide first (only very large segments get there).
  while (sum > 0x7fffffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
/** Int32 view of the last buffer summed in 32-bit steps (the Worker's receive buffer). */
let words32: Int32Array | undefined;

/**
 * Adds the bytes `data[start..end)` as big-endian 16-bit words to `sum` (unfolded); an odd
 * trailing byte is padded with a zero byte (RFC 1071 §4.1).
 */
export function sumWords(data: Uint8Array, start: number, end: number, sum = 0): number {
  let i = start;
  if (end - start >= 64 && LITTLE_ENDIAN && ((data.byteOffset + i) & 1) === 0) {
    // Long runs (full checksums of GSO packets, up to 64 KiB): aligned 32-bit loads. On a
    // little-endian host each holds two byte-swapped 16-bit words; the one's complement sum is
    // byte-order independent (RFC 1071 §2(B)), so sum them swapped, fold, and swap back. Partial
    // sums stay int32 (8,192 words at most per run), so the loop is plain integer arithmetic.
    if (((data.byteOffset + i) & 2) !== 0) {
      sum += (data[i] << 8) | data[i + 1];
      i += 2;
    }
    if (words32 === undefined || words32.buffer !== data.buffer) {
      words32 = new Int32Array(data.buffer, 0, data.buffer.byteLength >> 2);
    }
    const w = words32;
    let k = (data.byteOffset + i) >> 2;
    const kEnd = k + ((end - i) >> 2);
    i += (kEnd - k) << 2;
    let swapped = 0;
    while (k < kEnd) {
      const stop = Math.min(kEnd, k + 8192);
      let s = 0;
      for (; k < stop; k++) {
        const x = w[k];
        s += (x & 0xffff) + (x >>> 16);
      }
      swapped += s;
    }
    const f = foldSum(swapped);
    sum += ((f & 0xff) << 8) | (f >> 8);
  }
  const even = end - ((end - start) & 1);
  for (; i < even; i += 2) sum += (data[i] << 8) | data[i + 1];
  if (i < end) sum += data[i] << 8;
  return sum;
}

/** The Internet checksum (one's complement of the folded one's complement sum) of `data`. */
export function internetChecksum(data: Uint8Array, start = 0, end = data.length): number {
  return ~foldSum(sumWords(data, start, end)) & 0xffff;
}

/** Sum of the TCP pseudo-header (addresses, protocol, TCP length) of the packet in `view`. */
export function pseudoHeaderSum(packet: Uint8Array, view: PacketView): number {
  const a = view.addrLength;
  let sum = sumWords(packet, view.srcOffset, view.srcOffset + a);
  sum = sumWords(packet, view.dstOffset, view.dstOffset + a, sum);
  const tcpLength = view.ipEnd - view.tcpOffset;
  // IPv4: zero, protocol, 16-bit length; IPv6: 32-bit length, 24 zero bits, next header.
  return sum + PROTO_TCP + (tcpLength & 0xffff) + Math.floor(tcpLength / 0x10000);
}

/**
 * Computes the full TCP checksum of the packet in `view`, as if its checksum field were zero.
 * Does not modify the packet.
 */
export function computeTcpChecksum(packet: Uint8Array, view: PacketView): number {
  const t = view.tcpOffset;
  let sum = pseudoHeaderSum(packet, view);
  sum = sumWords(packet, t, t + 16, sum); // up to the checksum field
  sum = sumWords(packet, t + 18, view.ipEnd, sum); // past it
  return ~foldSum(sum) & 0xffff;
}

/** Computes the IPv4 header checksum as if its field were zero (RFC 791 §3.1). */
export function computeIpv4HeaderChecksum(packet: Uint8Array): number {
  const ihl = (packet[0] & 0x0f) << 2;
  const sum = sumWords(packet, 0, 10) + sumWords(packet, 12, ihl);
  return ~foldSum(sum) & 0xffff;
}

/** Writes full, correct IPv4 header (when IPv4) and TCP checksums into the packet. */
export function fillChecksums(packet: Uint8Array, view: PacketView): void {
  if (view.family === 4) {
    const c = computeIpv4HeaderChecksum(packet);
    packet[10] = c >> 8;
    packet[11] = c & 0xff;
  }
  const c = computeTcpChecksum(packet, view);
  packet[view.tcpOffset + 16] = c >> 8;
  packet[view.tcpOffset + 17] = c & 0xff;
}

/**
 * Whether the checksums in the packet verify: the one's complement sum over the data including
 * the checksum field folds to 0xffff (RFC 1071 §1, "the result ... all 1 bits").
 */
export function checksumsValid(packet: Uint8Array, view: PacketView): boolean {
  if (view.family === 4) {
    const ihl = (packet[0] & 0x0f) << 2;
    if (foldSum(sumWords(packet, 0, ihl)) !== 0xffff) return false;
  }
  const sum = sumWords(packet, view.tcpOffset, view.ipEnd, pseudoHeaderSum(packet, view));
  return foldSum(sum) === 0xffff;
}

/**
 * RFC 1624 eqn. 3 for one changed 16-bit word: the checksum `hc` after word `oldWord` became
 * `newWord`.
 */
export function updateChecksum16(hc: number, oldWord: number, newWord: number): number {
  return ~foldSum((~hc & 0xffff) + (~oldWord & 0xffff) + newWord) & 0xffff;
}

/**
 * RFC 1624 eqn. 3 with the changed words already summed: `delta` is Σ(~m + m') over every
 * changed word (unfolded, each term as 16-bit values). Returns the new checksum.
 */
export function applyChecksumDelta(hc: number, delta: number): number {
  return ~foldSum((~hc & 0xffff) + delta) & 0xffff;
}
