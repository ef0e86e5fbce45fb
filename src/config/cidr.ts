/**
 * CIDR networks (RFC 4632 for IPv4, RFC 4291 §2.3 for IPv6): parse the text an administrator
 * wrote into a `Cidr`, format it back, and test membership.
 *
 * Address text itself is parsed by `src/packet/ip_address.ts` (strict: no octal-looking octets,
 * no zone ids), so the config and the packet path agree on what an address means.
 *
 * Host bits must be zero: "198.51.100.25/24" is refused with the network it probably meant
 * ("198.51.100.0/24"), because silently widening or narrowing what is diverted is how a gateway
 * ends up intercepting the wrong hosts. A bare address is a host route (/32 or /128).
 */
import type { Cidr } from "./config.ts";
import { formatIp, parseIp } from "../packet/ip_address.ts";

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
  const t = text.trim();
  const slash = t.indexOf("/");
  const addrText = slash < 0 ? t : t.slice(0, slash);
  const bytes = parseIp(addrText);
  if (!bytes) {
    throw new CidrError(text, `"${text}" is not an IPv4 or IPv6 address or network`);
  }
  const family: 4 | 6 = bytes.length === 4 ? 4 : 6;
  const max = family === 4 ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const p = t.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > max) {
      throw new CidrError(text, `"${text}" has a bad prefix length (IPv${family}: 0 to ${max})`);
    }
    prefix = Number(p);
  }
  const network = maskBytes(bytes, prefix);
  const normal = `${formatIp(network)}/${prefix}`;
  if (!equalBytes(network, bytes)) {
    throw new CidrError(text, `"${text}" has host bits set; did you mean "${normal}"?`);
  }
  return { family, bytes: network, prefix, text: normal };
}

/** Formats a Cidr in normal form ("198.51.100.0/24", "2001:db8:25::/64"). */
export function formatCidr(cidr: Cidr): string {
  return `${formatIp(cidr.bytes)}/${cidr.prefix}`;
}

/** True when `addr` (4 or 16 bytes, or text) lies inside `cidr`. Different families never match. */
export function cidrContains(cidr: Cidr, addr: Uint8Array | string): boolean {
  const bytes = typeof addr === "string" ? parseIp(addr) : addr;
  if (!bytes || bytes.length !== cidr.bytes.length) return false;
  const full = cidr.prefix >> 3;
  for (let i = 0; i < full; i++) if (bytes[i] !== cidr.bytes[i]) return false;
  const rest = cidr.prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (bytes[full] & mask) === cidr.bytes[full];
}

/** True when two networks share at least one address (one contains the other's base). */
export function cidrOverlaps(a: Cidr, b: Cidr): boolean {
  if (a.family !== b.family) return false;
  return a.prefix <= b.prefix ? cidrContains(a, b.bytes) : cidrContains(b, a.bytes);
}

function maskBytes(bytes: Uint8Array, prefix: number): Uint8Array {
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) {
    const bits = Math.max(0, Math.min(8, prefix - 8 * i));
    out[i] = bytes[i] & ((0xff << (8 - bits)) & 0xff);
  }
  return out;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
