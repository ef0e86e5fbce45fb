/**
 * One text form per IP address, so that lists, counters and blacklist keys agree however an
 * address was written or reported: IPv4-mapped IPv6 ("::ffff:192.0.2.1", what a dual-stack
 * listener reports for an IPv4 client) becomes the IPv4 address, IPv6 is compressed (RFC 5952).
 */
import { formatIp, parseIp } from "../packet/ip_address.ts";

/** The canonical text of `ip`, or `ip` lower-cased and trimmed when it is not an address. */
export function canonicalIp(ip: string): string {
  const b = parseIp(ip.trim());
  if (!b) return ip.trim().toLowerCase();
  if (
    b.length === 16 && b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff
  ) {
    return formatIp(b.subarray(12, 16));
  }
  return formatIp(b);
}
