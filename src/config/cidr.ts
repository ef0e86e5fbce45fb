/**
 * CIDR networks as the rule file states them: the parsing and byte-level matching live in
 * `src/packet/cidr.ts` (one implementation for the packet path and the policy); this module words
 * the errors for an administrator and accepts address text where the policy has text.
 *
 * Host bits must be zero: "198.51.100.25/24" is refused with the network it probably meant
 * ("198.51.100.0/24"), because silently widening or narrowing what is diverted is how a gateway
 * ends up intercepting the wrong hosts. A bare address is a host route (/32 or /128).
 */
import type { Cidr } from "./config.ts";
import { parseIp } from "../packet/ip_address.ts";
import {
  cidrContains as cidrContainsBytes,
  CidrError as PacketCidrError,
  formatCidr,
  parseCidr as parsePacketCidr,
} from "../packet/cidr.ts";

export { formatCidr };

/** Why a CIDR text was refused. */
export class CidrError extends Error {
  /** The error class name, "CidrError". */
  override name = "CidrError";
  /** The text that was refused. */
  readonly text: string;
  /** Creates the error for the refused `text`, with `message` saying why. */
  constructor(text: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.text = text;
  }
}

/**
 * Parses "198.51.100.0/24", "2001:db8:25::/64" or a bare address (a /32 or /128).
 * Throws `CidrError` with a message fit for an administrator when the text is not a network or
 * has host bits set.
 */
export function parseCidr(text: string): Cidr {
  try {
    return parsePacketCidr(text);
  } catch (e) {
    if (!(e instanceof PacketCidrError)) throw e;
    const family = text.includes(":") ? 6 : 4;
    const message = e.problem === "host-bits"
      ? `"${text}" has host bits set; did you mean "${e.suggestion}"?`
      : e.problem === "prefix"
      ? `"${text}" has a bad prefix length (IPv${family}: 0 to ${family === 4 ? 32 : 128})`
      : `"${text}" is not an IPv4 or IPv6 address or network`;
    throw new CidrError(text, message, { cause: e });
  }
}

/** True when `addr` (4 or 16 bytes, or text) lies inside `cidr`. Different families never match. */
export function cidrContains(cidr: Cidr, addr: Uint8Array | string): boolean {
  const bytes = typeof addr === "string" ? parseIp(addr) : addr;
  if (!bytes || (bytes.length !== 4 && bytes.length !== 16)) return false;
  return cidrContainsBytes(cidr, bytes);
}

/** True when two networks share at least one address (one contains the other's base). */
export function cidrOverlaps(a: Cidr, b: Cidr): boolean {
  if (a.family !== b.family) return false;
  return a.prefix <= b.prefix ? cidrContains(a, b.bytes) : cidrContains(b, a.bytes);
}
