/**
 * Which local addresses diverted flows are rewritten to (the responder's). The rule file may name
 * them or say "auto": then the first non-loopback IPv4 address and the first global IPv6 address
 * of the host are used.
 *
 * An address that is not on this host would make the rewritten packets leave again instead of
 * reaching the responder, so explicit addresses are checked against the host's interfaces too.
 * A family that is protected but has no responder address is a start-up error: diverting only
 * IPv4 while IPv6 mail to the same servers passes unfiltered is exactly the half-configured
 * state STYLE.md forbids.
 */
import type { GatewayConfig } from "../config/config.ts";
import { formatIp, parseIp } from "../packet/ip_address.ts";

/** The subset of Deno.NetworkInterfaceInfo this needs (tests build these by hand). */
export interface HostAddress {
  /** Interface name, e.g. "eth0". */
  name: string;
  /** Address family, as Deno reports it. */
  family: "IPv4" | "IPv6";
  /** The address as text, without prefix length. */
  address: string;
}

/** The responder addresses chosen; a family is absent when it is not protected and not named. */
export interface ResponderAddresses {
  /** Local IPv4 address diverted IPv4 flows are rewritten to. */
  ipv4?: string;
  /** Local IPv6 address diverted IPv6 flows are rewritten to. */
  ipv6?: string;
}

/** No usable responder address. */
export class ResponderAddressError extends Error {
  /** The error class name, "ResponderAddressError". */
  override name = "ResponderAddressError";
  /** Creates the error; `options.cause` is kept as `cause`. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

function usable4(b: Uint8Array): boolean {
  // Not 0.0.0.0/8, loopback 127/8, link-local 169.254/16 (RFC 3927: not routable), multicast.
  return b[0] !== 0 && b[0] !== 127 && !(b[0] === 169 && b[1] === 254) && b[0] < 224;
}

/** 2: global unicast (2000::/3), 1: unique local (fc00::/7), 0: not usable. */
function rank6(b: Uint8Array): number {
  if ((b[0] & 0xe0) === 0x20) return 2;
  if ((b[0] & 0xfe) === 0xfc) return 1;
  return 0; // ::, ::1, v4-mapped, link-local fe80::/10, multicast ff00::/8, ...
}

/**
 * Resolves `config.responder.ipv4/ipv6` against the host's `interfaces` (pass
 * `Deno.networkInterfaces()`). Pure. Throws ResponderAddressError with the fix in the message.
 */
export function pickResponderAddresses(
  config: Pick<GatewayConfig, "protect" | "responder">,
  interfaces: readonly HostAddress[],
): ResponderAddresses {
  const out: ResponderAddresses = {};
  for (const fam of [4, 6] as const) {
    const key = fam === 4 ? "ipv4" : "ipv6";
    const setting = config.responder[key];
    const needed = config.protect.some((c) => c.family === fam);
    const host = interfaces
      .filter((i) => i.family === (fam === 4 ? "IPv4" : "IPv6") && i.name !== "lo")
      .map((i) => ({ name: i.name, bytes: parseIp(i.address) }))
      .filter((i): i is { name: string; bytes: Uint8Array } =>
        i.bytes?.length === (fam === 4 ? 4 : 16)
      );
    if (setting !== "auto" && setting !== undefined && setting !== "") {
      const want = parseIp(setting);
      if (!want || want.length !== (fam === 4 ? 4 : 16)) {
        throw new ResponderAddressError(
          `gateway.responder.${key}: "${setting}" is not an IPv${fam} address`,
        );
      }
      const text = formatIp(want);
      if (!host.some((h) => formatIp(h.bytes) === text)) {
        throw new ResponderAddressError(
          `gateway.responder.${key}: ${text} is not an address of this host ` +
            `(have: ${host.map((h) => formatIp(h.bytes)).join(", ") || "none"})`,
        );
      }
      out[key] = text;
      continue;
    }
    if (!needed) continue;
    let best: Uint8Array | undefined;
    if (fam === 4) best = host.find((h) => usable4(h.bytes))?.bytes;
    else {
      let bestRank = 0;
      for (const h of host) {
        const r = rank6(h.bytes);
        if (r > bestRank) [best, bestRank] = [h.bytes, r];
      }
    }
    if (!best) {
      const nets = config.protect.filter((c) => c.family === fam).map((c) => c.text).join(", ");
      throw new ResponderAddressError(
        `IPv${fam} networks are protected (${nets}) but this host has no ` +
          (fam === 4 ? "non-loopback IPv4" : "global IPv6") +
          ` address for the responder: set gateway.responder.${key}`,
      );
    }
    out[key] = formatIp(best);
  }
  return out;
}
