/**
 * CIDR networks (RFC 4632 §3.1 notation, and RFC 4291 §2.3 for IPv6 prefixes): parse, format,
 * and test whether an address held in packet bytes lies inside one.
 *
 * `Cidr` itself is the shared config type (src/config/config.ts). Parsing is strict: the
 * address must be valid text (see ip_address.ts) and the prefix a decimal 0..32 / 0..128 without
 * leading zeros. Host bits set in the text ("198.51.100.7/24") are an error, not silently masked,
 * because a rule file that says one thing and means another is worse than one that fails to load.
 */
import type { Cidr } from "../config/config.ts";
import { formatIp, parseIp } from "./ip_address.ts";

/** What was wrong with a CIDR text. */
export type CidrProblem = "address" | "prefix" | "host-bits";

/** A CIDR text that could not be parsed; the message says why. */
export class CidrError extends Error {
  /** The text that was rejected. */
  readonly text: string;
  /** Which part was wrong (callers that word their own messages switch on it). */
  readonly problem: CidrProblem;
  /** For "host-bits": the network the text probably meant, e.g. "198.51.100.0/24". */
  readonly suggestion?: string;
  /** Creates the error; the message is `Invalid network "text": reason`. */
  constructor(
    text: string,
    reason: string,
    problem: CidrProblem,
    suggestion?: string,
    options?: ErrorOptions,
  ) {
    super(`Invalid network "${text}": ${reason}`, options);
    this.name = "CidrError";
    this.text = text;
    this.problem = problem;
    this.suggestion = suggestion;
  }
}

/**
 * Parses "198.51.100.0/24" or "2001:db8:25::/64". A bare address is a host route (/32, /128).
 * Throws CidrError when the text is not a network, or when host bits are set.
 */
export function parseCidr(text: string): Cidr {
  const trimmed = text.trim();
  const slash = trimmed.indexOf("/");
  const addrText = slash < 0 ? trimmed : trimmed.slice(0, slash);
  const bytes = parseIp(addrText);
  if (!bytes) {
    throw new CidrError(text, `"${addrText}" is not an IPv4 or IPv6 address`, "address");
  }
  const family: 4 | 6 = bytes.length === 4 ? 4 : 6;
  const maxPrefix = family === 4 ? 32 : 128;
  let prefix = maxPrefix;
  if (slash >= 0) {
    const p = trimmed.slice(slash + 1);
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > maxPrefix) {
      throw new CidrError(text, `prefix length must be 0..${maxPrefix}`, "prefix");
    }
    prefix = Number(p);
  }
  for (let bit = prefix; bit < maxPrefix; bit++) {
    if (bytes[bit >> 3] & (0x80 >> (bit & 7))) {
      const meant = `${formatIp(maskBytes(bytes, prefix))}/${prefix}`;
      throw new CidrError(text, `host bits are set (did you mean ${meant}?)`, "host-bits", meant);
    }
  }
  return { family, bytes, prefix, text: `${formatIp(bytes)}/${prefix}` };
}

/** Returns a copy of `bytes` with every bit past `prefix` cleared. */
export function maskBytes(bytes: Uint8Array, prefix: number): Uint8Array {
  const out = new Uint8Array(bytes);
  for (let i = 0; i < out.length; i++) {
    const keep = Math.max(0, Math.min(8, prefix - 8 * i));
    out[i] &= (0xff00 >> keep) & 0xff;
  }
  return out;
}

/** Formats a Cidr as "address/prefix" (canonical address text). */
export function formatCidr(cidr: Cidr): string {
  return `${formatIp(cidr.bytes)}/${cidr.prefix}`;
}

/**
 * Whether the address of `family` held in `bytes` at `offset` lies inside `cidr`.
 * A different family never matches (an IPv4-mapped IPv6 address is not the IPv4 address here:
 * the kernel delivers such packets as IPv6, and the firewall rules are per family too).
 */
export function cidrContains(
  cidr: Cidr,
  bytes: Uint8Array,
  offset = 0,
  family: 4 | 6 = bytes.length - offset === 4 ? 4 : 6,
): boolean {
  if (cidr.family !== family) return false;
  const full = cidr.prefix >> 3;
  const net = cidr.bytes;
  for (let i = 0; i < full; i++) {
    if (bytes[offset + i] !== net[i]) return false;
  }
  const rest = cidr.prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff00 >> rest) & 0xff;
  return (bytes[offset + full] & mask) === (net[full] & mask);
}
