/**
 * One text form per IP address for lists, counters and blacklist keys (see `canonicalIp` in
 * `src/packet/ip_address.ts`); text that is not an address is kept, trimmed and lower-cased, so
 * that it still compares consistently.
 */
import { canonicalIp as canonicalAddress } from "../packet/ip_address.ts";

/** The canonical text of `ip`, or `ip` lower-cased and trimmed when it is not an address. */
export function canonicalIp(ip: string): string {
  const t = ip.trim();
  return canonicalAddress(t) ?? t.toLowerCase();
}
