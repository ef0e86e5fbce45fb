/**
 * IP address text <-> bytes: strict parsing of IPv4 dotted quads and IPv6 text (RFC 4291 §2.2),
 * and canonical formatting (IPv4 dotted decimal; IPv6 as recommended by RFC 5952 §4 and §5).
 *
 * Formatting runs when a flow is created or ended, never per packet. The IPv6 form matches what
 * Deno reports as `remoteAddr.hostname` (Rust's `Ipv6Addr` Display is RFC 5952 too), so the
 * responder can find a flow by the text of the peer address it accepted.
 *
 * Security: untrusted text. Parsing is strict (no leading zeros in IPv4 octets, which some
 * resolvers read as octal; no zone ids; at most 4 hex digits a group) and bounded by the input
 * length, so a configured or logged address means exactly one thing.
 */

/** Formats 4 bytes at `offset` as dotted decimal ("198.51.100.25"). */
export function formatIpv4(bytes: Uint8Array, offset = 0): string {
  return `${bytes[offset]}.${bytes[offset + 1]}.${bytes[offset + 2]}.${bytes[offset + 3]}`;
}

/**
 * Formats 16 bytes at `offset` as canonical IPv6 text (RFC 5952): lower-case hex, no leading
 * zeros in a group, the longest run (first of equal runs) of two or more zero groups as "::"
 * (§4.2: never for a single group), and IPv4-mapped addresses as "::ffff:192.0.2.1" (§5).
 */
export function formatIpv6(bytes: Uint8Array, offset = 0): string {
  const g = new Array<number>(8);
  for (let i = 0; i < 8; i++) g[i] = (bytes[offset + 2 * i] << 8) | bytes[offset + 2 * i + 1];
  // RFC 5952 §5: IPv4-mapped addresses keep the dotted quad.
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    return "::ffff:" + formatIpv4(bytes, offset + 12);
  }
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestLen < 2) bestStart = -1; // §4.2.2: "::" MUST NOT shorten just one 16-bit 0 field.
  let out = "";
  for (let i = 0; i < 8; i++) {
    if (i === bestStart) {
      out += "::";
      i += bestLen - 1;
      continue;
    }
    if (out !== "" && !out.endsWith(":")) out += ":";
    out += g[i].toString(16);
  }
  return out;
}

/**
 * Formats an address held in `bytes` at `offset`. `family` defaults to 4 when `bytes` holds
 * exactly 4 bytes from `offset`, else 6.
 */
export function formatIp(bytes: Uint8Array, offset = 0, family?: 4 | 6): string {
  const f = family ?? (bytes.length - offset === 4 ? 4 : 6);
  return f === 4 ? formatIpv4(bytes, offset) : formatIpv6(bytes, offset);
}

/** Parses a dotted quad ("192.0.2.1") into 4 bytes; undefined when it is not exactly one. */
export function parseIpv4(text: string): Uint8Array | undefined {
  if (text.length < 7 || text.length > 15) return undefined;
  const out = new Uint8Array(4);
  if (!parseIpv4Into(text, 0, text.length, out, 0)) return undefined;
  return out;
}

function parseIpv4Into(
  text: string,
  start: number,
  end: number,
  out: Uint8Array,
  at: number,
): boolean {
  let part = 0;
  let value = 0;
  let digits = 0;
  for (let i = start; i <= end; i++) {
    const c = i < end ? text.charCodeAt(i) : 0x2e; // a virtual "." closes the last octet
    if (c >= 0x30 && c <= 0x39) {
      if (digits === 1 && value === 0) return false; // leading zero: octal ambiguity
      value = value * 10 + (c - 0x30);
      digits++;
      if (value > 255) return false;
    } else if (c === 0x2e) {
      if (digits === 0 || part > 3) return false;
      out[at + part] = value;
      part++;
      value = 0;
      digits = 0;
    } else {
      return false;
    }
  }
  return part === 4;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}

/**
 * Parses IPv6 text (RFC 4291 §2.2: full, "::"-compressed, or with a trailing dotted quad) into
 * 16 bytes; undefined when invalid. Zone ids ("%eth0") and brackets are not accepted.
 */
export function parseIpv6(text: string): Uint8Array | undefined {
  if (text.length < 2 || text.length > 45) return undefined;
  const groups: number[] = [];
  let gap = -1; // index in `groups` where "::" stands
  let i = 0;
  const n = text.length;
  if (text.startsWith("::")) {
    gap = 0;
    i = 2;
    if (i === n) return new Uint8Array(16);
  } else if (text.charCodeAt(0) === 0x3a) {
    return undefined; // a single leading ":"
  }
  let tail4: Uint8Array | undefined;
  while (i < n) {
    // One group: 1..4 hex digits, or a dotted quad as the last 32 bits.
    let j = i;
    let v = 0;
    while (j < n && j - i < 5) {
      const h = hexValue(text.charCodeAt(j));
      if (h < 0) break;
      v = (v << 4) | h;
      j++;
    }
    if (j < n && text.charCodeAt(j) === 0x2e) {
      // Embedded IPv4 (RFC 4291 §2.2 form 3): must be the last thing in the text.
      tail4 = new Uint8Array(4);
      if (!parseIpv4Into(text, i, n, tail4, 0)) return undefined;
      i = n;
      break;
    }
    const len = j - i;
    if (len === 0 || len > 4) return undefined;
    groups.push(v);
    i = j;
    if (i === n) break;
    if (text.charCodeAt(i) !== 0x3a) return undefined;
    i++;
    if (i < n && text.charCodeAt(i) === 0x3a) {
      if (gap >= 0) return undefined; // "::" at most once
      gap = groups.length;
      i++;
      if (i === n) break;
    } else if (i === n) {
      return undefined; // a single trailing ":"
    }
  }
  const total = groups.length + (tail4 ? 2 : 0);
  if (gap < 0 ? total !== 8 : total > 7) return undefined;
  const out = new Uint8Array(16);
  const fill = 8 - total; // zero groups the "::" stands for
  let w = 0;
  for (let k = 0; k < groups.length; k++) {
    if (k === gap) w += fill;
    out[2 * w] = groups[k] >> 8;
    out[2 * w + 1] = groups[k] & 0xff;
    w++;
  }
  if (tail4) out.set(tail4, 12);
  return out;
}

/** Parses IPv4 or IPv6 text into 4 or 16 bytes; undefined when it is neither. */
export function parseIp(text: string): Uint8Array | undefined {
  return text.includes(":") ? parseIpv6(text) : parseIpv4(text);
}

/** The address family of bytes from `parseIp` (4 bytes → 4, else 6). */
export function ipFamily(bytes: Uint8Array): 4 | 6 {
  return bytes.length === 4 ? 4 : 6;
}

/**
 * One text per address, so that the worker's flow events, the responder's accepted peer address,
 * lists and blacklist keys meet in the same map key: IPv6 in RFC 5952 form, and IPv4-mapped IPv6
 * (a dual-stack listener's view of an IPv4 client, "::ffff:192.0.2.10") folded to plain IPv4.
 * Undefined when `text` is not an IP address.
 */
export function canonicalIp(text: string): string | undefined {
  const b = parseIp(text);
  if (!b) return undefined;
  if (b.length === 16 && isV4Mapped(b)) return formatIp(b.subarray(12), 0, 4);
  return formatIp(b);
}

function isV4Mapped(b: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}
