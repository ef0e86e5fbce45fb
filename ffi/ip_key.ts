/**
 * One canonical text per address, so that the worker's flow events, the responder's accepted
 * peer address and a blacklist entry meet in the same map key: IPv6 in RFC 5952 form, and
 * IPv4-mapped IPv6 (a dual-stack listener's view of an IPv4 client, "::ffff:192.0.2.10") folded
 * to plain IPv4.
 */
import { formatIp, parseIp } from "../src/packet/ip_address.ts";

/** The canonical text of `ip`, or undefined when it is not an IP address. */
export function canonicalIp(ip: string): string | undefined {
  const b = parseIp(ip);
  if (!b) return undefined;
  if (b.length === 16 && isV4Mapped(b)) return formatIp(b.subarray(12), 0, 4);
  return formatIp(b);
}

function isV4Mapped(b: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}
